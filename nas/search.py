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
    RUN/trials.csv        one row per finished trial (every field of nas.trial.FIELDS)
    RUN/pareto.csv        the accuracy/latency Pareto front of the successful trials
    RUN/best_arch.txt     the arch string of the best reward
    RUN/tensorboard/      per-trial scalars, appended as trials finish (:mod:`nas.tblog`)
    RUN/ray/              Ray Tune's experiment state (Tuner.restore reads it)

Every file is written to a temporary name and renamed, so a killed search never leaves a
half-written table.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from search_spaces import Arch, SearchSpace

from .config import ExperimentConfig
from .controllers import Controller, get_controller
from .faults import kill_point
from .tblog import LiveLog
from .trial import FIELDS

log = logging.getLogger(__name__)

FINISHED = "FINISHED"
STATE_VERSION = 1


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


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def pareto_front(results: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Successful results not dominated in (higher accuracy, lower latency), by latency."""
    ok = [r for r in results if r.get("status") == "ok" and _finite(r.get("accuracy")) and _finite(r.get("latency_ms"))]
    ok.sort(key=lambda r: (r["latency_ms"], -r["accuracy"]))
    front, best_acc = [], -math.inf
    for r in ok:
        if r["accuracy"] > best_acc:
            front.append(r)
            best_acc = r["accuracy"]
    return front


def best_result(results: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    usable = [r for r in results if r.get("status") == "ok" and _finite(r.get("reward"))]
    return max(usable, key=lambda r: r["reward"]) if usable else None


def _clean(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result as JSON-safe values: non-finite floats become None."""
    out = {}
    for k in FIELDS:
        v = result.get(k)
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        elif hasattr(v, "item"):  # numpy scalars
            v = v.item()
        out[k] = v
    return out


def _controller_view(rec: Mapping[str, Any]) -> Mapping[str, Any]:
    # An early-stopped trial counts with the reward the scheduler judged it on.
    return {**rec, "status": "ok"} if rec.get("status") == "stopped" else rec


class SearchState:
    """The controller plus the record of one search; serialisable to JSON and replayable.

    ``suggest(trial_id)`` returns an arch string, None (wait: concurrency or batch) or
    :data:`FINISHED`; ``complete(trial_id, result)`` feeds the result back and records it.
    """

    def __init__(self, cfg: ExperimentConfig, budget: int, controller: Controller | None = None):
        self.cfg = cfg
        self.budget = budget
        self.controller = controller or make_controller(cfg)
        self.events: list[list[str]] = []          # ["ask", trial_id] / ["tell", trial_id]
        self.archs: dict[str, str] = {}            # trial_id -> arch string (all asked trials)
        self.results: dict[str, dict[str, Any]] = {}  # trial_id -> result (completed)
        self.pending: dict[str, str] = {}          # trial_id -> arch string (asked, not told)
        self.untold: list[str] = []                # recorded, not yet fed to the controller (batching)
        self.orphans: list[str] = []               # archs asked but unknown to the runner after a resume

    # -- the protocol -------------------------------------------------------------------------

    @property
    def n_done(self) -> int:
        return len(self.results)

    def finished(self) -> bool:
        return self.n_done + len(self.pending) >= self.budget and not self.orphans

    def suggest(self, trial_id: str) -> str:
        if self.orphans:  # asked before a crash, never started: run them under this id
            arch = self.orphans.pop(0)
            self.archs[trial_id] = self.pending[trial_id] = arch
            self.events.append(["reissue", trial_id, arch])
            return arch
        if self.n_done + len(self.pending) >= self.budget:
            return FINISHED
        arch = self.controller.ask().to_string()
        self.archs[trial_id] = self.pending[trial_id] = arch
        self.events.append(["ask", trial_id])
        return arch

    def record(self, trial_id: str, result: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """Store a finished trial's result (at once, for the tables); None if already recorded.

        A result still marked ``running`` is the last epoch of a trial the scheduler (ASHA)
        stopped: it is kept as ``stopped`` with the reward it was judged on.
        """
        if trial_id in self.results or trial_id not in self.archs:
            return None
        arch = self.pending.pop(trial_id, self.archs[trial_id])
        result = dict(result or {"status": "failed", "reason": "no result"})
        if result.get("status") == "running":
            result.update(status="stopped", reason=f"stopped early by the scheduler after {result.get('epochs')} epochs")
        rec = _clean(result)
        rec.update(trial_id=trial_id, arch=arch)
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
        self.controller.feedback(Arch.from_string(rec["arch"]), _controller_view(rec))

    def complete(self, trial_id: str, result: Mapping[str, Any] | None) -> dict[str, Any] | None:
        rec = self.record(trial_id, result)
        self.tell(trial_id)
        return rec

    # -- records ------------------------------------------------------------------------------

    def ordered_results(self) -> list[dict[str, Any]]:
        return list(self.results.values())  # dicts keep insertion (= completion) order

    def to_json(self) -> str:
        return json.dumps({"version": STATE_VERSION, "budget": self.budget, "events": self.events,
                           "archs": self.archs, "results": self.results, "untold": self.untold,
                           "orphans": self.orphans}, indent=1)

    @classmethod
    def from_json(cls, cfg: ExperimentConfig, text: str, budget: int | None = None,
                  where: str = "state.json") -> "SearchState":
        """Rebuild a state (and a fresh controller replayed through its events) from JSON."""
        try:
            d = json.loads(text)
            if d.get("version") != STATE_VERSION:
                raise ValueError(f"version {d.get('version')!r}, expected {STATE_VERSION}")
            events, archs, results = d["events"], d["archs"], d["results"]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise RunFolderError(f"{where}: not a search state this version can resume ({e})") from None
        st = cls(cfg, budget if budget is not None else int(d["budget"]))
        c = st.controller
        for ev in events:
            kind, tid = ev[0], ev[1]
            if kind == "ask":
                redrawn = c.ask().to_string()
                if redrawn != archs[tid]:
                    log.warning("replay: the controller now proposes %s where the run had %s; continuing "
                                "with the recorded arch (was the controller or space changed?)", redrawn, archs[tid])
            elif kind == "tell":
                c.feedback(Arch.from_string(archs[tid]), _controller_view(results[tid]))
        st.events = [list(e) for e in events]
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
        atomic_write(self.path / "trials.csv", _csv(results))
        atomic_write(self.path / "pareto.csv", _csv(pareto_front(results)))
        best = best_result(results)
        if best is not None:
            atomic_write(self.path / "best_arch.txt", best["arch"] + "\n")
        self.tensorboard.update(results)

    def results(self) -> list[dict[str, Any]]:
        p = self.path / "trials.csv"
        if not p.is_file():
            return []
        return [_parse_row(r) for r in csv.DictReader(io.StringIO(p.read_text()))]


def _csv(rows: list[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in FIELDS})
    return buf.getvalue()


_INTS = {"params", "macs", "num_classes", "on_chip_bytes", "off_chip_bytes", "ops_on_tpu", "ops_on_cpu", "epochs"}
_TEXT = {"trial_id", "status", "reason", "latency_source", "node", "arch"}


def _parse_row(row: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k in _TEXT:
            out[k] = v or None
        elif v == "":
            out[k] = None
        else:
            out[k] = int(v) if k in _INTS else float(v)
    return out
