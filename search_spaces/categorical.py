"""A space of named categorical decisions and nothing else: its members are choice vectors.

Controllers only ever see a space's decisions (choice indices) and the string of a member,
so a space need not describe a network for a controller to search it: a tabular benchmark
such as NAS-Bench-201 (six cell edges, five operations each) is a :class:`CategoricalSpace`
whose members are :class:`Point` s, looked up in a table instead of built and trained.

A point's string is ``name=value`` per decision, in the space's decision order, joined by
commas (``e1_0=conv3x3,e2_0=skip,...``); it round-trips through :meth:`CategoricalSpace.parse`.
Values are kept typed (a column of numbers gives ``int`` or ``float`` choices) and written
canonically (``str`` of an int or a string, ``repr`` of a float), so one value has one spelling.

>>> from search_spaces import CategoricalSpace
>>> space = CategoricalSpace({"op": ("conv3x3", "skip"), "width": (16, 32)}, label="toy")
>>> p = space.decode({"op": "skip", "width": 32})
>>> p.to_string()
'op=skip,width=32'
>>> space.parse("op=skip,width=32") == p, space.encode(p), space.size
(True, {'op': 'skip', 'width': 32}, 4)
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

from .space import Decision, SearchSpace

__all__ = ["CategoricalSpace", "Point", "value_text"]

#: Characters a decision name or a value cannot hold: they delimit a point's string.
RESERVED = ",="


def value_text(value: Any) -> str:
    """The one spelling of a choice in a point's string: ``repr`` of a float, else ``str``."""
    return repr(float(value)) if isinstance(value, float) else str(value)


class Point:
    """One member of a :class:`CategoricalSpace`: a value per decision, immutable and hashable.

    Equal points have equal strings; :meth:`to_string` is what the ledger, tables and results
    record, as an :class:`~search_spaces.Arch`'s string is for a space of networks.
    """

    __slots__ = ("_items", "_text")

    def __init__(self, items: Iterable[tuple[str, Any]]):
        self._items = tuple(items)
        self._text = ",".join(f"{k}={value_text(v)}" for k, v in self._items)

    @property
    def choices(self) -> dict[str, Any]:
        """``{decision name: value}`` in the space's decision order."""
        return dict(self._items)

    def to_string(self) -> str:
        return self._text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)

    def __repr__(self) -> str:
        return f"Point({self._text!r})"


class CategoricalSpace(SearchSpace):
    """Named categorical decisions whose members are :class:`Point` s rather than networks.

    ``decisions`` maps each name to its choices (in their order; a controller's indices
    refer to it), or is a sequence of :class:`~search_spaces.Decision`. Decoding, encoding
    and parsing are a few dictionary look-ups; there is no network to build, so
    :meth:`build` refuses. It is not registered: a table (``nas bench --table``) or a user
    makes one for its own decisions.
    """

    name = "categorical"

    def __init__(self, decisions: Mapping[str, Sequence[Any]] | Sequence[Decision], label: str | None = None):
        items = decisions.items() if isinstance(decisions, Mapping) else ((d.name, d.choices) for d in decisions)
        self._decisions = tuple(Decision(n, tuple(c)) for n, c in items)
        self._label = label or self.name
        self._by_text: list[dict[str, Any]] = []
        for d in self.decision_list:
            bad = [ch for ch in RESERVED if ch in d.name]
            if bad:
                raise ValueError(f"space {self._label}: decision name {d.name!r} holds {bad[0]!r}, which a point's "
                                 f"string uses as a delimiter")
            texts: dict[str, Any] = {}
            for c in d.choices:
                t = value_text(c)
                if isinstance(c, float) and not math.isfinite(c):
                    raise ValueError(f"space {self._label}: decision {d.name!r}: choice {c!r} is not a finite number")
                if not t or any(ch in t for ch in RESERVED):
                    raise ValueError(f"space {self._label}: decision {d.name!r}: choice {t!r} is empty or holds "
                                     f"',' or '=', which a point's string uses as delimiters")
                if t in texts:
                    raise ValueError(f"space {self._label}: decision {d.name!r}: choices {texts[t]!r} and {c!r} are "
                                     f"both written {t!r}")
                texts[t] = c
            self._by_text.append(texts)

    @property
    def label(self) -> str:
        return self._label

    def decisions(self) -> Sequence[Decision]:
        return self._decisions

    def config(self) -> dict[str, Any]:
        return {"decisions": {d.name: list(d.choices) for d in self.decision_list}}

    def make_arch(self, choices: Mapping[str, Any]) -> Point:  # type: ignore[override]
        return Point((d.name, choices[d.name]) for d in self.decision_list)

    def decode(self, choices: Mapping[str, Any]) -> Point:  # type: ignore[override]
        return self.make_arch(self.validate(choices))

    def encode(self, arch: Point | str) -> dict[str, Any]:  # type: ignore[override]
        """The choices of a point (or of its string); ``ValueError`` if it is not a member."""
        point = self.parse(arch) if isinstance(arch, str) else arch
        if not isinstance(point, Point):
            raise ValueError(f"space {self.label}: expected a Point or its string, got {type(arch).__name__}")
        try:
            return self.validate(point.choices)
        except ValueError as e:
            raise ValueError(f"point is not in space {self.label}: {point.to_string()} ({e})") from None

    def parse(self, text: str) -> Point:
        """The point of a string ``name=value,...`` (every decision once, in any order)."""
        if not isinstance(text, str):
            raise ValueError(f"space {self.label}: expected a point string, got {type(text).__name__}")
        names = {d.name: i for i, d in enumerate(self.decision_list)}
        found: dict[str, Any] = {}
        for token in text.split(","):
            name, sep, value = token.partition("=")
            if not sep:
                raise ValueError(f"space {self.label}: {text!r}: token {token!r} is not name=value")
            if name not in names:
                raise ValueError(f"space {self.label}: {text!r}: unknown decision {name!r}; decisions: "
                                 f"{', '.join(names)}")
            if name in found:
                raise ValueError(f"space {self.label}: {text!r}: decision {name!r} given twice")
            texts = self._by_text[names[name]]
            if value not in texts:
                raise ValueError(f"space {self.label}: {text!r}: {value!r} is not a choice of {name!r}; allowed: "
                                 f"{', '.join(texts)}")
            found[name] = texts[value]
        missing = [n for n in names if n not in found]
        if missing:
            raise ValueError(f"space {self.label}: {text!r}: missing decision {missing[0]!r}")
        return self.make_arch(found)

    def build(self, arch, input_shape=None, num_classes: int | None = None):
        raise ValueError(f"space {self.label}: its members are choice vectors, not networks; there is nothing to "
                         "build (look them up in a table with 'nas bench --table')")
