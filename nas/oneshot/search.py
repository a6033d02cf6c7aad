"""One-shot search: the controller learns from every step of one weight-sharing supernet (TuNAS).

A standalone search trains each candidate from scratch, so it affords tens of candidates.
Here one :class:`~search_spaces.supernet.Supernet` holds the proxy of every member of the
space (:func:`nas.trial.proxy.space_of`) and each step of :class:`OneShotSearch` is, as in TuNAS
(Bender et al. 2020):

1. **a weight step** on one training batch, on a path the controller samples (during the
   warm-up: a uniformly random path, so every op is trained before the policy narrows). With
   ``largest_until`` or ``largest_floor`` above 0 (TuNAS's filter and op warm-up), each
   searched decision of that path whose choices are numbers (kernel, expansion, filters,
   repeats, SE) is set to its largest choice instead, with a probability falling linearly
   from 1 at the first step to ``largest_floor`` at the share ``largest_until`` of the steps,
   and kept at ``largest_floor`` after. The largest choices hold every smaller one, so the
   shared weights are trained whole before the sub-paths diverge. It is off by default: on the
   one-shot quickstart it lifts the samples' one-shot accuracy from about 0.3 to 0.9, but the
   supernet then prefers the large archs it trains most, which retrain worse under the
   standalone recipe (``benchmarks/oneshot_recheck.py``, the README);
2. **a controller step**: ``samples`` archs proposed by the controller, each scored on one
   validation batch with the shared weights (BatchNorm on the batch's statistics), their
   deployment latency predicted in one batched call, the reward of each told to the
   controller (``mnas``'s LSTM, or ``logits``, TuNAS's independent softmaxes). During the
   warm-up the controller is held still: not asked, not told.

The controller is asked and told through a :class:`~nas.ledger.ledger.Ledger`, as in a
standalone search: each sampled path is a trial (``s<step>.<k>``) whose
:class:`~nas.core.record.TrialRecord` holds its one-batch accuracy, deployment latency and
reward, and a resumed search rebuilds the controller with the ledger's one replay.

At the end the policy's most likely arch and the best of ``candidates`` archs it samples,
re-scored on the whole validation split with recalibrated BatchNorm statistics, are the
candidates (records ``c<i>``, ``reason`` saying which) a search retrains standalone. ``tests/test_oneshot.py`` runs a small one and
``benchmarks/oneshot_table.py`` measures it on the shipped table.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from search_spaces import Arch, SearchSpace
from search_spaces.supernet import Supernet

from nas.config.experiment import OneShotConfig
from nas.core.record import Status, TrialRecord
from nas.core.reward import RewardConfig, reward
from nas.ledger.folder import atomic_write
from nas.ledger.ledger import Ledger
from nas.oneshot.train import SupernetTrainer, calibration_batches

log = logging.getLogger(__name__)

#: latency(deployment archs) -> one dict per arch with latency_ms (and on/off-chip bytes)
LatencyFn = Callable[[Sequence[Arch]], list[dict[str, Any]]]


@dataclass
class OneShotResult:
    steps: int
    seconds: float
    #: per step: loss; per controller step: mean reward, accuracy, latency of the samples, entropy
    curves: dict[str, list[float]] = field(default_factory=dict)
    #: the most likely arch, then the best sampled ones: one-shot accuracy on the whole validation split
    candidates: list[TrialRecord] = field(default_factory=list)


class OneShotSearch:
    """Joint weight and controller steps over one supernet (see the module doc).

    ``space`` is the deployment space the controller proposes in, ``proxies`` the space of
    what is trained (the same decisions, index for index), ``split`` the proxy data, ``latency`` the batched
    latency of deployment archs, ``rcfg`` the reward.
    """

    def __init__(self, space: SearchSpace, proxies: SearchSpace, split, controller, rcfg: RewardConfig,
                 latency: LatencyFn, settings: OneShotConfig | None = None, *, seed: int = 0, strategy=None,
                 jit_compile: bool = False, loss_scale: bool = False):
        """``strategy``: the ``tf.distribute`` strategy to build and train the supernet under
        (:func:`nas.trial.devices.strategy`); ``jit_compile`` and ``loss_scale`` (for a supernet
        built under ``mixed_float16``, :func:`nas.trial.devices.precision`) as :class:`SupernetTrainer`'s."""
        self.space, self.proxies, self.split, self.controller, self.rcfg = space, proxies, split, controller, rcfg
        self.latency, self.settings = latency, settings or OneShotConfig()
        s = self.settings
        self.steps_per_epoch = max(1, -(-split.n_train // s.batch_size))
        self.total_steps = s.epochs * self.steps_per_epoch
        self.warmup_steps = int(round(s.warmup * self.total_steps))
        with strategy.scope() if strategy is not None else contextlib.nullcontext():  # the weights mirrored
            self.net = Supernet(proxies, num_classes=split.num_classes, seed=seed, classifier_init=s.classifier_init)
        self.trainer = SupernetTrainer(self.net, optimizer=s.optimizer, learning_rate=s.learning_rate,
                                       total_steps=self.total_steps, jit_compile=jit_compile, loss_scale=loss_scale,
                                       strategy=strategy)
        self.rng = np.random.default_rng([seed, 17])
        self._largest = largest_choices(space)
        # The controller's budget is every sample it will be told; its concurrency one step's.
        # A weight step's reward is one batch's accuracy of a half-trained supernet: a controller
        # with a recipe for trained results (mnas's ranks, replay, novelty) learns it as MnasNet's does.
        if hasattr(controller, "for_weight_sharing"):
            controller.for_weight_sharing()
        budget = (self.total_steps - self.warmup_steps) * s.samples
        self.ledger = Ledger(None, budget, controller=controller, plan=(budget, s.samples), repeats="train")
        self._lat: dict[str, dict[str, Any]] = {}
        self._order = np.zeros(0, np.int64)
        self.step_index = 0
        self.curves: dict[str, list[float]] = {k: [] for k in ("loss", "reward", "accuracy", "latency_ms",
                                                                "entropy")}
        self.seed = seed

    # -- pieces -------------------------------------------------------------------------------

    def proxy_of(self, arch: Arch) -> Arch:
        """The proxy of a deployment arch: the same choice indices in the proxies' space (whose
        choice values may differ, as the table's repeats at depth 0.5 do)."""
        return self.proxies.decode_indices(self.space.indices(self.space.encode(arch)))

    def _batch(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.settings
        pos = (self.step_index % self.steps_per_epoch) * s.batch_size
        if pos == 0:
            self._order = self.rng.permutation(self.split.n_train)
        b = self._order[pos:pos + s.batch_size]
        return self.split.train_batch(b)  # (read from the node's store for a folder: never the whole split)

    def _val_batch(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.split.n_val
        b = self.rng.choice(n, size=min(self.settings.batch_size, n), replace=False)
        return self.split.val_batch(b)

    def latencies(self, archs: Sequence[Arch]) -> list[dict[str, Any]]:
        """Latency fields of deployment archs: cached, the uncached ones in one call."""
        keys = [a.to_string() for a in archs]
        new = [a for k, a in dict(zip(keys, archs)).items() if k not in self._lat]
        if new:
            for a, r in zip(new, self.latency(new)):
                self._lat[a.to_string()] = r
        return [self._lat[k] for k in keys]

    def score(self, trial_id: str, arch: Arch, acc: float, lat: dict[str, Any], reason: str | None = None) -> TrialRecord:
        """A path's record: its accuracy with the shared weights, the deployment latency
        fields, and the reward (none if it breaks a constraint or is not finite); ``reason``,
        followed in brackets by what went wrong if anything did."""
        why = self.rcfg.constraints.violation(lat)
        r = None if why else reward(acc, float(lat["latency_ms"]), self.rcfg)
        status = Status.INFEASIBLE if why else Status.OK if math.isfinite(r) else Status.FAILED
        wrong = why or ("the reward is not finite" if status is Status.FAILED else None)
        if wrong:
            reason = f"{reason} ({status}: {wrong})" if reason else wrong
        return TrialRecord.from_dict({**lat, "trial_id": trial_id, "status": status, "reason": reason,
                                      "accuracy": acc, "reward": r if status is Status.OK else None,
                                      "arch": arch.to_string(), "proxy_arch": self.proxy_of(arch).to_string()})

    def entropy(self) -> float:
        c = self.controller
        if hasattr(c, "entropy") and callable(c.entropy):
            return float(c.entropy())
        return float(getattr(c, "last_entropy", float("nan")))

    def largest_p(self, step: int | None = None) -> float:
        """The probability that a weight step's path takes a numeric decision's largest choice."""
        s = self.settings
        return largest_probability(self.step_index if step is None else step, self.total_steps,
                                   s.largest_until, s.largest_floor)

    def weight_path(self, arch: Arch) -> Arch:
        """The deployment arch whose proxy a weight step trains: ``arch`` with each numeric
        decision set to its largest choice with probability :meth:`largest_p`."""
        return force_largest(self.space, arch, self._largest, self.largest_p(), self.rng)

    # -- the loop -----------------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        """One weight step and, after the warm-up, one controller step."""
        x, y = self._batch()
        warm = self.step_index < self.warmup_steps
        out: dict[str, float] = {}
        if warm:
            arch = self.space.decode(self.space.sample_choices(self.rng))
            out["loss"] = self.trainer.train(x, y, self.proxy_of(self.weight_path(arch)))
        else:
            tids = [f"s{self.step_index}.{k}" for k in range(self.settings.samples)]
            for t in tids:
                self.ledger.suggest(t)
            archs = [self.ledger.proposals[t].arch for t in tids]
            out["loss"] = self.trainer.train(x, y, self.proxy_of(self.weight_path(archs[0])))
            xv, yv = self._val_batch()
            accs = [self.trainer.batch_accuracy(self.proxy_of(a), xv, yv) for a in archs]
            lats = self.latencies(archs)
            rewards = []
            for t, a, acc, lat in zip(tids, archs, accs, lats):
                rec = self.ledger.complete(t, self.score(t, a, acc, lat))
                if rec.usable:
                    rewards.append(rec.reward)
            out |= {"reward": float(np.mean(rewards)) if rewards else float("nan"),
                    "accuracy": float(np.mean(accs)),
                    "latency_ms": float(np.mean([lat["latency_ms"] for lat in lats])), "entropy": self.entropy()}
        for k, v in out.items():
            self.curves[k].append(v)
        self.step_index += 1
        return out

    # -- checkpoints ----------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Checkpoint into ``folder``: the weights and optimizer slots (``weights-STEP.npz``),
        then ``checkpoint.json`` (the step, the random states, the data order, the ledger (as
        ``state.json`` holds a standalone search's), the curves, the latency cache), each
        renamed into place, so a kill at any moment leaves the previous checkpoint whole."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        weights = folder / f"weights-{self.step_index}.npz"
        tmp = folder / f".{weights.name}.tmp.npz"
        np.savez(tmp, *[np.asarray(v.numpy()) for v in self.trainer.state_variables()])
        os.replace(tmp, weights)
        state = {"version": 1, "step": self.step_index, "total_steps": self.total_steps, "seed": self.seed,
                 "settings": self._settings_key(), "weights": weights.name,
                 "rng": self.rng.bit_generator.state, "order": self._order.tolist(), "ledger": self.ledger.state(),
                 "curves": self.curves, "latency": self._lat}
        atomic_write(folder / "checkpoint.json", json.dumps(state))
        for old in folder.glob("weights-*.npz"):
            if old != weights:
                old.unlink(missing_ok=True)
        return folder / "checkpoint.json"

    def restore(self, folder: str | Path) -> bool:
        """Continue from ``folder``'s checkpoint (False if it has none): weights, optimizer,
        random states, and the ledger and its controller, rebuilt by the ledger's replay."""
        path = Path(folder) / "checkpoint.json"
        if not path.is_file():
            return False
        d = json.loads(path.read_text())
        mine = {"total_steps": self.total_steps, "seed": self.seed, "settings": self._settings_key()}
        theirs = {k: d.get(k) for k in mine}
        if theirs != mine:
            raise ValueError(f"resume: {path} was made with {theirs}, this search is {mine}; "
                             "allowed: the settings the run was made with")
        arrays = np.load(Path(folder) / d["weights"])
        variables = self.trainer.state_variables()
        if len(arrays.files) != len(variables):
            raise ValueError(f"resume: {path} holds {len(arrays.files)} variables, the supernet has {len(variables)}")
        for i, v in enumerate(variables):
            v.assign(arrays[f"arr_{i}"])
        self.step_index, self.curves, self._lat = d["step"], d["curves"], d["latency"]
        self.rng.bit_generator.state = d["rng"]
        self._order = np.asarray(d["order"], np.int64)
        self.trainer.steps = self.step_index
        self.ledger.resume(d["ledger"], where=str(path))
        log.info("one-shot search resumed at step %d of %d (%d sampled paths replayed)", self.step_index,
                 self.total_steps, self.ledger.n_done)
        return True

    #: Settings that may change between a run and its resume (which targets, on what, how often
    #: to save); another value of any other refuses the checkpoint.
    RESUMABLE_CHANGES = {"targets_ms", "cpus", "gpus", "checkpoint_s"}

    def _settings_key(self) -> dict:
        return self.settings.model_dump(exclude=self.RESUMABLE_CHANGES)

    def candidates(self) -> list[TrialRecord]:
        """The most likely arch and the best ``top_k`` of ``candidates`` sampled ones, re-scored
        on the whole validation split with recalibrated BatchNorm statistics; ``reason`` says
        which (and, after it in brackets, a constraint one breaks)."""
        s = self.settings
        picks: dict[str, tuple[Arch, str]] = {}
        if hasattr(self.controller, "most_likely"):
            a = self.controller.most_likely()
            picks[a.to_string()] = (a, "most likely")
        for _ in range(s.candidates):  # (not the ledger's: proposals never told, after the last step)
            a = self.controller.ask().arch
            picks.setdefault(a.to_string(), (a, "sampled"))
        scored = []
        for i, ((a, why), lat) in enumerate(zip(picks.values(), self.latencies([a for a, _ in picks.values()]))):
            calib = calibration_batches(self.split, s.calibration, s.batch_size, self.rng)
            acc = self.trainer.accuracy_on(self.proxy_of(a), self.split.val_batches(), calibration=calib)
            scored.append(self.score(f"c{i}", a, acc, lat, reason=why))
        best = sorted((c for c in scored if c.reason == "sampled" and c.usable), key=lambda c: -c.reward)
        return [c for c in scored if c.reason.startswith("most likely")] + best[: s.top_k]

    def run(self, on_step: Callable[[int, dict[str, float]], None] | None = None) -> OneShotResult:
        t0 = time.perf_counter()
        while self.step_index < self.total_steps:
            out = self.step()
            if on_step is not None:
                on_step(self.step_index, out)
        cands = self.candidates()
        return OneShotResult(self.total_steps, time.perf_counter() - t0, self.curves, cands)


def largest_probability(step: int, total_steps: int, until: float, floor: float) -> float:
    """P(largest choice) at ``step``: 1 falling linearly to ``floor`` at ``until`` x
    ``total_steps``, then ``floor`` (``until`` 0: ``floor`` throughout)."""
    if until <= 0:
        return floor
    return max(floor, 1.0 - (1.0 - floor) * step / (until * total_steps))


def force_largest(space: SearchSpace, arch: Arch, largest: Sequence[int | None], p: float,
                  rng: np.random.Generator) -> Arch:
    """``arch`` with each decision that has a largest choice (``largest``, from
    :func:`largest_choices`) set to it with probability ``p``, independently."""
    if p <= 0 or not any(i is not None for i in largest):
        return arch
    idx = space.indices(space.encode(arch))
    draws = rng.random(len(idx))
    return space.decode_indices([big if big is not None and u < p else i for i, big, u in zip(idx, largest, draws)])


def largest_choices(space: SearchSpace) -> list[int | None]:
    """Per decision of ``space``: the index of its largest choice if its choices are numbers
    (kernel, expansion, filters, repeats, SE ratio), else None (block type, activation)."""
    out: list[int | None] = []
    for d in space.decision_list:
        numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in d.choices)
        out.append(max(range(len(d.choices)), key=lambda i: d.choices[i]) if numeric and len(d.choices) > 1
                   else None)
    return out
