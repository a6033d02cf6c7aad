"""Compound scaling of widths and depths, as the MnasNet/EfficientNet reference code does it."""

from __future__ import annotations

import math

from .space import StagewiseSpace


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
    stages = tuple(scale_block(b, width, depth, divisor) for b in arch.stages)
    return replace(arch, stem=scale_stem(arch.stem, width, divisor), stages=stages,
                   head=scale_head(arch.head, width, divisor),
                   resolution=arch.resolution if resolution is None else resolution)


def scale_block(b, width: float = 1.0, depth: float = 1.0, divisor: int = 8):
    """One stage of :func:`scale`: its channels by ``width``, its repeats by ``depth``."""
    from dataclasses import replace

    if width == 1 and depth == 1:
        return b
    return replace(b, filters=round_filters(b.filters, width, divisor), repeats=round_repeats(b.repeats, depth),
                   expand_from=None if b.expand_from is None else round_filters(b.expand_from, width, divisor))


def scale_stem(stem, width: float = 1.0, divisor: int = 8):
    from dataclasses import replace

    return replace(stem, filters=round_filters(stem.filters, width, divisor)) if width != 1 else stem


def scale_head(head, width: float = 1.0, divisor: int = 8):
    from dataclasses import replace

    return replace(head, filters=round_filters(head.filters, width, divisor)) if width != 1 and head.filters else head


class ScaledSpace(StagewiseSpace):
    """The members of a stagewise ``base`` space compound-scaled (:func:`scale`).

    Same decisions as ``base``: choice vector ``c`` decodes to ``scale(base.decode(c), ...)``,
    the proxy a search trains for the deployment arch ``base.decode(c)``. So a supernet of
    the proxies is ``Supernet(ScaledSpace(base, width, depth, resolution))``. Several deployment
    archs may share a proxy (rounded repeats), which is why the controller's decisions, not
    the proxy arch, identify a candidate.

    >>> import search_spaces as s
    >>> base = s.get("efficientnet_edgetpu_bench", resolution=128, width=1.0, depth=1.0)
    >>> proxies = s.scaling.ScaledSpace(base, width=0.25, depth=0.5, resolution=32)
    >>> c = base.sample_choices(0)
    >>> proxies.decode(c) == s.scaling.scale(base.decode(c), 0.25, 0.5, 32)
    True
    """

    name = "scaled"

    def __init__(self, base: StagewiseSpace, width: float = 1.0, depth: float = 1.0, resolution: int | None = None,
                 divisor: int = 8):
        if not isinstance(base, StagewiseSpace):
            raise ValueError(f"scaled space: base {getattr(base, 'label', base)!r} is not a StagewiseSpace")
        scale(base.decode_indices([0] * len(base.decision_list)), width, depth, resolution, divisor)  # validates
        self.base, self.width, self.depth, self.divisor = base, width, depth, divisor
        self.resolution = base.resolution if resolution is None else resolution
        self.num_classes = base.num_classes

    @property
    def label(self) -> str:
        return f"{self.base.label} scaled (width {self.width:g}, depth {self.depth:g}, {self.resolution} px)"

    def config(self) -> dict:
        return {"base": self.base.label, "base_config": self.base.config(), "width": self.width,
                "depth": self.depth, "resolution": self.resolution, "divisor": self.divisor}

    def num_stages(self) -> int:
        return self.base.num_stages()

    def stage_decisions(self, stage: int):
        return self.base.stage_decisions(stage)

    def make_block(self, stage: int, choices):
        return scale_block(self.base.make_block(stage, choices), self.width, self.depth, self.divisor)

    def make_stem(self):
        return scale_stem(self.base.make_stem(), self.width, self.divisor)

    def make_head(self):
        return scale_head(self.base.make_head(), self.width, self.divisor)
