"""The built-in spaces: ``mnasnet`` and ``efficientnet_edgetpu``.

Both are factorized hierarchical spaces (MnasNet, Tan et al. 2019): a fixed skeleton of
stages, each deciding its own block. Choice values are the resulting network facts
(channels, layers), not multipliers, after rounding and de-duplication, so every choice
vector decodes to a distinct arch and :attr:`size` counts real members. Both take width and
depth multipliers and the input resolution, so proxy tasks at 32-96 px get small models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .arch import Block, Head, Stem
from .scaling import round_filters, round_repeats
from .space import Decision, StagewiseSpace, register


@dataclass(frozen=True)
class StageSkeleton:
    """A stage of a base network: its repeats, output filters and stride (and fixed extras)."""

    repeats: int
    filters: int
    stride: int
    expand_from: int | None = None  # EfficientNet-EdgeTPU's first block expands from 24, not the stem's 32
    skip: bool = True


# MobileNetV2 (Sandler et al. 2018), the skeleton of MnasNet's search.
MOBILENET_V2_SKELETON = tuple(StageSkeleton(r, f, s) for r, f, s in zip(
    (1, 2, 3, 4, 3, 3, 1), (16, 24, 32, 64, 96, 160, 320), (1, 2, 2, 2, 1, 2, 1)))

# EfficientNet-EdgeTPU base (tensorflow/tpu efficientnet/edgetpu): r1_k3_s11_e4_i24_o24_c1_noskip,
# r2_k3_s22_e8_i24_o32_c1, r4_k3_s22_e8_i32_o48_c1, r5_k5_s22_e8_i48_o96, r4_k5_s11_e8_i96_o144,
# r2_k5_s22_e8_i144_o192.
EDGETPU_SKELETON = (
    StageSkeleton(1, 24, 1, expand_from=24, skip=False),
    StageSkeleton(2, 32, 2),
    StageSkeleton(4, 48, 2),
    StageSkeleton(5, 96, 2),
    StageSkeleton(4, 144, 1),
    StageSkeleton(2, 192, 2),
)

FILTER_MULTIPLIERS = (0.75, 1.0, 1.25)
LAYER_DELTAS = (-1, 0, 1)


def _check_positive(what: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(f"{what}: expected a number in [{lo}, {hi}], got {value!r}")
    return value


class _SkeletonSpace(StagewiseSpace):
    """Shared machinery: width/depth scaling of a skeleton, filter and layer choices."""

    skeleton: tuple[StageSkeleton, ...] = ()

    def __init__(self, resolution: int = 224, width: float = 1.0, depth: float = 1.0,
                 num_classes: int | None = None, dropout: float = 0.2, divisor: int = 8):
        if isinstance(resolution, bool) or not isinstance(resolution, int) or not 8 <= resolution <= 4096:
            raise ValueError(f"resolution: expected an integer in [8, 4096], got {resolution!r}")
        self.resolution = resolution
        self.width = _check_positive("width", width, 0.05, 8.0)
        self.depth = _check_positive("depth", depth, 0.05, 8.0)
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(f"num_classes: expected a positive integer or null, got {num_classes!r}")
        self.num_classes = num_classes
        self.dropout = _check_positive("dropout", dropout, 0.0, 0.95)
        if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1:
            raise ValueError(f"divisor: expected a positive integer, got {divisor!r}")
        self.divisor = divisor

    def config(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "width": self.width, "depth": self.depth,
                "num_classes": self.num_classes, "dropout": self.dropout, "divisor": self.divisor}

    def num_stages(self) -> int:
        return len(self.skeleton)

    def filters(self, f: float) -> int:
        return round_filters(f, self.width, self.divisor)

    def filter_choices(self, stage: int) -> tuple[int, ...]:
        base = self.skeleton[stage - 1].filters
        return tuple(sorted({self.filters(base * m) for m in FILTER_MULTIPLIERS}))

    def layer_choices(self, stage: int) -> tuple[int, ...]:
        base = round_repeats(self.skeleton[stage - 1].repeats, self.depth)
        return tuple(sorted({max(1, base + d) for d in LAYER_DELTAS}))


@register
class MnasNetSpace(_SkeletonSpace):
    """MnasNet's factorized hierarchical space on the MobileNetV2 skeleton (7 stages).

    Per stage: ConvOp {conv, ds, mbconv_e3, mbconv_e6}, kernel {3, 5}, SE {0, 0.25},
    skip {identity, none}, filters x{0.75, 1, 1.25} of MobileNetV2's (rounded to the
    divisor), layers {-1, 0, +1} around MobileNetV2's (at least 1). Stem 32 and head 1280
    (both scaled by width) are fixed. The activation defaults to relu6, the skeleton's, so
    MobileNetV2 itself is a member; MnasNet's released models use relu.
    """

    name = "mnasnet"
    skeleton = MOBILENET_V2_SKELETON
    CONV_OPS = ("conv", "ds", "mbconv_e3", "mbconv_e6")

    def __init__(self, resolution: int = 224, width: float = 1.0, depth: float = 1.0,
                 num_classes: int | None = None, dropout: float = 0.2, divisor: int = 8,
                 activation: str = "relu6"):
        super().__init__(resolution, width, depth, num_classes, dropout, divisor)
        if activation not in ("relu", "relu6", "swish", "hard_swish"):
            raise ValueError(f"activation: unknown {activation!r}; allowed: relu, relu6, swish, hard_swish")
        self.activation = activation

    def config(self) -> dict[str, Any]:
        return super().config() | {"activation": self.activation}

    def stage_decisions(self, stage: int) -> list[Decision]:
        return [
            Decision("op", self.CONV_OPS),
            Decision("kernel", (3, 5)),
            Decision("se", (0, 0.25)),
            Decision("skip", ("identity", "none")),
            Decision("filters", self.filter_choices(stage)),
            Decision("layers", self.layer_choices(stage)),
        ]

    def make_block(self, stage: int, c: Mapping[str, Any]) -> Block:
        sk = self.skeleton[stage - 1]
        op = c["op"]
        btype, expansion = ("mbconv", int(op[-1])) if op.startswith("mbconv") else (op, 1)
        return Block(btype, c["filters"], kernel=c["kernel"], stride=sk.stride, expansion=expansion,
                     repeats=c["layers"], se_ratio=c["se"], activation=self.activation,
                     skip=c["skip"] == "identity")

    def make_stem(self) -> Stem:
        return Stem(self.filters(32), 3, 2, self.activation)

    def make_head(self) -> Head:
        return Head(self.filters(1280), self.activation, self.dropout)


@register
class EfficientNetEdgeTPUSpace(_SkeletonSpace):
    """The EfficientNet-EdgeTPU skeleton (6 stages) with Edge-TPU-friendly block choices.

    Per stage: block {mbconv, fused_mbconv}, kernel {3, 5}, expansion {1, 2, 4, 6, 8},
    filters x{0.75, 1, 1.25}, repeats {-1, 0, +1} (after depth scaling, at least 1),
    activation {relu, swish}, SE {0, 0.25}. Stem 32 and head 1280 scaled by width, relu.
    EfficientNet-EdgeTPU-S/M/L are members when the space has their width, depth and
    resolution: ``get("efficientnet_edgetpu", width=1.2, depth=1.4, resolution=300)``
    contains ``reference("efficientnet_edgetpu_l")`` (with dropout=0.3).
    """

    name = "efficientnet_edgetpu"
    skeleton = EDGETPU_SKELETON

    def stage_decisions(self, stage: int) -> list[Decision]:
        return [
            Decision("block", ("mbconv", "fused_mbconv")),
            Decision("kernel", (3, 5)),
            Decision("expansion", (1, 2, 4, 6, 8)),
            Decision("filters", self.filter_choices(stage)),
            Decision("repeats", self.layer_choices(stage)),
            Decision("activation", ("relu", "swish")),
            Decision("se", (0, 0.25)),
        ]

    def make_block(self, stage: int, c: Mapping[str, Any]) -> Block:
        sk = self.skeleton[stage - 1]
        return Block(c["block"], c["filters"], kernel=c["kernel"], stride=sk.stride, expansion=c["expansion"],
                     repeats=c["repeats"], se_ratio=c["se"], activation=c["activation"], skip=sk.skip,
                     expand_from=self.filters(sk.expand_from) if sk.expand_from else None)

    def make_stem(self) -> Stem:
        return Stem(self.filters(32), 3, 2, "relu")

    def make_head(self) -> Head:
        return Head(self.filters(1280), "relu", self.dropout)


@register
class EdgeTPUBenchSpace(EfficientNetEdgeTPUSpace):
    """A 512-arch sub-space of ``efficientnet_edgetpu``, small enough to train every member.

    It is the space of the tabular controller benchmark (``nas bench``). Stages 2-4 (the
    stride-2 stages) each choose block {mbconv, fused_mbconv}, squeeze-excite {0, 0.25} and
    repeats {the skeleton's, one more}, with kernel 3 and expansion 6. These are the choices
    that move Edge TPU latency at proxy scale: SE adds element-wise ops the Edge TPU runs
    slowly (EfficientNet-EdgeTPU dropped it for that reason) and every layer adds per-op
    cost; kernel and expansion barely do at 32 px (1.6% latency spread over a 512-arch
    space of those, 17% over this one). Stage 1 is EfficientNet-EdgeTPU-S's fused e4 k3,
    stages 5-6 its mbconv e8 k5; filters are the skeleton's at the space's width; relu.
    Every member is a member of ``efficientnet_edgetpu`` with the same resolution, width
    and depth.
    """

    name = "efficientnet_edgetpu_bench"
    SEARCHED = (2, 3, 4)
    FIXED = {1: {"block": "fused_mbconv", "kernel": 3, "expansion": 4, "se": 0},
             5: {"block": "mbconv", "kernel": 5, "expansion": 8, "se": 0},
             6: {"block": "mbconv", "kernel": 5, "expansion": 8, "se": 0}}
    #: what a stage of SEARCHED that ``searched`` leaves out is fixed to (its first choices)
    UNSEARCHED = {"block": "mbconv", "se": 0}

    def __init__(self, resolution: int = 32, width: float = 0.25, depth: float = 0.5,
                 num_classes: int | None = None, dropout: float = 0.2, divisor: int = 8,
                 searched: tuple[int, ...] | list[int] = SEARCHED):
        # ``searched`` narrows the space to a slice of the benchmark (e.g. (2, 3): 64 archs,
        # stage 4 fixed to its first choices), which is how the tests run ``nas bench`` on a
        # small part of the table.
        searched = tuple(searched) if isinstance(searched, (list, tuple)) else searched
        if (not isinstance(searched, tuple) or not searched or len(set(searched)) != len(searched)
                or not all(s in self.SEARCHED for s in searched)):
            raise ValueError(f"searched: expected a non-empty list of distinct stages from "
                             f"{list(self.SEARCHED)}, got {searched!r}")
        self.searched = tuple(sorted(searched))
        super().__init__(resolution, width, depth, num_classes, dropout, divisor)

    def config(self) -> dict[str, Any]:
        return super().config() | {"searched": list(self.searched)}

    def stage_decisions(self, stage: int) -> list[Decision]:
        if stage not in self.searched:
            return []
        base = round_repeats(self.skeleton[stage - 1].repeats, self.depth)
        return [Decision("block", ("mbconv", "fused_mbconv")), Decision("se", (0, 0.25)),
                Decision("repeats", (base, base + 1))]

    def make_block(self, stage: int, c: Mapping[str, Any]) -> Block:
        sk = self.skeleton[stage - 1]
        fixed = self.FIXED.get(stage, self.UNSEARCHED if stage not in self.searched else {})
        full = {"kernel": 3, "expansion": 6, **fixed, **c, "filters": self.filters(sk.filters),
                "activation": "relu"}
        full.setdefault("repeats", round_repeats(sk.repeats, self.depth))
        return super().make_block(stage, full)
