"""Search spaces: pure descriptions of named categorical decisions, and their registry.

A space never holds "current values": it lists its :class:`Decision` s and decodes one
value per decision into an :class:`~search_spaces.arch.Arch`. Controllers propose choices,
the space decodes them, and the arch string travels from there on.
"""

from __future__ import annotations

import difflib
import itertools
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .arch import Arch
from .registry import Registry

# Enumeration cap of the generic encode(): beyond it, a space must override encode().
_ENUMERATE_LIMIT = 200_000


class SpaceTooLarge(ValueError):
    """A space too large for the generic :meth:`SearchSpace.encode` that has no encode of its own."""


@dataclass(frozen=True)
class Decision:
    """One named categorical choice, e.g. ``Decision("s3.kernel", (3, 5))``."""

    name: str
    choices: tuple

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"decision name: expected a non-empty string, got {self.name!r}")
        choices = tuple(self.choices)
        if not choices:
            raise ValueError(f"decision {self.name!r}: needs at least one choice")
        if len(set(choices)) != len(choices):
            raise ValueError(f"decision {self.name!r}: duplicate choices in {choices!r}")
        object.__setattr__(self, "choices", choices)

    def index(self, value: Any) -> int:
        for i, c in enumerate(self.choices):
            # True == 1 in Python; a bool choice must not match an int value or vice versa.
            if c == value and isinstance(c, bool) == isinstance(value, bool):
                return i
        raise ValueError(f"decision {self.name!r}: {value!r} is not a choice; allowed: "
                         f"{', '.join(map(repr, self.choices))}")


