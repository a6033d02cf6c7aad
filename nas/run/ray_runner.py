"""The Ray Tune runner: the searcher, the recording callback, the trial entry point and the
cluster set-up. Ray is imported here and in :mod:`nas.run.ray_services` (nowhere else in nas/); :func:`nas.run.runner.run_ray`
loads this module once the environment Ray reads at import is set.

The controller sits behind :class:`ControllerSearcher` (``suggest`` / ``on_trial_complete``,
``save`` / ``restore`` as JSON), wrapped in ``ConcurrencyLimiter``. :class:`RecordCallback`
writes each trial to the run folder the moment it ends. Ray pickles both into its experiment
state; neither pickles what it works with. Both find the live searcher of their run folder in
this process's registry, so a restored run needs nothing of Ray's private state.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune
from ray.tune import Callback
from ray.tune.search import ConcurrencyLimiter, Searcher

from latency_models import MissingHardware

from nas.config.experiment import ExperimentConfig
from nas.trial.devices import trial_resources
from nas.core.events import Listener, TrialFinished, TrialStarted
from nas.data.sources import readable_here
from nas.core.errors import Finished
from nas.ledger.ledger import Ledger
from nas.core.record import Status, TrialRecord
from nas.ledger.folder import RunFolder
from nas.trial.entry import run_trial
from nas.trial.worker import check_allocator, worker_env
from nas.run.ray_services import log_services, run_key, service_client, start_services, stop_services

log = logging.getLogger(__name__)

__all__ = ["ControllerSearcher", "RecordCallback", "check_nodes", "run_supernets", "run_tune"]

@dataclass
class _Live:
    """A run's searcher in this process and the listener of its search. Ray unpickles the
    searcher and the callback separately (``Tuner.restore`` too): both find them here, keyed
    by the run folder, so a restored run needs nothing of Ray's private state."""

    searcher: ControllerSearcher | None = None
    listener: Listener | None = None


_LIVE: dict[str, _Live] = {}


def _live(run_dir: str | Path) -> _Live:
    return _LIVE.setdefault(run_key(run_dir), _Live())


def _ray_trial(config: dict, experiment: str = "", services: tuple[str, ...] = ()) -> None:
    """The Ray Tune entry point: one trial in a worker, reporting each epoch and at the end.
    ``services``: the names of the measurement actors that time its model (none: it measures
    itself)."""
    cfg = ExperimentConfig.model_validate_json(experiment)
    trial_id = tune.get_context().get_trial_id() or ""
    check_allocator(cfg)
    # Host name and Ray node: on one machine with several Ray nodes the host alone is ambiguous.
    node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"
    result = run_trial(config["arch"], cfg, report=lambda rec: tune.report(rec.to_ray()), trial_id=trial_id,
                       can_die=True, node=node, latency=service_client(cfg, services))
    if cfg.budget.gpus_per_trial:
        # Ray's promise: the trial's process sees the GPUs Ray gave it and no others.
        assigned = sorted(str(g) for g in ray.get_gpu_ids())
        seen = sorted(result.gpus.split(",")) if result.gpus is not None else None
        if seen != assigned:
            result = result.replace(status=Status.FAILED, reward=None, reason=(
                f"Ray assigned GPU(s) {','.join(assigned) or 'none'}, but the trial's process sees "
                f"{','.join(seen) if seen is not None else 'every GPU (CUDA_VISIBLE_DEVICES unset)'}"))
    tune.report(result.to_ray())


class ControllerSearcher(Searcher):
    """A Ray Tune ``Searcher`` around any :class:`~nas.controllers.base.Controller` (via the :class:`~nas.ledger.ledger.Ledger`)."""

    def __init__(self, cfg: ExperimentConfig, run_dir: str, budget: int):
        super().__init__(metric="reward", mode="max")
        self.cfg, self.run_dir, self.budget = cfg, run_dir, budget
        self.state = Ledger(cfg, budget)
        self.run = RunFolder(run_dir)
        _live(run_dir).searcher = self

    def record(self, trial_id: str, result: TrialRecord) -> None:
        """Record a finished trial at once (tables, progress), whoever hears of it first."""
        rec = self.state.record(trial_id, result)
        if rec is not None:
            self.run.save(self.state)
            listener = _live(self.run_dir).listener
            if listener:
                listener(TrialFinished(rec))

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
        # The results were recorded by RecordCallback when the trials ended; this is the
        # (possibly batched) moment the controller learns from them.
        self.record(trial_id, TrialRecord.from_ray(result, error=error))
        self.state.tell(trial_id)
        self.run.save(self.state)

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(self.state.to_json())

    def restore(self, checkpoint_path: str) -> None:
        """Ray's restore (``Tuner.restore``): the run folder's ledger, never older than Ray's
        checkpoint, reconciled with the trials Ray knows."""
        _live(self.run_dir).searcher = self  # the searcher Ray restored is the one that runs
        self.budget = self.run.budget() or self.budget  # --max-trials may have changed it
        ray_view = Ledger.from_json(self.cfg, Path(checkpoint_path).read_text(), self.budget)
        newest = self.run.read_state(self.cfg, self.budget) or ray_view
        newest.adopt_orphans(set(ray_view.archs))
        self.state = newest
        self.run.save(self.state)


