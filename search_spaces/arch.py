"""Architectures: immutable, validated points of a search space, with a compact string.

An :class:`Arch` is a stem, an ordered tuple of stages (each a :class:`Block` repeated
``repeats`` times, only the first layer strided), a head, and the input resolution
(plus, optionally, the number of classes). Its string form is the one currency between
controller, Ray trials, result tables and export, so it round-trips exactly::

    Arch.from_string(a.to_string()) == a

Grammar (version 1)
-------------------
::

    arch     := header ":" stem ":" stage ("," stage)* ":" head
    header   := "v1" "-res" INT ["-cls" INT]
    stem     := "stem" "-k" INT "-s" INT "-o" INT "-" ACT
    stage    := BLOCK ("-" token)+
    head     := "head" "-o" INT "-" ACT ["-d" NUM]
    BLOCK    := "mbconv" | "fused_mbconv" | "conv" | "ds"
    ACT      := "relu" | "relu6" | "swish" | "hard_swish"

Tokens are separated by ``-``; a token is a key followed by its value, or a bare word.
Every letter has one meaning in every block type:

=========  ==============================================  ===========================
token      meaning                                          blocks
=========  ==============================================  ===========================
``rN``     repeats: layers in the stage (>= 1)              all (required)
``kN``     kernel size, odd (1..11)                         all (required)
``sN``     stride of the stage's first layer (1 or 2)       all (required)
``eX``     expansion ratio (> 0)                            mbconv, fused_mbconv (req.)
``iN``     channels the expansion ratio applies to in the   mbconv, fused_mbconv
           stage's first layer (default: its real input)    (optional)
``oN``     output channels                                  all (required)
``seX``    squeeze-and-excite ratio, 0 < X <= 1             all (optional, default none)
``noskip`` no identity residual (a residual is used only    all (optional flag)
           when stride 1 and input == output channels)
ACT        activation, a bare word                          all (required)
``dX``     dropout before the classifier, 0 <= X < 1        head (optional, default 0)
=========  ==============================================  ===========================

Block semantics (BN after every conv; no bias before BN):

- ``mbconv``: 1x1 expand to ``round(in*e)`` (omitted when e == 1), act, depthwise kxk with
  stride, act, [SE], 1x1 linear projection to ``o``.
- ``fused_mbconv``: kxk regular conv with stride expanding to ``round(in*e)``, act, [SE],
  1x1 linear projection to ``o``; with e == 1 a single kxk conv to ``o``, act, [SE].
- ``conv``: a single kxk regular conv to ``o`` with stride, act, [SE].
- ``ds``: depthwise-separable: depthwise kxk with stride, act, [SE], 1x1 linear projection
  (MobileNetV2's first block; the same network as ``mbconv`` with e == 1).

SE squeezes to ``max(1, int(in * se))`` channels (``in`` as for the expansion), uses the
block's activation and a sigmoid gate. Parsing is strict: unknown, duplicate or missing
tokens and out-of-range values raise ``ValueError`` naming the token and what is allowed.
Numbers are written in their shortest exact form (``e4``, ``se0.25``, ``d0.2``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

GRAMMAR_VERSION = "v1"

ACTIVATIONS = ("relu", "relu6", "swish", "hard_swish")
BLOCK_TYPES = ("mbconv", "fused_mbconv", "conv", "ds")
_EXPANDING = ("mbconv", "fused_mbconv")

_MAX_KERNEL = 11
_MAX_CHANNELS = 16384
_MAX_REPEATS = 64
_MAX_RESOLUTION = 4096
_MIN_RESOLUTION = 8

_TOKEN = re.compile(r"^([a-z]+)(\d+(?:\.\d+)?)$")


def format_number(x: float | int) -> str:
    """Shortest exact text for a number: ints without a point, floats by ``repr``."""
    if float(x).is_integer():
        return str(int(x))
    return repr(float(x))


def _canonical_number(x: float | int) -> float | int:
    # 4.0 and 4 must compare, hash and print the same, so integral values are stored as int.
    return int(x) if float(x).is_integer() else float(x)


def _check_int(what: str, value: Any, lo: int, hi: int) -> int:
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
    return _canonical_number(value)


def _check_choice(what: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{what}: unknown value {value!r}, allowed: {', '.join(allowed)}")
    return value


def _check_kernel(what: str, k: Any) -> int:
    _check_int(what, k, 1, _MAX_KERNEL)
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
        _check_int("stem filters (o)", self.filters, 1, _MAX_CHANNELS)
        _check_kernel("stem kernel (k)", self.kernel)
        _check_int("stem stride (s)", self.stride, 1, 2)
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
        _check_int("head filters (o)", self.filters, 0, _MAX_CHANNELS)
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
        _check_int(f"{self.type} output channels (o)", self.filters, 1, _MAX_CHANNELS)
        _check_kernel(f"{self.type} kernel (k)", self.kernel)
        _check_int(f"{self.type} stride (s)", self.stride, 1, 2)
        _check_int(f"{self.type} repeats (r)", self.repeats, 1, _MAX_REPEATS)
        _check_choice(f"{self.type} activation", self.activation, ACTIVATIONS)
        if not isinstance(self.skip, bool):
            raise ValueError(f"{self.type} skip: expected True or False, got {self.skip!r}")
        se = _check_number(f"{self.type} SE ratio (se)", self.se_ratio, 0, 1)
        object.__setattr__(self, "se_ratio", se)
        if self.type in _EXPANDING:
            e = _check_number(f"{self.type} expansion (e)", self.expansion, 0, 64, lo_open=True)
            object.__setattr__(self, "expansion", e)
            if self.expand_from is not None:
                _check_int(f"{self.type} expansion input channels (i)", self.expand_from, 1, _MAX_CHANNELS)
        else:
            if self.expansion != 1:
                raise ValueError(
                    f"{self.type} expansion (e): {self.type} blocks have no expansion, got "
                    f"{format_number(self.expansion)}; allowed only for {', '.join(_EXPANDING)}"
                )
            object.__setattr__(self, "expansion", 1)
            if self.expand_from is not None:
                raise ValueError(
                    f"{self.type} expansion input channels (i): not allowed for {self.type}; "
                    f"allowed only for {', '.join(_EXPANDING)}"
                )

    def to_string(self) -> str:
        parts = [self.type, f"r{self.repeats}", f"k{self.kernel}", f"s{self.stride}"]
        if self.type in _EXPANDING:
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


@dataclass(frozen=True)
class Arch:
    """One network: stem, stages, head, input resolution and optionally the class count.

    >>> a = Arch(stem=Stem(16), stages=(Block("mbconv", 24, expansion=4, stride=2),),
    ...          head=Head(320), resolution=32)
    >>> a.to_string()
    'v1-res32:stem-k3-s2-o16-relu:mbconv-r1-k3-s2-e4-o24-relu:head-o320-relu'
    >>> Arch.from_string(a.to_string()) == a
    True
    """

    stages: tuple[Block, ...]
    stem: Stem = field(default_factory=Stem)
    head: Head = field(default_factory=Head)
    resolution: int = 224
    num_classes: int | None = None

    def __post_init__(self) -> None:
        stages = tuple(self.stages) if isinstance(self.stages, (list, tuple)) else self.stages
        if not isinstance(stages, tuple) or not stages:
            raise ValueError(f"arch stages: expected a non-empty sequence of Block, got {self.stages!r}")
        for i, b in enumerate(stages):
            if not isinstance(b, Block):
                raise ValueError(f"arch stage {i + 1}: expected a Block, got {type(b).__name__}")
        object.__setattr__(self, "stages", stages)
        if not isinstance(self.stem, Stem):
            raise ValueError(f"arch stem: expected a Stem, got {type(self.stem).__name__}")
        if not isinstance(self.head, Head):
            raise ValueError(f"arch head: expected a Head, got {type(self.head).__name__}")
        _check_int("arch resolution (res)", self.resolution, _MIN_RESOLUTION, _MAX_RESOLUTION)
        if self.num_classes is not None:
            _check_int("arch classes (cls)", self.num_classes, 1, 1_000_000)

    # -- string form ----------------------------------------------------------------------

    def to_string(self) -> str:
        header = f"{GRAMMAR_VERSION}-res{self.resolution}"
        if self.num_classes is not None:
            header += f"-cls{self.num_classes}"
        stages = ",".join(b.to_string() for b in self.stages)
        return f"{header}:{self.stem.to_string()}:{stages}:{self.head.to_string()}"

    __str__ = to_string

    @classmethod
    def from_string(cls, text: str) -> "Arch":
        """Parse an arch string (grammar in this module's docstring); strict, ``ValueError`` on error."""
        return parse_arch(text)

    # -- conveniences ---------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Number of block layers (stage repeats summed), stem and head excluded."""
        return sum(b.repeats for b in self.stages)

    def replace(self, **changes: Any) -> "Arch":
        return replace(self, **changes)


# --------------------------------------------------------------------------- parsing


def _fail(section: str, text: str, problem: str) -> ValueError:
    return ValueError(f"arch string, {section} {text!r}: {problem}")


def _tokens(section: str, text: str, *, keys: dict[str, str], words: Iterable[str],
            flags: Iterable[str] = ()) -> dict[str, Any]:
    """Split ``a-b-c`` tokens into a dict; ``keys`` maps a key to 'int' or 'num'."""
    words, flags = tuple(words), tuple(flags)
    out: dict[str, Any] = {}
    allowed = [f"{k}<{t}>" for k, t in keys.items()] + list(words) + list(flags)
    if not text:
        return out
    for tok in text.split("-"):
        if tok in words:
            if "word" in out:
                raise _fail(section, text, f"duplicate token {tok!r} (activation already {out['word']!r})")
            out["word"] = tok
            continue
        if tok in flags:
            if tok in out:
                raise _fail(section, text, f"duplicate token {tok!r}")
            out[tok] = True
            continue
        m = _TOKEN.match(tok)
        if not m or m.group(1) not in keys:
            raise _fail(section, text, f"unknown token {tok!r}; allowed: {', '.join(allowed)}")
        key, raw = m.groups()
        if key in out:
            raise _fail(section, text, f"duplicate token {tok!r} (key {key!r} given twice)")
        if keys[key] == "int":
            if "." in raw or (len(raw) > 1 and raw.startswith("0")):
                raise _fail(section, text, f"token {tok!r}: {key} needs a plain integer")
            out[key] = int(raw)
        else:
            if len(raw) > 1 and raw.startswith("0") and not raw.startswith("0."):
                raise _fail(section, text, f"token {tok!r}: {key} has a leading zero")
            out[key] = _canonical_number(float(raw))
            # Only the canonical spelling is accepted, so one arch has exactly one string.
            if format_number(out[key]) != raw:
                raise _fail(section, text, f"token {tok!r}: write the number as {key}{format_number(out[key])}")
    return out


def _require(section: str, text: str, got: dict[str, Any], required: Iterable[str], word_desc: str = "") -> None:
    for key in required:
        if key not in got:
            what = f"activation ({', '.join(ACTIVATIONS)})" if key == "word" else f"token {key!r}<{word_desc or 'value'}>"
            raise _fail(section, text, f"missing {what}")


def _parse_stem(text: str) -> Stem:
    head, _, rest = text.partition("-")
    if head != "stem":
        raise _fail("stem", text, "must start with 'stem'")
    t = _tokens("stem", rest, keys={"k": "int", "s": "int", "o": "int"}, words=ACTIVATIONS)
    _require("stem", text, t, ("k", "s", "o", "word"))
    try:
        return Stem(filters=t["o"], kernel=t["k"], stride=t["s"], activation=t["word"])
    except ValueError as e:
        raise _fail("stem", text, str(e)) from None


def _parse_head(text: str) -> Head:
    head, _, rest = text.partition("-")
    if head != "head":
        raise _fail("head", text, "must start with 'head'")
    t = _tokens("head", rest, keys={"o": "int", "d": "num"}, words=ACTIVATIONS)
    _require("head", text, t, ("o", "word"))
    try:
        return Head(filters=t["o"], activation=t["word"], dropout=t.get("d", 0.0))
    except ValueError as e:
        raise _fail("head", text, str(e)) from None


def _parse_block(text: str, index: int) -> Block:
    section = f"stage {index}"
    btype, _, rest = text.partition("-")
    if btype not in BLOCK_TYPES:
        raise _fail(section, text, f"unknown block type {btype!r}; allowed: {', '.join(BLOCK_TYPES)}")
    keys = {"r": "int", "k": "int", "s": "int", "o": "int", "se": "num"}
    required = ["r", "k", "s", "o", "word"]
    if btype in _EXPANDING:
        keys |= {"e": "num", "i": "int"}
        required.append("e")
    if not rest:
        raise _fail(section, text, "missing tokens r, k, s, o and an activation")
    t = _tokens(section, rest, keys=keys, words=ACTIVATIONS, flags=("noskip",))
    _require(section, text, t, required)
    if t.get("se") == 0:
        raise _fail(section, text, "token 'se0': leave the token out for no squeeze-excite")
    try:
        return Block(type=btype, filters=t["o"], kernel=t["k"], stride=t["s"], expansion=t.get("e", 1),
                     repeats=t["r"], se_ratio=t.get("se", 0.0), activation=t["word"],
                     skip=not t.get("noskip", False), expand_from=t.get("i"))
    except ValueError as e:
        raise _fail(section, text, str(e)) from None


def parse_arch(text: str) -> Arch:
    """Parse an arch string into an :class:`Arch`; raises ``ValueError`` naming the bad token."""
    if not isinstance(text, str):
        raise ValueError(f"arch string: expected text, got {type(text).__name__}")
    text = text.strip()
    sections = text.split(":")
    if len(sections) != 4:
        raise ValueError(
            f"arch string {text[:80]!r}: expected 4 sections 'header:stem:stages:head' separated by ':', "
            f"got {len(sections)}"
        )
    header, stem, stages, head = sections
    hname, _, hrest = header.partition("-")
    if hname != GRAMMAR_VERSION:
        raise _fail("header", header, f"unknown grammar version {hname!r}; supported: {GRAMMAR_VERSION}")
    t = _tokens("header", hrest, keys={"res": "int", "cls": "int"}, words=())
    _require("header", header, t, ("res",))
    stage_texts = stages.split(",")
    blocks = tuple(_parse_block(s, i + 1) for i, s in enumerate(stage_texts))
    try:
        return Arch(stages=blocks, stem=_parse_stem(stem), head=_parse_head(head),
                    resolution=t["res"], num_classes=t.get("cls"))
    except ValueError as e:
        if str(e).startswith("arch string"):
            raise
        raise _fail("header", header, str(e)) from None
