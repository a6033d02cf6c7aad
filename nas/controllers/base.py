"""Controllers: propose archs, learn from results (ask/tell); state rebuilt by replaying history.

A controller works on a :class:`~search_spaces.SearchSpace`'s decisions (choice indices)
and never trains or measures anything itself: the runner owns the loop. :meth:`Controller.ask`
gives a :class:`Proposal`, the arch with the controller's own data about it (mnas's sampled
actions and their log-probability, Optuna's trial); the search carries it to the trial and
back to :meth:`Controller.tell` with the result, so a controller never has to find again
what it proposed. A result is any mapping with ``reward`` (a float; NaN, inf or None mean "no
usable reward") and optionally ``status``; a search tells the read-only view of its
:class:`~nas.core.record.TrialRecord`. Failed or infeasible trials are counted but never
learned from (:func:`usable_reward`). Every controller is seeded and deterministic given its
seed and the order of results.

Writing a controller::

    from nas.controllers.base import Controller, register_controller

    class Greedy(Controller):
        '''Mutates the best arch so far, one decision at a time.'''
        name = "greedy"

        def propose(self):
            if self.best is None:
                return self.space.decode_indices(self.random_indices())
            idx = self.space.indices(self.space.encode(self.best[0]))
            d = int(self.rng.integers(len(idx)))
            idx[d] = int(self.rng.integers(len(self.space.decision_list[d].choices)))
            return self.space.decode_indices(idx)

    register_controller(Greedy)

``propose`` returns an :class:`~search_spaces.Arch`, or a :class:`Proposal` whose ``data`` the
controller wants back in :meth:`Controller.learn`.
"""

from __future__ import annotations

import collections
import difflib
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from search_spaces import Arch, SearchSpace
from search_spaces.registry import Registry

from nas.core.params import parse_params
from nas.core.record import usable_reward

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Proposal:
    """An arch a controller proposed, with the controller's own data about it.

    The search keeps it from :meth:`Controller.ask` to :meth:`Controller.tell`: the data
    (sampled actions, log-probabilities, an Optuna trial) goes back to the controller that made
    it with the trial's result. A result the controller did not propose (a recorded run
    replayed, a one-shot candidate, a user's seed) is told as a bare arch: ``data`` None.
    """

    arch: Arch
    data: Any = None

    @property
    def key(self) -> str:
        """The arch string."""
        return self.arch.to_string()


class Controller:
    """Base class: seeded rng, the best usable result so far, ask/tell bookkeeping."""

    name: ClassVar[str] = ""

    def __init__(self, space: SearchSpace, seed: int = 0):
        self.space = space
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.n_proposed = 0
        self.n_feedback = 0
        self.n_failed = 0
        self.best: tuple[Arch, float] | None = None
        self.planned: tuple[int, int] | None = None

    # -- what a subclass implements -----------------------------------------------------------

    def propose(self) -> Arch | Proposal:
        raise NotImplementedError

    def learn(self, proposal: Proposal, reward: float) -> None:
        """Called with usable rewards only."""

    def plan(self, budget: int, concurrency: int) -> None:
        """Told once, before the first proposal: the search's trial budget and how many
        proposals are out at a time (concurrency, or a benchmark's batch). A controller whose
        settings depend on them (``mnas``'s default preset) derives them here."""
        self.planned = (budget, concurrency)

    # -- the shared protocol ------------------------------------------------------------------

    def ask(self) -> Proposal:
        """The next proposal (:meth:`propose`'s, as a :class:`Proposal`)."""
        p = self.propose()
        self.n_proposed += 1
        return p if isinstance(p, Proposal) else Proposal(p)

    def tell(self, proposal: Proposal | Arch, result: Mapping[str, Any] | None) -> None:
        """A result for ``proposal`` (one of this controller's, or a bare arch it did not propose)."""
        if not isinstance(proposal, Proposal):
            proposal = Proposal(proposal)
        self.n_feedback += 1
        r = usable_reward(result)
        if r is None:
            self.n_failed += 1
            self.on_failure(proposal)
            return
        if self.best is None or r > self.best[1]:
            self.best = (proposal.arch, r)
        self.learn(proposal, r)

    def on_failure(self, proposal: Proposal) -> None:
        """A failed or infeasible trial: nothing to learn (subclasses may release state)."""

    def random_indices(self) -> list[int]:
        return [int(self.rng.integers(len(d.choices))) for d in self.space.decision_list]

    def summary(self) -> dict[str, Any]:
        return {"controller": self.name, "proposed": self.n_proposed, "feedback": self.n_feedback,
                "failed": self.n_failed, "best_reward": None if self.best is None else self.best[1]}


class RandomSearch(Controller):
    """Uniform random sampling of the space."""

    name = "random"

    def propose(self) -> Arch:
        return self.space.decode_indices(self.random_indices())