class SearchSpace:
    """Base class of search spaces. Subclass it, set ``name``, implement two methods.

    - ``decisions()`` returns the named categorical :class:`Decision` s (fixed per instance);
    - ``make_arch(choices)`` turns ``{decision name: value}`` into an :class:`Arch`.

    The base class validates choices (:meth:`decode`), samples (:meth:`sample`), inverts
    decoding (:meth:`encode`; from an index of every member, built once, for spaces up to
    200,000 members: override it for bigger ones), tests membership (:meth:`contains`), counts (:attr:`size`) and builds
    Keras models with the one shared builder (:meth:`build`). A complete user space::

        from search_spaces import Arch, Block, Decision, Head, SearchSpace, Stem

        class TinySpace(SearchSpace):
            '''Two MBConv stages at 32 px: kernel, expansion and width are searched.'''
            name = "tiny"

            def __init__(self, resolution: int = 32):
                self.resolution = resolution

            def config(self):
                return {"resolution": self.resolution}

            def decisions(self):
                return [Decision("s1.kernel", (3, 5)), Decision("s1.expansion", (2, 4)),
                        Decision("s2.filters", (16, 24))]

            def make_arch(self, c):
                return Arch(
                    stem=Stem(8), head=Head(64), resolution=self.resolution,
                    stages=(Block("mbconv", 16, kernel=c["s1.kernel"], stride=2,
                                  expansion=c["s1.expansion"]),
                            Block("fused_mbconv", c["s2.filters"], stride=2, expansion=2)))

    Use it by import path anywhere a built-in name is accepted, e.g.
    ``search_spaces.get("my_spaces:TinySpace")`` or ``space: my_spaces:TinySpace`` in YAML.
    """

    #: Registry name; also what ``nas spaces list`` shows.
    name: str = ""

    # -- what a subclass provides -----------------------------------------------------------

    def decisions(self) -> Sequence[Decision]:
        raise NotImplementedError(f"{type(self).__name__} must implement decisions()")

    def make_arch(self, choices: Mapping[str, Any]) -> Arch:
        raise NotImplementedError(f"{type(self).__name__} must implement make_arch(choices)")

    def config(self) -> dict[str, Any]:
        """Constructor arguments that recreate this instance (shown by ``nas spaces show``)."""
        return {}

    # -- derived ------------------------------------------------------------------------------

    @cached_property
    def decision_list(self) -> tuple[Decision, ...]:
        ds = tuple(self.decisions())
        if not ds:
            raise ValueError(f"space {self.label}: decisions() returned no decision")
        seen: set[str] = set()
        for d in ds:
            if not isinstance(d, Decision):
                raise ValueError(f"space {self.label}: decisions() must return Decision objects, got {d!r}")
            if d.name in seen:
                raise ValueError(f"space {self.label}: duplicate decision name {d.name!r}")
            seen.add(d.name)
        return ds

    @property
    def label(self) -> str:
        return self.name or type(self).__name__

    @property
    def size(self) -> int:
        """Number of distinct choice vectors (the product of the decisions' choice counts)."""
        return math.prod(len(d.choices) for d in self.decision_list)

    def validate(self, choices: Mapping[str, Any]) -> dict[str, Any]:
        """Check a choice mapping: every decision exactly once, every value allowed."""
        if not isinstance(choices, Mapping):
            raise ValueError(f"space {self.label}: choices must be a mapping of decision name to value, "
                             f"got {type(choices).__name__}")
        names = [d.name for d in self.decision_list]
        unknown = [k for k in choices if k not in names]
        if unknown:
            hint = difflib.get_close_matches(str(unknown[0]), names, n=1)
            raise ValueError(f"space {self.label}: unknown decision {unknown[0]!r}"
                             + (f" (did you mean {hint[0]!r}?)" if hint else f"; decisions: {', '.join(names)}"))
        out = {}
        for d in self.decision_list:
            if d.name not in choices:
                raise ValueError(f"space {self.label}: missing decision {d.name!r}; allowed values: "
                                 f"{', '.join(map(repr, d.choices))}")
            out[d.name] = d.choices[d.index(choices[d.name])]
        return out

    def decode(self, choices: Mapping[str, Any]) -> Arch:
        """Validated ``choices`` -> :class:`Arch`."""
        arch = self.make_arch(self.validate(choices))
        if not isinstance(arch, Arch):
            raise TypeError(f"space {self.label}: make_arch() must return an Arch, got {type(arch).__name__}")
        return arch

    def decode_indices(self, indices: Sequence[int]) -> Arch:
        """Decode one choice index per decision, in :attr:`decision_list` order."""
        ds = self.decision_list
        if len(indices) != len(ds):
            raise ValueError(f"space {self.label}: expected {len(ds)} indices, got {len(indices)}")
        return self.decode({d.name: d.choices[int(i)] for d, i in zip(ds, indices)})

    def indices(self, choices: Mapping[str, Any]) -> list[int]:
        """Choice indices (in :attr:`decision_list` order) of a choice mapping."""
        c = self.validate(choices)
        return [d.index(c[d.name]) for d in self.decision_list]

    def sample_choices(self, rng: np.random.Generator | int | None = None) -> dict[str, Any]:
        rng = np.random.default_rng(rng)
        return {d.name: d.choices[int(rng.integers(len(d.choices)))] for d in self.decision_list}

    def sample(self, rng: np.random.Generator | int | None = None) -> Arch:
        """A uniformly random member; ``rng`` is a numpy Generator or a seed."""
        return self.decode(self.sample_choices(rng))

    def iter_choices(self) -> Iterator[dict[str, Any]]:
        """Every choice vector, in index order (only sensible for small spaces)."""
        ds = self.decision_list
        for combo in itertools.product(*(d.choices for d in ds)):
            yield {d.name: v for d, v in zip(ds, combo)}

    def encode(self, arch: Arch) -> dict[str, Any]:
        """The choices that decode to ``arch``; ``ValueError`` if it is not a member.

        This generic version looks the arch's string up in an index of every member, built
        once per instance on first use (so a controller that encodes every result pays for
        one enumeration, not one per call). A space above 200,000 members must override it
        (:class:`StagewiseSpace` does); without that it raises :class:`SpaceTooLarge`.
        """
        index = self._member_index
        found = index.get(arch.to_string()) if isinstance(arch, Arch) else None
        if found is None:
            shown = arch.to_string() if isinstance(arch, Arch) else repr(arch)
            raise ValueError(f"arch is not in space {self.label}: {shown}")
        return {d.name: d.choices[i] for d, i in zip(self.decision_list, found)}

    @cached_property
    def _member_index(self) -> dict[str, tuple[int, ...]]:
        # member string -> choice indices (the first vector that decodes to it, in index order)
        if self.size > _ENUMERATE_LIMIT:
            raise SpaceTooLarge(
                f"space {self.label} has {self.size:,} members, too many for the generic encode() to index (at most "
                f"{_ENUMERATE_LIMIT:,}): give {type(self).__name__} its own encode(arch) returning the arch's choices "
                "(as StagewiseSpace does, stage by stage)")
        ds = self.decision_list
        index: dict[str, tuple[int, ...]] = {}
        for combo in itertools.product(*(range(len(d.choices)) for d in ds)):
            arch = self.make_arch({d.name: d.choices[i] for d, i in zip(ds, combo)})
            index.setdefault(arch.to_string(), combo)
        return index

    def parse(self, text: str) -> Arch:
        """The member of a string that :meth:`encode` and the ledger record (an arch string here)."""
        return Arch.from_string(text)

    def contains(self, arch: Arch) -> bool:
        try:
            return self.decode(self.encode(arch)) == arch
        except SpaceTooLarge:
            raise
        except ValueError:
            return False

    def build(self, arch: Arch, input_shape=None, num_classes: int | None = None):
        """The shared builder (:func:`search_spaces.build_model`); spaces never build on their own."""
        from .builder import build_model

        return build_model(arch, input_shape=input_shape, num_classes=num_classes)

    def describe(self) -> str:
        lines = [f"space {self.label}  ({type(self).__module__}:{type(self).__qualname__})"]
        if self.config():
            lines.append("config: " + ", ".join(f"{k}={v}" for k, v in self.config().items()))
        lines.append(f"decisions: {len(self.decision_list)}   size: {self.size:,} (~{self.size:.2e})")
        width = max(len(d.name) for d in self.decision_list)
        for d in self.decision_list:
            lines.append(f"  {d.name:<{width}}  {' | '.join(map(str, d.choices))}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class StagewiseSpace(SearchSpace):
    """A space whose stages are decided independently (MnasNet's factorized hierarchy).

    Subclasses give :meth:`stage_decisions` (choices of one stage, unprefixed) and
    :meth:`make_block`; stem, head and resolution are fixed. Decisions are named
    ``s{i}.{name}`` and :meth:`encode` inverts one stage at a time, so it stays fast on
    spaces of 10^17 members.
    """

    def num_stages(self) -> int:
        raise NotImplementedError

    def stage_decisions(self, stage: int) -> Sequence[Decision]:
        raise NotImplementedError

    def make_block(self, stage: int, choices: Mapping[str, Any]):
        raise NotImplementedError

    def make_stem(self):
        raise NotImplementedError

    def make_head(self):
        raise NotImplementedError

    resolution: int = 224
    num_classes: int | None = None

    def decisions(self) -> list[Decision]:
        return [Decision(f"s{i}.{d.name}", d.choices)
                for i in range(1, self.num_stages() + 1) for d in self.stage_decisions(i)]

    def make_arch(self, choices: Mapping[str, Any]) -> Arch:
        blocks = []
        for i in range(1, self.num_stages() + 1):
            pre = f"s{i}."
            blocks.append(self.make_block(i, {k[len(pre):]: v for k, v in choices.items() if k.startswith(pre)}))
        return Arch(stem=self.make_stem(), stages=tuple(blocks), head=self.make_head(),
                    resolution=self.resolution, num_classes=self.num_classes)

    @cached_property
    def _stage_index(self) -> list[dict]:
        # block -> stage choices, per stage; at most a few thousand entries each.
        tables = []
        for i in range(1, self.num_stages() + 1):
            ds = list(self.stage_decisions(i))
            table: dict = {}
            for combo in itertools.product(*(d.choices for d in ds)):
                c = {d.name: v for d, v in zip(ds, combo)}
                table.setdefault(self.make_block(i, c), c)
            tables.append(table)
        return tables

    def encode(self, arch: Arch) -> dict[str, Any]:
        if len(arch.stages) != self.num_stages():
            raise ValueError(f"arch is not in space {self.label}: it has {len(arch.stages)} stages, "
                             f"the space {self.num_stages()}")
        if (arch.stem, arch.head, arch.resolution, arch.num_classes) != (
                self.make_stem(), self.make_head(), self.resolution, self.num_classes):
            raise ValueError(f"arch is not in space {self.label}: stem, head, resolution or classes differ "
                             f"(space {self!r})")
        out: dict[str, Any] = {}
        for i, (block, table) in enumerate(zip(arch.stages, self._stage_index), start=1):
            if block not in table:
                raise ValueError(f"arch is not in space {self.label}: stage {i} {block.to_string()} "
                                 "is not a choice of that stage")
            out.update({f"s{i}.{k}": v for k, v in table[block].items()})
        return out


# ------------------------------------------------------------------------------ registry

SPACES: Registry[SearchSpace] = Registry("space", SearchSpace)


def register(cls: type[SearchSpace]) -> type[SearchSpace]:
    """Class decorator: register a space under ``cls.name``; a duplicate name raises."""
    return SPACES.register(cls)


def names() -> list[str]:
    """Registered space names."""
    return SPACES.names()


def registered() -> dict[str, type[SearchSpace]]:
    return {n: SPACES.resolve(n) for n in SPACES.names()}


def get(name_or_path: str | SearchSpace, **kwargs: Any) -> SearchSpace:
    """A space instance by registered name (``"mnasnet"``) or import path (``"my_spaces:TinySpace"``).

    ``kwargs`` go to the space's constructor (e.g. ``resolution=32, width=0.25``).
    """
    if isinstance(name_or_path, SearchSpace):
        if kwargs:
            raise ValueError(f"space {name_or_path.label}: arguments {sorted(kwargs)} given for an instance")
        return name_or_path
    obj = SPACES.resolve(name_or_path)
    if isinstance(obj, SearchSpace):
        if kwargs:
            raise ValueError(f"space {name_or_path!r} is an instance; it takes no arguments, got {sorted(kwargs)}")
        return obj
    space = SPACES.create(name_or_path, **kwargs)
    _ = space.decision_list  # fail here, at selection, on a malformed space
    return space
