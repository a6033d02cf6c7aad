"""The trial: one candidate's proxy trained on the proxy task, its deployment model scored.

The candidate is a *deployment* arch string (what the user ships). The trial trains its
proxy (:mod:`nas.proxy`: the arch compound-scaled down by the experiment's ``proxy``
section) for accuracy, and takes latency, on/off-chip bytes, ops on the TPU/CPU, params and
MACs from the deployment arch; so do the reward and the hard constraints.

:func:`run_trial` is plain Python (the Ray entry point in :mod:`nas.runner` only wraps it), so
a trial can be run and tested without Ray::

    from nas.config import load_experiment
    from nas.trial import run_trial
    cfg = load_experiment("experiments/quickstart.yaml")
    rec = run_trial("v1-res128-cls10:stem-k3-s2-o32-relu:ds-r1-k3-s1-o16-relu:head-o1280-relu-d0.2", cfg)
    rec.status, rec.accuracy, rec.latency_ms, rec.reward, rec.proxy_arch

Order of work: the latency (and hard constraints) come first, because they are cheap for the
predictors and because a candidate that cannot be converted, or that breaks a constraint,
should not cost a training run. Training then reports after every epoch, so a scheduler
(ASHA) can stop bad candidates early.

Failures never escape: a NaN loss, running out of memory, a conversion or latency error, or
any other exception in the trial becomes ``status: failed`` with the reason. A broken
constraint is ``status: infeasible``. TensorFlow's graph and model memory is released after
every trial (``keras.backend.clear_session``), because a Ray worker runs many trials.
"""

from __future__ import annotations

import functools
import gc
import logging
import math
import resource
import socket
import sys
import time
from typing import Any, Callable

from . import proxy
from .config import ExperimentConfig
from .record import FIELDS, Status, TrialRecord
from .reward import Constraints, RewardConfig, reward

log = logging.getLogger(__name__)

__all__ = ["FIELDS", "TrialFailure", "run_trial", "train_model", "measure_latency", "reward_config"]

Report = Callable[[TrialRecord], None]


class TrialFailure(Exception):
    """A reason to record this trial as failed (the search goes on)."""


def reward_config(cfg: ExperimentConfig) -> RewardConfig:
    r = cfg.reward
    return RewardConfig(kind=r.kind, target_ms=r.target_ms, preset=r.preset, alpha=r.alpha, beta=r.beta,
                        constraints=Constraints(**r.constraints.model_dump()))


# ------------------------------------------------------------------------------ per-process caches
# A Ray worker runs many trials (actors are reused): the data and the latency source are
# loaded once per process, keyed by what defines them.

@functools.lru_cache(maxsize=2)
def _data(source: str, resolution: int, channels: int, val_fraction: float, seed: int, limit: int | None):
    from .data import load

    return load(source, resolution, channels=channels, val_fraction=val_fraction, seed=seed, limit=limit)


def load_data(cfg: ExperimentConfig, resolution: int):
    d = cfg.data
    return _data(d.source, resolution, d.channels, d.val_fraction, cfg.seed, d.limit)


@functools.lru_cache(maxsize=4)
def _source(name: str, options_items: tuple):
    from latency_models import get_source

    return get_source(name, **dict(options_items))


def latency_source(cfg: ExperimentConfig):
    return _source(cfg.latency.source, tuple(sorted(cfg.latency.options.items())))


def _limit_threads(n: float) -> None:
    """Size TensorFlow's thread pools to the trial's CPUs (only possible before TF runs)."""
    import tensorflow as tf

    threads = max(1, int(round(n)))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:  # TF already initialised in this process: it keeps what it has
        have = tf.config.threading.get_intra_op_parallelism_threads()
        if have != threads and not _limit_threads.warned:
            _limit_threads.warned = True
            log.warning("TensorFlow was initialised in this process before the trial could size its thread pool: "
                        "it uses %s threads per op where budget.cpus_per_trial gives %d", have or "all the cores'",
                        threads)


