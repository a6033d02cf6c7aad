"""The trial: one candidate's proxy trained on the proxy task, its deployment model scored.

The candidate is a *deployment* arch string (what the user ships). The trial trains its
proxy (:mod:`nas.trial.proxy`: the arch compound-scaled down by the experiment's ``proxy``
section) for accuracy, and takes latency, on/off-chip bytes, ops on the TPU/CPU, params and
MACs from the deployment arch; so do the reward and the hard constraints.

:func:`run_trial` is plain Python (the Ray entry point in :mod:`nas.run.runner` only wraps it), so
a trial can be run and tested without Ray::

    from nas.config.experiment import load_experiment
    from nas.trial.entry import run_trial
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

import logging
import socket
import time
from typing import Callable

from search_spaces import Arch, build_model, count_macs, count_params

from nas.trial import proxy
from nas.config.experiment import ExperimentConfig
from nas.core.errors import TrialFailure
from nas.trial.faults import kill_worker, pick
from nas.trial.int8 import int8_accuracy, plain_model
from nas.trial.devices import gpu_trial, precision, scope, setup_gpus, strategy, visible_gpus
from nas.trial.recipe import load_data, needs_latency_first, submit_latency, train_model
from nas.core.record import Status, TrialRecord
from nas.core.reward import reward
from nas.trial.worker import free_memory, graph_optimizer, limit_threads, peak_rss_mb, rss_mb

log = logging.getLogger(__name__)

__all__ = ["run_trial"]

Report = Callable[[TrialRecord], None]


def run_trial(arch_text: str, cfg: ExperimentConfig, *, report: Report | None = None,
              trial_id: str = "", can_die: bool = False, node: str | None = None,
              latency=None) -> TrialRecord:
    """Run one trial of the deployment arch ``arch_text``; the record. Never raises for a bad candidate.

    ``report`` receives an intermediate record after each epoch (``status: running``, the
    reward at the accuracy so far); the returned record is the final result. ``can_die`` says
    this process is a disposable worker (Ray's), which an injected ``worker_killed`` fault
    may SIGKILL; elsewhere that fault fails the trial instead. ``node`` names where it ran
    (default: this host's name). ``latency`` is the latency source to ask (default: the
    experiment's, made here); a measurement service's client
    (:class:`latency_models.service.ServiceClient`) is answered while the proxy trains,
    unless the latency must come first (:func:`nas.trial.recipe.needs_latency_first`).
    """
    fault = pick(cfg.faults, arch_text)
    t0 = time.perf_counter()
    out = TrialRecord(trial_id=trial_id, arch=arch_text, status=Status.FAILED, epochs=0,
                      node=node or socket.gethostname(), gpus=visible_gpus(), started=round(time.time(), 3))
    model = None
    try:
        _run(arch_text, cfg, out, report, fault, can_die, latency)
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
        out.rss_mb = rss_mb()
        out.peak_rss_mb = peak_rss_mb()
    if out.status is not Status.OK:
        out.reward = None
    return out


def _run(arch_text: str, cfg: ExperimentConfig, out: TrialRecord, report: Report | None,
         fault: str | None = None, can_die: bool = False, latency=None) -> None:
    """Fill ``out``: deployment figures first (cheap), then train the proxy."""
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
    # Before anything runs TensorFlow (loading the data resizes with it): the pool size and
    # the GPUs' memory can only be set before TF initialises. Found by the trial-cost
    # benchmark: two quickstart trials each ran 2 threads on 2 cores, and trained 2-3x slower
    # than one alone. GPU trials keep TensorFlow's own pools (nas.trial.worker.onednn_env says why).
    if not gpu_trial(cfg):
        limit_threads(cfg.budget.cpus_per_trial)
    setup_gpus(cfg)
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
    rcfg = cfg.reward

    t = time.perf_counter()
    answer = submit_latency(arch, cfg, classes, fault, latency)
    later = hasattr(latency, "submit") and not needs_latency_first(cfg)  # measured while the proxy trains
    if not later and _latency(out, answer, t, rcfg):
        return
    if later:
        out.latency_s = round(time.perf_counter() - t, 3)

    import keras

    graph_optimizer(cfg)
    strat = strategy(cfg, "the trial's training")
    t = time.perf_counter()
    keras.utils.set_random_seed(cfg.seed)
    with scope(strat), precision(cfg):
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
        kill_worker(can_die)
    t = time.perf_counter()
    acc, epochs = train_model(model, split, cfg, on_epoch=on_epoch if report is not None else None,
                              poison=fault == "nan_loss", strategy=strat)
    out.train_s = round(time.perf_counter() - t, 3)
    out.accuracy, out.epochs = acc, epochs
    if cfg.score.accuracy == "int8":
        _score_int8(out, model, small, proxy_shape, classes, split, cfg)
    del model
    if later and _latency(out, answer, time.perf_counter(), rcfg, spent=out.latency_s or 0.0):
        return
    out.reward = reward(out.int8_accuracy if cfg.score.accuracy == "int8" else acc, out.latency_ms, rcfg)
    out.status = Status.OK


def _score_int8(out: TrialRecord, model, small, shape, classes: int, split, cfg: ExperimentConfig) -> None:
    """``score.accuracy: int8``: the trained proxy quantized and evaluated (:mod:`nas.trial.int8`)
    into ``out``; a proxy that cannot be quantized or run fails the trial, with the reason."""
    s = cfg.score
    t = time.perf_counter()
    try:
        plain = plain_model(model, small, shape, classes, mixed=cfg.train.precision == "mixed_float16", seed=cfg.seed)
        got = int8_accuracy(plain, split, calibration_images=s.calibration_images, eval_images=s.eval_images,
                            seed=cfg.seed)
    except Exception as e:  # noqa: BLE001 - the candidate fails, with its reason; the search goes on
        raise TrialFailure(f"int8: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}") from None
    finally:
        out.int8_s = round(time.perf_counter() - t, 3)
    out.int8_accuracy = got.accuracy


def _latency(out: TrialRecord, answer, t0: float, rcfg, spent: float = 0.0) -> bool:
    """Fill ``out``'s latency fields from ``answer()`` (waited for since ``t0``); True when
    they break a hard constraint (the record is then infeasible)."""
    for k, v in answer().items():
        setattr(out, k, v)
    out.latency_s = round(spent + time.perf_counter() - t0, 3)
    why = rcfg.constraints.violation(out.as_dict())
    if why is not None:
        out.status, out.reason = Status.INFEASIBLE, why
        return True
    return False
