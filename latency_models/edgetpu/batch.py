"""``edgetpu-model`` in batch: tens of thousands of archs per second, no TF graph.

:func:`predict_batch` equals :class:`~latency_models.edgetpu.model_source.EdgeTPUModelSource` on each
arch to rounding. Each block (one layer of a stage at its input shape) is lowered once, by the
exact path's lowering (:class:`latency_models.segments.SegmentCache`), into the per-op arrays of
:func:`~latency_models.edgetpu.model.columns_arrays`; per set of constants each block is then
reduced to a few numbers through :func:`~latency_models.edgetpu.model.op_costs`, the function
the exact path evaluates: its compute time, its time if its parameters are streamed, its
compiled and int8 parameter bytes, its largest input + output, whether it has an op the Edge
TPU cannot run. An arch's latency is sums of those, except where the parameter cache fills
up: there the block holding the cut is evaluated op by op, from prefix sums. Archs with an
unsupported op (a CPU tail) take the exact per-op path.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from search_spaces import Arch

from latency_models.edgetpu.model import Constants, columns_arrays, evaluate_ops, link_bytes_per_s, load_constants, op_costs
from latency_models.segments import SegmentCache, block_columns, head_columns, stem_columns

_KEYS = ("kind", "macs", "cout", "param", "moved", "window", "unsupported")

# The per-op arrays of every stem, block and head met, independent of the constants.
_ARRAYS = SegmentCache(stem=lambda stem, shape: columns_arrays(stem_columns(stem, shape)),
                       block=lambda key: columns_arrays(block_columns(key)),
                       head=lambda head, shape, classes: columns_arrays(head_columns(head, shape, classes)))


class _Segments:
    """Per-segment summaries of :func:`~latency_models.edgetpu.model.op_costs` for one set of
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
    arrays, shape, classes = _ARRAYS.values(a, num_classes)
    return [seg.row(x) for x in arrays], float(math.prod(shape)) + float(classes)


def predict_batch(archs: Sequence[Arch | str], num_classes: int | None = None, *, link: str = "usb3",
                  constants: Constants | None = None) -> dict[str, np.ndarray]:
    """Predicted latency_ms, on_chip_bytes and off_chip_bytes of every arch (arrays), equal to
    :class:`~latency_models.edgetpu.model_source.EdgeTPUModelSource` on each arch to rounding."""
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
