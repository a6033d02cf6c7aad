"""Batched predictions: tens of thousands of archs per second, no TF graph.

A search scores many archs that share most of their parts. An arch's op table is the
concatenation of its segments' (stem, each layer of each stage, head), and a segment's ops
depend only on the segment and the tensor entering it, so each segment is lowered once and
cached, by the exact path's own lowering (not a copy of it):

- ``edgetpu-model`` (:func:`predict_batch`) caches per *block*, one layer of a stage at its
  input shape (:func:`search_spaces.plan.layer_plan`, then
  :func:`latency_models.analysis.layers_block_columns`), and reduces each block to a few sums
  per set of constants through :func:`latency_models.edgetpu_model.op_costs`, the function
  the exact path evaluates; see the section below;
- the learned host predictor (:func:`arch_segments`, used by ``learned.features``) caches per
  stage, with the features of its ops.

``tests/test_edgetpu_model.py`` checks that both batched paths agree with the exact ones.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np

from search_spaces import Arch, Block, Head, Stem
from search_spaces.plan import layer_plan, plan, resolve_io

from .analysis import analyze_arch, layers_block_columns
from .edgetpu_model import (Constants, columns_arrays, evaluate_ops, link_bytes_per_s, load_constants, op_costs,
                            ops_arrays)

_KEYS = ("kind", "macs", "cout", "param", "moved", "window", "unsupported")


def _slice(arch: Arch, shape, classes: int, prefix: str) -> dict[str, np.ndarray]:
    from .learned import features_of_ops

    ops = [op for op in analyze_arch(arch, shape, classes).ops if op.block.startswith(prefix)]
    return ops_arrays(ops) | {"features": features_of_ops(ops)}


def _stem_probe(stem: Stem, shape: tuple) -> Arch:
    """A one-layer arch whose stem is ``stem`` at input ``shape``."""
    return Arch(stem=stem, stages=(Block("conv", stem.filters, kernel=1),), head=Head(0), resolution=max(8, shape[0]))


def _head_probe(head: Head, shape: tuple) -> Arch:
    """A one-layer arch whose head reads a tensor of ``shape`` (a 1x1 stride-1 stem and conv
    keep it so): its input is ``(shape[0], shape[1], 3)``."""
    return Arch(stem=Stem(shape[2], kernel=1, stride=1), stages=(Block("conv", shape[2], kernel=1),), head=head,
                resolution=max(8, shape[0]))


@lru_cache(maxsize=65536)
def _stem(stem: Stem, shape: tuple) -> dict:
    return _slice(_stem_probe(stem, shape), shape, 1, "stem")


@lru_cache(maxsize=262144)
def _stage(block: Block, shape: tuple) -> dict:
    # A 1x1 stride-1 stem makes the tensor entering the stage exactly `shape`.
    probe = Arch(stem=Stem(shape[2], kernel=1, stride=1), stages=(block,), head=Head(0),
                 resolution=max(8, shape[0]))
    return _slice(probe, (shape[0], shape[1], 3), 1, "block1")


@lru_cache(maxsize=65536)
def _head(head: Head, shape: tuple, classes: int) -> dict:
    return _slice(_head_probe(head, shape), (shape[0], shape[1], 3), classes, "head")


def _after(shape: tuple, stride: int, channels: int) -> tuple:
    return (-(-shape[0] // stride), -(-shape[1] // stride), channels)


def arch_segments(arch: Arch, num_classes: int | None = None) -> tuple[list[dict], float, float]:
    """The cached per-segment arrays of one arch, its input bytes and output bytes."""
    shape, classes = resolve_io(arch, None, num_classes)
    segs = [_stem(arch.stem, shape)]
    x = _after(shape, arch.stem.stride, arch.stem.filters)
    for b in arch.stages:
        segs.append(_stage(b, x))
        x = _after(x, b.stride, b.filters)
    segs.append(_head(arch.head, x, classes))
    return segs, float(math.prod(shape)), float(classes)


# ------------------------------------------------------------------------------ edgetpu-model
#
# A search predicts far more archs than it meets distinct blocks: the 5,000-arch benchmark of
# the full efficientnet_edgetpu space holds about 4,900 distinct blocks (stage repeats and
# the repeated layers of a stage share them). So the unit of caching is one block (one layer
# of a stage) at its input shape, lowered by the exact path (analyze_arch on a one-block
# probe, sliced by block name). Per set of constants each block is then reduced to a few
# numbers: its compute time, its time if its parameters are streamed, its compiled and int8
# parameter bytes, its largest input + output, whether it has an op the Edge TPU cannot run.
# An arch's latency is sums of those, except where the parameter cache fills up: there the
# block holding the cut is evaluated op by op, from prefix sums. Archs with an unsupported
# op (a CPU tail) take the exact per-op path.


def _block_key(b: Block, stride: int, ref_in: int, shape: tuple) -> tuple:
    return (b.type, b.filters, b.kernel, b.expansion, b.se_ratio, b.activation, b.skip, stride, ref_in, shape)


@lru_cache(maxsize=262144)
def _block_ops(key: tuple) -> dict[str, np.ndarray]:
    btype, filters, kernel, expansion, se, act, skip, stride, ref_in, shape = key
    block = Block(btype, filters, kernel=kernel, stride=stride, expansion=expansion, repeats=1, se_ratio=se,
                  activation=act, skip=skip, expand_from=ref_in if ref_in != shape[2] else None)
    return columns_arrays(layers_block_columns(layer_plan(block, shape, stride, ref_in), "block1a"))


# The edgetpu-model path lowers stems and heads without op records or features (a batch meets
# hundreds of distinct heads: one per last-stage width).
@lru_cache(maxsize=65536)
def _stem_ops(stem: Stem, shape: tuple) -> dict[str, np.ndarray]:
    return columns_arrays(layers_block_columns(plan(_stem_probe(stem, shape), shape, 1), "stem"))


@lru_cache(maxsize=65536)
def _head_ops(head: Head, shape: tuple, classes: int) -> dict[str, np.ndarray]:
    layers = plan(_head_probe(head, shape), (shape[0], shape[1], 3), classes)
    return columns_arrays(layers_block_columns(layers, "head"))


@lru_cache(maxsize=262144)
def _stage_blocks(b: Block, shape: tuple) -> tuple[tuple, tuple]:
    """The block keys of one stage (first layer, then the repeated one) and its output shape."""
    first = _block_key(b, b.stride, b.expand_from or shape[2], shape)
    out = _after(shape, b.stride, b.filters)
    keys = (first,) if b.repeats == 1 else (first,) + (_block_key(b, 1, b.filters, out),) * (b.repeats - 1)
    return keys, out


class _Segments:
    """Per-segment summaries of :func:`~latency_models.edgetpu_model.op_costs` for one set of
    constants and one link, grown as new segments are met."""

    def __init__(self, c: Constants, link: str):
        self.c, self.link = c, link
        self.index: dict[int, int] = {}  # id(ops arrays) -> row
        self.arrays: list[dict[str, np.ndarray]] = []
        self.rows: list[tuple[float, ...]] = []
        self.table: np.ndarray | None = None

    def row(self, a: dict[str, np.ndarray]) -> int:
        i = self.index.get(id(a))
        if i is None:
            compute, compiled, stream = op_costs(a, self.c, self.link)
            has = a["param"] > 0
            streamed_cost = np.where(has, np.maximum(compute, stream), compute)
            self.rows.append((compute.sum(), streamed_cost.sum(), compiled.sum(), a["param"].sum(),
                              a["moved"].max(initial=0.0), float(a["unsupported"].any()), len(compute)))
            # Holding `a` keeps its id from being reused by another segment while this table lives.
            self.arrays.append(a | {"_a": a, "_compute": compute, "_compiled": compiled, "_scost": streamed_cost})
            i = self.index[id(a)] = len(self.rows) - 1
            self.table = None
        return i

    def columns(self) -> np.ndarray:
        if self.table is None:
            self.table = np.array(self.rows, dtype=float).reshape(-1, 7)
        return self.table


_SEGMENTS: dict[tuple, _Segments] = {}


def _segments_for(c: Constants, link: str) -> _Segments:
    key = (c, link)
    seg = _SEGMENTS.get(key)
    if seg is None:
        if len(_SEGMENTS) > 8:
            _SEGMENTS.clear()
        seg = _SEGMENTS[key] = _Segments(c, link)
    return seg


def _arch_rows(a: Arch, seg: _Segments, num_classes: int | None) -> tuple[list[int], float]:
    shape, classes = resolve_io(a, None, num_classes)
    rows = [seg.row(_stem_ops(a.stem, shape))]
    x = _after(shape, a.stem.stride, a.stem.filters)
    for b in a.stages:
        keys, x = _stage_blocks(b, x)
        rows.extend(seg.row(_block_ops(k)) for k in keys)
    rows.append(seg.row(_head_ops(a.head, x, classes)))
    return rows, float(math.prod(shape)) + float(classes)


def predict_batch(archs: Sequence[Arch | str], num_classes: int | None = None, *, link: str = "usb3",
                  constants: Constants | None = None) -> dict[str, np.ndarray]:
    """Predicted latency_ms, on_chip_bytes and off_chip_bytes of every arch (arrays), equal to
    :class:`~latency_models.edgetpu_model.EdgeTPUModelSource` on each arch to rounding."""
    c = constants or load_constants().constants
    seg = _segments_for(c, link)
    per_arch = []
    io = np.empty(len(archs))
    for i, a in enumerate(archs):
        rows, io[i] = _arch_rows(a if isinstance(a, Arch) else Arch.from_string(a), seg, num_classes)
        per_arch.append(rows)
    n = len(per_arch)
    lengths = np.fromiter((len(r) for r in per_arch), dtype=np.int64, count=n)
    flat = np.fromiter((j for r in per_arch for j in r), dtype=np.int64, count=int(lengths.sum()))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    t = seg.columns()[flat]
    compute, scost, compiled, param, moved, unsupported = (t[:, k] for k in range(6))
    bw = link_bytes_per_s(c, link)
    reserve = np.clip(c.activation_reserve * np.maximum.reduceat(moved, starts), c.min_reserve_bytes,
                      c.max_reserve_bytes)
    capacity = c.sram_bytes - reserve
    total_compiled = np.add.reduceat(compiled, starts)
    latency = np.add.reduceat(compute, starts)
    on_chip = total_compiled.copy()
    off_chip = np.zeros(n)
    cpu = np.add.reduceat(unsupported, starts) > 0
    for i in np.flatnonzero((total_compiled > capacity) & ~cpu):
        latency[i], on_chip[i], off_chip[i] = _with_cut(seg, per_arch[i], capacity[i])
    latency = latency + io / bw + c.inference_overhead_s
    if cpu.any():  # a CPU tail: the exact per-op path
        for i in np.flatnonzero(cpu):
            a = _concat([seg.arrays[j] for j in per_arch[i]])
            r = evaluate_ops(a, [len(a["kind"])], io[i:i + 1], c, link)
            latency[i], on_chip[i], off_chip[i] = r["latency_s"][0], r["on_chip"][0], r["off_chip"][0]
    return {"latency_ms": latency * 1e3, "on_chip_bytes": on_chip.astype(np.int64),
            "off_chip_bytes": off_chip.astype(np.int64)}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in _KEYS}


def _with_cut(seg: _Segments, rows: list[int], capacity: float) -> tuple[float, float, float]:
    """Latency (s, without io), on-chip and off-chip bytes of an arch whose parameters overflow
    the cache: ops up to the cut are cached, every parameter op after it is streamed. Only the
    block holding the cut is looked at op by op; the others are whole sums."""
    t = seg.columns()[rows]
    cum = np.cumsum(t[:, 2])
    k = int(np.searchsorted(cum, capacity, side="right"))  # the first block that does not fit whole
    before = cum[k - 1] if k else 0.0
    p = seg.arrays[rows[k]]
    cached = before + np.cumsum(p["_compiled"]) <= capacity  # as evaluate_ops decides it
    streamed = ~cached & (p["param"] > 0)
    inside = float(np.where(streamed, p["_scost"], p["_compute"]).sum())
    latency = float(t[:k, 0].sum()) + inside + float(t[k + 1:, 1].sum())
    on_chip = before + float(p["_compiled"][cached].sum())
    off_chip = float(p["param"][streamed].sum()) + float(t[k + 1:, 3].sum())
    return latency, on_chip, off_chip
