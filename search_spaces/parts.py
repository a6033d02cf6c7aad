"""The parts of an arch (:class:`search_spaces.arch.Arch`): the :class:`Stem`, the stages (each
a :class:`Block` repeated), the :class:`Head`, each validated when made and written as its
section of the arch string; and the value checks behind them, which raise a one-line
``ValueError`` naming the field and what is allowed. The grammar and what each block type
builds are in :mod:`search_spaces.arch`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

__all__ = ["ACTIVATIONS", "BLOCK_TYPES", "EXPANDING", "Block", "Head", "Stem", "canonical_number", "check_int",
           "format_number"]

ACTIVATIONS = ("relu", "relu6", "swish", "hard_swish")
BLOCK_TYPES = ("mbconv", "fused_mbconv", "conv", "ds")
EXPANDING = ("mbconv", "fused_mbconv")  # the block types with an expansion ratio

_MAX_KERNEL = 11
_MAX_CHANNELS = 16384
_MAX_REPEATS = 64


def format_number(x: float | int) -> str:
    """Shortest exact text for a number: ints without a point, floats by ``repr``."""
    if float(x).is_integer():
        return str(int(x))
    return repr(float(x))


def canonical_number(x: float | int) -> float | int:
    # 4.0 and 4 must compare, hash and print the same, so integral values are stored as int.
    return int(x) if float(x).is_integer() else float(x)


def check_int(what: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what}: expected an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{what}: {value} is out of range, allowed [{lo}, {hi}]")
    return value


def _check_number(what: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what}: expected a number, got {value!r}")
    below = value <= lo if lo_open else value < lo
    if below or value > hi:
        interval = f"{'(' if lo_open else '['}{format_number(lo)}, {format_number(hi)}]"
        raise ValueError(f"{what}: {format_number(value)} is out of range, allowed {interval}")
    return canonical_number(value)


def _check_choice(what: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{what}: unknown value {value!r}, allowed: {', '.join(allowed)}")
    return value


def _check_kernel(what: str, k: Any) -> int:
    check_int(what, k, 1, _MAX_KERNEL)
    if k % 2 == 0:
        raise ValueError(f"{what}: kernel {k} is even, allowed odd sizes 1..{_MAX_KERNEL}")
    return k


@dataclass(frozen=True)
class Stem:
    """The first layer: a kxk regular conv with stride, BN and activation."""

    filters: int = 32
    kernel: int = 3
    stride: int = 2
    activation: str = "relu"

    def __post_init__(self) -> None:
        check_int("stem filters (o)", self.filters, 1, _MAX_CHANNELS)
        _check_kernel("stem kernel (k)", self.kernel)
        check_int("stem stride (s)", self.stride, 1, 2)
        _check_choice("stem activation", self.activation, ACTIVATIONS)

    def to_string(self) -> str:
        return f"stem-k{self.kernel}-s{self.stride}-o{self.filters}-{self.activation}"


@dataclass(frozen=True)
class Head:
    """The classifier: optional 1x1 conv (``filters`` > 0) + BN + act, pooling, dropout, dense."""

    filters: int = 1280
    activation: str = "relu"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_int("head filters (o)", self.filters, 0, _MAX_CHANNELS)
        _check_choice("head activation", self.activation, ACTIVATIONS)
        object.__setattr__(self, "dropout", _check_number("head dropout (d)", self.dropout, 0, 0.95))

    def to_string(self) -> str:
        s = f"head-o{self.filters}-{self.activation}"
        return s + (f"-d{format_number(self.dropout)}" if self.dropout else "")


@dataclass(frozen=True)
class Block:
    """One stage: ``repeats`` layers of one block type; only the first layer has ``stride``.

    ``expansion`` applies to ``mbconv`` and ``fused_mbconv`` only (leave it at 1 otherwise).
    ``expand_from`` (token ``i``) is the channel count the expansion and SE ratios apply to in
    the stage's first layer, for skeletons such as EfficientNet-EdgeTPU whose first block
    expands from a nominal width other than the stem's; None means the real input.
    """

    type: str
    filters: int
    kernel: int = 3
    stride: int = 1
    expansion: float = 1
    repeats: int = 1
    se_ratio: float = 0.0
    activation: str = "relu"
    skip: bool = True
    expand_from: int | None = None

    def __post_init__(self) -> None:
        _check_choice("block type", self.type, BLOCK_TYPES)
        check_int(f"{self.type} output channels (o)", self.filters, 1, _MAX_CHANNELS)
        _check_kernel(f"{self.type} kernel (k)", self.kernel)
        check_int(f"{self.type} stride (s)", self.stride, 1, 2)
        check_int(f"{self.type} repeats (r)", self.repeats, 1, _MAX_REPEATS)
        _check_choice(f"{self.type} activation", self.activation, ACTIVATIONS)
        if not isinstance(self.skip, bool):
            raise ValueError(f"{self.type} skip: expected True or False, got {self.skip!r}")
        se = _check_number(f"{self.type} SE ratio (se)", self.se_ratio, 0, 1)
        object.__setattr__(self, "se_ratio", se)
        if self.type in EXPANDING:
            e = _check_number(f"{self.type} expansion (e)", self.expansion, 0, 64, lo_open=True)
            object.__setattr__(self, "expansion", e)
            if self.expand_from is not None:
                check_int(f"{self.type} expansion input channels (i)", self.expand_from, 1, _MAX_CHANNELS)
        else:
            if self.expansion != 1:
                raise ValueError(
                    f"{self.type} expansion (e): {self.type} blocks have no expansion, got "
                    f"{format_number(self.expansion)}; allowed only for {', '.join(EXPANDING)}"
                )
            object.__setattr__(self, "expansion", 1)
            if self.expand_from is not None:
                raise ValueError(
                    f"{self.type} expansion input channels (i): not allowed for {self.type}; "
                    f"allowed only for {', '.join(EXPANDING)}"
                )

    def to_string(self) -> str:
        parts = [self.type, f"r{self.repeats}", f"k{self.kernel}", f"s{self.stride}"]
        if self.type in EXPANDING:
            parts.append(f"e{format_number(self.expansion)}")
            if self.expand_from is not None:
                parts.append(f"i{self.expand_from}")
        parts.append(f"o{self.filters}")
        if self.se_ratio:
            parts.append(f"se{format_number(self.se_ratio)}")
        parts.append(self.activation)
        if not self.skip:
            parts.append("noskip")
        return "-".join(parts)
