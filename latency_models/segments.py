"""Segment caches: a predictor's value of every part of an arch, each part lowered once.

A search scores many archs that share most of their parts. An arch's op table is the
concatenation of its segments' (stem, each stage or each layer of each stage, head), and a
segment's ops depend only on the segment and the tensor entering it, so a predictor's value of
a segment is computed once and cached. This module knows no predictor: each one builds a
:class:`SegmentCache` from its own per-segment evaluators, which read the segment's ops as the
exact path lowers them (not a copy of it):

- as :class:`~latency_models.analysis.OpInfo` records (:func:`stem_ops`, :func:`stage_ops`,
  :func:`head_ops`): :func:`~latency_models.analysis.analyze_arch` of a one-segment probe
  arch, sliced by block name; the learned host predictor caches its features so, per stage
  (:func:`latency_models.learned.features`);
- as plain columns, without building records (:func:`stem_columns`, :func:`block_columns`,
  :func:`head_columns`: :func:`~latency_models.analysis.layers_block_columns`); ``edgetpu-model``
  caches its per-op arrays so, per block, one layer of a stage at its input shape
  (:func:`latency_models.edgetpu.batch.predict_batch`).

``tests/test_edgetpu_model.py`` checks that both batched paths agree with the exact ones.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

from search_spaces import Arch, Block, Head, Stem
from search_spaces.plan import layer_plan, plan, resolve_io

from latency_models.analysis import OpInfo, analyze_arch, layers_block_columns

Shape = tuple[int, int, int]


def _stem_probe(stem: Stem, shape: tuple) -> Arch:
    """A one-layer arch whose stem is ``stem`` at input ``shape``."""
    return Arch(stem=stem, stages=(Block("conv", stem.filters, kernel=1),), head=Head(0), resolution=max(8, shape[0]))


def _head_probe(head: Head, shape: tuple) -> Arch:
    """A one-layer arch whose head reads a tensor of ``shape`` (a 1x1 stride-1 stem and conv
    keep it so): its input is ``(shape[0], shape[1], 3)``."""
    return Arch(stem=Stem(shape[2], kernel=1, stride=1), stages=(Block("conv", shape[2], kernel=1),), head=head,
                resolution=max(8, shape[0]))


def _after(shape: tuple, stride: int, channels: int) -> tuple:
    return (-(-shape[0] // stride), -(-shape[1] // stride), channels)


# ------------------------------------------------------------------------------ op records


def _slice(arch: Arch, shape, classes: int, prefix: str) -> list[OpInfo]:
    return [op for op in analyze_arch(arch, shape, classes).ops if op.block.startswith(prefix)]


def stem_ops(stem: Stem, shape: tuple) -> list[OpInfo]:
    """The ops of ``stem`` at input ``shape``."""
    return _slice(_stem_probe(stem, shape), shape, 1, "stem")


def stage_ops(block: Block, shape: tuple) -> list[OpInfo]:
    """The ops of one stage (every repeat of ``block``) entered by a tensor of ``shape``."""
    # A 1x1 stride-1 stem makes the tensor entering the stage exactly `shape`.
    probe = Arch(stem=Stem(shape[2], kernel=1, stride=1), stages=(block,), head=Head(0),
                 resolution=max(8, shape[0]))
    return _slice(probe, (shape[0], shape[1], 3), 1, "block1")


def head_ops(head: Head, shape: tuple, classes: int) -> list[OpInfo]:
    """The ops of ``head`` reading a tensor of ``shape``, with ``classes`` outputs."""
    return _slice(_head_probe(head, shape), (shape[0], shape[1], 3), classes, "head")


# ------------------------------------------------------------------------------ plain columns
#
# A search predicts far more archs than it meets distinct blocks: the 5,000-arch benchmark of
# the full efficientnet_edgetpu space holds about 4,900 distinct blocks (stage repeats and
# the repeated layers of a stage share them). So the finest unit of caching is one block (one
# layer of a stage) at its input shape, lowered by the exact path's own lowering of the layer
# plan (layers_block_columns), sliced by block name. Stems and heads are lowered the same lean
# way, without op records or features: a batch meets hundreds of distinct heads (one per
# last-stage width).


def block_key(b: Block, stride: int, ref_in: int, shape: tuple) -> tuple:
    """What decides one layer of a stage: the block, its stride, the channels its expansion
    refers to and its input shape (read back by :func:`block_columns`)."""
    return (b.type, b.filters, b.kernel, b.expansion, b.se_ratio, b.activation, b.skip, stride, ref_in, shape)


@lru_cache(maxsize=262144)
def stage_blocks(b: Block, shape: tuple) -> tuple[tuple, tuple]:
    """The block keys of one stage (first layer, then the repeated one) and its output shape."""
    first = block_key(b, b.stride, b.expand_from or shape[2], shape)
    out = _after(shape, b.stride, b.filters)
    keys = (first,) if b.repeats == 1 else (first,) + (block_key(b, 1, b.filters, out),) * (b.repeats - 1)
    return keys, out


def block_columns(key: tuple) -> dict[str, list]:
    """The ops of the one layer of a stage that ``key`` (:func:`block_key`) describes."""
    btype, filters, kernel, expansion, se, act, skip, stride, ref_in, shape = key
    block = Block(btype, filters, kernel=kernel, stride=stride, expansion=expansion, repeats=1, se_ratio=se,
                  activation=act, skip=skip, expand_from=ref_in if ref_in != shape[2] else None)
    return layers_block_columns(layer_plan(block, shape, stride, ref_in), "block1a")


def stem_columns(stem: Stem, shape: tuple) -> dict[str, list]:
    """The ops of ``stem`` at input ``shape``."""
    return layers_block_columns(plan(_stem_probe(stem, shape), shape, 1), "stem")


def head_columns(head: Head, shape: tuple, classes: int) -> dict[str, list]:
    """The ops of ``head`` reading a tensor of ``shape``, with ``classes`` outputs."""
    return layers_block_columns(plan(_head_probe(head, shape), (shape[0], shape[1], 3), classes), "head")


# ------------------------------------------------------------------------------ the cache


class SegmentCache:
    """One predictor's values of the segments of archs, each computed once.

    ``stem(stem, shape)`` and ``head(head, shape, classes)`` are the predictor's evaluators of
    a stem and a head at the shape of the tensor entering them. Give ``block(key)`` to cut each
    stage into its layers (``key`` from :func:`stage_blocks`, see :func:`block_columns`), or
    ``stage(block, shape)`` to keep each stage whole. Values are cached by those arguments
    (least recently used dropped first); :meth:`values` lists an arch's in execution order.
    """

    def __init__(self, *, stem: Callable[..., Any], head: Callable[..., Any], block: Callable[[tuple], Any] | None = None,
                 stage: Callable[[Block, tuple], Any] | None = None):
        if (block is None) == (stage is None):
            raise ValueError("SegmentCache: give one of block (per layer) or stage (per stage)")
        self.stem = lru_cache(maxsize=65536)(stem)
        self.head = lru_cache(maxsize=65536)(head)
        self.block = None if block is None else lru_cache(maxsize=262144)(block)
        self.stage = None if stage is None else lru_cache(maxsize=262144)(stage)

    def values(self, arch: Arch, num_classes: int | None = None) -> tuple[list, Shape, int]:
        """The values of ``arch``'s segments (stem, stages or their layers, head), its input
        shape and its number of classes."""
        shape, classes = resolve_io(arch, None, num_classes)
        out = [self.stem(arch.stem, shape)]
        x = _after(shape, arch.stem.stride, arch.stem.filters)
        block = self.block
        if block is not None:
            for b in arch.stages:
                keys, x = stage_blocks(b, x)
                out.extend(map(block, keys))
        else:
            for b in arch.stages:
                out.append(self.stage(b, x))
                x = _after(x, b.stride, b.filters)
        out.append(self.head(arch.head, x, classes))
        return out, shape, classes