_limit_threads.warned = False


def _graph_optimizer(cfg: ExperimentConfig) -> None:
    """Grappler on or off for the traced step (``train.graph_optimizer``). Process-wide in
    TensorFlow: fine in a trial worker, which only runs trials; the Keras loop keeps it on,
    as it always ran."""
    import tensorflow as tf

    off = cfg.train.loop == "step" and not cfg.train.graph_optimizer
    if tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False) != off:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": off})


def _rss_mb() -> float | None:
    """Resident memory now (Linux), to see whether a worker grows from trial to trial."""
    try:
        with open("/proc/self/statm") as f:
            return round(int(f.read().split()[1]) * resource.getpagesize() / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


# ------------------------------------------------------------------------------ pieces

def measure_latency(arch, cfg: ExperimentConfig, num_classes: int, fault: str | None = None) -> dict[str, Any]:
    """Latency and memory split of ``arch`` (the deployment arch) at its resolution with the
    experiment's channels, from the configured source: the record's latency fields."""
    from latency_models import LatencyError, Target
    from latency_models.convert import ConversionError

    res = arch.resolution
    target = Target(arch, input_shape=(res, res, cfg.data.channels), num_classes=num_classes)
    try:
        if fault == "conversion":
            raise ConversionError("injected fault")
        if fault == "latency":
            raise LatencyError("injected fault")
        r = latency_source(cfg).measure(target)
    except (LatencyError, ConversionError) as e:
        raise TrialFailure(f"latency: {type(e).__name__}: {e}") from None
    return {"latency_ms": r.latency_ms, "on_chip_bytes": r.on_chip_bytes, "off_chip_bytes": r.off_chip_bytes,
            "ops_on_tpu": r.ops_on_tpu, "ops_on_cpu": r.ops_on_cpu, "latency_source": r.source}


def _optimizer(cfg: ExperimentConfig, steps: int):
    from .training import keras_optimizer

    t = cfg.train
    return keras_optimizer(t.optimizer, t.learning_rate, steps, t.schedule)


def train_model(model, split, cfg: ExperimentConfig, *, epochs: int | None = None,
                on_epoch: Callable[[int, float], None] | None = None, poison: bool = False) -> tuple[float, int]:
    """Train ``model`` with the experiment's recipe; (final validation accuracy, epochs run).

    ``on_epoch(epoch, val_accuracy)`` is called after every epoch (for intermediate reports).
    A NaN or infinite loss stops training and raises :class:`TrialFailure`. ``poison`` turns
    the training images to NaN (the ``nan_loss`` injected fault), so the loss watch is tested.
    """
    import keras

    t = cfg.train
    epochs = epochs or t.epochs
    train, val = split.datasets(t.batch_size, t.augment, cfg.seed)
    if poison:
        train = train.map(lambda x, y: (x * float("nan"), y))
    # A proxy run is a few hundred steps: with Keras's BatchNorm momentum (0.99) the moving
    # statistics would still be mostly their initial values at evaluation time, and the
    # validation accuracy would measure that rather than the arch.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = min(layer.momentum, t.bn_momentum)
    per_epoch = math.ceil(split.n_train / t.batch_size)
    if t.loop == "step":
        from .training import fit

        try:
            acc, n = fit(model, train, val, optimizer=t.optimizer, learning_rate=t.learning_rate, schedule=t.schedule,
                         epochs=epochs, steps_per_epoch=per_epoch, on_epoch=on_epoch)
        except FloatingPointError as e:
            raise TrialFailure(str(e)) from None
        if not math.isfinite(acc):
            raise TrialFailure("validation accuracy is not finite")
        # Compiled as fit leaves it (no tracing happens here), so a saved model evaluates and
        # fine-tunes in plain Keras (nas export).
        model.compile(optimizer=_optimizer(cfg, epochs * per_epoch), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], jit_compile=False)
        return acc, n
    model.compile(optimizer=_optimizer(cfg, epochs * per_epoch), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=False)
    state = {"epochs": 0, "nan": None}

    class _Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                state["nan"] = (state["epochs"] + 1, batch)
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            state["epochs"] = epoch + 1
            if on_epoch is not None and state["nan"] is None:
                on_epoch(epoch + 1, float((logs or {}).get("val_accuracy", float("nan"))))

    model.fit(train, epochs=epochs, verbose=0, callbacks=[_Watch()], shuffle=False,  # tf.data shuffles
              validation_data=val if on_epoch is not None else None)
    if state["nan"] is not None:
        raise TrialFailure(f"NaN loss at epoch {state['nan'][0]}, step {state['nan'][1]}")
    _, acc = model.evaluate(val, verbose=0)
    if not math.isfinite(acc):
        raise TrialFailure("validation accuracy is not finite")
    return float(acc), state["epochs"]


