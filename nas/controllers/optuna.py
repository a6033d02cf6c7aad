"""A model-based controller on Optuna's ask/tell API: TPE, NSGA-II or multi-objective TPE.

Each decision of the space (:attr:`~search_spaces.SearchSpace.decision_list`) is one
categorical Optuna parameter, named after the decision, whose values are the choice indices
(categorical: TPE models the choices as unordered, which they are). ``ask()`` asks the study
for a trial and decodes its indices; ``tell()`` tells Optuna what became of it:

- ``ok`` and ``stopped`` (ASHA stopped it early; it was scored on its last epoch): a complete
  trial with its objective values;
- ``infeasible`` (it broke a hard constraint, so it was never trained): a complete trial
  that is *infeasible* to Optuna's constraint handling (constraint value 1; every usable
  trial carries 0), so the samplers rank it after every feasible trial;
- ``failed`` (or any result without the objective values): a ``FAIL`` trial, which the
  samplers ignore.

Parameters (``controller: {name: optuna, params: {...}}`` in an experiment):

- ``sampler``: ``tpe`` (default), ``nsga2`` or ``motpe`` (TPE on two objectives);
- ``objectives``: what to optimise, a list of ``reward`` (maximised), ``accuracy``
  (maximised) and ``latency_ms`` (the deployment latency, minimised). Default ``[reward]``
  for ``tpe``, ``[accuracy, latency_ms]`` for ``nsga2`` and ``motpe``;
- ``n_startup_trials`` (10), ``multivariate`` (true: the decisions of a stage interact) and
  ``constant_liar`` (true: a search asks several archs before their results come back,
  concurrency and batching, and the liar keeps TPE from proposing the same region for all
  of them) for ``tpe`` and ``motpe``;
- ``population_size`` (20) for ``nsga2``.

The samplers are seeded with the controller's seed, so the controller is deterministic given
its seed and the order of results, and a resumed search's replay (ask and tell again in
the recorded order) rebuilds the same study.

>>> import search_spaces
>>> from nas.controllers.base import get_controller
>>> space = search_spaces.get("efficientnet_edgetpu_bench")
>>> c = get_controller("optuna", space, seed=0, n_startup_trials=4)
>>> for i in range(6):
...     c.tell(c.ask(), {"status": "ok", "reward": 0.1 * i, "accuracy": 0.1 * i, "latency_ms": 2.0})
>>> c.tell(c.ask(), {"status": "infeasible", "latency_ms": 9.5, "reason": "latency_ms 9.500 > max_latency_ms 5"})
>>> c.tell(c.ask(), {"status": "failed", "reason": "NaN loss"})
>>> [(t.state.name, t.constraints) for t in c.study.trials[-3:]]
[('COMPLETE', {'infeasible': 0.0}), ('COMPLETE', {'infeasible': 1.0}), ('FAIL', {})]
>>> c.summary()["best_reward"], c.summary()["failed"]
(0.5, 2)
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

from search_spaces import Arch, SearchSpace

from nas.controllers.base import Controller, Proposal
from nas.core.record import RecordError, Status, TrialRecord

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "nsga2", "motpe")
#: objective -> Optuna direction; each is a field of the record view a controller is told.
OBJECTIVES = {"reward": "maximize", "accuracy": "maximize", "latency_ms": "minimize"}
_TPE_ONLY = ("n_startup_trials", "multivariate", "constant_liar")
#: The name of the one constraint value every complete trial carries (> 0: infeasible).
CONSTRAINT = "infeasible"


def _check_int(what: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"controller.{what}: expected an integer in [{lo}, {hi}], got {v!r}")
    return v


def _check_bool(what: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"controller.{what}: expected true or false, got {v!r}")
    return v


class OptunaController(Controller):
    """Optuna's TPE (default), NSGA-II or multi-objective TPE over the space's decisions.

    Pending trials: several asks may be outstanding. Each ask's Optuna trial travels in its
    :class:`~nas.controllers.base.Proposal` and is told when the proposal is. A result for a
    bare arch (one the controller did not propose: a resumed search whose redrawn proposal
    differs from the recorded arch, because the space, the controller's parameters or Optuna
    changed; a one-shot candidate) is added to the study as a finished trial of its own, since
    its result is real and worth learning from. Every result answers one ask (the protocol of
    :class:`~nas.controllers.base.Controller` and of the search), so such a result also means
    one asked trial will never be told: the newest open one is closed as ``FAIL`` (user attr
    ``status: superseded``), which the samplers ignore. The newest, because a replay that
    diverges does so from some ask on, and the proposals after that point are the ones the
    record will never answer. Left running, a superseded trial would stay forever in the
    constant liar's "pending, assume bad" set and push the sampler away from its region.
    """

    name = "optuna"

    def __init__(self, space: SearchSpace, seed: int = 0, *, sampler: str = "tpe",
                 objectives: list[str] | tuple[str, ...] | str | None = None, n_startup_trials: int | None = None,
                 multivariate: bool | None = None, constant_liar: bool | None = None,
                 population_size: int | None = None):
        super().__init__(space, seed)
        # Every parameter is checked before Optuna is imported: a bad experiment fails fast.
        if not isinstance(sampler, str) or sampler not in SAMPLERS:
            raise ValueError(f"controller.sampler: unknown {sampler!r}; allowed: {', '.join(SAMPLERS)}")
        if sampler == "nsga2":
            given = [k for k, v in (("n_startup_trials", n_startup_trials), ("multivariate", multivariate),
                                    ("constant_liar", constant_liar)) if v is not None]
            if given:
                raise ValueError(f"controller.{given[0]}: a TPE setting, but sampler is nsga2; allowed with "
                                 "nsga2: population_size, objectives")
        elif population_size is not None:
            raise ValueError(f"controller.population_size: an NSGA-II setting, but sampler is {sampler}; allowed "
                             f"with {sampler}: {', '.join(_TPE_ONLY)}, objectives")
        if objectives is None:
            objectives = ["reward"] if sampler == "tpe" else ["accuracy", "latency_ms"]
        elif isinstance(objectives, str):
            objectives = [objectives]
        if (not isinstance(objectives, (list, tuple)) or not objectives
                or not all(isinstance(o, str) and o in OBJECTIVES for o in objectives)
                or len(set(objectives)) != len(objectives)):
            raise ValueError(f"controller.objectives: expected a list of distinct names from "
                             f"{', '.join(OBJECTIVES)}, got {objectives!r}")
        if sampler == "motpe" and len(objectives) < 2:
            raise ValueError(f"controller.objectives: motpe is multi-objective, got {list(objectives)!r}; allowed: "
                             "two or more of reward, accuracy, latency_ms (e.g. [accuracy, latency_ms]), or "
                             "sampler tpe for one")
        self.sampler_name = sampler
        self.objectives = tuple(objectives)
        if sampler == "nsga2":
            self.population_size = _check_int("population_size", 20 if population_size is None else population_size,
                                              2, 100_000)
        else:
            self.n_startup_trials = _check_int("n_startup_trials", 10 if n_startup_trials is None
                                               else n_startup_trials, 0, 100_000)
            self.multivariate = _check_bool("multivariate", True if multivariate is None else multivariate)
            self.constant_liar = _check_bool("constant_liar", True if constant_liar is None else constant_liar)

        import optuna
        from optuna.distributions import CategoricalDistribution

        # Optuna logs every study and trial at INFO; the search prints its own line per trial.
        # (The settings used here are stable API in Optuna 5; should a later version mark one
        # experimental, its ExperimentalWarning is left to show, once, by Python's default filter.)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self.distributions = {d.name: CategoricalDistribution(tuple(range(len(d.choices))))
                              for d in space.decision_list}
        if sampler == "nsga2":
            s = optuna.samplers.NSGAIISampler(population_size=self.population_size, seed=seed)
        else:
            s = optuna.samplers.TPESampler(n_startup_trials=self.n_startup_trials, multivariate=self.multivariate,
                                           constant_liar=self.constant_liar, seed=seed)
        self.study = optuna.create_study(directions=[OBJECTIVES[o] for o in self.objectives], sampler=s)
        self.open: dict[int, Any] = {}  # Optuna trial number -> trial, asked and not told (in ask order)
        self.n_superseded = 0

    # ---------------------------------------------------------------------------------- ask

    def propose(self) -> Proposal:
        trial = self.study.ask(self.distributions)
        idx = [int(trial.params[d.name]) for d in self.space.decision_list]
        arch = self.space.decode_indices(idx)
        trial.set_user_attr("arch", arch.to_string())
        self.open[trial.number] = trial
        return Proposal(arch, trial)

    # --------------------------------------------------------------------------------- tell

    def tell(self, proposal: Proposal | Arch, result: Mapping[str, Any] | None) -> None:
        # The base class keeps the bookkeeping (n_feedback, n_failed, best); learn() and
        # on_failure() are no-ops here because Optuna needs the whole record, not the reward.
        if not isinstance(proposal, Proposal):
            proposal = Proposal(proposal)
        super().tell(proposal, result)
        try:
            rec = TrialRecord.coerce(result)
        except RecordError as e:
            rec = TrialRecord(status=Status.FAILED, reason=f"unreadable result: {e}")
        state, values, constraint, why = self._outcome(rec)
        key = proposal.key
        attrs = {"arch": key, "status": rec.status.value}
        if why:
            attrs["reason"] = why
        trial = proposal.data
        if trial is not None and self.open.get(getattr(trial, "number", None)) is trial:
            del self.open[trial.number]
            for k, v in attrs.items():
                trial.set_user_attr(k, v)
            if constraint is not None:
                # A trial's own constraint value (Optuna 5), which every sampler reads; the
                # samplers' constraints_func it replaced is deprecated in Optuna 5.
                trial.set_constraint(CONSTRAINT, constraint)
            self.study.tell(trial, values, state=state)
            return
        try:
            params = dict(zip(self.distributions, self.space.indices(self.space.encode(proposal.arch))))
        except ValueError as e:  # the space changed under a resumed search: keep going, without it
            log.warning("optuna: cannot learn from %s: %s", key, e)
            params = None
        if self.open:
            _, stray = self.open.popitem()
            stray.set_user_attr("status", "superseded")
            stray.set_user_attr("reason", f"a result came for {key}, which no open trial proposed")
            self.study.tell(stray, state=self._optuna.trial.TrialState.FAIL)
            self.n_superseded += 1
            log.debug("optuna: a result for an arch no open trial proposed; closed the newest open trial")
        if params is None:
            return
        self.study.add_trial(self._optuna.trial.create_trial(
            params=params, distributions=self.distributions, state=state, values=values, user_attrs=attrs,
            constraints=None if constraint is None else {CONSTRAINT: constraint}))

    def _outcome(self, rec: TrialRecord):
        """(Optuna state, objective values or None, constraint value or None, reason) of a record."""
        TrialState = self._optuna.trial.TrialState
        if rec.usable:
            values = [getattr(rec, o) for o in self.objectives]
            missing = [o for o, v in zip(self.objectives, values) if v is None]
            if missing:
                log.warning("optuna: a usable result without %s cannot be told to a study on %s; told as failed",
                            ", ".join(missing), ", ".join(self.objectives))
                return TrialState.FAIL, None, None, f"no {', '.join(missing)} in the result"
            return TrialState.COMPLETE, values, 0.0, rec.reason
        if rec.status is Status.INFEASIBLE:
            # An infeasible candidate was never trained, so it has no accuracy and no reward.
            # Telling it FAIL would make the samplers forget it and propose its region again;
            # the constraint value 1 says "infeasible", and both samplers then rank it after
            # every feasible trial (TPE puts it in its "bad" group, NSGA-II's constrained
            # domination ranks every feasible trial above it) and compare infeasible trials
            # only by their violation. The objective values are then placeholders that are
            # never weighed against feasible ones; they are the worst case all the same
            # (reward and accuracy 0, as an untrained model would score, and the measured
            # latency, or infinity if none was measured) so that nothing reading the study
            # mistakes an infeasible trial for a good one.
            values = [rec.latency_ms if o == "latency_ms" and rec.latency_ms is not None
                      else math.inf if o == "latency_ms" else 0.0 for o in self.objectives]
            return TrialState.COMPLETE, values, 1.0, rec.reason or "infeasible"
        return TrialState.FAIL, None, None, rec.reason or f"status {rec.status.value}, reward {rec.reward!r}"

    def summary(self) -> dict[str, Any]:
        return super().summary() | {"sampler": self.sampler_name, "objectives": list(self.objectives),
                                    "pending": len(self.open), "superseded": self.n_superseded}
