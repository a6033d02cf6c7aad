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

The parts (:class:`~search_spaces.parts.Stem`, :class:`~search_spaces.parts.Block`,
:class:`~search_spaces.parts.Head`) and their checks are in :mod:`search_spaces.parts`;
they are importable from here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from .parts import (
    ACTIVATIONS,
    BLOCK_TYPES,
    EXPANDING,
    Block,
    Head,
    Stem,
    canonical_number,
    check_int,
    format_number,
)

GRAMMAR_VERSION = "v1"

_MAX_RESOLUTION = 4096
_MIN_RESOLUTION = 8

_TOKEN = re.compile(r"^([a-z]+)(\d+(?:\.\d+)?)$")


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
        check_int("arch resolution (res)", self.resolution, _MIN_RESOLUTION, _MAX_RESOLUTION)
        if self.num_classes is not None:
            check_int("arch classes (cls)", self.num_classes, 1, 1_000_000)

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
            out[key] = canonical_number(float(raw))
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
    if btype in EXPANDING:
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