# ------------------------------------------------------------------------------ the trial

def run_trial(arch_text: str, cfg: ExperimentConfig, *, report: Report | None = None,
              trial_id: str = "", can_die: bool = False, node: str | None = None) -> TrialRecord:
    """Run one trial of the deployment arch ``arch_text``; the record. Never raises for a bad candidate.

    ``report`` receives an intermediate record after each epoch (``status: running``, the
    reward at the accuracy so far); the returned record is the final result. ``can_die`` says
    this process is a disposable worker (Ray's), which an injected ``worker_killed`` fault
    may SIGKILL; elsewhere that fault fails the trial instead. ``node`` names where it ran
    (default: this host's name).
    """
    from .faults import pick

    fault = pick(cfg.faults, arch_text)
    t0 = time.perf_counter()
    out = TrialRecord(trial_id=trial_id, arch=arch_text, status=Status.FAILED, epochs=0,
                      node=node or socket.gethostname())
    model = None
    try:
        _run(arch_text, cfg, out, report, fault, can_die)
    except TrialFailure as e:
        out.status, out.reason = Status.FAILED, str(e)
    except MemoryError:
        out.status, out.reason = Status.FAILED, "out of memory (MemoryError)"
    except Exception as e:  # noqa: BLE001 - any candidate-specific failure must not stop the search
        name = type(e).__name__
        why = "out of memory" if name == "ResourceExhaustedError" else name
        out.status, out.reason = Status.FAILED, f"{why}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        log.debug("trial %s failed", trial_id, exc_info=True)
    finally:
        del model
        free_memory()
        out.trial_s = round(time.perf_counter() - t0, 3)
        out.rss_mb = _rss_mb()
        out.peak_rss_mb = _peak_rss_mb()
    if out.status is not Status.OK:
        out.reward = None
    return out


def free_memory() -> None:
    """Release what a finished trial's TensorFlow graphs and Keras models hold (any trainer
    of many models in one process needs this, e.g. :mod:`nas.tuner`)."""
    drop_custom_gradients()
    if "keras" in sys.modules:
        import keras

        keras.backend.clear_session(free_memory=True)  # this collects garbage too: once is enough (0.2 s)
    else:
        gc.collect()
    _malloc_trim()


def drop_custom_gradients() -> int:
    """Unregister the gradient functions TensorFlow registered while tracing training steps.

    Why: Keras 3's TF optimizer all-reduces gradients through the default distribution
    strategy, which uses ``tf.custom_gradient``; in graph mode that registers a
    ``CustomGradient-<uid>`` function in TensorFlow's process-global gradient registry on
    every trace and never removes it. The function's closure holds the traced training
    graph, so every trained model stayed alive (~100 MB a trial at proxy size; 5.7 GB after
    45 trials). The graphs are dead once the trial is over; the entries can go. Returns the
    number dropped (0 when TensorFlow's internals differ from what this expects).
    """
    ops = sys.modules.get("tensorflow.python.framework.ops")
    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    if not isinstance(registry, dict):
        return 0
    stale = [k for k in registry if isinstance(k, str) and k.startswith("CustomGradient-")]
    for k in stale:
        del registry[k]
    return len(stale)


