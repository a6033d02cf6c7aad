"""Static analysis of a model at the level of its int8 ``.tflite``: op table, totals, Edge TPU fit.

Three entry points produce the same :class:`ModelAnalysis`:

- :func:`analyze_arch` reads only the layer plan (:func:`search_spaces.plan.plan`): no
  TensorFlow, no Keras, cached per arch, so a predictor can call it thousands of times a second;
- :func:`analyze_keras` walks any Keras 3 functional or Sequential model (ours,
  ``keras.applications``, user models, nested models; a built subclassed model is converted);
- :func:`analyze_tflite` parses a ``.tflite`` flatbuffer (bytes or a path).

The table is the *TFLite-level* view, because that is what the Edge TPU compiler and a latency
predictor see. The first two sources lower Keras layers the way the TF 2.21 converter does
(checked by converting models and reading the op list back; ``tests/test_analysis.py`` keeps
the three sources in agreement):

=====================================  ==================================================
Keras                                  int8 ``.tflite``
=====================================  ==================================================
Conv2D/DepthwiseConv2D [+BN] [+ReLU6]  one CONV_2D / DEPTHWISE_CONV_2D; BN folds into the
                                       weights and bias, relu/relu6 become its fused
                                       activation (only when nothing else reads the conv)
swish (Keras ``silu``)                 LOGISTIC + MUL(x, sigmoid(x))
hard_swish (Keras ``hard_silu``)       HARD_SWISH -- not supported by the Edge TPU
sigmoid / tanh / softmax               LOGISTIC / TANH / SOFTMAX
squeeze-excite                         MEAN, CONV_2D, [act], CONV_2D, LOGISTIC, MUL
GlobalAveragePooling2D / Dense         MEAN / FULLY_CONNECTED (+SOFTMAX)
Add / Multiply / Concatenate           ADD / MUL / CONCATENATION (relu fuses into ADD)
constant MUL/ADD/SUB beside a conv     folded into the conv/FC it follows (a scalar or per-
                                       channel constant; ADD/SUB add a bias), or a scalar MUL
                                       (ADD/SUB: VALID only) into the conv it feeds
                                       (Rescaling before the stem vanishes)
ZeroPadding2D                          PAD, or nothing when the next VALID conv becomes the
                                       equivalent SAME conv (MobileNetV2's pads vanish)
BatchNormalization on its own          MUL (+ ADD when its offset is non-zero)
Dropout / InputLayer                   nothing; int8 io has no QUANTIZE/DEQUANTIZE
Flatten / Reshape                      RESHAPE (consecutive ones merge); with TF's own
                                       ``from_keras_model`` and batch size None: SHAPE,
                                       STRIDED_SLICE, PACK, RESHAPE on int32 (-> CPU)
=====================================  ==================================================

A layer with no rule here (a Lambda, a custom layer such as ``keras.applications``
InceptionResNetV2's ``CustomScaleLayer``, a subclassed model used as a layer, or a stock layer
with an activation the table lacks) is lowered by the real converter instead: the layer alone,
in a one-layer Keras model with batch-1 inputs, is converted to int8 and its ops are spliced
into the table (sub-model boundary QUANTIZE/DEQUANTIZE dropped), so the rewrites that cross
layer boundaries -- BN folding, activation fusion, a constant MUL/ADD folded into the conv
beside it -- still apply. Conversions are cached per layer class, config, input shapes and
weights. Only where that too is impossible (the conversion fails, the layer cannot be called
on symbolic inputs) does an ``UNKNOWN`` op remain, unsupported, so the Edge TPU partition ends
there; such layers are listed in :attr:`ModelAnalysis.assumed_cpu` so the guess is visible.
A subclassed model (no static graph to walk) is converted whole when its input shape is known.

Parameters are counted as the int8 model stores them: int8 weights (1 byte each), int32 biases
(4 bytes each). CONV_2D and DEPTHWISE_CONV_2D always carry a bias in TFLite; the converter
drops an all-zero bias of FULLY_CONNECTED and TRANSPOSE_CONV, so :func:`analyze_keras` looks
at the actual values, while :func:`analyze_arch` assumes trained (non-zero) biases. MACs are
counted for CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and TRANSPOSE_CONV only, as papers
count them (the plan's :attr:`~search_spaces.plan.Layer.macs`).

Edge TPU compatibility follows Coral's documented model requirements: the op must be in
:data:`EDGETPU_SUPPORTED_OPS`, its tensors int8/uint8 (no float or int32 arithmetic), of
static shape (only the batch dimension may be dynamic: the compiler uses the stored shape,
batch 1), with at most 4 dimensions of which only the 3 innermost may exceed 1. The compiler
makes one Edge TPU partition: the first unsupported op (:attr:`ModelAnalysis.first_cpu_op`)
and every op after it in the table run on the CPU.
"""

from latency_models.analysis.arch import analyze_arch, layers_block_columns
from latency_models.analysis.keras_model import analyze_keras
from latency_models.analysis.records import ModelAnalysis, OpInfo
from latency_models.analysis.rules import EDGETPU_CUSTOM_OP, EDGETPU_SUPPORTED_OPS, edgetpu_reason
from latency_models.analysis.tflite import analyze_tflite

__all__ = ["EDGETPU_CUSTOM_OP", "EDGETPU_SUPPORTED_OPS", "ModelAnalysis", "OpInfo", "analyze_arch", "analyze_keras",
           "analyze_tflite", "edgetpu_reason", "layers_block_columns"]
