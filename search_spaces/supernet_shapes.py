"""The shape of a supernet, without Keras: which block kinds, kernels, activations and widths
each stage of a :class:`~search_spaces.StagewiseSpace` needs (:class:`~search_spaces.supernet.Supernet`
holds the widest of each). ``stage_shapes`` is also the check, before a one-shot search
loads TensorFlow, that a space is one a supernet can hold."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .arch import Block
from .space import StagewiseSpace

__all__ = ["FUSED", "FUSED_E1", "KIND_NAMES", "MBCONV", "MBCONV_E1", "SUPPORTED_BLOCKS", "StageShape", "block_kind",
           "stage_blocks", "stage_shapes"]

#: Path kinds: one set of weights each (mbconv with and without its expansion share theirs).
MBCONV, MBCONV_E1, FUSED, FUSED_E1 = 0, 1, 2, 3
KIND_NAMES = {MBCONV: "mbconv", MBCONV_E1: "mbconv e1", FUSED: "fused_mbconv", FUSED_E1: "fused_mbconv e1"}
SUPPORTED_BLOCKS = ("mbconv", "fused_mbconv", "conv", "ds")


def block_kind(b: Block) -> int:
    # ``ds`` is the plan's mbconv without expansion, ``conv`` its fused_mbconv e1: same layers.
    if b.type in ("mbconv", "ds"):
        return MBCONV if b.type == "mbconv" and b.expansion != 1 else MBCONV_E1
    return FUSED if b.type == "fused_mbconv" and b.expansion != 1 else FUSED_E1


@dataclass(frozen=True)
class StageShape:
    """What the supernet holds for one stage: the widest of each choice its members make."""

    kinds: tuple[int, ...]          # the block kinds of the stage's choices
    kernels: tuple[int, ...]
    activations: tuple[str, ...]
    stride: int
    skips: tuple[bool, ...]         # residual allowed (True) / not (False), as the choices have it
    layers: int                     # most layers
    cin: int                        # widest input (the previous stage's widest output)
    mid: int                        # widest expansion, over layers and inputs
    squeeze: int                    # widest SE squeeze (0: no SE among the choices)
    out: int                        # widest output


def stage_blocks(space: StagewiseSpace, stage: int) -> list[Block]:
    ds = list(space.stage_decisions(stage))
    return list({space.make_block(stage, {d.name: v for d, v in zip(ds, combo)}): None
                 for combo in itertools.product(*(d.choices for d in ds))})


def stage_shapes(space: StagewiseSpace) -> tuple[StageShape, ...]:
    """The supernet's stages for ``space``; ``ValueError`` for a space it cannot hold."""
    if not isinstance(space, StagewiseSpace):
        raise ValueError(f"supernet: space {space.label} is not stagewise; supported: StagewiseSpace subclasses "
                         f"of {', '.join(SUPPORTED_BLOCKS)} blocks")
    cins = {space.make_stem().filters}
    shapes = []
    for s in range(1, space.num_stages() + 1):
        blocks = stage_blocks(space, s)
        bad = sorted({b.type for b in blocks} - set(SUPPORTED_BLOCKS))
        if bad:
            raise ValueError(f"supernet: stage {s} of space {space.label} has block type {', '.join(bad)}; "
                             f"supported: {', '.join(SUPPORTED_BLOCKS)}")
        for what in ("stride", "expand_from"):
            if len({getattr(b, what) for b in blocks}) > 1:
                raise ValueError(f"supernet: stage {s} of space {space.label} chooses its {what}; "
                                 "the supernet needs it fixed per stage")
        mids, squeezes = [0], [0]
        for b in blocks:
            for ref_in in {b.expand_from or c for c in cins} | {b.filters}:  # first layer | the others
                mids.append(max(1, int(round(ref_in * b.expansion))))
                if b.se_ratio:
                    squeezes.append(max(1, int(ref_in * b.se_ratio)))
        shape = StageShape(
            kinds=tuple(sorted({block_kind(b) for b in blocks})), kernels=tuple(sorted({b.kernel for b in blocks})),
            activations=tuple(sorted({b.activation for b in blocks})), stride=blocks[0].stride,
            skips=tuple(sorted({b.skip for b in blocks})), layers=max(b.repeats for b in blocks), cin=max(cins), mid=max(mids),
            squeeze=max(squeezes), out=max(b.filters for b in blocks))
        if MBCONV_E1 in shape.kinds and max(shape.cin, shape.out) > shape.mid:
            raise ValueError(f"supernet: stage {s} of space {space.label}: an mbconv e1 input wider than its "
                             "widest expansion")
        shapes.append(shape)
        cins = {b.filters for b in blocks}
    return tuple(shapes)
