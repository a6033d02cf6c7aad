"""The run folder: every file of one experiment's run, and the only code that writes them::

    RUN/experiment.yaml   the experiment, as given
    RUN/run.json          the budget, the toolkit version and the command-line overrides
    RUN/state.json        the ledger (event log, pending trials), rewritten atomically
    RUN/trials.csv        one row per finished trial (every field of nas.core.record.FIELDS)
    RUN/pareto.csv        the Pareto front of the usable trials: proxy accuracy vs deployment latency
    RUN/best_arch.txt     the arch string of the best reward
    RUN/tensorboard/      per-trial scalars, appended as trials finish (:mod:`nas.ledger.tblog`)
    RUN/ray/              Ray Tune's experiment state (Tuner.restore reads it)

Every file is written to a temporary name and renamed, so a killed search never leaves a
half-written table. :meth:`RunFolder.experiment` is the one reader of the experiment a run was
made with (its copy plus the recorded overrides): resume, ``nas report`` and ``nas export``
all read it there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator

import yaml

from nas.config.experiment import ExperimentConfig, override, parse_experiment
from nas.core.errors import RecordError, RunFolderError
from nas.trial.faults import kill_point
from nas.ledger.ledger import Ledger
from nas.core.record import TrialRecord, best_result, csv_text, pareto_front, read_csv
from nas.ledger.tblog import LiveLog

log = logging.getLogger(__name__)

__all__ = ["RunFolder", "atomic_write", "staged_folder"]

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

    def create(self, experiment_text: str, budget: int, overrides: dict[str, Any] | None = None) -> None:
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
        self.write_meta(budget, overrides)

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

    def write_meta(self, budget: int, overrides: dict[str, Any] | None = None) -> None:
        """``run.json``: the budget, the toolkit version, and the command-line overrides that
        :meth:`experiment` applies to the run's copy of the experiment."""
        try:
            v = version("edgetpu-nas")
        except PackageNotFoundError:
            v = "unknown"
        meta: dict[str, Any] = {"budget": budget, "toolkit_version": v}
        if overrides is not None:
            meta["overrides"] = overrides
        atomic_write(self.path / "run.json", json.dumps(meta, indent=1))

    def _meta(self) -> dict[str, Any]:
        p = self.path / "run.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def budget(self) -> int | None:
        b = self._meta().get("budget")
        return int(b) if b is not None else None

    def overrides(self) -> dict[str, Any]:
        """The command-line overrides recorded in ``run.json`` (a run made before them: none)."""
        return dict(self._meta().get("overrides", {}))

    def experiment_text(self) -> str:
        """The run's own copy of the experiment, as given."""
        self.check_resumable()
        return (self.path / "experiment.yaml").read_text()

    def experiment(self) -> ExperimentConfig:
        """The experiment the run was made with: its copy, plus the recorded overrides."""
        path = self.path / "experiment.yaml"
        cfg = parse_experiment(yaml.safe_load(self.experiment_text()), str(path))
        return override(cfg, **self.overrides())

    def best_arch(self) -> str | None:
        """The arch string of ``best_arch.txt`` (None before any trial succeeded)."""
        p = self.path / "best_arch.txt"
        return p.read_text().strip() if p.is_file() else None

    def read_state(self, cfg: ExperimentConfig, budget: int | None = None) -> Ledger | None:
        """The ledger of ``state.json``, its controller replayed (None before the first trial)."""
        if not self.state_file.is_file():
            return None
        return Ledger.from_json(cfg, self.state_file.read_text(), budget, where=str(self.state_file))

    def state_text(self) -> str | None:
        return self.state_file.read_text() if self.state_file.is_file() else None

    def save(self, state: Ledger) -> None:
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
