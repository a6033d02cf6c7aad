"""Runners: Ray Tune (the default) and in-process. Ray is imported here and nowhere else in nas/.

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
from pathlib import Path
from typing import Any, Callable

from .config import ExperimentConfig
from .record import TrialRecord
from .search import Finished, RunFolder, SearchState
from .trial import run_trial

log = logging.getLogger(__name__)

Listener = Callable[[str, Any], None]  # (event, payload): "start" trial_id, "result" record


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


def worker_env(cfg: ExperimentConfig) -> dict[str, str]:
    """Environment for the processes that train: :func:`onednn_env` and :func:`allocator_env`.
    The allocator must be set before the process starts and oneDNN before TensorFlow loads,
    so Ray gets both in the runtime_env."""
    return {**onednn_env(cfg), **allocator_env(cfg)}


def onednn_env(cfg: ExperimentConfig) -> dict[str, str]:
    """TensorFlow's oneDNN switch (``train.onednn``).

    Why off by default: with oneDNN, TensorFlow keeps a thread-local cache of compiled
    kernels per layer shape (up to 1024 per kind and thread) that is never freed, so a worker
    that trains a stream of different archs grows by tens of MB per new arch. At proxy size it
    made no measurable difference in speed here (4.5% faster in one comparison, 6% slower in
    another).
    """
    return {"TF_ENABLE_ONEDNN_OPTS": "1" if cfg.train.onednn else "0"}


def allocator_env(cfg: ExperimentConfig) -> dict[str, str]:
    """The memory allocator of Ray's trial workers (``train.allocator``): LD_PRELOAD of jemalloc.

    Why jemalloc by default: what a trial leaves allocated is small (glibc's own count of
    bytes in use grows by well under 0.1 MB a trial), but TensorFlow's small long-lived
    allocations land scattered over glibc's heap and pin pages that are otherwise free, so
    the worker's resident memory creeps up trial after trial and ``malloc_trim`` cannot give
    it back. jemalloc's size-class slabs do not fragment that way; every trial ends by purging
    its freed pages (:func:`nas.trial.free_memory`). ``benchmarks/memory_over_trials.py
    --compare`` measures both.
    """
    if cfg.train.allocator != "jemalloc":
        return {}
    lib = jemalloc_path()
    if lib is None:
        (log.warning if sys.platform.startswith("linux") else log.debug)(
            "train.allocator=jemalloc: this Ray install has no %s; trial workers use the system allocator",
            JEMALLOC_LIB)
        return {}
    preload = [p for p in os.environ.get("LD_PRELOAD", "").split(":") if p and p != lib]
    env = {"LD_PRELOAD": ":".join([lib, *preload])}
    if os.environ.get("MALLOC_CONF"):
        env["MALLOC_CONF"] = os.environ["MALLOC_CONF"]
    return env


JEMALLOC_LIB = "ray/core/libjemalloc.so"


def jemalloc_path() -> str | None:
    """The jemalloc library that Ray's Linux wheels ship (``ray/core/libjemalloc.so``), or None."""
    if not sys.platform.startswith("linux"):
        return None
    import importlib.util

    spec = importlib.util.find_spec("ray")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root).parent / JEMALLOC_LIB
        if path.is_file():
            return str(path)
    return None


def jemalloc_loaded() -> bool:
    """Whether this process runs with jemalloc (Linux: a libjemalloc is mapped)."""
    try:
        with open("/proc/self/maps") as f:
            return any("libjemalloc" in line for line in f)
    except OSError:
        return False


# ------------------------------------------------------------------------------ the Ray side

def _ray_trial(config: dict, experiment: str = "") -> None:
    """The Ray Tune entry point: one trial in a worker, reporting each epoch and at the end."""
    import socket

    import ray
    from ray import tune

    cfg = ExperimentConfig.model_validate_json(experiment)
    trial_id = tune.get_context().get_trial_id() or ""
    _check_allocator(cfg)
    # Host name and Ray node: on one machine with several Ray nodes the host alone is ambiguous.
    node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"
    result = run_trial(config["arch"], cfg, report=lambda rec: tune.report(rec.to_ray()), trial_id=trial_id,
                       can_die=True, node=node)
    tune.report(result.to_ray())


_allocator_checked = False


def _check_allocator(cfg: ExperimentConfig) -> None:
    """Warn once per worker when jemalloc was asked for but is not there (e.g. a cluster node
    whose Ray lives at another path than the driver's: ld.so then ignores LD_PRELOAD)."""
    global _allocator_checked
    if _allocator_checked or cfg.train.allocator != "jemalloc" or not os.environ.get("LD_PRELOAD"):
        return
    _allocator_checked = True
    if not jemalloc_loaded():
        log.warning("train.allocator=jemalloc, but this worker runs without it (LD_PRELOAD=%s): its memory may "
                    "creep up from trial to trial", os.environ["LD_PRELOAD"])


