"""Batched ``edgetpu-model`` predictions: thousands of archs per second, no TF graph.

A search scores many archs that share most of their stages. An arch's op table is the
concatenation of its segments' (stem, each stage, head), and a segment's ops depend only on
the segment and the tensor entering it, so each segment is lowered once
(:func:`latency_models.analysis.analyze_arch` on a one-stage arch, sliced by block name: the
same lowering as the exact path, not a copy of it) and cached. The model itself then runs
vectorised over all ops of the whole batch (segmented sums and a per-arch cumulative sum for
the parameter-cache planner): :func:`latency_models.edgetpu_model.evaluate_ops`, the same
function the exact path uses. ``tests/test_edgetpu_model.py`` checks the two agree.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np

from search_spaces import Arch, Block, Head, Stem
from search_spaces.plan import resolve_io

from .analysis import analyze_arch
from .edgetpu_model import Constants, evaluate_ops, load_constants, ops_arrays

_KEYS = ("kind", "macs", "cout", "param", "moved", "unsupported")


def _slice(arch: Arch, shape, classes: int, prefix: str) -> dict[str, np.ndarray]:
    from .learned import features_of_ops

    ops = [op for op in analyze_arch(arch, shape, classes).ops if op.block.startswith(prefix)]
    return ops_arrays(ops) | {"features": features_of_ops(ops)}


@lru_cache(maxsize=65536)
def _stem(stem: Stem, shape: tuple) -> dict:
    probe = Arch(stem=stem, stages=(Block("conv", stem.filters, kernel=1),), head=Head(0), resolution=max(8, shape[0]))
    return _slice(probe, shape, 1, "stem")


@lru_cache(maxsize=262144)
def _stage(block: Block, shape: tuple) -> dict:
    # A 1x1 stride-1 stem makes the tensor entering the stage exactly `shape`.
    probe = Arch(stem=Stem(shape[2], kernel=1, stride=1), stages=(block,), head=Head(0),
                 resolution=max(8, shape[0]))
    return _slice(probe, (shape[0], shape[1], 3), 1, "block1")


@lru_cache(maxsize=65536)
def _head(head: Head, shape: tuple, classes: int) -> dict:
    probe = Arch(stem=Stem(shape[2], kernel=1, stride=1), stages=(Block("conv", shape[2], kernel=1),), head=head,
                 resolution=max(8, shape[0]))
    return _slice(probe, (shape[0], shape[1], 3), classes, "head")


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


def predict_batch(archs: Sequence[Arch | str], num_classes: int | None = None, *, link: str = "usb3",
                  constants: Constants | None = None) -> dict[str, np.ndarray]:
    """Predicted latency_ms, on_chip_bytes and off_chip_bytes of every arch (arrays)."""
    c = constants or load_constants().constants
    parts: dict[str, list] = {k: [] for k in _KEYS}
    n_ops, io = [], []
    for a in archs:
        a = a if isinstance(a, Arch) else Arch.from_string(a)
        segs, in_b, out_b = arch_segments(a, num_classes)
        for seg in segs:
            for k in _KEYS:
                parts[k].append(seg[k])
        n_ops.append(sum(len(seg["kind"]) for seg in segs))
        io.append(in_b + out_b)
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    r = evaluate_ops(cat, n_ops, np.asarray(io), c, link)
    return {"latency_ms": r["latency_s"] * 1e3, "on_chip_bytes": r["on_chip"].astype(np.int64),
            "off_chip_bytes": r["off_chip"].astype(np.int64)}
