"""The ledger: the record of one search, and the one replay that rebuilds its controller.

:class:`Ledger` owns the controller and the record of the search: an event log of ``ask``
and ``tell`` events in the order they happened, the completed results and the trials still
pending. Everything is JSON; resuming rebuilds the controller by replaying the event log
into a fresh one (the controller is never pickled), so a resumed search continues exactly
where the recorded one stopped. :func:`replay` is that replay, for resume, ``nas report``
(which reads the policy's entropy after every proposal) and the benchmarks alike.

The runners own the loop (:mod:`nas.run.runner`); the run folder owns the files
(:mod:`nas.ledger.folder`). A search in a few lines, without either::

    from nas.config.experiment import load_experiment
    from nas.ledger.ledger import Finished, Ledger
    cfg = load_experiment("experiments/quickstart.yaml")
    ledger = Ledger(cfg, budget=3)
    for n in range(100):
        try:
            arch = ledger.suggest(f"t{n}")
        except Finished:
            break
        ledger.complete(f"t{n}", {"status": "ok", "reward": 0.5, "accuracy": 0.5, "latency_ms": 1.0})
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping, Sequence

from search_spaces import Arch, SearchSpace

from nas.config.experiment import ExperimentConfig
from nas.controllers.base import Controller, Proposal, get_controller
from nas.core.errors import Finished, RunFolderError
from nas.core.events import Ask, LedgerEvent, Orphan, Reissue, Repeat, Tell, TellRepeat, parse as parse_event
from nas.trial.faults import kill_point
from nas.core.record import Status, TrialRecord, best_result, legacy_dict

log = logging.getLogger(__name__)

__all__ = ["Finished", "Ledger", "STATE_VERSION", "make_base_space", "make_controller", "make_space", "read_state_json", "replay"]

#: 2: results are trial records with deployment and proxy figures; 1 (read, migrated): before.
STATE_VERSION = 2
_READABLE_STATES = (1, 2)


def make_base_space(cfg: ExperimentConfig) -> SearchSpace:
    """The registered space ``space.name`` with its arguments, before ``space.hold``."""
    import search_spaces

    return search_spaces.get(cfg.space.name, **cfg.space.kwargs())


def make_space(cfg: ExperimentConfig) -> SearchSpace:
    """The space the search explores: :func:`make_base_space`, with ``space.hold`` applied."""
    import search_spaces

    base, h = make_base_space(cfg), cfg.space.hold
    if h is None:
        return base
    return search_spaces.hold(base, h.decisions, values=h.values, from_arch=h.arch, where="space.hold")


def make_controller(cfg: ExperimentConfig, space: SearchSpace | None = None) -> Controller:
    return get_controller(cfg.controller.name, space or make_space(cfg), seed=cfg.seed, **cfg.controller.params)


def read_state_json(text: str | Mapping[str, Any], where: str = "state.json") -> tuple[
        dict, list[LedgerEvent], dict[str, str], dict[str, TrialRecord]]:
    """(the whole document, events, trial_id -> arch, trial_id -> record) of a ``state.json``
    (its text, or the document already parsed, as a one-shot checkpoint embeds it).

    Version 1 states (before deployment and proxy were told apart) are read as records whose
    proxy is the arch itself, which is what those runs trained. A stored record leaves out
    its arch (``archs`` holds it) and its empty fields.
    """
    try:
        d = json.loads(text) if isinstance(text, str) else dict(text)
        if d.get("version") not in _READABLE_STATES:
            raise ValueError(f"version {d.get('version')!r}, expected one of {_READABLE_STATES}")
        load = legacy_dict if d["version"] == 1 else TrialRecord.from_dict
        archs = d["archs"]
        results = {t: load({"arch": archs.get(t), **r}) for t, r in d["results"].items()}
        return d, [parse_event(e) for e in d["events"]], archs, results
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise RunFolderError(f"{where}: not a search state this version can resume ({e})") from None


def _stored(rec: TrialRecord) -> dict[str, Any]:
    """A record as ``state.json`` keeps it: without its arch (in ``archs``) or empty fields,
    which keeps the state of a one-shot search (a record per sampled path) small."""
    return {k: v for k, v in rec.as_dict(drop_empty=True).items() if k != "arch"}


def replay(controller: Controller, events: list[LedgerEvent], archs: Mapping[str, str], results: Mapping[str, TrialRecord],
           on_ask=None, queue: Sequence[str] = ()) -> tuple[dict[str, Proposal], list[tuple[str, Proposal | None]]]:
    """Feed a recorded event log to a fresh ``controller``, as the search fed the original.

    Events: ``["ask", tid]`` (a proposal that became trial ``tid``), ``["tell", tid]`` (its
    result told), ``["repeat", arch]`` (a proposal of an arch already recorded, not trained)
    and ``["tell-repeat", arch, tid]`` (that proposal answered with trial ``tid``'s result);
    ``reissue``/``orphan`` are the runner's bookkeeping. ``on_ask(controller, arch_string)`` is
    called after every proposal (the report reads the policy's entropy there).

    The first asks take ``queue``'s archs (``search.queue``), as the search did, without
    asking the controller. Each result goes back with the proposal it answers, as in the search. Returns the
    proposals not told yet: trial id -> proposal, and the repeats still waiting, in order.
    A proposal that differs from the recorded arch (the controller or space changed) is
    dropped; its result is told as the recorded bare arch.
    """
    asked: dict[str, Proposal] = {}
    repeats: list[tuple[str, Proposal | None]] = []
    queued = list(queue)
    for ev in events:
        if isinstance(ev, Ask) and queued:
            asked[ev.trial_id] = Proposal(controller.space.parse(queued.pop(0)))
            if on_ask is not None:
                on_ask(controller, archs[ev.trial_id])
        elif isinstance(ev, (Ask, Repeat)):
            recorded = archs[ev.trial_id] if isinstance(ev, Ask) else ev.arch
            proposal: Proposal | None = controller.ask()
            if proposal.key != recorded:
                log.warning("replay: the controller now proposes %s where the run had %s; continuing with the "
                            "recorded arch (was the controller or space changed?)", proposal.key, recorded)
                proposal = None
            if isinstance(ev, Ask):
                if proposal is not None:
                    asked[ev.trial_id] = proposal
            else:
                repeats.append((recorded, proposal))
            if on_ask is not None:
                on_ask(controller, recorded)
        elif isinstance(ev, Tell):
            proposal = asked.pop(ev.trial_id, None)
            controller.tell(proposal or Proposal(controller.space.parse(archs[ev.trial_id])),
                            results[ev.trial_id].controller_view())
        elif isinstance(ev, TellRepeat):
            i = next(i for i, (a, _) in enumerate(repeats) if a == ev.arch)
            _, proposal = repeats.pop(i)
            controller.tell(proposal or Proposal(controller.space.parse(ev.arch)), results[ev.trial_id].controller_view())
    return asked, repeats


class Ledger:
    """The controller plus the record of one search; serialisable to JSON and replayable.

    ``suggest(trial_id)`` returns an arch string or raises :class:`Finished`; ``complete(trial_id,
    result)`` feeds the result back and records it.

    Repeats (``search.repeats: record``, the default): a proposal of an arch this run has
    already recorded is not a trial. The controller is told the recorded result and asked
    again, and the budget is not spent. A proposal of an arch still running (or recorded but
    not yet fed back, when a runner batches) is answered when that trial is told. Both are
    events of the log, so a resumed search replays them exactly. ``search.max_repeats``
    proposals of known archs in a row end the search: the controller has converged.
    """

    def __init__(self, cfg: ExperimentConfig | None, budget: int, controller: Controller | None = None,
                 plan: tuple[int, int] | None = None, *, repeats: str | None = None,
                 max_repeats: int | None = None, space_size: int | None = None, queue: Sequence[str] | None = None):
        """``cfg`` gives the controller, ``search.repeats``, ``search.max_repeats`` and the
        concurrency of the plan; without one (``nas bench``), pass ``controller`` and the rest.
        ``space_size``: the search ends once the record holds that many distinct archs. ``queue``
        (default ``search.queue``): archs proposed first, in order, before the controller is asked."""
        if cfg is None and controller is None:
            raise ValueError("Ledger: give an experiment or a controller")
        self.cfg = cfg
        self.budget = budget
        self.controller = controller or make_controller(cfg)
        self.repeats = repeats or (cfg.search.repeats if cfg is not None else "record")
        self.max_repeats = max_repeats or (cfg.search.max_repeats if cfg is not None else 1000)
        self.space_size = space_size
        self.queue: list[str] = list(queue if queue is not None else cfg.search.queue if cfg is not None else [])
        # What the controller is told before its first proposal. A resumed search keeps the
        # original's (even when --max-trials changed the budget), so its replay is exact.
        self.plan = tuple(plan) if plan else (budget, cfg.budget.concurrency if cfg is not None else 1)
        self.controller.plan(*self.plan)
        self.events: list[LedgerEvent] = []        # the order the controller was asked and told
        self.archs: dict[str, str] = {}            # trial_id -> arch string (all asked trials)
        self.results: dict[str, TrialRecord] = {}  # trial_id -> record (completed)
        self.pending: dict[str, str] = {}          # trial_id -> arch string (asked, not told)
        self.proposals: dict[str, Proposal] = {}   # trial_id -> the controller's proposal, until told
        self.untold: list[str] = []                # recorded, not yet fed to the controller (batching)
        self.orphans: list[str] = []               # archs asked but unknown to the runner after a resume
        # repeats proposed while their trial was untold, in order: (arch, the proposal)
        self.waiting: list[tuple[str, Proposal | None]] = []
        self.converged = False                     # search.max_repeats known archs in a row: no new proposal
        self.n_repeats = 0                         # proposals answered from the record
        self._by_arch: dict[str, list[str]] = {}   # arch -> its trial ids, in the order asked
        self._parsed: dict[str, Arch] = {}         # arch string -> the Arch the controller proposed

    # -- the protocol -------------------------------------------------------------------------

    @property
    def n_done(self) -> int:
        return len(self.results)

    @property
    def n_distinct(self) -> int:
        """Distinct archs asked (repeats are proposals of these)."""
        return len(self._by_arch)

    @property
    def waiting_archs(self) -> list[str]:
        """The archs of the repeats waiting for their trial's result, in the order proposed."""
        return [a for a, _ in self.waiting]

    def finished(self) -> bool:
        return (self.converged or self.n_done + len(self.pending) >= self.budget) and not self.orphans

    def suggest(self, trial_id: str) -> str:
        if self.orphans:  # asked before a crash, never started: run them under this id
            arch = self.orphans.pop(0)
            self._add_trial(trial_id, arch)
            self.events.append(Reissue(trial_id, arch))
            return arch
        if self.converged:
            raise Finished(self._converged_text())
        if self.n_done + len(self.pending) >= self.budget:
            raise Finished(f"the budget of {self.budget} trials is spent ({self.n_done} done, "
                           f"{len(self.pending)} running)")
        n_queued = sum(isinstance(e, Ask) for e in self.events) if self.queue else 0
        if n_queued < len(self.queue):  # search.queue first: trials whatever the record holds
            arch = self.queue[n_queued]
            self._add_trial(trial_id, arch)
            self.proposals[trial_id] = Proposal(self.parsed(arch))
            self.events.append(Ask(trial_id))
            return arch
        dedupe = self.repeats == "record"
        by_arch = self._by_arch
        if dedupe and self.space_size is not None and len(by_arch) + len(self.orphans) >= self.space_size:
            raise Finished(f"space exhausted: all {self.space_size:,} archs recorded")
        for _ in range(self.max_repeats if dedupe else 1):  # (a "train" search asks once)
            proposal = self.controller.ask()
            arch = proposal.key
            self._parsed.setdefault(arch, proposal.arch)
            if not dedupe or not (arch in by_arch or arch in self.orphans):
                self._add_trial(trial_id, arch)
                self.proposals[trial_id] = proposal
                self.events.append(Ask(trial_id))
                return arch
            self.n_repeats += 1
            self.events.append(Repeat(arch))
            told = next((t for t in by_arch.get(arch, []) if t in self.results and t not in self.untold), None)
            if told is None:  # running, or recorded and not told yet: answered when it is
                self.waiting.append((arch, proposal))
            else:
                self._tell_repeat(arch, told, proposal)
        self.converged = True
        log.warning("the controller proposed %d archs in a row that this run had already recorded "
                    "(%s): it has converged; the search ends after %d trials of %d", self.max_repeats,
                    self._max_repeats_setting, self.n_done + len(self.pending), self.budget)
        raise Finished(self._converged_text())

    # -- repeats ------------------------------------------------------------------------------

    @property
    def _max_repeats_setting(self) -> str:
        return "search.max_repeats" if self.cfg is not None else "max_repeats"

    def _converged_text(self) -> str:
        return (f"stopped after {self.max_repeats:,} consecutive repeats: the controller has converged "
                f"({self._max_repeats_setting})")

    def _add_trial(self, trial_id: str, arch: str) -> None:
        self.archs[trial_id] = self.pending[trial_id] = arch
        self._by_arch.setdefault(arch, []).append(trial_id)

    def parsed(self, arch: str) -> Arch:
        """The :class:`Arch` (or the space's member) of a string this ledger has seen (parsed once,
        not per tell)."""
        found = self._parsed.get(arch)
        if found is None:
            found = self._parsed[arch] = self.controller.space.parse(arch)
        return found

    def _tell_repeat(self, arch: str, tid: str, proposal: Proposal | None) -> None:
        self.events.append(TellRepeat(arch, tid))
        self.controller.tell(proposal or Proposal(self.parsed(arch)), self.results[tid].controller_view())

    def record(self, trial_id: str, result: TrialRecord | Mapping[str, Any] | None) -> TrialRecord | None:
        """Store a finished trial's result (at once, for the tables); None if already recorded.

        A result still marked ``running`` is the last epoch of a trial the scheduler (ASHA)
        stopped: it is kept as ``stopped`` with the reward it was judged on.
        """
        if trial_id in self.results or trial_id not in self.archs:
            return None
        arch = self.pending.pop(trial_id, self.archs[trial_id])
        rec = TrialRecord.coerce(result)
        if rec.status is Status.RUNNING:
            rec = rec.replace(status=Status.STOPPED,
                              reason=f"stopped early by the scheduler after {rec.epochs} epochs")
        rec = rec.replace(trial_id=trial_id, arch=arch)
        self.results[trial_id] = rec
        self.untold.append(trial_id)
        return rec

    def tell(self, *trial_ids: str) -> None:
        """Feed recorded results to the controller (once each; batched runners call this later),
        in the order given, then the repeats proposed while those trials ran, in the order they
        were proposed."""
        told: dict[str, str] = {}  # arch -> the trial told now
        for tid in trial_ids:
            if tid not in self.untold:
                continue
            self.untold.remove(tid)
            rec = self.results[tid]
            self.events.append(Tell(tid))
            kill_point("tell")
            # (with the proposal it answers; a reissued orphan's arch goes back bare)
            self.controller.tell(self.proposals.pop(tid, None) or Proposal(self.parsed(rec.arch)), rec.controller_view())
            told.setdefault(rec.arch, tid)
        if told and self.waiting:
            still = []
            for arch, proposal in self.waiting:
                if arch in told:
                    self._tell_repeat(arch, told[arch], proposal)
                else:
                    still.append((arch, proposal))
            self.waiting = still

    def complete(self, trial_id: str, result: TrialRecord | Mapping[str, Any] | None) -> TrialRecord | None:
        rec = self.record(trial_id, result)
        self.tell(trial_id)
        return rec

    # -- records ------------------------------------------------------------------------------

    def ordered_results(self) -> list[TrialRecord]:
        return list(self.results.values())  # dicts keep insertion (= completion) order

    def best(self) -> TrialRecord | None:
        """The finished trial with the highest usable reward (None before one)."""
        return best_result(self.ordered_results())

    def state(self) -> dict[str, Any]:
        """The ledger as a JSON-ready document (what ``state.json`` holds)."""
        return {"version": STATE_VERSION, "budget": self.budget, "events": [e.as_list() for e in self.events],
                "archs": self.archs, "results": {t: _stored(r) for t, r in self.results.items()},
                "untold": self.untold, "orphans": self.orphans, "plan": list(self.plan)}

    def to_json(self) -> str:
        return json.dumps(self.state(), indent=1)

    @classmethod
    def from_json(cls, cfg: ExperimentConfig | None, text: str | Mapping[str, Any], budget: int | None = None,
                  where: str = "state.json", on_ask=None, controller: Controller | None = None) -> "Ledger":
        """Rebuild a ledger (and a fresh controller replayed through its events) from JSON
        (text, or the parsed document); ``on_ask`` as for :func:`replay`. Without ``cfg``, give
        the fresh ``controller`` to replay into."""
        state = read_state_json(text, where)
        st = cls(cfg, budget if budget is not None else int(state[0]["budget"]), controller=controller,
                 plan=state[0].get("plan"))
        st._replay(*state, on_ask=on_ask)
        return st

    def resume(self, text: str | Mapping[str, Any], where: str = "state.json", on_ask=None) -> None:
        """Replay a recorded state (``state.json``'s text or document) into this new ledger,
        whose controller is fresh: the controller is where the recorded one was, and the
        ledger holds what the recorded one held."""
        self._replay(*read_state_json(text, where), on_ask=on_ask)

    def _replay(self, d: Mapping[str, Any], events: list[LedgerEvent], archs: Mapping[str, str],
                results: Mapping[str, TrialRecord], on_ask=None) -> None:
        if self.events:
            raise ValueError("Ledger.resume: this ledger has asked already; resume into a new one")
        asked, self.waiting = replay(self.controller, events, archs, results, on_ask=on_ask, queue=self.queue)
        self.events = list(events)
        self.n_repeats = sum(isinstance(e, Repeat) for e in events)
        # ``converged`` is not restored: a resumed search gives the controller max_repeats more tries.
        self.archs, self.results = dict(archs), dict(results)
        for tid, a in self.archs.items():
            self._by_arch.setdefault(a, []).append(tid)
        orphaned = {e.trial_id for e in events if isinstance(e, Orphan)}
        self.pending = {t: a for t, a in archs.items() if t not in results and t not in orphaned}
        self.proposals = {t: p for t, p in asked.items() if t not in orphaned}
        self.untold = list(d.get("untold", []))
        self.orphans = list(d.get("orphans", []))

    def adopt_orphans(self, known_to_runner: set[str]) -> None:
        """After a crash, reconcile with what the runner restored.

        Trials asked after the runner's last checkpoint are unknown to it: their archs are
        re-issued under new trial ids (the controller already proposed them). Results
        recorded for trials it does not know are fed to the controller now, since the runner
        will never complete them.
        """
        for tid in [t for t in self.pending if t not in known_to_runner]:
            self.orphans.append(self.pending.pop(tid))
            self.proposals.pop(tid, None)  # (re-issued under a new id: its result goes back as a bare arch)
            self.events.append(Orphan(tid))
        for tid in [t for t in self.untold if t not in known_to_runner]:
            self.tell(tid)
