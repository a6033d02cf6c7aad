"""Compound scaling of widths and depths, as the MnasNet/EfficientNet reference code does it."""

from __future__ import annotations

import math


def round_filters(filters: float, width: float = 1.0, divisor: int = 8) -> int:
    """``filters * width`` rounded to a multiple of ``divisor``, never below 90% of it.

    This is tensorflow/tpu's ``round_filters`` (and Keras's ``_make_divisible``), so scaled
    references get exactly the published channel counts.

    >>> round_filters(32, 1.2), round_filters(1280, 1.2), round_filters(16, 0.75)
    (40, 1536, 16)
    """
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float = 1.0) -> int:
    """``ceil(depth * repeats)``, EfficientNet's depth scaling."""
    return int(math.ceil(depth * repeats))


def scale(arch, width: float = 1.0, depth: float = 1.0, resolution: int | None = None, divisor: int = 8):
    """Compound-scale an arch: every channel count by ``width`` (rounded as above), every
    stage's repeats by ``depth`` (ceil), and optionally a new input resolution.

    Scaling EfficientNet-EdgeTPU-S by (1.2, 1.4, 300 px) gives exactly EfficientNet-EdgeTPU-L
    (but for its dropout), which is how proxy-scale references are made.
    """
    from dataclasses import replace

    for what, v in (("width", width), ("depth", depth)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.05 <= v <= 8:
            raise ValueError(f"{what}: expected a number in [0.05, 8], got {v!r}")
    if width == 1 and depth == 1:
        stages = arch.stages
    else:
        stages = tuple(replace(
            b, filters=round_filters(b.filters, width, divisor), repeats=round_repeats(b.repeats, depth),
            expand_from=None if b.expand_from is None else round_filters(b.expand_from, width, divisor))
            for b in arch.stages)
    stem = replace(arch.stem, filters=round_filters(arch.stem.filters, width, divisor)) if width != 1 else arch.stem
    head = arch.head
    if width != 1 and head.filters:
        head = replace(head, filters=round_filters(head.filters, width, divisor))
    return replace(arch, stem=stem, stages=stages, head=head,
                   resolution=arch.resolution if resolution is None else resolution)
