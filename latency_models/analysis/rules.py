"""The Edge TPU's rules: which ops it runs (Coral's documented model requirements), and why
not when it cannot. See :mod:`latency_models.analysis`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable

from latency_models.analysis.records import Shape, _fmt_shape, _numel


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

_QUANTIZED = frozenset({"int8", "uint8"})
_FLOATS = frozenset({"float32", "float16", "float64", "bfloat16"})


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
