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

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

# Coral's "Supported operations" table (coral.ai/docs/edgetpu/models-intro, compiler 16),
# as TFLite builtin names. Anything else -- HARD_SWISH, GELU, LEAKY_RELU, EXP, DEQUANTIZE,
# SHAPE, TILE, ... -- stops the Edge TPU partition. Several entries carry extra limits in
# Coral's table; the one checked here is SOFTMAX's (at most 16,000 elements).
# Not listed there, so treated as unsupported: EXP, FLOOR, GREATER, DEQUANTIZE.
EDGETPU_SUPPORTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
    "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE",
    "TRANSPOSE_CONV",
})

# The custom op an already compiled ``*_edgetpu.tflite`` holds: it *is* the Edge TPU partition.
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"

SOFTMAX_MAX_ELEMENTS = 16_000

# Constant inputs that are parameters although int32: the bias position of weight ops.
# Other int32/int64 constants (shapes, axes, paddings, slice bounds) are metadata, not parameters.
_BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3}

# Converter rewrites mirrored by the Keras and arch lowering.
_FOLDS_BN = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"})
_FUSED_ACTS = frozenset({"RELU", "RELU6", "RELU_N1_TO_1"})
_TAKES_FUSED_ACT = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV",
                              "ADD", "SUB", "MUL", "DIV"})
# TFLite's ReorderElementwiseAndMoveOperations: an element-wise op reading the only output of
# a data-movement op is moved above it (seen in TF 2.21: TANH above a RESHAPE).
_HOISTED = frozenset({"CEIL", "EXP", "FLOOR", "NEG", "RELU", "RELU_N1_TO_1", "RELU6", "ROUND", "TANH",
                      "SQRT", "SQUARE", "LOGISTIC"})
_MOVES = frozenset({"DEPTH_TO_SPACE", "EXPAND_DIMS", "SQUEEZE", "RESHAPE", "TRANSPOSE"})

