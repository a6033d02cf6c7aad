"""A stagewise space with some decisions held at one value: the search explores the rest.

Why: a decision can be too costly to search for what it buys in a given budget. The
one-shot search's supernet is the main case. Its block types (mbconv against fused_mbconv)
keep their own weights, so drawing them per stage makes every later stage see features
whose meaning changes from step to step; ``benchmarks/oneshot_interference.py`` measures
that this alone keeps a short supernet run near chance. Holding the block types at a known
good layout (EfficientNet-EdgeTPU's: fused early, mbconv late) and searching kernels,
expansions, widths, depths, activations and SE is the standard narrowing for such budgets.

Members of a :class:`HeldSpace` are members of its base space (the same arch strings), so
every tool that takes a base arch takes them.

>>> import search_spaces as s
>>> base = s.get("efficientnet_edgetpu", resolution=128, num_classes=10)
>>> ref = s.reference("efficientnet_edgetpu_s", resolution=128, num_classes=10)
>>> space = hold(base, ["block"], from_arch=ref)
>>> [d.name for d in space.decision_list][:3]
['s1.kernel', 's1.expansion', 's1.filters']
>>> space.sample(0).stages[0].type, space.sample(0).stages[5].type
('fused_mbconv', 'mbconv')
>>> base.contains(space.sample(0))
True
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping

from .arch import Arch
from .references import reference, reference_names
from .space import StagewiseSpace

__all__ = ["HeldSpace", "hold"]


class HeldSpace(StagewiseSpace):
    """The members of a stagewise ``base`` whose ``held`` decisions (full names, ``s2.block``)
    take the given values. Its decisions are the base's others, in the base's order."""

    name = "held"

    def __init__(self, base: StagewiseSpace, held: Mapping[str, Any]):
        if not isinstance(base, StagewiseSpace):
            raise ValueError(f"held space: base {getattr(base, 'label', base)!r} is not a StagewiseSpace")
        known = {d.name: d for d in base.decision_list}
        unknown = [k for k in held if k not in known]
        if unknown:
            raise ValueError(f"held space: {unknown[0]!r} is not a decision of {base.label}")
        if len(held) == len(known):
            raise ValueError(f"held space: every decision of {base.label} is held, so there is nothing to search")
        self.base, self.held = base, {k: known[k].choices[known[k].index(v)] for k, v in held.items()}
        self._per_stage: dict[int, dict[str, Any]] = {}
        for key, value in self.held.items():
            stage, short = key.split(".", 1)
            self._per_stage.setdefault(int(stage[1:]), {})[short] = value
        self.resolution, self.num_classes = base.resolution, base.num_classes

    @property
    def label(self) -> str:
        return f"{self.base.label} holding {len(self.held)} of its {len(self.base.decision_list)} decisions"

    def config(self) -> dict:
        return {"base": self.base.label, "base_config": self.base.config(), "held": dict(self.held)}

    def num_stages(self) -> int:
        return self.base.num_stages()

    def stage_decisions(self, stage: int):
        held = self._per_stage.get(stage, {})
        return [d for d in self.base.stage_decisions(stage) if d.name not in held]

    def make_block(self, stage: int, choices):
        return self.base.make_block(stage, {**self._per_stage.get(stage, {}), **choices})

    def make_stem(self):
        return self.base.make_stem()

    def make_head(self):
        return self.base.make_head()


def hold(space: StagewiseSpace, decisions: Iterable[str] = (), *, values: Mapping[str, Any] | None = None,
         from_arch: Arch | str | None = None, where: str = "hold") -> HeldSpace:
    """``space`` with ``decisions`` held at ``from_arch``'s choices and ``values`` at theirs.

    ``from_arch`` is an :class:`Arch`, an arch string, or a reference name, which is scaled to
    the space's width, depth, resolution and classes. A name is a full decision name
    (``s2.block``) or a stage decision's short name (``block``: every stage that has it).
    ``ValueError`` names ``where`` and the field: ``{where}.decisions``, ``{where}.values`` or
    ``{where}.arch``.
    """
    if not isinstance(space, StagewiseSpace):
        raise ValueError(f"{where}: space {space.label} is not stagewise; allowed: a StagewiseSpace")
    if isinstance(from_arch, str):
        from_arch = _resolve(from_arch, space, f"{where}.arch")
    by_name = {d.name: d for d in space.decision_list}
    full = list(by_name)
    short = sorted({n.split(".", 1)[1] for n in full if "." in n})

    def expand(name: Any, field: str) -> list[str]:
        if isinstance(name, str) and name in full:
            return [name]
        if isinstance(name, str) and name in short:
            return [n for n in full if n.split(".", 1)[-1] == name]
        hint = difflib.get_close_matches(str(name), short + full, n=1)
        raise ValueError(f"{where}.{field}: {name!r} is not a decision of {space.label}; allowed: "
                         f"{', '.join(short)} (every stage) or one stage's, e.g. {full[0]}"
                         + (f" (did you mean {hint[0]!r}?)" if hint else ""))

    held: dict[str, Any] = {}
    names = [n for d in decisions for n in expand(d, "decisions")]
    if names:
        if from_arch is None:
            raise ValueError(f"{where}.arch: needed by {where}.decisions ({', '.join(map(str, decisions))}): "
                             "the arch (a reference name or arch string) whose choices they are held at")
        try:
            choices = space.encode(from_arch)
        except ValueError as e:
            raise ValueError(f"{where}.arch: {e}") from None
        held.update({n: choices[n] for n in names})
    for key, value in (values or {}).items():
        for n in expand(key, "values"):
            d = by_name[n]
            try:
                held[n] = d.choices[d.index(value)]
            except ValueError:
                raise ValueError(f"{where}.values.{key}: {value!r} is not a choice; allowed: "
                                 f"{', '.join(map(repr, d.choices))}") from None
    if not held:
        raise ValueError(f"{where}: holds nothing; give decisions (with arch) or values")
    try:
        return HeldSpace(space, held)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _resolve(text: str, space: StagewiseSpace, field: str) -> Arch:
    if text in reference_names():
        return reference(text, width=getattr(space, "width", 1.0), depth=getattr(space, "depth", 1.0),
                         resolution=space.resolution, num_classes=space.num_classes)
    try:
        return Arch.from_string(text)
    except ValueError as e:
        raise ValueError(f"{field}: {text!r} is neither a reference ({', '.join(reference_names())}) "
                         f"nor an arch string ({e})") from None
