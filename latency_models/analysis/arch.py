"""The arch front end: :func:`analyze_arch` reads only the layer plan, no TensorFlow or Keras.
See :mod:`latency_models.analysis`.
"""

from __future__ import annotations

import math
from functools import lru_cache

from search_spaces.arch import Arch, parse_arch
from search_spaces.plan import count_params, resolve_io

from latency_models.analysis.ir import _arch_graph, _finish_graph, _graph_of
from latency_models.analysis.records import _ITEMSIZE, ModelAnalysis, Shape, _numel
from latency_models.analysis.rules import _type_reason, edgetpu_reason

# ------------------------------------------------------------------------------ arch source


def analyze_arch(arch, input_shape=None, num_classes: int | None = None) -> ModelAnalysis:
    """Analyse an :class:`~search_spaces.Arch` (or arch string) from its layer plan only.

    No TensorFlow or Keras is imported; results are cached per ``(arch, input_shape,
    num_classes)``. Biases are assumed non-zero (a trained model), so the classifier keeps its
    bias, which the converter drops only for an untrained, all-zero one.
    """
    if isinstance(arch, str):
        arch = parse_arch(arch)
    if not isinstance(arch, Arch):
        raise ValueError(f"analyze_arch: expected an Arch or arch string, got {type(arch).__name__}")
    shape, classes = resolve_io(arch, input_shape, num_classes)
    return _analyze_arch(arch, shape, classes)


@lru_cache(maxsize=4096)
def _analyze_arch(arch, input_shape: Shape, classes: int) -> ModelAnalysis:
    g, ops = _arch_graph(arch, input_shape, classes)
    return _finish_graph(g, ops, "arch", plain=True, keras_trainable=count_params(arch, input_shape, classes),
                         model_name=arch.to_string())


def layers_block_columns(layers, block: str) -> dict[str, list]:
    """The ops of one block of a layer plan as plain columns, lowered exactly as
    :func:`analyze_arch` lowers them but without building the :class:`OpInfo` records.

    A batched predictor meets thousands of new blocks (``latency_models.segments``); it needs only
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