def _searcher_class():
    from ray.tune.search import Searcher

    class ControllerSearcher(Searcher):
        """A Ray Tune ``Searcher`` around any :class:`~nas.controllers.Controller` (via SearchState)."""

        def __init__(self, cfg: ExperimentConfig, run_dir: str, budget: int):
            super().__init__(metric="reward", mode="max")
            self.cfg, self.run_dir, self.budget = cfg, run_dir, budget
            self.state = SearchState(cfg, budget)
            self.run = RunFolder(run_dir)
            self.listener: Listener | None = None

        def record(self, trial_id: str, result: TrialRecord) -> None:
            """Record a finished trial at once (tables, progress), whoever hears of it first."""
            rec = self.state.record(trial_id, result)
            if rec is not None:
                self.run.save(self.state)
                if self.listener:
                    self.listener("result", rec)

        # Ray pickles the searcher into its experiment state; the state itself travels as
        # JSON through save/restore, so only what rebuilds it is pickled.
        def __getstate__(self):
            return {"cfg": self.cfg.model_dump_json(), "run_dir": self.run_dir, "budget": self.budget,
                    "_metric": self._metric, "_mode": self._mode}

        def __setstate__(self, d):
            self.__init__(ExperimentConfig.model_validate_json(d["cfg"]), d["run_dir"], d["budget"])

        def suggest(self, trial_id: str):
            try:
                arch = self.state.suggest(trial_id)
            except Finished:
                return Searcher.FINISHED
            self.run.save(self.state)
            return {"arch": arch}

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            # The results were recorded by _RecordCallback when the trials ended; this is the
            # (possibly batched) moment the controller learns from them.
            self.record(trial_id, TrialRecord.from_ray(result, error=error))
            self.state.tell(trial_id)
            self.run.save(self.state)

        def save(self, checkpoint_path: str) -> None:
            Path(checkpoint_path).write_text(self.state.to_json())

        def restore(self, checkpoint_path: str) -> None:
            self.budget = self.run.budget() or self.budget  # --max-trials may have changed it
            ray_view = SearchState.from_json(self.cfg, Path(checkpoint_path).read_text(), self.budget)
            newest = self.run.read_state(self.cfg, self.budget) or ray_view
            newest.adopt_orphans(set(ray_view.archs))
            self.state = newest
            self.run.save(self.state)

    return ControllerSearcher


def _callback_class():
    from ray.tune import Callback

    class _RecordCallback(Callback):
        """Records each trial in the run folder as it ends, and drives the progress display."""

        def __init__(self, searcher, listener: Listener | None):
            self.searcher, self.listener = searcher, listener
            searcher.listener = listener

        # Ray pickles the run config (and so its callbacks) into its state; a restored run
        # gets a fresh callback bound to the restored searcher instead.
        def __getstate__(self):
            return {}

        def __setstate__(self, d):
            self.searcher = self.listener = None

        def on_trial_start(self, iteration, trials, trial, **info):
            if self.listener:
                self.listener("start", trial.trial_id)

        def _record(self, trial, error: bool):
            why = ""
            if error and getattr(trial, "error_file", None) and Path(trial.error_file).is_file():
                lines = [ln for ln in Path(trial.error_file).read_text().splitlines() if ln.strip()]
                why = lines[-1][:300] if lines else ""
            self.searcher.record(trial.trial_id, TrialRecord.from_ray(trial.last_result, error=error, why=why))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._record(trial, error=False)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._record(trial, error=True)

    return _RecordCallback


def _segment_number(p: Path) -> int:
    return int(p.name.rpartition("-")[2]) if "-" in p.name else 1


def trial_resources(cfg: ExperimentConfig) -> dict[str, float]:
    """What one trial asks Ray for: its CPUs, and an Edge TPU when it measures on one."""
    resources: dict[str, float] = {"cpu": cfg.budget.cpus_per_trial}
    if cfg.latency.source == "edgetpu":
        resources["edgetpu"] = 1
    return resources


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"  # Ray's default puts the whole arch string in the path


