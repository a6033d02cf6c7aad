"""How a search runs, the search-wide sections of an experiment: ``budget`` (trials and the
resources of each), ``search`` (the strategy, standalone or one-shot, with ``search.oneshot``'s
supernet phase), ``ray`` (the cluster) and ``faults`` (failures injected on purpose, for tests).
Parsed as part of :class:`nas.config.experiment.ExperimentConfig`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from nas.core.section import Section as _Strict

__all__ = ["BudgetConfig", "FaultsConfig", "OneShotConfig", "RayConfig", "SearchConfig"]


class BudgetConfig(_Strict):
    at = "budget"

    trials: int = Field(ge=1, le=1_000_000)
    concurrency: int = Field(1, ge=1, le=1024)
    cpus_per_trial: float = Field(1.0, gt=0, le=256)
    gpus_per_trial: float = Field(0.0, ge=0, le=64, description="GPUs each trial asks Ray for; a fraction "
                                  "below 1 shares a card (0.25: four trials on one GPU, each capped at a "
                                  "quarter of its memory, train.gpu_memory), whole numbers above 1")
    time_limit_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _whole_gpus(self):
        g = self.gpus_per_trial
        if g > 1 and not float(g).is_integer():
            raise ValueError(f"budget.gpus_per_trial: {g:g} is neither a share of one GPU nor whole GPUs; allowed: "
                             "0 (CPU), a fraction in (0, 1], or a whole number (Ray gives fractions of one card "
                             "only)")
        return self


class OneShotConfig(_Strict):
    """``search.oneshot``: the supernet phase of ``search.strategy: oneshot`` (:mod:`nas.oneshot.search`)."""

    at = "search.oneshot"


    epochs: int = Field(30, ge=1, le=10_000, description="passes over the training split, one weight step per "
                        "batch, each on one sampled path")
    batch_size: int = Field(64, ge=1, le=65_536)
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(3e-3, gt=0, le=10, description="the supernet's (the controller's is "
                                 "controller.params.learning_rate)")
    warmup: float = Field(0.25, ge=0, lt=1, description="share of the steps on uniformly random paths, the "
                          "controller held still (TuNAS's warm-up: every op trained before the policy narrows)")
    largest_until: float = Field(0.0, ge=0, le=1, description="TuNAS's filter and op warm-up: the share of "
                                 "the steps over which each numeric decision of a weight step's path (kernel, "
                                 "expansion, filters, repeats, SE) takes its largest choice with a probability "
                                 "falling from 1 to largest_floor (0 and largest_floor 0, the default: paths as drawn; the supernet "
                                 "then learns faster but favours large archs, README)")
    largest_floor: float = Field(0.0, ge=0, le=1, description="that probability after largest_until (the "
                                 "largest path keeps being trained, so the shared weights stay whole)")
    samples: int = Field(4, ge=1, le=1024, description="archs the controller proposes and is told per step")
    candidates: int = Field(64, ge=1, le=100_000, description="archs sampled from the final policy and re-scored "
                            "on the whole validation split")
    top_k: int = Field(4, ge=0, le=1000, description="the best of those retrained standalone, besides the "
                       "policy's most likely arch")
    calibration: int = Field(4, ge=1, le=1000, description="training batches for each candidate's BatchNorm "
                             "statistics when it is re-scored")
    targets_ms: list[float] | None = Field(None, min_length=1, max_length=64, description="latency targets, one "
                                           "supernet each (run as parallel Ray trials), to trace a Pareto front; "
                                           "default: reward.target_ms")
    cpus: float | None = Field(None, gt=0, le=256, description="CPUs of each supernet (default: the search's, "
                               "budget.cpus_per_trial x budget.concurrency, shared by the targets)")
    gpus: float | None = Field(None, ge=0, le=64, description="GPUs of each supernet, which trains on all of "
                               "them (train.devices: all); default: the search's, budget.gpus_per_trial x "
                               "budget.concurrency, shared by the targets, in whole GPUs above 1 and at most "
                               "the largest node's")
    classifier_init: Literal["default", "zeros"] = Field(
        "default", description="the supernet's classifier kernel at start: 'default' (EfficientNet's init, "
        "as a standalone model's) or 'zeros' (equal first logits; the structural choices learn faster in "
        "a short run, benchmarks/oneshot_interference.py)")
    checkpoint_s: float = Field(60.0, gt=0, le=86_400, description="seconds between checkpoints of a supernet "
                                "(weights, optimizer slots, the controller's feedback, the random states)")

    @model_validator(mode="after")
    def _targets(self):
        t = self.targets_ms
        if t is not None:
            bad = [v for v in t if not v > 0]
            if bad:
                raise ValueError(f"search.oneshot.targets_ms: {bad[0]!r} is not a latency; allowed: numbers > 0 (ms)")
            if len(set(t)) != len(t):
                raise ValueError(f"search.oneshot.targets_ms: {t} repeats a target; allowed: distinct numbers > 0")
        return self


class SearchConfig(_Strict):
    at = "search"

    strategy: Literal["standalone", "oneshot"] = Field(
        "standalone", description="standalone: every candidate is a trial trained from scratch; oneshot: one "
        "weight-sharing supernet per latency target trains every candidate at once while the controller learns "
        "from each step (search.oneshot), then its best candidates are retrained standalone as trials")
    oneshot: OneShotConfig = Field(default_factory=OneShotConfig)
    repeats: Literal["record", "train"] = Field(
        "record", description="record: a proposal of an arch already recorded in this run is answered with that "
        "trial's result (the controller learns from it again; nothing is trained, no trial of the budget is "
        "spent); train: it is trained again as a new trial")
    sync: bool = Field(
        False, description="true: with concurrency above 1, propose the next round only when every trial of "
        "the last has finished (the sample-a-batch-then-update loop, Ray's ConcurrencyLimiter(batch=True)); "
        "a round waits for its slowest trial and Ray restarts the worker processes between rounds. false: a "
        "new trial starts as soon as one ends, from the controller's current state (mnas still updates "
        "every batch_size results)")
    max_repeats: int = Field(
        1000, ge=1, le=1_000_000, description="with repeats: record, this many proposals in a row of recorded "
        "archs end the search early, with a warning: the controller has converged")
    queue: list[str] = Field(
        default_factory=list, max_length=100_000, description="arch strings trained first, in this order, "
        "before the controller proposes; their results are told to the controller like its own. A one-shot "
        "search puts its supernets' candidates here for their retraining")


class RayConfig(_Strict):
    at = "ray"

    address: str | None = Field(None, description="HOST:PORT of a running Ray cluster; none starts Ray embedded")
    max_failures: int = Field(1, ge=0, le=100, description="times Ray retries a trial whose worker died")
    num_cpus: int | None = Field(None, ge=1, le=4096, description="CPUs of the embedded Ray (default: all)")
    num_gpus: int | None = Field(None, ge=0, le=1024, description="GPUs of the embedded Ray (default: the ones "
                                 "Ray detects); a machine without GPUs given some gets logical ones, for tests")
    dashboard: bool = False
    reuse_workers: bool = Field(True, description="run many trials in one worker process; false starts a fresh "
                                "process per trial (a few seconds more each, no memory carried over)")
    scheduler: Literal["fifo", "asha"] = "fifo"
    grace_epochs: int = Field(1, ge=1, le=1000, description="ASHA: epochs before a trial may be stopped")


class FaultsConfig(_Strict):
    """Testing only: make this fraction of trials fail on purpose, each in its own way.

    Which trial gets which fault is decided by a hash of ``seed`` and the arch string, so a
    retried trial meets the same fault again and a test knows in advance which trials fail.
    """

    at = "faults"


    exception: float = Field(0.0, ge=0, le=1, description="the trial raises an exception")
    nan_loss: float = Field(0.0, ge=0, le=1, description="the training data turn to NaN, so the loss does")
    conversion: float = Field(0.0, ge=0, le=1, description="the TFLite conversion fails")
    latency: float = Field(0.0, ge=0, le=1, description="the latency source fails")
    worker_killed: float = Field(0.0, ge=0, le=1, description="the trial's worker process is SIGKILLed")
    seed: int = 0

    @model_validator(mode="after")
    def _at_most_one(self):
        total = self.exception + self.nan_loss + self.conversion + self.latency + self.worker_killed
        if total > 1 + 1e-9:
            raise ValueError(f"the fractions add up to {total:g}; at most 1 is allowed")
        return self

    def any(self) -> bool:
        return (self.exception + self.nan_loss + self.conversion + self.latency + self.worker_killed) > 0
