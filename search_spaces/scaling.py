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