_ITEMSIZE = {"float32": 4, "float16": 2, "float64": 8, "int32": 4, "uint8": 1, "int64": 8, "bool": 1,
             "int16": 2, "int8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "int4": 1, "complex64": 8}
_QUANTIZED = frozenset({"int8", "uint8"})
_FLOATS = frozenset({"float32", "float16", "float64", "bfloat16"})

Shape = tuple[int, ...]


# ------------------------------------------------------------------------------ public records


@dataclass(frozen=True)
class OpInfo:
    """One op of the int8 ``.tflite`` (or of what the converter will make of a Keras model).

    Shapes include the batch dimension (1); -1 marks a dynamic dimension. ``input_shapes``
    lists the activation inputs only (weights, biases and shape/axis constants are described
    by ``kernel``, ``params``, ``param_bytes``). ``kernel`` and ``stride`` are ``(h, w)`` for
    convolutions and pools, else None. ``groups`` is the convolution group count (the channel
    count for depthwise convs). ``param_bytes`` are the op's own weights and biases as TFLite
    stores them; ``activation_bytes`` is the size of its output tensor(s). ``edgetpu_supported``
    says whether the op itself can run on the Edge TPU (``reason`` says why not);
    ``device`` is where it runs given the single partition ("cpu" from the first unsupported
    op on). ``input_ops`` are the indices of the ops producing the inputs (-1: model input).
    """

    index: int
    name: str
    op_type: str
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    kernel: tuple[int, int] | None
    stride: tuple[int, int] | None
    groups: int
    depthwise: bool
    fused_activation: str | None
    macs: int
    param_bytes: int
    activation_bytes: int
    dtype: str
    edgetpu_supported: bool
    reason: str | None
    block: str
    device: str = "tpu"
    params: int = 0
    input_ops: tuple[int, ...] = ()

    def to_row(self) -> dict[str, Any]:
        """A flat, CSV-friendly row (shapes as ``1x32x32x3``, ``;`` between inputs)."""
        return {
            "index": self.index, "name": self.name, "block": self.block, "op_type": self.op_type,
            "input_shapes": ";".join(_fmt_shape(s) for s in self.input_shapes),
            "output_shape": _fmt_shape(self.output_shape),
            "kernel": _fmt_shape(self.kernel) if self.kernel else "",
            "stride": _fmt_shape(self.stride) if self.stride else "",
            "groups": self.groups, "depthwise": self.depthwise,
            "fused_activation": self.fused_activation or "", "macs": self.macs, "params": self.params,
            "param_bytes": self.param_bytes, "activation_bytes": self.activation_bytes, "dtype": self.dtype,
            "edgetpu_supported": self.edgetpu_supported, "device": self.device, "reason": self.reason or "",
            "input_ops": ";".join(str(i) for i in self.input_ops),
        }


@dataclass(frozen=True)
class ModelAnalysis:
    """The op table of a model with totals and its Edge TPU placement.

    ``source`` is "arch", "keras" or "tflite". ``input_shape`` is the first input's shape with
    the batch dimension. ``total_params`` counts the parameters that survive in the int8 model
    (weights and biases after BN folding); ``keras_trainable_params`` is Keras's trainable count
    (the plan's :func:`~search_spaces.count_params`) when the source knows it.
    ``peak_activation_bytes`` is the largest live set: running the ops in table order, each
    activation tensor is allocated when produced and freed after its last reader (model inputs
    live from the start, outputs to the end); the maximum of the summed live bytes is reported.
    It is a lower bound of a TFLite arena, which may add fragmentation, and always at least the
    largest input+output bytes of one op. ``first_cpu_op`` is the index of the first op the Edge
    TPU cannot run (None when all can); ``unsupported`` lists every such op with its reason.
    ``assumed_cpu`` lists the Keras layers that have neither a rule nor a converter lowering, as
    ``(layer name, layer class, reason)``: each is one ``UNKNOWN`` op assumed to run on the CPU,
    a guess a predictor should report. ``converted_layers`` names the layers the TFLite
    converter lowered (no rule); a subclassed model converted whole lists its own name.
    """

    ops: tuple[OpInfo, ...]
    source: str
    input_shape: Shape
    total_macs: int
    total_params: int
    total_param_bytes: int
    peak_activation_bytes: int
    first_cpu_op: int | None
    ops_on_tpu: int
    ops_on_cpu: int
    unsupported: tuple[tuple[int, str, str], ...]
    keras_trainable_params: int | None = None
    model_name: str = ""
    assumed_cpu: tuple[tuple[str, str, str], ...] = ()
    converted_layers: tuple[str, ...] = ()

    @property
    def op_types(self) -> tuple[str, ...]:
        return tuple(op.op_type for op in self.ops)

    @property
    def fully_on_edgetpu(self) -> bool:
        return self.first_cpu_op is None

    def to_dict(self, *, with_ops: bool = True) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        d = {k: v for k, v in asdict(self).items() if k != "ops"}
        d["input_shape"] = list(self.input_shape)
        d["unsupported"] = [list(u) for u in self.unsupported]
        d["assumed_cpu"] = [list(u) for u in self.assumed_cpu]
        d["converted_layers"] = list(self.converted_layers)
        if with_ops:
            d["ops"] = [_jsonable(asdict(op)) for op in self.ops]
        return d

    def to_rows(self) -> list[dict[str, Any]]:
        """One flat dict per op, for ``csv.DictWriter``."""
        return [op.to_row() for op in self.ops]

    def format_table(self, *, max_name: int = 34) -> str:
        """A fixed-width text table of the ops followed by the totals (for a CLI)."""
        head = ("#", "op", "name", "output", "k", "s", "act", "MACs", "param B", "act B", "dev", "note")
        rows = [head]
        for op in self.ops:
            name = op.name if len(op.name) <= max_name else op.name[: max_name - 1] + "~"
            note = "" if op.edgetpu_supported else (op.reason or "unsupported")
            rows.append((str(op.index), op.op_type, name, _fmt_shape(op.output_shape),
                         _fmt_shape(op.kernel) if op.kernel else "", _fmt_shape(op.stride) if op.stride else "",
                         op.fused_activation or "", f"{op.macs:,}", f"{op.param_bytes:,}",
                         f"{op.activation_bytes:,}", op.device, note))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
        right = {0, 7, 8, 9}
        lines = []
        for r in rows:
            cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
            lines.append("  ".join(cells + [r[-1]]).rstrip())
        lines.insert(1, "-" * len(lines[0]))
        lines.append("")
        label = f" {self.model_name}" if self.model_name else ""
        lines.append(f"source: {self.source}{label}  input: {_fmt_shape(self.input_shape)}  "
                     f"ops: {len(self.ops)} (Edge TPU {self.ops_on_tpu}, CPU {self.ops_on_cpu})")
        keras_p = (f", Keras trainable {self.keras_trainable_params:,}"
                   if self.keras_trainable_params is not None else "")
        lines.append(f"MACs: {self.total_macs:,}  params: {self.total_params:,}{keras_p}  "
                     f"param bytes: {self.total_param_bytes:,}  peak activations: {self.peak_activation_bytes:,} B")
        if self.first_cpu_op is None:
            lines.append("Edge TPU: every op is supported")
        else:
            op = self.ops[self.first_cpu_op]
            lines.append(f"Edge TPU: CPU fall-back from op #{op.index} {op.op_type} ({op.name}): {op.reason}; "
                         f"{len(self.unsupported)} unsupported op(s)")
        if self.converted_layers:
            shown = ", ".join(self.converted_layers[:6]) + (", ..." if len(self.converted_layers) > 6 else "")
            lines.append(f"lowered by the TFLite converter (no rule): {len(self.converted_layers)} layer(s): {shown}")
        for name, cls, reason in self.assumed_cpu:
            lines.append(f"warning: assumed to run on the CPU (no TFLite lowering): {name} ({cls}): {reason}")
        return "\n".join(lines)


def _fmt_shape(shape: Iterable[int]) -> str:
    return "x".join(str(d) for d in shape)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _numel(shape: Iterable[int]) -> int:
    # Unknown (-1) dimensions make the size unknown; 0 keeps totals honest rather than negative.
    n = 1
    for d in shape:
        if d < 0:
            return 0
        n *= d
    return n


# ------------------------------------------------------------------------------ Edge TPU rules


def edgetpu_reason(op_type: str, shapes: Iterable[Shape], dtypes: Iterable[str] = (), *,
                   dynamic: bool = False) -> str | None:
    """Why the Edge TPU cannot run this op (None when it can).

    ``shapes`` are the op's activation input and output shapes (-1: dynamic dimension; the
    first dimension is the batch), ``dtypes`` their types; ``dynamic`` flags a dynamic
    non-batch dimension known from elsewhere (a TFLite shape signature).
    """
    if op_type not in EDGETPU_SUPPORTED_OPS:
        return f"{op_type} is not supported by the Edge TPU compiler"
    dtypes = set(dtypes)
    if dtypes & _FLOATS:
        return (f"{op_type} computes in {'/'.join(sorted(dtypes & _FLOATS))}: the Edge TPU runs only "
                f"int8/uint8-quantized ops")
    other = dtypes - _QUANTIZED
    if other:
        return (f"{op_type} works on {'/'.join(sorted(other))} tensors: the Edge TPU runs only int8/uint8 "
                f"tensors")
    shapes = list(shapes)
    if dynamic or any(d < 0 for s in shapes for d in s[1:]):
        return f"{op_type} has a dynamic shape: the Edge TPU needs static tensor shapes"
    for s in shapes:
        if len(s) > 4:
            return f"{op_type} uses a {len(s)}-D tensor {_fmt_shape(s)}: the Edge TPU supports at most 4-D"
        if len(s) > 3 and any(d > 1 for d in s[:-3]):
            return (f"{op_type} uses tensor {_fmt_shape(s)}: only the 3 innermost dimensions may exceed 1 "
                    f"on the Edge TPU")
    if op_type == "SOFTMAX" and shapes and _numel(shapes[0]) > SOFTMAX_MAX_ELEMENTS:
        return (f"SOFTMAX over {_numel(shapes[0]):,} elements: the Edge TPU allows at most "
                f"{SOFTMAX_MAX_ELEMENTS:,}")
    return None


@lru_cache(maxsize=None)
def _type_reason(op_type: str) -> str | None:
    return edgetpu_reason(op_type, ())


# ------------------------------------------------------------------------------ shared IR
#
# The arch and Keras sources first emit "raw" ops -- one per Keras-level operation, plus the
# pseudo op "BN" -- into a small graph, then _lower() applies the converter's rewrites in one
# forward pass: BN folding, relu/relu6 fusion, PAD into a SAME conv, reshape merging, moving
# element-wise ops above reshapes, folding constant MUL/ADD/SUB into a neighbouring conv, and the 1x1 quirks (keepdims MEAN removed, a residual
# ADD's second operand reshaped to 1-D). Both sources share that pass, so they cannot disagree
# on what the converter does. Keras models are then put in the converter's op order
# (_tflite_order); plans already are (the builder calls layers in plan order).


class _Op:
    __slots__ = ("op_type", "names", "inputs", "outputs", "block", "kernel", "stride", "groups",
                 "depthwise", "act", "weights", "bias", "macs", "padding", "pads", "bn", "reason", "dead",
                 "counts")

    def __init__(self, op_type: str, names: list[str], inputs: list[int], outputs: list[int], block: str,
                 *, kernel=None, stride=None, groups: int = 1, depthwise: bool = False, weights: int = 0,
                 bias: int = 0, macs: int = 0, padding: str | None = None, pads=None, bn=None,
                 reason: str | None = None, counts: tuple[int, int] | None = None):
        self.op_type, self.names, self.inputs, self.outputs, self.block = op_type, names, inputs, outputs, block
        self.kernel, self.stride, self.groups, self.depthwise = kernel, stride, groups, depthwise
        self.act: str | None = None
        self.weights, self.bias, self.macs = weights, bias, macs  # int8 elements, int32 elements
        self.padding, self.pads = padding, pads
        self.bn = bn  # for "BN": (channels, scale is not 1, offset is not 0)
        self.reason = reason
        self.dead = False
        # (params, param bytes) as read from a converted .tflite, for ops spliced in from the
        # converter: their constants need not be int8 weights + int32 biases.
        self.counts = counts

    def const_elements(self) -> int:
        """Elements of the constant operand of a one-input MUL/ADD/SUB (0: not such an op)."""
        if self.op_type not in ("MUL", "ADD", "SUB") or len(self.inputs) != 1:
            return 0
        return self.counts[0] if self.counts is not None else self.weights


class _Graph:
    def __init__(self) -> None:
        self.shapes: list[Shape] = []
        self.dtypes: list[str] = []
        self.ops: list[_Op] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    def tensor(self, shape: Shape, dtype: str = "int8") -> int:
        self.shapes.append(tuple(shape))
        self.dtypes.append(dtype)
        return len(self.shapes) - 1

    def add(self, op_type: str, names: list[str], inputs: list[int], shape: Shape, block: str,
            dtype: str = "int8", **kw: Any) -> int:
        t = self.tensor(shape, dtype)
        self.ops.append(_Op(op_type, names, list(inputs), [t], block, **kw))
        return t


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    # TF's SAME padding: the total pad makes ceil(size / stride) outputs, the extra pixel at the end.
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _lower(g: _Graph) -> list[_Op]:
    """Apply the TFLite converter's rewrites to the raw ops, in order; returns the final ops."""
    readers: dict[int, int] = {}
    for op in g.ops:
        for t in op.inputs:
            readers[t] = readers.get(t, 0) + 1
    for t in g.outputs:
        readers[t] = readers.get(t, 0) + 1
    out: list[_Op] = []
    producer: dict[int, _Op] = {}
    alias: dict[int, int] = {}  # output of a removed identity op -> its input

    def emit(op: _Op) -> None:
        out.append(op)
        for t in op.outputs:
            producer[t] = op

    def absorb(into: _Op, op: _Op) -> None:
        into.names.extend(n for n in op.names if n not in into.names)
        into.outputs = op.outputs
        for t in op.outputs:
            producer[t] = into

    def drop(op: _Op) -> None:
        src, dst = op.inputs[0], op.outputs[0]
        alias[dst] = src
        readers[src] = readers.get(src, 0) - 1 + readers.get(dst, 0)

    for op in g.ops:
        if alias:
            op.inputs = [alias.get(t, t) for t in op.inputs]
        src = producer.get(op.inputs[0]) if len(op.inputs) == 1 else None
        sole = src is not None and readers.get(op.inputs[0], 0) == 1 and len(src.outputs) == 1
        kind = op.op_type
        if kind == "BN":
            channels, scaled, offset = op.bn
            if sole and src.op_type in _FOLDS_BN and src.act is None:
                # Folded into the weights; an all-zero offset leaves FC/TRANSPOSE_CONV bias-free.
                if offset and not src.bias:
                    src.bias = g.shapes[src.outputs[0]][-1]
                absorb(src, op)
            elif scaled or offset:
                x = op.inputs[0]
                if scaled:
                    x = g.tensor(g.shapes[op.outputs[0]]) if offset else op.outputs[0]
                    emit(_Op("MUL", list(op.names), [op.inputs[0]], [x], op.block, weights=channels))
                if offset:
                    emit(_Op("ADD", list(op.names), [x], op.outputs, op.block, weights=channels))
            else:  # scale 1 and offset 0: nothing left to compute
                drop(op)
            continue
        if kind == "MEAN" and g.shapes[op.inputs[0]] == g.shapes[op.outputs[0]]:
            # A keepdims mean over 1x1 (squeeze-excite at the last stage of a 32 px proxy) is an
            # identity: the converter removes it.
            drop(op)
            continue
        hoisted_before = None
        while kind in _HOISTED and sole and src.op_type in _MOVES:
            # Swap: the element-wise op reads the move's input, the move reads its result.
            move, t = src, g.tensor(g.shapes[src.inputs[0]], g.dtypes[src.inputs[0]])
            op.inputs, op.outputs, move.inputs, move.outputs = [move.inputs[0]], [t], [t, *move.inputs[1:]], op.outputs
            producer[move.outputs[0]] = move
            readers[t] = 1
            hoisted_before = move
            src = producer.get(op.inputs[0])
            sole = src is not None and readers.get(op.inputs[0], 0) == 1 and len(src.outputs) == 1
        const = op.const_elements()
        if const and sole and src.op_type in _FOLDS_BN and src.act is None and \
                const in (1, g.shapes[src.outputs[0]][-1]):
            # Like BN: a scalar or per-channel constant MUL/ADD/SUB right after a conv or FC is
            # folded into its weights/bias (TF 2.21; hard_sigmoid's +3, a custom scale layer).
            if kind != "MUL" and not src.bias and src.counts is None:
                src.bias = g.shapes[src.outputs[0]][-1]
            absorb(src, op)
            src.act = op.act
            continue
        if kind in _FUSED_ACTS and sole and src.op_type in _TAKES_FUSED_ACT and src.act is None:
            src.act = kind
            absorb(src, op)
            continue
        if hoisted_before is not None:
            out.insert(out.index(hoisted_before), op)
            producer[op.outputs[0]] = op
            continue
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D") and op.padding == "valid" and sole and src.op_type == "PAD":
            (pt, pb), (pl, pr) = src.pads
            h, w = g.shapes[src.inputs[0]][1:3]
            if (pt, pb) == _same_pads(h, op.kernel[0], op.stride[0]) and \
                    (pl, pr) == _same_pads(w, op.kernel[1], op.stride[1]):
                # TF 2.21 turns PAD + VALID conv into one SAME conv when the pads are SAME's.
                src.dead = True
                op.names = src.names + op.names
                op.inputs = list(src.inputs)
                op.padding = "same"
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D") and sole and src.const_elements() == 1 and src.act is None \
                and (src.op_type == "MUL" or op.padding == "valid"):
            # A scalar constant in front of a conv folds into its weights (MUL; the zero padding
            # scales with it) or, with VALID padding only, its bias (ADD/SUB), as TF 2.21 does:
            # Rescaling(1/255) before a stem conv vanishes. Per-channel constants stay.
            src.dead = True
            op.names = src.names + [n for n in op.names if n not in src.names]
            op.inputs = list(src.inputs)
        if kind == "RESHAPE" and sole and src.op_type == "RESHAPE":
            absorb(src, op)
            continue
        if kind == "ADD" and len(op.inputs) == 2 and op.counts is None:
            # (Not for an ADD spliced from a converted layer: the converter already decided for it,
            # and does not reshape a MUL's output, e.g. InceptionResNetV2's scale layers at 1x1.)
            shape = g.shapes[op.inputs[0]]
            if len(shape) == 4 and shape[:3] == (1, 1, 1) and g.shapes[op.inputs[1]] == shape:
                # At 1x1 the converter treats the second operand like a bias: RESHAPE to 1-D
                # right after its producer, then ADD (MobileNetV2 and our residuals at 32 px).
                t = g.tensor(shape[-1:])
                r = _Op("RESHAPE", list(op.names), [op.inputs[1]], [t], op.block)
                p = producer.get(op.inputs[1])
                out.insert(out.index(p) + 1 if p is not None else 0, r)
                producer[t] = r
                op.inputs = [op.inputs[0], t]
        emit(op)
    if alias:
        g.outputs = [alias.get(t, t) for t in g.outputs]
    return [op for op in out if not op.dead]


def _tflite_order(ops: list[_Op], inputs: list[int]) -> list[_Op]:
    """The ops in the order the converter writes them.

    TensorFlow's graph importer lays ops out in reverse post-order of a depth-first walk from
    the inputs; where a tensor has several readers (parallel branches) this is not the
    Keras call order: TF visits the readers of a tensor in descending name order, so of two
    branches the one with the larger layer name finishes first and is written last (seen in
    TF 2.21: Flatten+Dense before GlobalAveragePooling2D, hard_sigmoid before LeakyReLU, a
    1x1 residual's RESHAPE right after its producer). Ops reading no op output are extra roots.
    """
    readers: dict[int, list[_Op]] = {}
    for op in ops:
        for t in dict.fromkeys(op.inputs):
            readers.setdefault(t, []).append(op)
    # Ops spliced in from a converted layer share the layer's name and are already in the
    # converter's order; visiting the later one first makes this walk reproduce that order.
    pos = {id(op): i for i, op in enumerate(ops) if op.counts is not None}
    for t, rs in readers.items():
        if len(rs) > 1:
            rs.sort(key=lambda o: (o.names[0] if o.names else "", pos.get(id(o), 0)), reverse=True)
    made = {t for op in ops for t in op.outputs}
    roots = [r for t in inputs for r in readers.get(t, ())]
    roots += [op for op in ops if not any(t in made for t in op.inputs)]
    seen: set[int] = set()
    post: list[_Op] = []
    for root in roots:
        if id(root) in seen:
            continue
        seen.add(id(root))
        stack = [(root, iter([r for t in root.outputs for r in readers.get(t, ())]))]
        while stack:
            op, children = stack[-1]
            for child in children:
                if id(child) not in seen:
                    seen.add(id(child))
                    stack.append((child, iter([r for t in child.outputs for r in readers.get(t, ())])))
                    break
            else:
                post.append(op)
                stack.pop()
    post.reverse()
    return post


def _peak_live_bytes(steps: list[tuple[list[int], list[int]]], size: dict[int, int],
                     inputs: Iterable[int], outputs: Iterable[int]) -> int:
    last: dict[int, int] = {}
    for i, (ins, _) in enumerate(steps):
        for t in ins:
            last[t] = i
    for t in outputs:
        last[t] = len(steps)
    live = {t: size.get(t, 0) for t in inputs}
    cur = peak = sum(live.values())
    for i, (ins, outs) in enumerate(steps):
        for t in outs:
            if t not in live:
                live[t] = size.get(t, 0)
                cur += live[t]
        peak = max(peak, cur)
        for t in (*ins, *outs):
            if t in live and last.get(t, -1) <= i:
                cur -= live.pop(t)
    return peak


@dataclass
class _Row:
    # What _finish needs of one final op, from any source.
    name: str
    op_type: str
    inputs: list[int]
    outputs: list[int]
    kernel: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    groups: int = 1
    depthwise: bool = False
    act: str | None = None
    macs: int = 0
    params: int = 0
    param_bytes: int = 0
    dtype: str = "int8"
    reason: str | None = None
    block: str = ""


def _record(cls, fields: dict[str, Any]):
    # Frozen dataclasses assign each field through object.__setattr__, which dominates the cost
    # of an uncached analyze_arch (a predictor scores thousands of new archs); filling __dict__
    # directly gives the identical, still immutable, object several times faster.
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


def _finish(rows: list[_Row], shapes: dict[int, Shape], nbytes: dict[int, int], graph_inputs: list[int],
            graph_outputs: list[int], source: str, *, keras_trainable: int | None = None,
            model_name: str = "", assumed_cpu: Iterable[tuple[str, str, str]] = (),
            converted_layers: Iterable[str] = ()) -> ModelAnalysis:
    producer = {t: i for i, r in enumerate(rows) for t in r.outputs}
    first_cpu = next((i for i, r in enumerate(rows) if r.reason is not None), None)
    ops = []
    for i, r in enumerate(rows):
        outs = r.outputs
        ops.append(_record(OpInfo, {
            "index": i, "name": r.name, "op_type": r.op_type, "input_shapes": tuple([shapes[t] for t in r.inputs]),
            "output_shape": shapes[outs[0]] if outs else (), "kernel": r.kernel, "stride": r.stride,
            "groups": r.groups, "depthwise": r.depthwise, "fused_activation": r.act, "macs": r.macs,
            "param_bytes": r.param_bytes,
            "activation_bytes": nbytes[outs[0]] if len(outs) == 1 else sum([nbytes[t] for t in outs]),
            "dtype": r.dtype, "edgetpu_supported": r.reason is None, "reason": r.reason, "block": r.block,
            "device": "cpu" if first_cpu is not None and i >= first_cpu else "tpu", "params": r.params,
            "input_ops": tuple([producer.get(t, -1) for t in r.inputs])}))
    on_tpu = len(ops) if first_cpu is None else first_cpu
    peak = _peak_live_bytes([(r.inputs, r.outputs) for r in rows], nbytes, graph_inputs, graph_outputs)
    return ModelAnalysis(
        ops=tuple(ops), source=source,
        input_shape=shapes[graph_inputs[0]] if graph_inputs else (),
        total_macs=sum(o.macs for o in ops), total_params=sum(o.params for o in ops),
        total_param_bytes=sum(o.param_bytes for o in ops), peak_activation_bytes=peak,
        first_cpu_op=first_cpu, ops_on_tpu=on_tpu, ops_on_cpu=len(ops) - on_tpu,
        unsupported=tuple((o.index, o.op_type, o.reason) for o in ops if not o.edgetpu_supported),
        keras_trainable_params=keras_trainable, model_name=model_name,
        assumed_cpu=tuple(dict.fromkeys(tuple(u) for u in assumed_cpu)),
        converted_layers=tuple(dict.fromkeys(converted_layers)))


def _finish_graph(g: _Graph, ops: list[_Op], source: str, *, plain: bool = False, **kw: Any) -> ModelAnalysis:
    """ModelAnalysis of lowered ops; ``plain``: every tensor is static, int8, at most 4-D, batch 1
    (true of archs by construction), so only the op type can make an op unsupported."""
    rows = []
    for op in ops:
        if op.reason:
            reason = op.reason
        elif plain and op.op_type != "SOFTMAX":
            reason = _type_reason(op.op_type)
        else:
            ts = (*op.inputs, *op.outputs)
            reason = edgetpu_reason(op.op_type, [g.shapes[t] for t in ts], [g.dtypes[t] for t in ts])
        rows.append(_Row(
            name="+".join(op.names), op_type=op.op_type, inputs=op.inputs, outputs=op.outputs, kernel=op.kernel,
            stride=op.stride, groups=op.groups, depthwise=op.depthwise, act=op.act, macs=op.macs,
            params=op.counts[0] if op.counts else op.weights + op.bias,
            param_bytes=op.counts[1] if op.counts else op.weights + 4 * op.bias,
            dtype=g.dtypes[op.outputs[0]], reason=reason, block=op.block))
    nbytes = {t: _numel(s) * _ITEMSIZE.get(g.dtypes[t], 1) for t, s in enumerate(g.shapes)}
    return _finish(rows, dict(enumerate(g.shapes)), nbytes, g.inputs, g.outputs, source, **kw)


# ------------------------------------------------------------------------------ raw op builders
# Shared by the arch and Keras sources: one function per Keras-level operation.


def _conv(g: _Graph, names, x: int, out: Shape, block: str, kernel, stride, *, groups: int = 1,
          padding: str = "same") -> int:
    # TFLite's CONV_2D always has a bias (from BN folding, or zeros), so it is always counted.
    cin, cout = g.shapes[x][-1], out[-1]
    w = kernel[0] * kernel[1] * (cin // max(groups, 1)) * cout
    return g.add("CONV_2D", list(names), [x], out, block, kernel=tuple(kernel), stride=tuple(stride), groups=groups,
                 weights=w, bias=cout, macs=_numel(out[:-1]) * w, padding=padding)


def _dwconv(g: _Graph, names, x: int, out: Shape, block: str, kernel, stride, *, padding: str = "same") -> int:
    cin, cout = g.shapes[x][-1], out[-1]
    w = kernel[0] * kernel[1] * cout
    return g.add("DEPTHWISE_CONV_2D", list(names), [x], out, block, kernel=tuple(kernel), stride=tuple(stride),
                 groups=cin, depthwise=True, weights=w, bias=cout, macs=_numel(out[:-1]) * w, padding=padding)


def _dense(g: _Graph, names, x: int, out: Shape, block: str, *, bias: bool = True) -> int:
    cin, cout = g.shapes[x][-1], out[-1]
    return g.add("FULLY_CONNECTED", list(names), [x], out, block, weights=cin * cout, bias=cout if bias else 0,
                 macs=_numel(out[:-1]) * cin * cout)


def _bn(g: _Graph, names, x: int, block: str, *, scaled: bool = True, offset: bool = True) -> int:
    c = g.shapes[x][-1]
    return g.add("BN", list(names), [x], g.shapes[x], block, bn=(c, scaled, offset))


_ACTIVATION_ALIASES = {"swish": "silu", "hard_swish": "hard_silu", None: "linear"}
_SIMPLE_ACTIVATIONS = {"relu": "RELU", "relu6": "RELU6", "sigmoid": "LOGISTIC", "hard_silu": "HARD_SWISH",
                       "tanh": "TANH", "softmax": "SOFTMAX", "gelu": "GELU", "elu": "ELU",
                       "leaky_relu": "LEAKY_RELU", "exponential": "EXP", "log_softmax": "LOG_SOFTMAX"}


def _activation(g: _Graph, act: str | None, x: int, names, block: str) -> int:
    """The ops of an activation function (plan/Keras name); returns the output tensor."""
    act = _ACTIVATION_ALIASES.get(act, act)
    shape = g.shapes[x]
    if act == "linear":
        return x
    if act in _SIMPLE_ACTIVATIONS:
        return g.add(_SIMPLE_ACTIVATIONS[act], list(names), [x], shape, block)
    if act == "silu":  # x * sigmoid(x): TF 2.21 emits two ops, no fused swish
        s = g.add("LOGISTIC", list(names), [x], shape, block)
        return g.add("MUL", list(names), [x, s], shape, block)
    if act == "hard_sigmoid":  # Keras 3: relu6(x + 3) / 6 -> ADD (fused RELU6) + MUL; after a conv
        # the +3 folds into its bias and RELU6 fuses into it (_lower): CONV_2D/RELU6 + MUL.
        a = g.add("ADD", list(names), [x], shape, block, weights=1)
        r = g.add("RELU6", list(names), [a], shape, block)
        return g.add("MUL", list(names), [r], shape, block, weights=1)
    return g.add("UNKNOWN", list(names), [x], shape, block,
                 reason=f"activation {act!r} has no known TFLite lowering")


_BLOCK = re.compile(r"^(stem|head|block\d+[a-z]+)(?:_|$)")


def _block_of(name: str) -> str:
    """Our builder's block of a layer name ("block3b_dwconv" -> "block3b"; "predictions" -> "head")."""
    m = _BLOCK.match(name)
    if m:
        return m.group(1)
    return "head" if name == "predictions" else ""


# ------------------------------------------------------------------------------ arch source


def analyze_arch(arch, input_shape=None, num_classes: int | None = None) -> ModelAnalysis:
    """Analyse an :class:`~search_spaces.Arch` (or arch string) from its layer plan only.

    No TensorFlow or Keras is imported; results are cached per ``(arch, input_shape,
    num_classes)``. Biases are assumed non-zero (a trained model), so the classifier keeps its
    bias, which the converter drops only for an untrained, all-zero one.
    """
    from search_spaces.arch import Arch, parse_arch
    from search_spaces.plan import resolve_io

    if isinstance(arch, str):
        arch = parse_arch(arch)
    if not isinstance(arch, Arch):
        raise ValueError(f"analyze_arch: expected an Arch or arch string, got {type(arch).__name__}")
    shape, classes = resolve_io(arch, input_shape, num_classes)
    return _analyze_arch(arch, shape, classes)


@lru_cache(maxsize=4096)
def _analyze_arch(arch, input_shape: Shape, classes: int) -> ModelAnalysis:
    from search_spaces.plan import count_params

    g, ops = _arch_graph(arch, input_shape, classes)
    return _finish_graph(g, ops, "arch", plain=True, keras_trainable=count_params(arch, input_shape, classes),
                         model_name=arch.to_string())


def layers_block_columns(layers, block: str) -> dict[str, list]:
    """The ops of one block of a layer plan as plain columns, lowered exactly as
    :func:`analyze_arch` lowers them but without building the :class:`OpInfo` records.

    A batched predictor meets thousands of new blocks (``latency_models.fast``); it needs only
    these numbers of each op: ``op_type``, ``macs``, ``cout`` (output channels), ``param_bytes``,
    ``moved`` (output bytes + input elements, as :class:`OpInfo` gives them), ``window``
    (kernel area x output elements, for pools) and ``supported`` (by the Edge TPU).
    """
    g, ops = _graph_of(layers)
    cols: dict[str, list] = {k: [] for k in ("op_type", "macs", "cout", "param_bytes", "moved", "window", "supported")}
    for op in ops:
        if op.block != block:
            continue
        out = g.shapes[op.outputs[0]]
        cols["op_type"].append(op.op_type)
        cols["macs"].append(op.macs)
        cols["cout"].append(out[-1] if out else 1)
        cols["param_bytes"].append(op.counts[1] if op.counts else op.weights + 4 * op.bias)
        cols["moved"].append(sum(_numel(g.shapes[t]) * _ITEMSIZE.get(g.dtypes[t], 1) for t in op.outputs)
                             + sum(math.prod(g.shapes[t]) for t in op.inputs))
        cols["window"].append(op.kernel[0] * op.kernel[1] * math.prod(out) if op.kernel else 0)
        reason = op.reason or (_type_reason(op.op_type) if op.op_type != "SOFTMAX" else edgetpu_reason(
            op.op_type, [g.shapes[t] for t in (*op.inputs, *op.outputs)]))
        cols["supported"].append(reason is None)
    return cols


def _arch_graph(arch, input_shape: Shape, classes: int) -> tuple[_Graph, list[_Op]]:
    from search_spaces.plan import plan

    return _graph_of(plan(arch, input_shape, classes))


def _graph_of(layers) -> tuple[_Graph, list[_Op]]:
    """The lowered ops of a layer plan (and the graph holding their tensors)."""
    g = _Graph()
    t: dict[str, int] = {}
    for ly in layers:
        out = (1, *ly.output_shape)
        x = t[ly.inputs[0]] if ly.inputs else -1
        names = [ly.name]
        if ly.op == "input":
            y = g.tensor(out)
            g.inputs.append(y)
        elif ly.op == "conv2d":
            y = _conv(g, names, x, out, ly.block, (ly.kernel, ly.kernel), (ly.stride, ly.stride))
            y = _activation(g, ly.activation, y, names, ly.block)
        elif ly.op == "depthwise_conv2d":
            y = _dwconv(g, names, x, out, ly.block, (ly.kernel, ly.kernel), (ly.stride, ly.stride))
        elif ly.op == "batch_norm":
            y = _bn(g, names, x, ly.block)
        elif ly.op == "activation":
            y = _activation(g, ly.activation, x, names, ly.block)
        elif ly.op == "global_pool":
            y = g.add("MEAN", names, [x], out, ly.block)
        elif ly.op == "dense":
            y = _dense(g, names, x, out, ly.block)
            y = _activation(g, ly.activation, y, names, ly.block)
        elif ly.op == "add":
            y = g.add("ADD", names, [t[i] for i in ly.inputs], out, ly.block)
        elif ly.op == "multiply":
            y = g.add("MUL", names, [t[i] for i in ly.inputs], out, ly.block)
        elif ly.op == "dropout":
            y = x
        else:  # the plan's op vocabulary is closed; a new op must be taught here
            raise RuntimeError(f"analysis has no rule for plan op {ly.op!r}")
        t[ly.name] = y
    g.outputs.append(y)
    return g, _lower(g)


# ------------------------------------------------------------------------------ Keras source


def analyze_keras(model, *, dynamic_batch: bool = False) -> ModelAnalysis:
    """Analyse a Keras 3 model: functional or (built) Sequential, nested models included, or a
    subclassed model whose input shape is known.

    Layers without a rule (Lambda, custom layers) are lowered by the TFLite converter itself:
    the layer alone is converted to int8 (batch-1 inputs, random calibration, cached per layer
    class, config, input shapes and weights) and its ops, named after the layer and keeping
    their Edge TPU verdicts, are spliced into the table (listed in ``converted_layers``). Only
    when that fails does the layer become an ``UNKNOWN`` op marked unsupported -- the Edge TPU
    partition ends there -- listed with the reason in ``assumed_cpu``; the walk goes on. Bias
    and BN values are read to mirror the converter exactly (it drops all-zero
    FULLY_CONNECTED/TRANSPOSE_CONV biases and zero BN offsets).

    A subclassed model has no static graph to walk: when it has been built with a known input
    shape (called once, or ``model.build(shape)``) it is converted whole and the ``.tflite`` is
    analysed (``source`` stays "keras", ``converted_layers`` is its name); a conversion failure
    raises :class:`~latency_models.convert.ConversionError`. Without a known input shape, or
    for an unbuilt Sequential model, this raises a one-line ``ValueError`` saying how to fix it.

    ``dynamic_batch=False`` describes the model as :func:`latency_models.convert.to_int8_tflite`
    converts it (batch fixed to 1). ``True`` describes TensorFlow's own
    ``TFLiteConverter.from_keras_model`` on a model whose batch size is None: Keras 3's
    Flatten, Reshape and nearest UpSampling2D then keep run-time shape arithmetic (SHAPE,
    STRIDED_SLICE, PACK/CONCATENATION on int32), which the Edge TPU cannot run.
    """
    import keras

    if not isinstance(model, keras.Model):
        raise ValueError(f"analyze_keras: expected a keras.Model, got {type(model).__name__}")
    graph = _functional(model, keras)
    if graph is None:
        return _analyze_converted_model(keras, model)
    trainable = _trainable(model)
    w = _KerasWalker(keras, dynamic_batch)
    for kt in graph.inputs:
        tid = w.g.tensor(_kshape(kt))
        w.g.inputs.append(tid)
        w.ids[id(kt)] = tid
    w.walk(graph)
    w.g.outputs.extend(w.ids[id(kt)] for kt in graph.outputs)
    ops = _tflite_order(_lower(w.g), w.g.inputs)
    return _finish_graph(w.g, ops, "keras", keras_trainable=trainable, model_name=model.name,
                         assumed_cpu=w.assumed_cpu, converted_layers=w.converted)


def _trainable(model) -> int:
    return int(sum(math.prod(v.shape) for v in model.trainable_weights))


def _built_input_shapes(model) -> list[tuple] | None:
    """The input shapes a subclassed model was built with (None: unknown), batch included.

    Keras 3 records the shapes a layer was built for in ``_build_shapes_dict`` -- on the first
    call and on ``build(shape)`` alike -- keyed by the argument of ``build``; a subclassed model
    exposes neither ``inputs`` nor ``input_shape``.
    """
    shapes = getattr(model, "_build_shapes_dict", None)
    if not shapes or len(shapes) != 1:
        return None
    (shape,) = shapes.values()

    def is_shape(x) -> bool:
        return isinstance(x, (tuple, list)) and all(d is None or isinstance(d, int) for d in x)

    if is_shape(shape):
        return [tuple(shape)]
    if isinstance(shape, (tuple, list)) and shape and all(is_shape(x) for x in shape):
        return [tuple(x) for x in shape]  # a list of inputs, passed as one list argument
    return None


def _analyze_converted_model(keras, model) -> ModelAnalysis:
    """A model without a static graph, converted whole (see :func:`analyze_keras`)."""
    from .convert import ConversionError

    label = f"analyze_keras: model {model.name!r} ({type(model).__name__})"
    shapes = _built_input_shapes(model)
    how = ("call it once on an input (model(x)) or build it with model.build((None, H, W, C)) first"
           if not isinstance(model, keras.Sequential) else
           "give it a keras.Input, call it once on an input or build it with model.build((None, H, W, C))")
    if shapes is None:
        raise ValueError(f"{label} has no static graph and its input shape is unknown: {how}")
    if any(d is None for s in shapes for d in s[1:]):
        raise ValueError(f"{label} has no static graph and was built for input shape(s) "
                         f"{', '.join(map(str, shapes))} with unknown dimensions: {how} of a fixed size")
    inputs = [keras.Input(shape=tuple(s[1:]), batch_size=1, name=f"nas_input_{i}") for i, s in enumerate(shapes)]
    n_nodes = len(model._inbound_nodes)
    try:
        try:
            y = model(inputs[0] if len(shapes) == 1 else inputs)
            wrapper = keras.Model(inputs[0] if len(shapes) == 1 else inputs, y, name=model.name)
        except Exception as e:  # noqa: BLE001 - whatever the model's call raises, the answer is the same
            raise ConversionError(f"{label} has no static graph and cannot be called on a symbolic input of "
                                  f"shape {shapes[0]}: {_short_error(e)}") from e
        try:
            blob = _to_int8_quietly(wrapper, [tuple(s[1:]) for s in shapes])
        except Exception as e:  # noqa: BLE001 - the converter raises many types
            raise ConversionError(f"{label} has no static graph and does not convert to int8 TFLite: "
                                  f"{_short_error(e)}") from e
    finally:
        # The symbolic call above recorded a node on the user's model; leave it as it was.
        del model._inbound_nodes[n_nodes:]
    log.debug("analyze_keras: %s has no static graph; analysed its int8 conversion", model.name)
    # As analyze_tflite, but op names skip the wrapper's scope: they name the model's own layers.
    t = _read_tflite(blob, scope_skip=1)
    # Counted after the call: a model built by build(shape) creates its layers' weights only then.
    return _finish(t.rows, t.shapes, t.nbytes, t.inputs, t.outputs, "keras", keras_trainable=_trainable(model),
                   model_name=model.name, converted_layers=(model.name,))


def _functional(model, keras):
    # A built Sequential wraps a Functional graph; Keras keeps it in `_functional`.
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if hasattr(model, "_nodes_by_depth") and getattr(model, "inputs", None) is not None:
        return model
    return None


def _kshape(kt) -> Shape:
    shape = tuple(kt.shape)
    return tuple(1 if (i == 0 and d is None) else (-1 if d is None else int(d)) for i, d in enumerate(shape))


def _values(keras, var):
    import numpy as np

    return np.asarray(keras.ops.convert_to_numpy(var), dtype=np.float64)


def _act_name(fn) -> str | None:
    if fn is None:
        return None
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return name


class _KerasWalker:
    """Turns the nodes of a Keras graph into raw ops, in the order Keras executes them."""

    IDENTITY = ("InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity")

    def __init__(self, keras, dynamic_batch: bool = False) -> None:
        self.keras = keras
        self.dynamic_batch = dynamic_batch
        self.L = keras.layers
        self.g = _Graph()
        self.ids: dict[int, int] = {}  # id(KerasTensor) -> tensor id
        self.assumed_cpu: list[tuple[str, str, str]] = []  # (layer, class, reason): no lowering at all
        self.converted: list[str] = []  # layers lowered by the TFLite converter

    def walk(self, graph) -> None:
        for node in self._order(graph):
            self._node(node)

    def _order(self, graph) -> list:
        by_depth = getattr(graph, "_nodes_by_depth", None)
        if by_depth:
            # The order Keras traces a functional model in (Function._run_through_graph), which
            # is the creation order of the TF ops the converter later sorts (see _tflite_order).
            return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]
                    if node.operation is not None and not node.is_input]
        # Otherwise an iterative post-order DFS from the outputs, stopping at known tensors.
        order, seen = [], set()
        stack = [(self._producer(kt), False) for kt in reversed(graph.outputs) if id(kt) not in self.ids]
        while stack:
            node, done = stack.pop()
            if node is None or (id(node) in seen and not done):
                continue
            if done:
                order.append(node)
                continue
            seen.add(id(node))
            stack.append((node, True))
            for kt in reversed(node.input_tensors):
                if id(kt) not in self.ids:
                    p = self._producer(kt)
                    if p is not None and id(p) not in seen:
                        stack.append((p, False))
        return order

    @staticmethod
    def _producer(kt):
        hist = getattr(kt, "_keras_history", None)
        if hist is None:
            return None
        op, node_index, _ = hist
        return op._inbound_nodes[node_index]

    def _node(self, node) -> None:
        layer = node.operation
        if any(id(kt) not in self.ids for kt in node.input_tensors):
            log.debug("analyze_keras: skipping %s, its inputs are not computed by this model", layer.name)
            return
        ins = [self.ids[id(kt)] for kt in node.input_tensors]
        outs = list(node.output_tensors)
        if isinstance(layer, self.keras.Model):
            inner = _functional(layer, self.keras)
            if inner is not None and len(inner.inputs) == len(ins):
                # Inline the nested graph, then forget its tensors so a second call of the same
                # (shared) model is walked again rather than aliased to the first call.
                before = set(self.ids)
                for kt, tid in zip(inner.inputs, ins):
                    self.ids[id(kt)] = tid
                self.walk(inner)
                results = [self.ids[id(inner_kt)] for inner_kt in inner.outputs]
                for k in set(self.ids) - before:
                    del self.ids[k]
                for kt, tid in zip(outs, results):
                    self.ids[id(kt)] = tid
                return
        cls = type(layer).__name__
        if cls == "InputLayer" and not ins:
            for kt in outs:  # an input of a nested graph not fed from outside: a new model input
                if id(kt) not in self.ids:
                    self.ids[id(kt)] = self.g.tensor(_kshape(kt))
                    self.g.inputs.append(self.ids[id(kt)])
            return
        if cls in self.IDENTITY and ins:
            for kt in outs:
                self.ids[id(kt)] = ins[0]
            return
        out_shape = _kshape(outs[0]) if outs else ()
        n_ops, n_tensors = len(self.g.ops), len(self.g.shapes)
        try:
            y = self._lower(layer, ins, out_shape, node)
        except _Unknown:
            y = None
        if y is not None and any(op.op_type == "UNKNOWN" for op in self.g.ops[n_ops:]):
            # A stock layer whose activation has no rule: the converter lowers the whole layer.
            del self.g.ops[n_ops:], self.g.shapes[n_tensors:], self.g.dtypes[n_tensors:]
            y = None
        if y is None:
            self._converted(layer, node, ins, outs)
            return
        self.ids[id(outs[0])] = y

    def _converted(self, layer, node, ins: list[int], outs: list) -> None:
        """Lower a layer with no rule by converting it alone; an UNKNOWN op if even that fails."""
        name, cls, block = layer.name, type(layer).__name__, _block_of(layer.name)
        low = _converter_lowering(self.keras, layer, node)
        if isinstance(low, _Lowering):
            g = self.g
            tids = {t: self.ids[id(kt)] for t, kt in zip(low.inputs, _unique_inputs(node)) if t is not None}
            for r in low.rows:
                for t in r.outputs:
                    tids[t] = g.tensor(low.shapes[t], low.dtypes[t])
                # A tensor no op of the layer produces and no input feeds (an op's state) is new here.
                op_ins = [tids[t] if t in tids else tids.setdefault(t, g.tensor(low.shapes[t], low.dtypes[t]))
                          for t in r.inputs]
                op = _Op(r.op_type, [name], op_ins, [tids[t] for t in r.outputs], block, kernel=r.kernel,
                         stride=r.stride, groups=r.groups, depthwise=r.depthwise, macs=r.macs, reason=r.reason,
                         counts=(r.params, r.param_bytes))
                op.act = r.act
                g.ops.append(op)
            for kt, t in zip(outs, low.outputs):
                self.ids[id(kt)] = tids[t]
            self.converted.append(name)
            log.debug("analyze_keras: %s (%s) has no rule; the converter lowered it to %s", name, cls,
                      ", ".join(r.op_type for r in low.rows) or "nothing")
            return
        reason = f"no rule, and converting the layer on its own failed: {low}"
        for kt in outs:
            self.ids[id(kt)] = self.g.add("UNKNOWN", [name], ins, _kshape(kt), block,
                                          reason=f"unknown layer type {cls}: {reason}")
        self.assumed_cpu.append((name, cls, reason))
        log.debug("analyze_keras: %s (%s) has no TFLite lowering (%s); assumed to run on the CPU", name, cls, low)

    def _lower(self, layer, ins: list[int], out: Shape, node) -> int | None:  # noqa: C901 - a dispatch table
        L, g, keras = self.L, self.g, self.keras
        name, block = layer.name, _block_of(layer.name)
        names = [name]
        x = ins[0] if ins else None
        if x is None:
            raise _Unknown
        xs = g.shapes[x]
        if isinstance(layer, L.Conv2D):
            y = _conv(g, names, x, out, block, layer.kernel_size, layer.strides, groups=layer.groups,
                      padding=layer.padding)
            return _activation(g, _act_name(layer.activation), y, names, block)
        if isinstance(layer, L.DepthwiseConv2D):
            y = _dwconv(g, names, x, out, block, layer.kernel_size, layer.strides, padding=layer.padding)
            return _activation(g, _act_name(layer.activation), y, names, block)
        if isinstance(layer, L.SeparableConv2D):
            mid = (*out[:-1], xs[-1] * layer.depth_multiplier)
            y = _dwconv(g, names, x, mid, block, layer.kernel_size, layer.strides, padding=layer.padding)
            y = _conv(g, names, y, out, block, (1, 1), (1, 1))
            return _activation(g, _act_name(layer.activation), y, names, block)
        if isinstance(layer, L.Conv2DTranspose):
            kh, kw = layer.kernel_size
            w = kh * kw * xs[-1] * out[-1]
            has_bias = bool(layer.use_bias and _values(keras, layer.bias).any())
            y = g.add("TRANSPOSE_CONV", names, [x], out, block, kernel=(kh, kw), stride=tuple(layer.strides),
                      weights=w, bias=out[-1] if has_bias else 0, macs=_numel(xs[:-1]) * w)
            return _activation(g, _act_name(layer.activation), y, names, block)
        if isinstance(layer, L.Dense):
            has_bias = bool(layer.use_bias and _values(keras, layer.bias).any())
            y = _dense(g, names, x, out, block, bias=has_bias)
            return _activation(g, _act_name(layer.activation), y, names, block)
        if isinstance(layer, L.BatchNormalization):
            import numpy as np

            var = _values(keras, layer.moving_variance)
            gamma = _values(keras, layer.gamma) if layer.scale else np.ones_like(var)
            beta = _values(keras, layer.beta) if layer.center else np.zeros_like(var)
            scale = gamma / np.sqrt(var + layer.epsilon)
            offset = beta - _values(keras, layer.moving_mean) * scale
            return _bn(g, names, x, block, scaled=not np.allclose(scale, 1.0), offset=bool(offset.any()))
        if isinstance(layer, L.ReLU):
            slope = float(layer.negative_slope or 0.0)
            mx = None if layer.max_value is None else float(layer.max_value)
            if float(layer.threshold or 0.0) != 0.0:
                raise _Unknown
            if slope:
                y = g.add("LEAKY_RELU", names, [x], xs, block)
                return y if mx is None else g.add("MINIMUM", names, [y], xs, block, weights=1)
            if mx == 6.0:
                return g.add("RELU6", names, [x], xs, block)
            y = g.add("RELU", names, [x], xs, block)
            return y if mx is None else g.add("MINIMUM", names, [y], xs, block, weights=1)
        if isinstance(layer, L.Activation):
            return _activation(g, _act_name(layer.activation), x, names, block)
        if isinstance(layer, L.LeakyReLU):
            return g.add("LEAKY_RELU", names, [x], xs, block)
        if isinstance(layer, L.PReLU):
            return g.add("PRELU", names, [x], xs, block, weights=math.prod(layer.alpha.shape))
        if isinstance(layer, L.ELU):
            return g.add("ELU", names, [x], xs, block)
        if isinstance(layer, L.Softmax):
            return g.add("SOFTMAX", names, [x], xs, block)
        if isinstance(layer, L.ZeroPadding2D):
            return g.add("PAD", names, [x], out, block, pads=tuple(tuple(p) for p in layer.padding))
        if isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
            kind = "MAX_POOL_2D" if isinstance(layer, L.MaxPooling2D) else "AVERAGE_POOL_2D"
            return g.add(kind, names, [x], out, block, kernel=tuple(layer.pool_size), stride=tuple(layer.strides),
                         padding=layer.padding)
        if isinstance(layer, (L.GlobalAveragePooling2D, L.GlobalAveragePooling1D)):
            return g.add("MEAN", names, [x], out, block)
        if isinstance(layer, (L.GlobalMaxPooling2D, L.GlobalMaxPooling1D)):
            return g.add("REDUCE_MAX", names, [x], out, block)
        merge = {L.Add: "ADD", L.Multiply: "MUL", L.Maximum: "MAXIMUM", L.Minimum: "MINIMUM", L.Average: "ADD"}
        for cls, kind in merge.items():
            if isinstance(layer, cls):
                # Keras merges pairwise: n inputs -> n-1 binary ops (Average then divides by n).
                y = ins[0]
                for other in ins[1:]:
                    y = g.add(kind, names, [y, other], out, block)
                return g.add("MUL", names, [y], out, block, weights=1) if cls is L.Average else y
        if isinstance(layer, L.Subtract):
            return g.add("SUB", names, ins, out, block)
        if isinstance(layer, L.Concatenate):
            return g.add("CONCATENATION", names, ins, out, block)
        if isinstance(layer, (L.Flatten, L.Reshape)):
            if self.dynamic_batch and node.input_tensors[0].shape[0] is None:
                # Keras 3 reshapes to (ops.shape(x)[0], ...): with an unknown batch the converter
                # keeps that run-time int32 shape arithmetic, which the Edge TPU cannot run.
                hint = (f"{type(layer).__name__} with an unknown batch size computes its shape at run time "
                        f"(SHAPE on int32); give the model a fixed batch, keras.Input(..., batch_size=1)")
                s = g.add("SHAPE", names, [x], (len(xs),), block, dtype="int32", reason=hint)
                s = g.add("STRIDED_SLICE", names, [s], (1,), block, dtype="int32")
                s = g.add("PACK", names, [s], (len(out),), block, dtype="int32")
                return g.add("RESHAPE", names, [x, s], out, block)
            return g.add("RESHAPE", names, [x], out, block)
        if isinstance(layer, L.Permute):
            return g.add("TRANSPOSE", names, [x], out, block)
        if isinstance(layer, L.Cropping2D):
            return g.add("STRIDED_SLICE", names, [x], out, block)
        if isinstance(layer, L.Rescaling):
            import numpy as np

            scale, offset = np.asarray(layer.scale, dtype=float), np.asarray(layer.offset, dtype=float)
            if not np.allclose(scale, 1.0):
                x = g.add("MUL", names, [x], xs, block, weights=max(scale.size, 1))
            if offset.any():
                x = g.add("ADD", names, [x], xs, block, weights=max(offset.size, 1))
            return x
        if isinstance(layer, L.Normalization):
            c = xs[-1]
            y = g.add("SUB", names, [x], xs, block, weights=c)
            return g.add("MUL", names, [y], xs, block, weights=c)
        if isinstance(layer, L.UpSampling2D):
            if layer.interpolation == "bilinear":
                return g.add("RESIZE_BILINEAR", names, [x], out, block)
            # Keras 3 repeats rows then columns: expand to 5-D, TILE, RESHAPE back, twice. With a
            # static batch the expansion is a RESHAPE (merging with the previous one); with an
            # unknown batch it is EXPAND_DIMS and the target shape is computed at run time.
            (fh, fw), (n, h, w, c) = layer.size, xs
            dynamic_batch = self.dynamic_batch and node.input_tensors[0].shape[0] is None
            y = x
            for tiled, shape, back in (((n, h, 1, w, c), (n, h, fh, w, c), (n, h * fh, w, c)),
                                       ((n, h * fh, w, 1, c), (n, h * fh, w, fw, c), out)):
                src = y
                y = g.add("EXPAND_DIMS" if dynamic_batch else "RESHAPE", names, [src], tiled, block)
                y = g.add("TILE", names, [y], shape, block)
                if dynamic_batch:
                    sh = g.add("SHAPE", names, [src], (4,), block, dtype="int32")
                    sh = g.add("STRIDED_SLICE", names, [sh], (1,), block, dtype="int32")
                    sh = g.add("CONCATENATION", names, [sh], (4,), block, dtype="int32")
                    y = g.add("RESHAPE", names, [y, sh], back, block)
                else:
                    y = g.add("RESHAPE", names, [y], back, block)
            return y
        if isinstance(layer, L.Resizing):
            kind = "RESIZE_NEAREST_NEIGHBOR" if layer.interpolation == "nearest" else "RESIZE_BILINEAR"
            return g.add(kind, names, [x], out, block)
        raise _Unknown


