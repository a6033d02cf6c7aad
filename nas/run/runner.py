"""Runners: Ray Tune (the default) and in-process. The runners own the search loop; Ray is
imported by :mod:`nas.run.ray_runner` (loaded by :func:`run_ray` only) and nowhere else in nas/.

Ray Tune runs each trial as a task in a worker process sized by ``budget.cpus_per_trial``;
actors are reused, so TensorFlow, the data and the latency source load once per worker.
The controller sits behind :class:`ControllerSearcher` (``suggest`` / ``on_trial_complete``,
``save`` / ``restore`` as JSON), wrapped in ``ConcurrencyLimiter``: asynchronous by
default (a trial starts as soon as one ends, so workers stay busy and warm), with
``batch=True`` under ``search.sync``, so results reach the controller a whole round at a
time. Results are written to the run folder the moment a
trial ends (a Tune callback), whatever the batching.

Ray starts embedded and local, bound to loopback and without its dashboard, unless an
address is given: then the search joins that cluster (``ray start --head`` on the head node;
the run folder should be on storage every node can reach). With the ``edgetpu`` latency
source, each trial asks for one unit of the custom resource ``edgetpu``, so trials run on the
nodes that have a device (``ray start ... --resources='{"edgetpu": 1}'``).

Resume (``nas search --resume``): ``Tuner.restore`` brings back Ray's trials (finished ones
are kept, unfinished ones restart); the searcher rebuilds the controller by replaying the
run folder's event log, which is never older than Ray's checkpoint.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from nas.config.experiment import ExperimentConfig
from nas.core.events import Listener, TrialFinished, TrialStarted
from nas.core.errors import Finished
from nas.ledger.ledger import Ledger
from nas.ledger.folder import RunFolder
from nas.trial.entry import run_trial
from nas.trial.worker import in_process

log = logging.getLogger(__name__)

__all__ = ["Listener", "run_local", "run_ray", "run_supernets_ray"]


def _local_only_env(cfg: ExperimentConfig) -> None:
    """The embedded Ray on loopback: before ``ray`` is imported.

    Ray turns a node address of 127.0.0.1 into the host's reachable IP (so other machines
    could join) unless cluster support is off, which is how Ray runs on macOS and Windows;
    an embedded Ray has no other machines, so it runs that way everywhere. Not when joining
    a cluster (``--address``): its nodes must reach this driver.
    """
    if not cfg.ray.address and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _quiet_env() -> None:
    # Before Ray starts, so workers inherit: no per-trial chdir (relative data paths keep
    # working), no per-trial CSV/JSON/TensorBoard loggers, Tune's state saved at most every
    # 10 s (its state is only Ray's view: the run folder's state.json is written at every
    # step, and resume re-issues what Ray's older view lacks), no usage-stats reporting
    # thread, and TensorFlow's C++ start-up chatter off.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "10")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def run_ray(cfg: ExperimentConfig, run: RunFolder, budget: int, *, resume: bool = False,
            listener: Listener | None = None) -> Ledger:
    """Run (or resume) the search on Ray Tune; the final ledger (also saved in ``run``)."""
    _quiet_env()
    _local_only_env(cfg)  # both before Ray is imported
    from nas.run.ray_runner import run_tune

    return run_tune(cfg, run, budget, resume=resume, listener=listener)


def run_supernets_ray(cfg: ExperimentConfig, run: RunFolder, display) -> list[list[dict]]:
    """The one-shot phase's supernets as Ray tasks, one per latency target (:mod:`nas.oneshot.run`)."""
    _quiet_env()
    _local_only_env(cfg)
    from nas.run.ray_runner import run_supernets

    return run_supernets(cfg, run, display)


# ------------------------------------------------------------------------------ in-process

def local_service_client(cfg: ExperimentConfig, run: RunFolder):
    """In process, a measurement service is the same object a Ray actor holds, asked
    directly: its cache (``RUN/latency/service-0.jsonl``) and its answers are a Ray run's.
    None when the experiment's trials measure themselves."""
    if not cfg.latency.uses_service:
        return None
    from latency_models.service import LocalTransport, MeasurementService, ServiceClient

    s = cfg.latency.service
    service = MeasurementService(cfg.latency.source, dict(cfg.latency.options), name="service-0",
                                 cache_file=run.path / "latency" / "service-0.jsonl")
    service.check()
    return ServiceClient(cfg.latency.source, LocalTransport([service]), compile_here=s.compile == "trial",
                         options=cfg.latency.options, timeout_s=s.timeout_s)


def run_local(cfg: ExperimentConfig, run: RunFolder, budget: int, *, resume: bool = False,
              listener: Listener | None = None) -> Ledger:
    """The same search, one trial at a time in this process: no Ray (for debugging and benchmarks)."""
    in_process(cfg)
    latency = local_service_client(cfg, run)
    state = run.read_state(cfg, budget) if resume else None
    if state is None:
        state = Ledger(cfg, budget)
    else:
        state.adopt_orphans(set())  # nothing survives a dead process: re-run what was pending
    deadline = time.monotonic() + cfg.budget.time_limit_s if cfg.budget.time_limit_s else None
    n = len(state.archs)
    while deadline is None or time.monotonic() < deadline:
        tid = f"local_{n:05d}"
        n += 1
        try:
            arch = state.suggest(tid)
        except Finished:
            break
        run.save(state)
        if listener:
            listener(TrialStarted(tid))
        rec = state.complete(tid, run_trial(arch, cfg, trial_id=tid, latency=latency))
        run.save(state)
        if listener and rec is not None:
            listener(TrialFinished(rec))
    return state
