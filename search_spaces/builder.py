"""The one builder: arch -> plain ``keras.Model`` made only of standard Keras layers.

It interprets the layer plan (:func:`search_spaces.plan.plan`) one record at a time, so the
model's layer names, parameter counts and MACs are exactly the plan's. Only stock Keras
layers and initializers are used, so a saved ``.keras`` file loads with plain Keras,
without this package.
"""

from __future__ import annotations

import logging
import zlib

from .arch import Arch
from .plan import plan, resolve_io

log = logging.getLogger(__name__)

# BN settings of the MnasNet / EfficientNet reference implementations.
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3

# Keras's own names for our activations (Keras 3 calls swish "silu", hard_swish "hard_silu").
KERAS_ACTIVATION = {"relu": "relu", "relu6": "relu6", "swish": "silu", "hard_swish": "hard_silu",
                    "sigmoid": "sigmoid", "softmax": "softmax", None: None}


def layer_seed(seed: int | None, layer_name: str) -> int | None:
    # One seed per layer, from the build seed and the layer's name: layers never share
    # initial weights, and the same (arch, seed) always builds the same weights.
    if seed is None:
        return None
    return (seed * 1_000_003 + zlib.crc32(layer_name.encode())) % (2**31 - 1)


def build_model(arch: Arch, input_shape=None, num_classes: int | None = None, *, name: str | None = None,
                seed: int | None = None):
    """Build ``arch`` as a functional ``keras.Model``.

    ``input_shape`` defaults to ``(arch.resolution, arch.resolution, 3)``; ``num_classes``
    defaults to ``arch.num_classes``, else 1000. The output is a softmax over the classes.
    Inputs are expected scaled to [0, 1] (the data pipeline does that). ``seed`` makes the
    initial weights reproducible (each layer gets its own seed derived from it).

    >>> import search_spaces as s
    >>> m = s.build_model(s.reference("mobilenet_v2"), num_classes=1000)   # doctest: +SKIP
    >>> m.count_params()                                                   # doctest: +SKIP
    3538984
    """
    import keras  # imported here so arch/plan/space code stays usable without TF loaded
    from keras import layers

    input_shape, classes = resolve_io(arch, input_shape, num_classes)
    # EfficientNet's initializers: He-style fan-out for convs, a scaled uniform for the classifier.
    # A fresh instance per layer: a shared unseeded instance gives same-shaped layers identical weights.
    def conv_init(layer_name):
        return keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal",
                                                  seed=layer_seed(seed, layer_name))

    def dense_init(layer_name):
        return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_out", "uniform", seed=layer_seed(seed, layer_name))

    # Under a mixed-precision policy the classifier stays float32: a float16 softmax rounds small
    # probabilities to zero and the loss to inf (Keras's mixed-precision guide).
    head_dtype = "float32" if keras.config.dtype_policy().name != "float32" else None
    tensors = {}
    for ly in plan(arch, input_shape, classes):
        xs = [tensors[i] for i in ly.inputs]
        act = KERAS_ACTIVATION[ly.activation]
        if ly.op == "input":
            out = keras.Input(shape=ly.output_shape, name=ly.name)
        elif ly.op == "conv2d":
            out = layers.Conv2D(ly.filters, ly.kernel, strides=ly.stride, padding="same", use_bias=ly.use_bias,
                                activation=act, kernel_initializer=conv_init(ly.name), name=ly.name)(xs[0])
        elif ly.op == "depthwise_conv2d":
            out = layers.DepthwiseConv2D(ly.kernel, strides=ly.stride, padding="same", use_bias=ly.use_bias,
                                         depthwise_initializer=conv_init(ly.name), name=ly.name)(xs[0])
        elif ly.op == "batch_norm":
            out = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=ly.name)(xs[0])
        elif ly.op == "activation":
            out = layers.Activation(act, name=ly.name)(xs[0])
        elif ly.op == "global_pool":
            out = layers.GlobalAveragePooling2D(keepdims=ly.keepdims, name=ly.name)(xs[0])
        elif ly.op == "dropout":
            out = layers.Dropout(ly.rate, name=ly.name)(xs[0])
        elif ly.op == "dense":
            out = layers.Dense(ly.filters, activation=act, kernel_initializer=dense_init(ly.name), name=ly.name,
                               dtype=head_dtype)(xs[0])
        elif ly.op == "add":
            out = layers.Add(name=ly.name)(xs)
        elif ly.op == "multiply":
            out = layers.Multiply(name=ly.name)(xs)
        else:  # the plan only emits the ops above
            raise RuntimeError(f"builder has no rule for plan op {ly.op!r}")
        tensors[ly.name] = out
    model = keras.Model(tensors["input"], out, name=name or "nas_model")
    log.debug("built %s: %d layers", arch.to_string(), len(model.layers))
    return model