class RecordCallback(Callback):
    """Records each trial in the run folder as it ends, and drives the progress display."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir

    @property
    def _searcher(self) -> ControllerSearcher:
        return _live(self.run_dir).searcher

    def on_trial_start(self, iteration, trials, trial, **info):
        listener = _live(self.run_dir).listener
        if listener:
            listener(TrialStarted(trial.trial_id))

    def _record(self, trial, error: bool):
        why = ""
        if error and getattr(trial, "error_file", None) and Path(trial.error_file).is_file():
            lines = [ln for ln in Path(trial.error_file).read_text().splitlines() if ln.strip()]
            why = lines[-1][:300] if lines else ""
        self._searcher.record(trial.trial_id, TrialRecord.from_ray(trial.last_result, error=error, why=why))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._record(trial, error=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._record(trial, error=True)


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"  # Ray's default puts the whole arch string in the path


def init_ray(cfg: ExperimentConfig) -> bool:
    """Connect to the configured cluster or start an embedded one; True if we started it."""
    if ray.is_initialized():
        return False
    runtime_env = {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2", "RAY_CHDIR_TO_TRIAL_DIR": "0", **worker_env(cfg)}}
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, runtime_env=runtime_env, log_to_driver=False,
                 logging_level=logging.WARNING)
        need = trial_resources(cfg).get("edgetpu", 0) or (cfg.latency.uses_service
                                                          and cfg.latency.service_resource == "edgetpu")
        have = ray.cluster_resources().get("edgetpu", 0)
        if need and have < 1:
            ray.shutdown()
            raise MissingHardware(f"--address: no node of the Ray cluster at {cfg.ray.address} offers the 'edgetpu' "
                                  "resource that latency.source edgetpu needs; start the Edge TPU node with "
                                  "ray start --address=HEAD:PORT --resources='{\"edgetpu\": 1}'")
        gpus = cfg.budget.gpus_per_trial
        if gpus and largest_gpu_node() < gpus:
            ray.shutdown()
            raise MissingHardware(f"budget.gpus_per_trial: {gpus:g}, but no node of the Ray cluster at "
                                  f"{cfg.ray.address} offers that many GPUs (start GPU nodes with ray start; Ray "
                                  "detects their GPUs)")
        try:
            check_nodes(cfg.data.source)
        except ValueError:
            ray.shutdown()
            raise
        return True
    resources = {}
    if cfg.latency.source == "edgetpu":
        from latency_models.edgetpu.devices import list_devices  # the Edge TPU runtime: only when asked for

        resources["edgetpu"] = max(1, len(list_devices()[0]))
    ray.init(address="local", include_dashboard=cfg.ray.dashboard, _node_ip_address="127.0.0.1",
             num_cpus=cfg.ray.num_cpus, num_gpus=cfg.ray.num_gpus, resources=resources or None,
             runtime_env=runtime_env, log_to_driver=False, logging_level=logging.WARNING, configure_logging=True)
    gpus = cfg.budget.gpus_per_trial
    if gpus and ray.cluster_resources().get("GPU", 0) < gpus:
        have = ray.cluster_resources().get("GPU", 0)
        ray.shutdown()
        raise MissingHardware(f"budget.gpus_per_trial: {gpus:g}, but this machine has {have:g} GPUs for Ray (none "
                              "found: an NVIDIA driver and the GPU build, pip install -e '.[gpu]'); allowed: 0 "
                              "(CPU trials), or ray.num_gpus for logical GPUs in a test")
    return True


def check_nodes(source: str) -> None:
    """Every node with CPUs reads ``source`` (a task pinned there), or ValueError naming it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    task = ray.remote(num_cpus=0, max_retries=0)(readable_here)
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(source)
            for n in nodes]
    for n, why in zip(nodes, ray.get(refs, timeout=300)):
        if why is not None:
            raise ValueError(f"data.source: node {n['NodeManagerHostname']} ({n['NodeManagerAddress']}, id "
                             f"{n['NodeID'][:8]}) cannot read {source!r}: {why.removeprefix('data.source: ')}")