def _init_ray(cfg: ExperimentConfig) -> bool:
    """Connect to the configured cluster or start an embedded one; True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    runtime_env = {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2", "RAY_CHDIR_TO_TRIAL_DIR": "0", **worker_env(cfg)}}
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, runtime_env=runtime_env, log_to_driver=False,
                 logging_level=logging.WARNING)
        need = trial_resources(cfg).get("edgetpu", 0)
        have = ray.cluster_resources().get("edgetpu", 0)
        if need and have < need:
            ray.shutdown()
            from latency_models.base import MissingHardware

            raise MissingHardware(f"--address: no node of the Ray cluster at {cfg.ray.address} offers the 'edgetpu' "
                                  "resource that latency.source edgetpu needs; start the Edge TPU node with "
                                  "ray start --address=HEAD:PORT --resources='{\"edgetpu\": 1}'")
        return True
    resources = {}
    if cfg.latency.source == "edgetpu":
        from latency_models.edgetpu import list_devices

        resources["edgetpu"] = max(1, len(list_devices()[0]))
    ray.init(address="local", include_dashboard=cfg.ray.dashboard, _node_ip_address="127.0.0.1",
             num_cpus=cfg.ray.num_cpus, resources=resources or None, runtime_env=runtime_env,
             log_to_driver=False, logging_level=logging.WARNING, configure_logging=True)
    return True


def run_ray(cfg: ExperimentConfig, run: RunFolder, budget: int, *, resume: bool = False,
            listener: Listener | None = None) -> SearchState:
    """Run (or resume) the search on Ray Tune; the final state (also saved in ``run``)."""
    _quiet_env()
    _local_only_env(cfg)
    import ray
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    # Ray's driver-side notices (auth token, metrics it cannot fetch because the per-trial
    # loggers are off) would interleave with the progress display.
    for name in ("ray", "ray.tune", "ray._private"):
        logging.getLogger(name).setLevel(max(logging.ERROR, logging.getLogger().level))
    started = _init_ray(cfg)
    try:
        trainable = tune.with_resources(tune.with_parameters(_ray_trial, experiment=cfg.model_dump_json()),
                                        trial_resources(cfg))
        storage = str(run.ray_dir.resolve())
        segments = sorted((p for p in run.ray_dir.glob("search*") if p.is_dir()), key=_segment_number)
        prior = run.read_state(cfg, budget) if resume else None
        # Ray can only continue an interrupted experiment; once every trial it started has
        # finished (or the budget grew) the search goes on in a new segment, ray/search-N.
        restorable = (resume and segments and prior is not None and prior.pending
                      and tune.Tuner.can_restore(str(segments[-1].resolve())))
        if restorable:
            tuner = tune.Tuner.restore(str(segments[-1].resolve()), trainable=trainable, resume_errored=True)
            limiter = tuner._local_tuner._tune_config.search_alg  # noqa: SLF001 - Ray offers no getter
            searcher = limiter.searcher
            # Ray restores the searcher's state after this point (restore_from_dir); the
            # callback must hold the same object, so it is created from it here.
            callback = _callback_class()(searcher, listener)
            tuner._local_tuner.get_run_config().callbacks = [callback]
        else:
            searcher = _searcher_class()(cfg, str(run.path), budget)
            if prior is not None:
                prior.adopt_orphans(set())  # nothing of the old Ray experiment will run again
                searcher.state = prior
            # batch=True idles a worker until the round's slowest trial ends, and Ray then stops
            # the idle actor: half the quickstart's trials started a fresh process (TensorFlow,
            # the data and the latency source loaded again, ~7 s a trial). Asynchronous unless
            # search.sync asks for rounds.
            limiter = ConcurrencyLimiter(searcher, max_concurrent=cfg.budget.concurrency,
                                         batch=cfg.search.sync and cfg.budget.concurrency > 1)
            scheduler = None
            if cfg.ray.scheduler == "asha":
                from ray.tune.schedulers import ASHAScheduler

                scheduler = ASHAScheduler(time_attr="epochs", metric="reward", mode="max", max_t=cfg.train.epochs,
                                          grace_period=min(cfg.ray.grace_epochs, cfg.train.epochs),
                                          reduction_factor=3)
            callback = _callback_class()(searcher, listener)
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=limiter, scheduler=scheduler, num_samples=-1,
                                            # A trial ASHA stops mid-training leaves its thread in a
                                            # reused actor, and the next trial there hangs: ASHA
                                            # runs get fresh workers.
                                            reuse_actors=scheduler is None and cfg.ray.reuse_workers,
                                            time_budget_s=cfg.budget.time_limit_s,
                                            trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=f"search-{len(segments) + 1}" if segments else "search",
                                          storage_path=storage, verbose=0, callbacks=[callback],
                                          failure_config=tune.FailureConfig(max_failures=cfg.ray.max_failures),
                                          checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False)),
            )
        tuner.fit()
        state = callback.searcher.state
        run.save(state)
        return state
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------------ in-process

def run_local(cfg: ExperimentConfig, run: RunFolder, budget: int, *, resume: bool = False,
              listener: Listener | None = None) -> SearchState:
    """The same search, one trial at a time in this process: no Ray (for debugging and benchmarks)."""
    wanted = onednn_env(cfg)
    if "tensorflow" not in sys.modules:  # TensorFlow reads it once, when it loads
        os.environ.update(wanted)
    elif any(os.environ.get(k) != v for k, v in wanted.items()):
        log.warning("TensorFlow is already loaded in this process: train.onednn=%s cannot take effect here",
                    cfg.train.onednn)
    lib = jemalloc_path() if cfg.train.allocator == "jemalloc" and not jemalloc_loaded() else None
    if lib:  # a running process cannot change its allocator; only a new one (Ray's workers) can
        log.info("train.allocator=jemalloc applies to Ray's trial workers; this in-process run keeps the system "
                 "allocator (start it with LD_PRELOAD=%s to use jemalloc)", lib)
    state = run.read_state(cfg, budget) if resume else None
    if state is None:
        state = SearchState(cfg, budget)
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
            listener("start", tid)
        rec = state.complete(tid, run_trial(arch, cfg, trial_id=tid))
        run.save(state)
        if listener and rec is not None:
            listener("result", rec)
    return state
