"""The process that trains: its environment, thread pools, allocator and memory.

Everything a trial worker sets about its own process lives here, for every trainer of many
models in one process (Ray's trial workers, the in-process runner, ``nas export``, the
keras-tuner adapter): oneDNN and the allocator must be set before the process (or
TensorFlow) starts, so Ray passes :func:`worker_env` in its runtime_env; the thread pools
before TensorFlow first runs (:func:`limit_threads`); and after every trial,
:func:`free_memory` gives back what the trial's graphs and models held.

>>> from nas.config.experiment import load_experiment
>>> sorted(onednn_env(load_experiment(Path(__file__).parents[2] / "experiments" / "quickstart.yaml")))
['TF_ENABLE_ONEDNN_OPTS']
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import logging
import os
import resource
import sys
from pathlib import Path

from nas.config.experiment import ExperimentConfig

log = logging.getLogger(__name__)

__all__ = ["JEMALLOC_LIB", "allocator_env", "check_allocator", "drop_custom_gradients", "free_memory",
           "graph_optimizer", "in_process", "jemalloc_loaded", "jemalloc_path", "limit_threads", "onednn_env",
           "peak_rss_mb", "rss_mb", "worker_env"]


def worker_env(cfg: ExperimentConfig) -> dict[str, str]:
    """Environment for the processes that train: :func:`onednn_env` and :func:`allocator_env`.
    The allocator must be set before the process starts and oneDNN before TensorFlow loads,
    so Ray gets both in the runtime_env."""
    return {**onednn_env(cfg), **allocator_env(cfg)}


def onednn_env(cfg: ExperimentConfig) -> dict[str, str]:
    """TensorFlow's oneDNN switch (``train.onednn``); empty for TensorFlow's own default.

    Why off by default in CPU trials: with oneDNN, TensorFlow keeps a thread-local cache of
    compiled kernels per layer shape (up to 1024 per kind and thread) that is never freed, so a
    worker that trains a stream of different archs grows by tens of MB per new arch. At proxy
    size it made no measurable difference in speed here (4.5% faster in one comparison, 6%
    slower in another). GPU trials (``budget.gpus_per_trial``) keep TensorFlow's default: their
    host-side ops are few, and what suits them was not measured (no GPU here).
    """
    on = cfg.train.onednn
    if on is None:
        if cfg.budget.gpus_per_trial > 0:
            return {}
        on = False
    return {"TF_ENABLE_ONEDNN_OPTS": "1" if on else "0"}


def allocator_env(cfg: ExperimentConfig) -> dict[str, str]:
    """The memory allocator of Ray's trial workers (``train.allocator``): LD_PRELOAD of jemalloc.

    Why jemalloc by default: what a trial leaves allocated is small (glibc's own count of
    bytes in use grows by well under 0.1 MB a trial), but TensorFlow's small long-lived
    allocations land scattered over glibc's heap and pin pages that are otherwise free, so
    the worker's resident memory creeps up trial after trial and ``malloc_trim`` cannot give
    it back. jemalloc's size-class slabs do not fragment that way; every trial ends by purging
    its freed pages (:func:`free_memory`). ``benchmarks/memory_over_trials.py
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


_allocator_checked = False


def check_allocator(cfg: ExperimentConfig) -> None:
    """Warn once per worker when jemalloc was asked for but is not there (e.g. a cluster node
    whose Ray lives at another path than the driver's: ld.so then ignores LD_PRELOAD)."""
    global _allocator_checked
    if _allocator_checked or cfg.train.allocator != "jemalloc" or not os.environ.get("LD_PRELOAD"):
        return
    _allocator_checked = True
    if not jemalloc_loaded():
        log.warning("train.allocator=jemalloc, but this worker runs without it (LD_PRELOAD=%s): its memory may "
                    "creep up from trial to trial", os.environ["LD_PRELOAD"])


def limit_threads(n: float) -> None:
    """Size TensorFlow's thread pools to the trial's CPUs (only possible before TF runs).
    For CPU trials: a GPU trial keeps TensorFlow's own pools (see :func:`onednn_env`)."""
    import tensorflow as tf

    threads = max(1, int(round(n)))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:  # TF already initialised in this process: it keeps what it has
        have = tf.config.threading.get_intra_op_parallelism_threads()
        if have != threads and not limit_threads.warned:
            limit_threads.warned = True
            log.warning("TensorFlow was initialised in this process before the trial could size its thread pool: "
                        "it uses %s threads per op where budget.cpus_per_trial gives %d", have or "all the cores'",
                        threads)


limit_threads.warned = False


def graph_optimizer(cfg: ExperimentConfig) -> None:
    """Grappler on or off for the traced step (``train.graph_optimizer``; default off in CPU
    trials, TensorFlow's default, on, in GPU trials). Process-wide in TensorFlow: fine in a
    trial worker, which only runs trials; the Keras loop keeps it on, as it always ran."""
    import tensorflow as tf

    want = cfg.train.graph_optimizer
    if want is None:
        want = cfg.budget.gpus_per_trial > 0
    off = cfg.train.loop == "step" and not want
    if tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False) != off:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": off})


def rss_mb() -> float | None:
    """Resident memory now (Linux), to see whether a worker grows from trial to trial."""
    try:
        with open("/proc/self/statm") as f:
            return round(int(f.read().split()[1]) * resource.getpagesize() / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def free_memory() -> None:
    """Release what a finished trial's TensorFlow graphs and Keras models hold (any trainer
    of many models in one process needs this, e.g. :mod:`nas.trial.hypermodel`)."""
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


def in_process(cfg: ExperimentConfig) -> None:
    """Apply what can still be applied to this process for an in-process search, and say
    what cannot (oneDNN once TensorFlow has loaded; the allocator of a running process)."""
    wanted = onednn_env(cfg)
    if "tensorflow" not in sys.modules:  # TensorFlow reads it once, when it loads
        os.environ.update(wanted)
    elif any(os.environ.get(k) != v for k, v in wanted.items()):
        log.warning("TensorFlow is already loaded in this process: train.onednn=%s cannot take effect here",
                    wanted.get("TF_ENABLE_ONEDNN_OPTS") == "1")
    lib = jemalloc_path() if cfg.train.allocator == "jemalloc" and not jemalloc_loaded() else None
    if lib:  # a running process cannot change its allocator; only a new one (Ray's workers) can
        log.info("train.allocator=jemalloc applies to Ray's trial workers; this in-process run keeps the system "
                 "allocator (start it with LD_PRELOAD=%s to use jemalloc)", lib)
