"""The search state and the run folder: what both runners (Ray, in-process) share.

:class:`SearchState` owns the controller and the record of the search: an event log of
``ask`` and ``tell`` events in the order they happened, the completed results and the
trials still pending. Everything is JSON; resuming rebuilds the controller by replaying the
event log into a fresh one (the controller is never pickled), so a resumed search continues
exactly where the recorded one stopped.

:class:`RunFolder` is the run's output folder::

    RUN/experiment.yaml   the experiment, as given
    RUN/run.json          the budget and the toolkit version that made the run
    RUN/state.json        the search state (event log, pending trials), rewritten atomically
    RUN/trials.csv        one row per finished trial (every field of nas.record.FIELDS)
    RUN/pareto.csv        the Pareto front of the usable trials: proxy accuracy vs deployment latency
    RUN/best_arch.txt     the arch string of the best reward
    RUN/tensorboard/      per-trial scalars, appended as trials finish (:mod:`nas.tblog`)
    RUN/ray/              Ray Tune's experiment state (Tuner.restore reads it)

Every file is written to a temporary name and renamed, so a killed search never leaves a
half-written table.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from search_spaces import Arch, SearchSpace

from .config import ExperimentConfig
from .controllers import Controller, get_controller
from .faults import kill_point
from .record import RecordError, Status, TrialRecord, best_result, csv_text, legacy_dict, pareto_front, read_csv
from .tblog import LiveLog

log = logging.getLogger(__name__)



class Finished(Exception):
    """:meth:`SearchState.suggest` has no more trials to give: the budget is spent (counting
    the trials still running) or the controller has converged. The message says which."""

#: 2: results are trial records with deployment and proxy figures; 1 (read, migrated): before.
STATE_VERSION = 2
_READABLE_STATES = (1, 2)

__all__ = ["Finished", "RunFolder", "RunFolderError", "SearchState", "best_result", "pareto_front"]


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (exists without --resume, or is not a run)."""


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` to fill; on success it is renamed into place
    (replacing what the caller allowed to be there), on any failure removed: a reader never
    sees a half-written output folder."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as e:
        raise RunFolderError(f"--out: cannot write to {str(out_dir.parent)!r} ({e.strerror})") from None
    try:
        work.chmod(0o777 & ~_UMASK)  # mkdtemp makes 0700
        yield work
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            work.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            work.rename(out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are for everyone who may read the folder
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        kill_point("write")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_space(cfg: ExperimentConfig) -> SearchSpace:
    import search_spaces

    return search_spaces.get(cfg.space.name, **cfg.space.kwargs())


def make_controller(cfg: ExperimentConfig, space: SearchSpace | None = None) -> Controller:
    return get_controller(cfg.controller.name, space or make_space(cfg), seed=cfg.seed, **cfg.controller.params)


def read_state_json(text: str, where: str = "state.json") -> tuple[dict, list, dict[str, str], dict[str, TrialRecord]]:
    """(the whole document, events, trial_id -> arch, trial_id -> record) of a ``state.json``.

    Version 1 states (before deployment and proxy were told apart) are read as records whose
    proxy is the arch itself, which is what those runs trained.
    """
    try:
        d = json.loads(text)
        if d.get("version") not in _READABLE_STATES:
            raise ValueError(f"version {d.get('version')!r}, expected one of {_READABLE_STATES}")
        load = legacy_dict if d["version"] == 1 else TrialRecord.from_dict
        return d, d["events"], d["archs"], {t: load(r) for t, r in d["results"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise RunFolderError(f"{where}: not a search state this version can resume ({e})") from None


def replay(controller: Controller, events: list, archs: Mapping[str, str], results: Mapping[str, TrialRecord],
           on_ask=None) -> None:
    """Feed a recorded event log to a fresh ``controller``, as the search fed the original.

    Events: ``["ask", tid]`` (a proposal that became trial ``tid``), ``["tell", tid]`` (its
    result fed back), ``["repeat", arch]`` (a proposal of an arch already recorded, not
    trained) and ``["tell-repeat", arch, tid]`` (that proposal answered with trial ``tid``'s
    result); ``reissue``/``orphan`` are the runner's bookkeeping. ``on_ask(arch_string)`` is
    called after every proposal (the report reads the policy's entropy there).
    """
    for ev in events:
        kind = ev[0]
        if kind in ("ask", "repeat"):
            recorded = archs[ev[1]] if kind == "ask" else ev[1]
            redrawn = controller.ask().to_string()
            if redrawn != recorded:
                log.warning("replay: the controller now proposes %s where the run had %s; continuing with the "
                            "recorded arch (was the controller or space changed?)", redrawn, recorded)
            if on_ask is not None:
                on_ask(recorded)
        elif kind == "tell":
            controller.feedback(Arch.from_string(archs[ev[1]]), results[ev[1]].controller_view())
        elif kind == "tell-repeat":
            controller.feedback(Arch.from_string(ev[1]), results[ev[2]].controller_view())


class SearchState:
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

    def __init__(self, cfg: ExperimentConfig, budget: int, controller: Controller | None = None,
                 plan: tuple[int, int] | None = None):
        self.cfg = cfg
        self.budget = budget
        self.controller = controller or make_controller(cfg)
        # What the controller is told before its first proposal. A resumed search keeps the
        # original's (even when --max-trials changed the budget), so its replay is exact.
        self.plan = tuple(plan) if plan else (budget, cfg.budget.concurrency)
        self.controller.plan(*self.plan)
        self.events: list[list[str]] = []          # ["ask", trial_id] / ["tell", trial_id]
        self.archs: dict[str, str] = {}            # trial_id -> arch string (all asked trials)
        self.results: dict[str, TrialRecord] = {}  # trial_id -> record (completed)
        self.pending: dict[str, str] = {}          # trial_id -> arch string (asked, not told)
        self.untold: list[str] = []                # recorded, not yet fed to the controller (batching)
        self.orphans: list[str] = []               # archs asked but unknown to the runner after a resume
        self.waiting: dict[str, int] = {}          # arch -> repeats proposed, answered when a trial of it is told
        self.converged = False                     # search.max_repeats known archs in a row: no new proposal
        self.n_repeats = 0                         # proposals answered from the record

    # -- the protocol -------------------------------------------------------------------------

    @property
    def n_done(self) -> int:
        return len(self.results)

    def finished(self) -> bool:
        return (self.converged or self.n_done + len(self.pending) >= self.budget) and not self.orphans

    def suggest(self, trial_id: str) -> str:
        if self.orphans:  # asked before a crash, never started: run them under this id
            arch = self.orphans.pop(0)
            self.archs[trial_id] = self.pending[trial_id] = arch
            self.events.append(["reissue", trial_id, arch])
            return arch
        if self.converged:
            raise Finished("the controller has converged (search.max_repeats)")
        if self.n_done + len(self.pending) >= self.budget:
            raise Finished(f"the budget of {self.budget} trials is spent ({self.n_done} done, "
                           f"{len(self.pending)} running)")
        dedupe = self.cfg.search.repeats == "record"
        by_arch = self._trials_of
        for _ in range(self.cfg.search.max_repeats if dedupe else 1):  # (a "train" search asks once)
            arch = self.controller.ask().to_string()
            if not dedupe or not (arch in by_arch or arch in self.orphans):
                self.archs[trial_id] = self.pending[trial_id] = arch
                self.events.append(["ask", trial_id])
                return arch
            self.n_repeats += 1
            self.events.append(["repeat", arch])
            told = next((t for t in by_arch.get(arch, []) if t in self.results and t not in self.untold), None)
            if told is None:  # running, or recorded and not fed back yet: answered when it is
                self.waiting[arch] = self.waiting.get(arch, 0) + 1
            else:
                self._tell_repeat(arch, told)
        self.converged = True
        log.warning("the controller proposed %d archs in a row that this run had already recorded "
                    "(search.max_repeats): it has converged; the search ends after %d trials of %d",
                    self.cfg.search.max_repeats, self.n_done + len(self.pending), self.budget)
        raise Finished("the controller has converged (search.max_repeats)")

    # -- repeats ------------------------------------------------------------------------------

    @property
    def _trials_of(self) -> dict[str, list[str]]:
        """arch -> its trial ids, in the order asked."""
        out: dict[str, list[str]] = {}
        for tid, a in self.archs.items():
            out.setdefault(a, []).append(tid)
        return out

    def _tell_repeat(self, arch: str, tid: str) -> None:
        self.events.append(["tell-repeat", arch, tid])
        self.controller.feedback(Arch.from_string(arch), self.results[tid].controller_view())

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

    def tell(self, trial_id: str) -> None:
        """Feed a recorded result to the controller (once; batched runners call this later)."""
        if trial_id not in self.untold:
            return
        self.untold.remove(trial_id)
        rec = self.results[trial_id]
        self.events.append(["tell", trial_id])
        kill_point("tell")
        self.controller.feedback(Arch.from_string(rec.arch), rec.controller_view())
        for _ in range(self.waiting.pop(rec.arch, 0)):  # repeats proposed while it ran
            self._tell_repeat(rec.arch, trial_id)

    def complete(self, trial_id: str, result: TrialRecord | Mapping[str, Any] | None) -> TrialRecord | None:
        rec = self.record(trial_id, result)
        self.tell(trial_id)
        return rec

    # -- records ------------------------------------------------------------------------------

    def ordered_results(self) -> list[TrialRecord]:
        return list(self.results.values())  # dicts keep insertion (= completion) order

    def to_json(self) -> str:
        return json.dumps({"version": STATE_VERSION, "budget": self.budget, "events": self.events,
                           "archs": self.archs, "results": {t: r.as_dict() for t, r in self.results.items()},
                           "untold": self.untold, "orphans": self.orphans, "plan": list(self.plan)},
                          indent=1)

    @classmethod
    def from_json(cls, cfg: ExperimentConfig, text: str, budget: int | None = None,
                  where: str = "state.json") -> "SearchState":
        """Rebuild a state (and a fresh controller replayed through its events) from JSON."""
        d, events, archs, results = read_state_json(text, where)
        st = cls(cfg, budget if budget is not None else int(d["budget"]), plan=d.get("plan"))
        replay(st.controller, events, archs, results)
        st.events = [list(e) for e in events]
        for ev in events:  # repeats proposed and not answered yet
            if ev[0] == "repeat":
                st.waiting[ev[1]] = st.waiting.get(ev[1], 0) + 1
            elif ev[0] == "tell-repeat":
                st.waiting[ev[1]] -= 1
        st.waiting = {a: n for a, n in st.waiting.items() if n > 0}
        st.n_repeats = sum(e[0] == "repeat" for e in events)
        # ``converged`` is not restored: a resumed search gives the controller max_repeats more tries.
        st.archs, st.results = dict(archs), dict(results)
        orphaned = {e[1] for e in events if e[0] == "orphan"}
        st.pending = {t: a for t, a in archs.items() if t not in results and t not in orphaned}
        st.untold = list(d.get("untold", []))
        st.orphans = list(d.get("orphans", []))
        return st

    def adopt_orphans(self, known_to_runner: set[str]) -> None:
        """After a crash, reconcile with what the runner restored.

        Trials asked after the runner's last checkpoint are unknown to it: their archs are
        re-issued under new trial ids (the controller already proposed them). Results
        recorded for trials it does not know are fed to the controller now, since the runner
        will never complete them.
        """
        for tid in [t for t in self.pending if t not in known_to_runner]:
            self.orphans.append(self.pending.pop(tid))
            self.events.append(["orphan", tid])
        for tid in [t for t in self.untold if t not in known_to_runner]:
            self.tell(tid)


class RunFolder:
    """The output folder of one experiment (see the module docstring for its files)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tensorboard = LiveLog(self.path / "tensorboard")

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def ray_dir(self) -> Path:
        return self.path / "ray"

    def exists(self) -> bool:
        return self.path.exists() and any(self.path.iterdir())

    def create(self, experiment_text: str, budget: int) -> None:
        """Start a new run; refuses a folder that already holds anything."""
        if self.exists():
            raise RunFolderError(f"--out: run folder {str(self.path)!r} already exists; pass --resume to continue "
                                 "it, or choose another --out")
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise RunFolderError(f"--out: run folder {str(self.path)!r} is not writable")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunFolderError(f"--out: cannot create run folder {str(self.path)!r} ({e.strerror})") from None
        atomic_write(self.path / "experiment.yaml", experiment_text)
        self.write_budget(budget)

    def check_creatable(self) -> None:
        """Fail now, before any work, if the folder could not be made or written later."""
        p = self.path.absolute()
        while not p.exists() and p != p.parent:
            p = p.parent
        if not p.is_dir():
            raise RunFolderError(f"--out: cannot create run folder {str(self.path)!r}: {str(p)!r} is a file, "
                                 "not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise RunFolderError(f"--out: cannot create run folder {str(self.path)!r}: {str(p)!r} is not "
                                 "writable")

    def check_resumable(self) -> None:
        if not (self.path / "experiment.yaml").is_file():
            raise RunFolderError(f"--resume: {str(self.path)!r} is not a run folder (no experiment.yaml)")

    def remove_stale_temp_files(self) -> None:
        """Temporary files a search killed while writing had not renamed yet (on resume only:
        while a search runs, its temporary files are live)."""
        for stale in self.path.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def write_budget(self, budget: int) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("edgetpu-nas")
        except PackageNotFoundError:
            v = "unknown"
        atomic_write(self.path / "run.json", json.dumps({"budget": budget, "toolkit_version": v}, indent=1))

    def budget(self) -> int | None:
        p = self.path / "run.json"
        return int(json.loads(p.read_text())["budget"]) if p.is_file() else None

    def read_state(self, cfg: ExperimentConfig, budget: int | None = None) -> SearchState | None:
        if not self.state_file.is_file():
            return None
        return SearchState.from_json(cfg, self.state_file.read_text(), budget, where=str(self.state_file))

    def save(self, state: SearchState) -> None:
        """State first, then the tables derived from it."""
        atomic_write(self.state_file, state.to_json())
        results = state.ordered_results()
        atomic_write(self.path / "trials.csv", csv_text(results))
        atomic_write(self.path / "pareto.csv", csv_text(pareto_front(results)))
        top = best_result(results)
        if top is not None:
            atomic_write(self.path / "best_arch.txt", top.arch + "\n")
        self.tensorboard.update(results)

    def results(self) -> list[TrialRecord]:
        """The records of ``trials.csv`` (a run made before proxy columns existed reads too)."""
        p = self.path / "trials.csv"
        if not p.is_file():
            return []
        try:
            return read_csv(p.read_text(), str(p))
        except RecordError as e:
            raise RunFolderError(str(e)) from None
