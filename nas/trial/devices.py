"""The devices a training process uses: its GPUs and their memory, the distribution strategy
over them, and the compute precision.

Every trainer asks here (a trial, the one-shot supernet, ``nas export``, the keras-tuner
adapter), so one experiment means the same thing on each:

- :func:`setup_gpus` runs before TensorFlow initialises (as :func:`nas.trial.worker.limit_threads`):
  each GPU the process sees grows its memory on demand, or is capped at the process's share of
  the card (``train.gpu_memory``), so trials that share a card (``budget.gpus_per_trial``
  0.5) never take each other's memory. Which GPUs a process sees is Ray's choice: it sets
  ``CUDA_VISIBLE_DEVICES`` to the ids it assigned the trial.
- :func:`strategy` is ``tf.distribute.MirroredStrategy`` over every GPU the process sees when
  there are several (``train.devices: all``), else None (one device). Without GPUs it spans
  the logical CPU devices when there are several (:func:`split_cpu`, which tests and
  ``benchmarks/gpu_check.py`` use to run the multi-device path on a CPU).
- :func:`precision` builds models under Keras's ``mixed_float16`` policy when
  ``train.precision`` asks for it.

Nothing here is CPU tuning: threads, oneDNN and grappler stay in :mod:`nas.trial.worker`, for CPU
trials only (:func:`gpu_trial`).

>>> from nas.config.experiment import load_experiment
>>> cfg = load_experiment(Path(__file__).parents[2] / "experiments" / "quickstart.yaml")
>>> gpu_trial(cfg), memory_mode(cfg)
(False, 'growth')
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from pathlib import Path  # noqa: F401 - (the doctest finds the quickstart by its path)
from typing import Any

from nas.config.experiment import ExperimentConfig

log = logging.getLogger(__name__)

__all__ = ["trial_resources", "check_gpus", "gpu_trial", "memory_mode", "node_gpus", "precision", "scope", "setup_gpus", "split_cpu",
           "strategy", "visible_gpus"]


def gpu_trial(cfg: ExperimentConfig) -> bool:
    """Whether the experiment's trials train on GPUs (``budget.gpus_per_trial`` above 0)."""
    return cfg.budget.gpus_per_trial > 0


def memory_mode(cfg: ExperimentConfig, share: float | None = None) -> str:
    """``growth`` or ``cap`` for a process holding ``share`` of a card (default: a trial's)."""
    mode = cfg.train.gpu_memory
    if mode != "auto":
        return mode
    share = cfg.budget.gpus_per_trial if share is None else share
    return "cap" if 0 < share < 1 else "growth"