def _malloc_trim() -> None:
    """Give freed heap pages back to the OS: glibc's, and jemalloc's when the worker runs
    with it (``train.allocator``), which otherwise keeps them up to its 10 s decay time."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl)
            pass
        try:
            mallctl = ctypes.CDLL(None).mallctl  # only there when jemalloc is loaded
        except (OSError, AttributeError):
            return
        # "arena.<MALLCTL_ARENAS_ALL>.purge": all arenas. Purging once here, not on every free
        # (dirty_decay_ms:0), keeps training at full speed: that setting cost 20% here.
        mallctl(b"arena.4096.purge", None, None, None, ctypes.c_size_t(0))


def _run(arch_text: str, cfg: ExperimentConfig, out: TrialRecord, report: Report | None,
         fault: str | None = None, can_die: bool = False) -> None:
    """Fill ``out``: deployment figures first (cheap), then train the proxy."""
    from search_spaces import Arch, build_model, count_macs, count_params

    try:
        arch = Arch.from_string(arch_text)
    except ValueError as e:
        raise TrialFailure(f"arch: {e}") from None
    if fault == "exception":
        raise RuntimeError("injected fault: exception")
    try:
        small = proxy.of(arch, cfg)
    except ValueError as e:
        raise TrialFailure(f"proxy: {e}") from None
    out.proxy_arch = small.to_string()
    # Before anything runs TensorFlow (loading the data resizes with it): the pool size can
    # only be set before TF initialises. Found by the trial-cost benchmark: two quickstart
    # trials each ran 2 threads on 2 cores, and trained 2-3x slower than one alone.
    _limit_threads(cfg.budget.cpus_per_trial)
    split = load_data(cfg, small.resolution)
    classes = split.num_classes
    if arch.num_classes is not None and arch.num_classes != classes:
        raise TrialFailure(f"arch: it has {arch.num_classes} classes, the data {classes}")
    channels = cfg.data.channels
    deploy_shape = (arch.resolution, arch.resolution, channels)
    proxy_shape = (small.resolution, small.resolution, channels)
    out.num_classes = classes  # with the arch string and resolution, the whole model
    out.params = count_params(arch, deploy_shape, classes)
    out.macs = count_macs(arch, deploy_shape, classes)
    out.proxy_params = count_params(small, proxy_shape, classes)
    out.proxy_macs = count_macs(small, proxy_shape, classes)
    rcfg = reward_config(cfg)

    t = time.perf_counter()
    for k, v in measure_latency(arch, cfg, classes, fault).items():
        setattr(out, k, v)
    out.latency_s = round(time.perf_counter() - t, 3)
    why = rcfg.constraints.violation(out.as_dict())
    if why is not None:
        out.status, out.reason = Status.INFEASIBLE, why
        return

    import keras

    _graph_optimizer(cfg)
    t = time.perf_counter()
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(small, proxy_shape, classes, seed=cfg.seed)
    out.build_s = round(time.perf_counter() - t, 3)

    def on_epoch(epoch: int, acc: float) -> None:
        out.epochs = epoch
        # The last epoch is reported once, complete, by the caller: a scheduler that stops
        # trials at their last epoch must see the final result, not an intermediate one.
        if report is not None and epoch < cfg.train.epochs:
            report(out.replace(status=Status.RUNNING, accuracy=acc, reward=reward(acc, out.latency_ms, rcfg),
                               train_s=round(time.perf_counter() - t, 3)))

    if fault == "worker_killed":
        from .faults import kill_worker

        kill_worker(can_die)
    t = time.perf_counter()
    acc, epochs = train_model(model, split, cfg, on_epoch=on_epoch if report is not None else None,
                              poison=fault == "nan_loss")
    out.train_s = round(time.perf_counter() - t, 3)
    del model
    out.accuracy, out.epochs, out.reward = acc, epochs, reward(acc, out.latency_ms, rcfg)
    out.status = Status.OK