def largest_gpu_node() -> float:
    """The GPUs of the cluster's largest GPU node (what one multi-GPU task can have)."""
    return max((n.get("Resources", {}).get("GPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)


def _quiet_ray_loggers() -> None:
    # Ray's driver-side notices (auth token, metrics it cannot fetch because the per-trial
    # loggers are off) would interleave with the progress display.
    for name in ("ray", "ray.tune", "ray._private"):
        logging.getLogger(name).setLevel(max(logging.ERROR, logging.getLogger().level))


def run_tune(cfg: ExperimentConfig, run: RunFolder, budget: int, *, resume: bool = False,
             listener: Listener | None = None) -> Ledger:
    """Run (or resume) the search on Ray Tune; the final ledger (also saved in ``run``)."""
    _quiet_ray_loggers()
    started = init_ray(cfg)
    services: list = []
    try:
        if listener is not None:
            _live(run.path).listener = listener
        names, services = start_services(cfg, run)
        trainable = tune.with_resources(tune.with_parameters(_ray_trial, experiment=cfg.model_dump_json(),
                                                             services=names),
                                        trial_resources(cfg))
        storage = str(run.ray_dir.resolve())
        segments = sorted((p for p in run.ray_dir.glob("search*") if p.is_dir()),
                          key=lambda p: int(p.name.rpartition("-")[2]) if "-" in p.name else 1)
        prior = run.read_state(cfg, budget) if resume else None
        # Ray can only continue an interrupted experiment; once every trial it started has
        # finished (or the budget grew) the search goes on in a new segment, ray/search-N.
        restorable = (resume and segments and prior is not None and prior.pending
                      and tune.Tuner.can_restore(str(segments[-1].resolve())))
        if restorable:
            # Ray unpickles its searcher and callback, then restores the searcher's state
            # (ControllerSearcher.restore): both find each other through _LIVE.
            tuner = tune.Tuner.restore(str(segments[-1].resolve()), trainable=trainable, resume_errored=True)
        else:
            searcher = ControllerSearcher(cfg, str(run.path), budget)
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
            callback = RecordCallback(str(run.path))
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
        state = _live(run.path).searcher.state
        run.save(state)
        log_services(services)
        return state
    finally:
        if ray.is_initialized():
            stop_services(services)
        _LIVE.pop(run_key(run.path), None)
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------------ one-shot supernets

def _supernet_task(experiment: str, target_ms: float, run_dir: str, services: tuple[str, ...] = ()) -> list[dict]:
    """The Ray entry point of one supernet (:func:`nas.oneshot.run.run_supernet`)."""
    from nas.oneshot.run import run_supernet

    cfg = ExperimentConfig.model_validate_json(experiment)
    check_allocator(cfg)
    return run_supernet(cfg, target_ms, run_dir, latency=service_client(cfg, services))


def run_supernets(cfg: ExperimentConfig, run: RunFolder, display) -> list[list[dict]]:
    """One Ray task per latency target, in parallel as the CPUs allow; their candidates, in
    target order. ``display.poll()`` is called while they run. A task whose worker dies is
    retried (``ray.max_failures``) and resumes from its checkpoint; a supernet that fails
    outright is reported and the others go on."""
    from nas.oneshot.run import supernet_cpus, supernet_gpus, targets

    _quiet_ray_loggers()
    started = init_ray(cfg)
    services = []
    try:
        res = trial_resources(cfg)
        names, services = start_services(cfg, run)
        gpus = supernet_gpus(cfg, largest_gpu_node())
        task = ray.remote(_supernet_task).options(
            num_cpus=supernet_cpus(cfg), num_gpus=gpus,
            resources={k: v for k, v in res.items() if k not in ("cpu", "gpu")} or None,
            max_retries=cfg.ray.max_failures, retry_exceptions=False)
        experiment = cfg.model_dump_json()
        wanted = targets(cfg)
        futures = {task.remote(experiment, t, str(run.path.resolve()), names): t for t in wanted}
        out: dict[float, list[dict]] = {}
        pending = list(futures)
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=2.0)
            display.poll()
            for f in ready:
                t = futures[f]
                try:
                    out[t] = ray.get(f)
                except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError) as e:
                    cause = getattr(e, "cause", None) or e
                    log.error("supernet %g ms failed: %s: %s", t, type(cause).__name__, str(cause).splitlines()[0]
                              if str(cause) else "")
                    out[t] = []
        display.poll()
        return [out[t] for t in wanted]
    finally:
        if ray.is_initialized():
            stop_services(services)
        if started:
            ray.shutdown()