def visible_gpus() -> str | None:
    """``CUDA_VISIBLE_DEVICES`` as Ray (or the user) set it: the ids this process may use."""
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def _card_memory_mb(physical_id: str) -> int | None:
    """Total memory of one card by its CUDA id or UUID, from nvidia-smi (None without it)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", physical_id],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return int(float(out.strip().splitlines()[0]))
    except (subprocess.SubprocessError, OSError, ValueError, IndexError):
        return None


def node_gpus() -> int:
    """The GPUs an embedded Ray finds on this machine, counted without starting Ray or
    TensorFlow: ``CUDA_VISIBLE_DEVICES`` when set (Ray honours it), else ``nvidia-smi -L``."""
    visible = visible_gpus()
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip() and v.strip() != "-1"])
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (subprocess.SubprocessError, OSError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def check_gpus(cfg: ExperimentConfig) -> None:
    """Before any work: ``budget.gpus_per_trial`` needs that many GPUs on this machine (an
    embedded Ray: ``ray.num_gpus`` or the ones found); a cluster is checked when joined."""
    from latency_models import MissingHardware

    want = cfg.budget.gpus_per_trial
    if not want or cfg.ray.address:
        return
    have = cfg.ray.num_gpus if cfg.ray.num_gpus is not None else node_gpus()
    if have < want:
        raise MissingHardware(f"budget.gpus_per_trial: {want:g}, but this machine has {have} GPU(s) for Ray (an "
                              "NVIDIA driver, nvidia-smi and the GPU build, pip install -e '.[gpu]', are needed); "
                              "allowed: 0 (CPU trials), or join a cluster with GPU nodes (--address)")


_configured: dict[str, Any] | None = None


def setup_gpus(cfg: ExperimentConfig, share: float | None = None) -> dict[str, Any]:
    """Set this process's GPUs up before TensorFlow initialises; what was done (also for a
    process without GPUs: ``{"gpus": 0}``). ``share`` is the share of a card this process
    holds (default: ``budget.gpus_per_trial``). Once per process: TensorFlow fixes its
    devices when it first runs."""
    global _configured
    if _configured is not None:
        return _configured
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    done: dict[str, Any] = {"gpus": len(gpus), "visible": visible_gpus()}
    if not gpus:
        _configured = done
        return done
    mode = memory_mode(cfg, share)
    share = cfg.budget.gpus_per_trial if share is None else share
    ids = (visible_gpus() or ",".join(str(i) for i in range(len(gpus)))).split(",")
    try:
        for i, gpu in enumerate(gpus):
            limit = None
            if mode == "cap":
                total = _card_memory_mb(ids[i].strip()) if i < len(ids) else None
                if total is None:
                    log.warning("train.gpu_memory: cap needs each card's memory from nvidia-smi, which is not "
                                "available here: %s grows its memory on demand instead", gpu.name)
                else:
                    limit = int(total * min(1.0, share))
            if limit is None:
                tf.config.experimental.set_memory_growth(gpu, True)
            else:
                tf.config.set_logical_device_configuration(gpu, [tf.config.LogicalDeviceConfiguration(
                    memory_limit=limit)])
            done.setdefault("memory", []).append("growth" if limit is None else f"cap {limit} MB")
    except RuntimeError as e:  # TensorFlow already ran in this process: it keeps its devices
        log.warning("TensorFlow initialised its GPUs before train.gpu_memory could be applied (%s): the first "
                    "model may take the whole card", str(e).splitlines()[0])
        done["memory"] = "unchanged (TensorFlow already initialised)"
    log.info("GPUs of this process: %s", done)
    _configured = done
    return done


def split_cpu(n: int) -> list[str]:
    """Split the CPU into ``n`` logical devices (before TensorFlow initialises), so the
    multi-device path (:func:`strategy`) runs on a machine without GPUs; their names."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def strategy(cfg: ExperimentConfig, what: str = "training"):
    """A ``MirroredStrategy`` over every device this process sees when there are several and
    ``train.devices`` is ``all``; None for one device (the default strategy)."""
    if cfg.train.devices == "one":
        return None
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    if not devices:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        return None
    log.info("%s on %d devices (MirroredStrategy): %s", what, len(devices), ", ".join(devices))
    # Gathering gradients on a CPU-only process needs no NCCL; on GPUs NCCL is TensorFlow's default.
    cross = None if "GPU" in devices[0] else tf.distribute.ReductionToOneDevice()
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=cross)


@contextlib.contextmanager
def precision(cfg: ExperimentConfig):
    """Build models under ``train.precision``'s Keras dtype policy (float32 or mixed_float16)."""
    import keras

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(cfg.train.precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def scope(strat):
    """``strat.scope()``, or nothing for one device."""
    return strat.scope() if strat is not None else contextlib.nullcontext()


def trial_resources(cfg: ExperimentConfig) -> dict[str, float]:
    """What one trial asks Ray for: its CPUs and GPUs, and, when it measures on a device
    itself (``latency.service.mode: trial``), the device's resource for its whole life."""
    resources: dict[str, float] = {"cpu": cfg.budget.cpus_per_trial}
    if cfg.budget.gpus_per_trial:
        resources["gpu"] = cfg.budget.gpus_per_trial
    if not cfg.latency.uses_service and cfg.latency.source == "edgetpu":
        resources["edgetpu"] = 1
    elif not cfg.latency.uses_service and cfg.latency.service.resource:
        resources[cfg.latency.service.resource] = 1
    return resources