class RegularizedEvolution(Controller):
    """Regularized (aging) evolution (Real et al. 2019).

    The first ``population`` proposals are random; after that, a tournament of ``sample``
    members drawn from the population picks a parent, and the child differs from it in
    exactly one decision. Each usable result joins the population and the oldest member
    leaves. Pending proposals are drawn from the population as it is when asked.
    """

    name = "evolution"

    def __init__(self, space: SearchSpace, seed: int = 0, population: int = 20, sample: int = 5):
        super().__init__(space, seed)
        if not isinstance(population, int) or population < 2:
            raise ValueError(f"controller.population: expected an integer >= 2, got {population!r}")
        if not isinstance(sample, int) or not 1 <= sample <= population:
            raise ValueError(f"controller.sample: expected an integer in [1, population={population}], got {sample!r}")
        self.population_size, self.sample_size = population, sample
        self.population: collections.deque[tuple[list[int], float]] = collections.deque()

    def propose(self) -> Arch:
        if len(self.population) < self.population_size:
            return self.space.decode_indices(self.random_indices())
        members = [self.population[int(i)] for i in self.rng.integers(len(self.population), size=self.sample_size)]
        parent = max(members, key=lambda m: m[1])[0]
        return self.space.decode_indices(self.mutate(parent))

    def mutate(self, idx: list[int]) -> list[int]:
        child = list(idx)
        mutable = [i for i, d in enumerate(self.space.decision_list) if len(d.choices) > 1]
        d = mutable[int(self.rng.integers(len(mutable)))]
        n = len(self.space.decision_list[d].choices)
        child[d] = (child[d] + 1 + int(self.rng.integers(n - 1))) % n  # always a different value
        return child

    def learn(self, proposal: Proposal, reward: float) -> None:
        self.population.append((self.space.indices(self.space.encode(proposal.arch)), reward))
        if len(self.population) > self.population_size:
            self.population.popleft()


class ArchList(Controller):
    """Proposes the archs it is given, in order, then the first again (what ``nas search``
    retrains after a one-shot phase, and a way to train a chosen few as trials)::

        controller: {name: list, params: {archs: ["v1-res128-...", "v1-res128-..."]}}
        budget: {trials: 2}
    """

    name = "list"

    def __init__(self, space: SearchSpace, seed: int = 0, archs: list[str] | None = None):
        super().__init__(space, seed)
        if not archs or not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
            raise ValueError(f"controller.archs: expected a non-empty list of arch strings, got {archs!r}")
        self.archs = []
        for i, text in enumerate(archs):
            try:
                self.archs.append(space.parse(text))  # an Arch, or the member of a categorical space
            except ValueError as e:
                raise ValueError(f"controller.archs[{i}]: {text!r} is not an arch string ({e})") from None

    def propose(self) -> Arch:
        return self.archs[self.n_proposed % len(self.archs)]


# ------------------------------------------------------------------------------ registry

CONTROLLERS: Registry[Controller] = Registry("controller", Controller, arguments="parameters", builtin={
    "random": RandomSearch,
    "evolution": RegularizedEvolution,
    "list": ArchList,
    "mnas": "nas.controllers.mnas:MNASController",
    "logits": "nas.controllers.logits:IndependentLogits",
    "optuna": "nas.controllers.optuna:OptunaController",  # imported on use, so only its searches load optuna
})


def register_controller(cls: type[Controller]) -> type[Controller]:
    """Class decorator: register a controller under ``cls.name``; a duplicate name raises."""
    return CONTROLLERS.register(cls)


def controller_names() -> list[str]:
    return CONTROLLERS.names()


def get_controller(name: str, space: SearchSpace, seed: int = 0, **params: Any) -> Controller:
    """A controller by name (``random``, ``evolution``, ``list``, ``mnas``, ``logits``, ``optuna``) or ``module:Class``."""
    return CONTROLLERS.create(name, space, seed, **params)


def controller_spec(text: str) -> tuple[str, dict[str, Any]]:
    """A controller and its parameters as ``nas bench --controller`` takes them: ``'mnas'``,
    ``'mnas:batch_size=4,learning_rate=0.01'``, ``'my_module:MyController'`` or
    ``'my_module:MyController:k=v,...'`` -> ``(name, params)``.

    >>> controller_spec("mnas:batch_size=4")
    ('mnas', {'batch_size': 4})
    """
    name, _, rest = text.partition(":")
    if name not in controller_names():
        cls, _, after = rest.partition(":")
        # module:Class (as a search's 'controller: {name: module:Class}'), then its parameters
        if name and cls and "=" not in cls and "," not in cls:
            name, rest = f"{name}:{cls}", after
        else:
            close = difflib.get_close_matches(name, controller_names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"--controller: unknown name {name!r}; allowed: {', '.join(controller_names())} "
                             f"or module:Class{hint}")
    params = parse_params(tuple(p for p in rest.split(",") if p), "--controller",
                          "NAME:KEY=VALUE,... (e.g. mnas:batch_size=4)") if rest else {}
    return name, params