class _Unknown(Exception):
    """A layer the walker has no TFLite rule for."""


# ------------------------------------------------------------------------------ converter lowering
#
# A layer with no rule is converted on its own, in a one-layer model, by the converter the
# deployment uses (latency_models.convert). Its ops are what the converter makes of the layer in
# any model, except for rewrites across its boundary, which _lower still applies after the
# splice (folding into a neighbouring conv, activation fusion).


@dataclass(frozen=True)
class _Lowering:
    """A layer as the converter lowered it alone; cached and shared, so never mutated.

    ``rows`` are the ops without the sub-model's boundary QUANTIZE/DEQUANTIZE, their tensor ids
    already resolved through the dropped ones; ``inputs`` is the .tflite input tensor of each
    of the layer's distinct input tensors (None: unused by the converted graph), ``outputs``
    the tensor holding each layer output (possibly an input tensor: an identity layer).
    """

    rows: tuple[_Row, ...]
    shapes: dict[int, Shape]
    dtypes: dict[int, str]
    inputs: tuple[int | None, ...]
    outputs: tuple[int, ...]


# (layer class, config without the name, input shapes and dtypes, call arguments, weights hash)
# -> _Lowering, or the reason it failed (failures are deterministic too, so they are cached).
_LOWERINGS: "OrderedDict[tuple, _Lowering | str]" = OrderedDict()
_LOWERINGS_MAX = 512


def _unique_inputs(node) -> list:
    # A tensor passed twice (layer([x, x])) is one input of the one-layer model.
    return list({id(kt): kt for kt in node.input_tensors}.values())


def _lowering_key(keras, layer, node) -> tuple | None:
    """What decides the converter's output for a layer call; None when it cannot be told.

    The config (less the name) describes the layer as Keras would rebuild it, the weights'
    values decide what the converter folds away (zero biases, unit scales), and the non-tensor
    call arguments (``training``, a scale passed at call time) can change the graph. A layer
    whose config is unavailable is converted every time rather than risk a wrong cache hit.
    """
    import numpy as np

    try:
        cfg = dict(layer.get_config())
    except Exception:  # noqa: BLE001 - custom layers often do not implement get_config
        return None
    cfg.pop("name", None)
    fn = getattr(layer, "function", None)
    if callable(fn) and getattr(fn, "__closure__", None):
        # A Lambda's config holds its code, not the values its closure captured.
        cfg["__closure__"] = [repr(c.cell_contents) for c in fn.__closure__]
    try:
        config = json.dumps(cfg, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return None
    uniq = _unique_inputs(node)
    index = {id(kt): i for i, kt in enumerate(uniq)}
    args = node.arguments.convert(lambda x: f"<input {index[id(x)]}>" if isinstance(x, keras.KerasTensor) else x)
    h = hashlib.sha256()
    for v in layer.weights:
        a = np.ascontiguousarray(keras.ops.convert_to_numpy(v))
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    cls = type(layer)
    return (f"{cls.__module__}.{cls.__qualname__}", config, tuple((tuple(kt.shape[1:]), str(kt.dtype)) for kt in uniq),
            repr(args), h.hexdigest())


def _converter_lowering(keras, layer, node) -> "_Lowering | str":
    """The layer call of ``node`` as the converter lowers it, or why that is impossible."""
    key = _lowering_key(keras, layer, node)
    if key is not None and key in _LOWERINGS:
        _LOWERINGS.move_to_end(key)
        return _LOWERINGS[key]
    try:
        result: _Lowering | str = _convert_layer(keras, layer, node)
    except _NoLowering as e:
        result = str(e)
    if key is not None:
        _LOWERINGS[key] = result
        while len(_LOWERINGS) > _LOWERINGS_MAX:
            _LOWERINGS.popitem(last=False)
    return result


class _NoLowering(Exception):
    """Why a layer cannot be lowered by the converter (one line)."""


def _short_error(e: BaseException) -> str:
    """The first line of an error, without the MLIR source locations the converter prefixes."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    line = re.sub(r"<unknown>:\d+:\s*", "", line)
    line = re.sub(r"loc\(.*\)\s*:\s*", "", line)
    if not line.startswith(type(e).__name__) and "failed:" not in line:
        line = f"{type(e).__name__}: {line}"
    return line if len(line) <= 300 else line[:297] + "..."


@contextlib.contextmanager
def _quiet_conversion():
    """Keep a helper conversion's chatter out of the user's output.

    TF's SavedModel path (the converter's fall-back, and the route for several inputs) prints
    the exported signature to stdout, which would corrupt a CLI's ``--json``; the warning that
    the frozen path failed and falls back is expected here, and the final outcome is reported
    by the caller, so both go to the debug log. (stdout is process-wide: a concurrent print in
    another thread would be captured too, and logged at debug.)
    """
    from . import convert

    def demote(record: logging.LogRecord) -> bool:
        log.debug("helper conversion: %s", record.getMessage())
        return False

    conv_log = logging.getLogger(convert.__name__)
    conv_log.addFilter(demote)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            yield
    finally:
        conv_log.removeFilter(demote)
        if out.getvalue().strip():
            log.debug("helper conversion printed: %s", out.getvalue().strip()[:2000])


def _to_int8_quietly(model, input_shapes: list[tuple]) -> bytes:
    """``to_int8_tflite`` of a model with one or more float inputs, on random calibration data."""
    import numpy as np

    from .convert import to_int8_tflite

    with _quiet_conversion():
        if len(input_shapes) == 1:
            return to_int8_tflite(model)

        def representative():
            # convert._representative assumes one input; the list follows the model's inputs.
            rng = np.random.default_rng(0)
            yield [rng.random((1, *s), dtype=np.float32) for s in input_shapes]

        # The frozen path traces one input only: go straight to the SavedModel path.
        return to_int8_tflite(model, representative, method="saved_model")


def _convert_layer(keras, layer, node) -> _Lowering:  # noqa: C901 - build, convert, map back
    uniq = _unique_inputs(node)
    if not uniq:
        raise _NoLowering("it has no tensor inputs")
    for kt in uniq:
        if any(d is None for d in tuple(kt.shape)[1:]):
            raise _NoLowering(f"its input shape {tuple(kt.shape)} is not static")
    names = [f"nas_layer_input_{i}" for i in range(len(uniq))]
    inputs = [keras.Input(shape=tuple(kt.shape[1:]), batch_size=1, dtype=kt.dtype, name=n)
              for kt, n in zip(uniq, names)]
    by_id = {id(kt): x for kt, x in zip(uniq, inputs)}
    args, kwargs = node.arguments.convert(lambda x: by_id[id(x)] if isinstance(x, keras.KerasTensor) else x)
    n_nodes = len(layer._inbound_nodes)
    try:
        try:
            outs = keras.tree.flatten(layer(*args, **kwargs))
            sub = keras.Model(inputs[0] if len(inputs) == 1 else inputs, outs[0] if len(outs) == 1 else outs)
        except Exception as e:  # noqa: BLE001 - whatever the layer raises, it cannot be lowered this way
            raise _NoLowering(f"it cannot be called on symbolic batch-1 inputs: {_short_error(e)}") from None
        if len(outs) != len(node.output_tensors):
            raise _NoLowering(f"called alone it returns {len(outs)} tensors, in the model "
                              f"{len(node.output_tensors)}")
        try:
            blob = _to_int8_quietly(sub, [tuple(kt.shape[1:]) for kt in uniq])
        except Exception as e:  # noqa: BLE001 - the converter raises many types
            raise _NoLowering(_short_error(e)) from None
    finally:
        # Calling the layer recorded a node on it; the user's model must not see it.
        del layer._inbound_nodes[n_nodes:]
    t = _read_tflite(blob)

    alias: dict[int, int] = {}

    def resolve(x: int) -> int:
        while x in alias:
            x = alias[x]
        return x

    rows = []
    for r in t.rows:
        r = _Row(**{**r.__dict__, "inputs": [resolve(x) for x in r.inputs], "outputs": list(r.outputs)})
        if r.op_type in ("QUANTIZE", "DEQUANTIZE") and len(r.inputs) == 1 and len(r.outputs) == 1 and \
                (r.inputs[0] in t.inputs or r.outputs[0] in t.outputs):
            # The sub-model's own int8 boundary: inside the real model the tensor stays int8.
            alias[r.outputs[0]] = r.inputs[0]
            continue
        rows.append(r)

    # Inputs: by name (the SavedModel path reorders them; serving_default_<name>:0), else by order.
    tfl_in: list[int | None] = [None] * len(uniq)
    if len(uniq) == 1 and len(t.inputs) == 1:
        tfl_in[0] = t.inputs[0]
    else:
        for x in t.inputs:
            base = re.sub(r"^serving_default_|:\d+$", "", t.names[x])
            if base not in names:
                raise _NoLowering(f"cannot tell which layer input the converted input {t.names[x]!r} is")
            tfl_in[names.index(base)] = x
    for x, kt in zip(tfl_in, uniq):
        if x is not None and t.shapes[x][1:] != tuple(kt.shape[1:]):
            raise _NoLowering(f"the converted input shape {t.shapes[x]} does not match {tuple(kt.shape)}")

    # Outputs: in order when the shapes agree, else matched by (unique) shape.
    want = [_kshape(kt) for kt in outs]
    got = [resolve(x) for x in t.outputs]
    if len(got) != len(want):
        raise _NoLowering(f"the conversion has {len(got)} outputs, the layer {len(want)}")
    if [t.shapes[x] for x in got] != want:
        by_shape: dict[Shape, list[int]] = {}
        for x in got:
            by_shape.setdefault(t.shapes[x], []).append(x)
        if any(len(by_shape.get(w, ())) != 1 for w in want):
            raise _NoLowering(f"cannot match the converted outputs {[t.shapes[x] for x in got]} to the layer's {want}")
        got = [by_shape[w][0] for w in want]
    return _Lowering(rows=tuple(rows), shapes=dict(t.shapes), dtypes=dict(t.dtypes), inputs=tuple(tfl_in),
                     outputs=tuple(got))


# ------------------------------------------------------------------------------ TFLite source


@lru_cache(maxsize=1)
def _schema():
    """The TFLite flatbuffer schema module and its enum name tables.

    LiteRT ships the same generated schema as TensorFlow and imports in a fraction of a second,
    so it is preferred; TensorFlow's copy is the fall-back.
    """
    try:
        from ai_edge_litert import schema_py_generated as s
    except ImportError:  # pragma: no cover - LiteRT is a dependency; TF is the documented fall-back
        from tensorflow.lite.python import schema_py_generated as s

    def names(enum) -> dict[int, str]:
        return {v: k for k, v in vars(enum).items() if not k.startswith("_") and isinstance(v, int)}

    return s, names(s.BuiltinOperator), names(s.TensorType), names(s.BuiltinOptions), \
        names(s.ActivationFunctionType)


_TF_SCOPE_SUFFIX = re.compile(r"_\d+$")


def _layer_names(tensor_name: str, skip: int = 0) -> list[str]:
    """Keras layer names in a converted tensor name, in source order.

    Names look like ``model_1/layer_1/op;model_1/other_1/op``: fused ops join their source
    tensors with ';' (last = first in the source), and TF's name scopes add a ``_N`` suffix to
    the model and layer scopes, removed only when the model scope has one too. ``skip`` drops
    that many outer scopes first (a functional wrapper around a subclassed model).
    """
    out: list[str] = []
    for part in reversed(tensor_name.split(";")):
        comps = part.split("/")[skip:]
        if len(comps) < 2 or not comps[1]:
            continue
        layer = _TF_SCOPE_SUFFIX.sub("", comps[1]) if _TF_SCOPE_SUFFIX.search(comps[0]) else comps[1]
        if layer not in out:
            out.append(layer)
    return out


def analyze_tflite(model: bytes | bytearray | memoryview | str | Path) -> ModelAnalysis:
    """Analyse a ``.tflite`` flatbuffer given as bytes or a file path (the main subgraph).

    Raises ``ValueError`` for anything that is not a readable TFLite model.
    """
    label = ""
    if isinstance(model, (str, Path)):
        p = Path(model)
        if not p.is_file():
            raise ValueError(f"analyze_tflite: file {str(model)!r} does not exist")
        data, label = p.read_bytes(), p.name
    elif isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
    else:
        raise ValueError(f"analyze_tflite: expected .tflite bytes or a path, got {type(model).__name__}")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(f"analyze_tflite: not a TFLite model (expected the flatbuffer identifier b'TFL3' at "
                         f"bytes 4-8, got {data[4:8]!r} in {len(data)} bytes)")
    try:
        return _parse_tflite(data, label)
    except ValueError:
        raise
    except Exception as e:  # flatbuffers raises many types on truncated or corrupt data
        raise ValueError(f"analyze_tflite: corrupt or truncated .tflite ({type(e).__name__}: {e})") from None


def _parse_tflite(data: bytes, label: str = "") -> ModelAnalysis:
    t = _read_tflite(data)
    return _finish(t.rows, t.shapes, t.nbytes, t.inputs, t.outputs, "tflite", model_name=label)


@dataclass
class _TfliteGraph:
    # The main subgraph as final ops over tensor ids (shared by analyze_tflite and the splicing
    # of converter-lowered Keras layers, which needs the tensor ids and names).
    rows: list[_Row]
    shapes: dict[int, Shape]
    dtypes: dict[int, str]
    names: dict[int, str]
    nbytes: dict[int, int]
    inputs: list[int]
    outputs: list[int]


def _read_tflite(data: bytes, scope_skip: int = 0) -> _TfliteGraph:  # noqa: C901 - one pass over the flatbuffer
    s, op_names, type_names, option_names, act_names = _schema()
    m = s.Model.GetRootAs(data, 0)
    # Garbage that happens to carry the identifier can claim absurd vector lengths: every
    # element needs at least 4 bytes, so anything longer than the file is corrupt.
    limit = len(data) // 4
    if not 0 < m.SubgraphsLength() <= limit:
        raise ValueError(f"analyze_tflite: corrupt .tflite ({m.SubgraphsLength()} subgraphs)")
    if m.SubgraphsLength() > 1:
        log.debug("analyze_tflite: %d subgraphs; analysing the main one", m.SubgraphsLength())
    sg = m.Subgraphs(0)
    n_tensors, n_ops, n_buffers = sg.TensorsLength(), sg.OperatorsLength(), m.BuffersLength()
    if max(n_tensors, n_ops, n_buffers, m.OperatorCodesLength()) > limit:
        raise ValueError("analyze_tflite: corrupt .tflite (vector lengths exceed the file size)")

    shapes: dict[int, Shape] = {}
    dtypes: dict[int, str] = {}
    dynamic: dict[int, bool] = {}
    const: dict[int, bool] = {}
    names: dict[int, str] = {}
    for i in range(n_tensors):
        t = sg.Tensors(i)
        shape = tuple(int(t.Shape(j)) for j in range(t.ShapeLength()))
        sig = tuple(int(t.ShapeSignature(j)) for j in range(t.ShapeSignatureLength()))
        shapes[i] = shape
        dtypes[i] = type_names.get(t.Type(), f"type{t.Type()}").lower()
        # The batch dimension may be dynamic (-1): the compiler uses the stored shape (batch 1).
        dynamic[i] = any(d < 0 for d in sig[1:]) or any(d < 0 for d in shape[1:])
        b = t.Buffer()
        buf = m.Buffers(b) if 0 < b < n_buffers else None
        const[i] = buf is not None and (buf.DataLength() > 0 or (buf.Offset() > 1 and buf.Size() > 0))
        names[i] = (t.Name() or b"").decode("utf-8", "replace")
    graph_inputs = [int(sg.Inputs(j)) for j in range(sg.InputsLength())]
    graph_outputs = [int(sg.Outputs(j)) for j in range(sg.OutputsLength())]

    rows: list[_Row] = []
    for k in range(n_ops):
        op = sg.Operators(k)
        oc = m.OperatorCodes(op.OpcodeIndex())
        # Codes >= 127 live only in builtin_code; older files only set the deprecated byte.
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        op_type = op_names.get(code, f"BUILTIN_{code}")
        custom = (oc.CustomCode() or b"").decode("utf-8", "replace") if op_type == "CUSTOM" else ""
        ins = [int(op.Inputs(j)) for j in range(op.InputsLength())]
        outs = [int(op.Outputs(j)) for j in range(op.OutputsLength()) if op.Outputs(j) >= 0]
        acts = [t for t in ins if t >= 0 and not const[t]]
        opts = _options(s, option_names, op)
        row = _Row(name="", op_type=op_type, inputs=acts, outputs=outs, dtype=dtypes[outs[0]] if outs else "")
        layer_names = [n for t in outs for n in _layer_names(names[t], scope_skip)]
        layer_names = list(dict.fromkeys(layer_names))
        row.name = "+".join(layer_names) or custom or (names[outs[0]] if outs else op_type)
        row.block = next((b for b in map(_block_of, layer_names) if b), "")
        act = getattr(opts, "FusedActivationFunction", None)
        if act is not None:
            a = act_names.get(act(), "NONE")
            row.act = None if a == "NONE" else a

        # Parameters: constant inputs, except int32/int64 metadata (shapes, axes, paddings) that
        # is not in a bias slot.
        bias_slot = _BIAS_INPUT.get(op_type)
        for j, t in enumerate(ins):
            if t >= 0 and const[t] and (dtypes[t] not in ("int32", "int64") or j == bias_slot):
                n = _numel(shapes[t])
                row.params += n
                row.param_bytes += n * _ITEMSIZE.get(dtypes[t], 1)

        x_shape = shapes[acts[0]] if acts else ()
        out_shape = shapes[outs[0]] if outs else ()
        if op_type in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV") and opts is not None:
            wi = 1
            w_shape = shapes[ins[wi]] if len(ins) > wi and ins[wi] >= 0 else ()
            if len(w_shape) == 4:
                row.kernel = (w_shape[1], w_shape[2])
            row.stride = (opts.StrideH(), opts.StrideW())
            if op_type == "CONV_2D" and len(w_shape) == 4 and x_shape:
                row.groups = max(x_shape[-1] // max(w_shape[3], 1), 1)
                row.macs = _numel(out_shape) * w_shape[1] * w_shape[2] * w_shape[3]
            elif op_type == "DEPTHWISE_CONV_2D" and len(w_shape) == 4 and x_shape:
                row.groups, row.depthwise = x_shape[-1], True
                row.macs = _numel(out_shape) * w_shape[1] * w_shape[2]
            elif op_type == "TRANSPOSE_CONV" and len(w_shape) == 4:
                row.macs = _numel(x_shape) * w_shape[0] * w_shape[1] * w_shape[2]
        elif op_type == "FULLY_CONNECTED" and len(ins) > 1 and ins[1] >= 0:
            w_shape = shapes[ins[1]]
            if len(w_shape) == 2 and x_shape:
                row.macs = _numel(x_shape) // max(w_shape[1], 1) * w_shape[0] * w_shape[1]
        elif op_type in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D") and opts is not None:
            row.kernel = (opts.FilterHeight(), opts.FilterWidth())
            row.stride = (opts.StrideH(), opts.StrideW())

        io = [*acts, *outs]
        if op_type == "CUSTOM":
            row.reason = (None if custom == EDGETPU_CUSTOM_OP
                          else f"custom op {custom!r} is not supported by the Edge TPU")
        elif op_type == "QUANTIZE" and acts and acts[0] in graph_inputs:
            # The input QUANTIZE of a float-io model: compiler reports list it as mapped to the
            # Edge TPU (only its output is checked), while the final DEQUANTIZE runs on the CPU.
            row.reason = edgetpu_reason(op_type, [shapes[t] for t in io], [dtypes[t] for t in outs],
                                        dynamic=any(dynamic[t] for t in io))
        elif op_type == "DEQUANTIZE" and outs and outs[0] in graph_outputs:
            row.reason = "DEQUANTIZE to a float output runs on the CPU"
        else:
            row.reason = edgetpu_reason(op_type, [shapes[t] for t in io], [dtypes[t] for t in io],
                                        dynamic=any(dynamic[t] for t in io))
        rows.append(row)

    # The converter names the model's output tensor after the serving signature, which loses
    # the layer name; such an op belongs to the block of the op it reads.
    made_by = {t: r for r in rows for t in r.outputs}
    for r in rows:
        if not r.block and r.inputs and r.inputs[0] in made_by:
            r.block = made_by[r.inputs[0]].block
    nbytes = {t: _numel(shapes[t]) * _ITEMSIZE.get(dtypes[t], 1) for t in shapes if not const[t]}
    return _TfliteGraph(rows, shapes, dtypes, names, nbytes, graph_inputs, graph_outputs)


def _options(s, option_names: dict[int, str], op):
    """The op's builtin options table as its generated class (None when absent or unknown)."""
    kind = op.BuiltinOptionsType()
    table = op.BuiltinOptions()
    cls = getattr(s, option_names.get(kind, ""), None) if kind else None
    if table is None or cls is None:
        return None
    obj = cls()
    obj.Init(table.Bytes, table.Pos)
    return obj


__all__ = ["EDGETPU_SUPPORTED_OPS", "ModelAnalysis", "OpInfo", "analyze_arch", "analyze_keras", "layers_block_columns",
           "analyze_tflite", "edgetpu_reason"]
