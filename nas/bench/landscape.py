"""Surrogate landscapes over the whole ``efficientnet_edgetpu`` space, for ``nas bench --mode surrogate``.

The shipped table trains only 512 archs of a 6e16-member space, too few and too easy to tell
controllers apart. A landscape extends it to every member of ``efficientnet_edgetpu`` at the
deployment scale (128 px, width 1, depth 1, 10 classes: the quickstart's space):

**Accuracy**, on the logit scale of the chance-to-perfect range, ``acc = c + (1 - c) *
sigmoid(eta)`` with ``c = 1 / classes`` (0.1), so no member falls below chance or above 1
however many effects add up. ``eta`` is additive in treatment coding: every decision has a
*reference* choice, the one the table's archs hold (for stages 2-4: mbconv, no SE, the
skeleton's repeats, kernel 3, expansion 6, the skeleton's filters, relu; stages 1, 5 and 6:
EfficientNet-EdgeTPU-S's blocks), whose effect is 0::

    eta = intercept + sum_d main[d, x_d] + sum_{(d, e) active} pair[d, e, x_d, x_e]

- *Fitted* (:func:`~nas.bench.landscape_fit.fit_table`): the intercept, the main effects of the
  table's 9 binary decisions (stages 2-4: block, se, repeats +1) and all 36 of their
  pairwise interactions, by least squares (ridge 1e-2) on the logit of the table's seed-0
  accuracies. These effects are the same in every landscape.
- *Drawn* (by the landscape's ``seed``), for everything the table does not pin down: every
  other choice (kernel, expansion, filters, activation, stages 1, 5, 6, and stages 2-4's
  repeats -1) has a main effect ~ N(mu, s_main^2); each pair of decisions interacts with
  probability ``p`` and an interacting pair's cells are ~ N(0, s_pair^2) (a table pair's
  cells with repeats -1 are drawn too, always).

The priors (:func:`~nas.bench.landscape_fit.calibrate`; :meth:`~nas.bench.landscape_fit.Priors.text`
prints the numbers) take their *shape* from the fit and their *scale* from archs of the
whole space. Shape: with the unknown decisions taken to be like the table's, ``s_main``
would be the RMS of the 9 fitted main effects after removing their estimation noise (mean
square minus mean squared standard error), ``p`` the share of the 36 fitted interactions
significant at |t| > 1.96 in excess of the 5% expected by chance, and ``s_pair`` the
de-noised RMS of the fitted interactions over sqrt(p). Scale: that would spread the whole
space's accuracies from chance to 1, which archs of the whole space trained with the table's
recipe do not show (40 of them, from the ``searched_vs_references`` search: accuracy
0.34-0.82, shipped as ``nas/bench/tables/efficientnet_edgetpu_full40.csv``). So both sds are
multiplied by one factor ``kappa`` and the unknown main effects get a common mean ``mu``
(the table's reference choices need not be average ones), both set by maximising the
Gaussian marginal likelihood of those 40 accuracies under the model (the fitted effects
fixed, the drawn ones integrated out, the pair density entering through its variance ``p *
s_pair^2``, plus the re-run noise); the 95% profile-likelihood interval of ``kappa`` is
reported with it.

**Noise**: each lookup adds fresh Gaussian noise to ``eta`` with the sd of the table's
re-runs (the 32 archs trained again with seed 1) on the same logit scale: about 0.049 in
accuracy where the table's archs are (accuracy 0.45), less near the asymptotes, as re-runs
of a well-trained net vary less.

**Latency**: the ``edgetpu-model`` predictor on the deployment arch, through its batched path
(:func:`latency_models.edgetpu.batch.predict_batch`, equal to ``get_source("edgetpu-model").measure``
of ``Target(arch, input_shape=(128, 128, 3), num_classes=10)``, which the tests check),
cached per arch string for the whole process: it does not depend on the landscape.

**Reference points** (:meth:`Landscape.reference`): a fixed random sample of the space (10,000
archs by default, the same for every landscape) gives the default latency target (its median
latency, so about half the space is over it), the top-1% threshold (the 99th percentile of
its true rewards) and the starts of the optimum search: steepest coordinate ascent on the
true reward from the sample's best archs, each local optimum then checked against every
two-decision change (and the ascent resumed if one improves it). The space cannot be
enumerated, so the optimum is an estimate; ``nas bench`` raises it to any better arch a run
evaluates and says so.

>>> land = Landscape(seed=0)            # fits the table and calibrates the priors (~1 s)
>>> land.priors.kappa, land.priors.sample
(0.35, 40)
>>> ref = land.ref[None, :]             # the table's reference arch: only fitted effects apply
>>> round(float(land.accuracy(ref)[0]), 4) == round(float(land.fit.predict([[0] * 9])[0]), 4)
True
>>> print(land.fit.text()); print(land.priors.text())                   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

import search_spaces
from search_spaces import Arch

from nas.bench.landscape_fit import DEPLOYMENT, FULL_SPACE, Coding, Priors, TableFit, calibrate, fit_table, to_accuracy
from nas.core.reward import RewardConfig, reward

log = logging.getLogger(__name__)

# Latency, on/off-chip bytes of deployment archs: the predictor is deterministic and the
# landscapes share the archs' latencies, so one cache serves every landscape, seed and run.
_LATENCY: dict[str, tuple[float, int, int]] = {}


def latencies(archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latency_ms, on_chip_bytes, off_chip_bytes) of deployment archs, from the cache or predicted."""
    keys = [a.to_string() for a in archs]
    missing = {k: a for k, a in zip(keys, archs) if k not in _LATENCY}
    if missing:
        from latency_models.edgetpu.batch import predict_batch

        r = predict_batch(list(missing.values()), DEPLOYMENT["num_classes"])
        for i, k in enumerate(missing):
            _LATENCY[k] = (float(r["latency_ms"][i]), int(r["on_chip_bytes"][i]), int(r["off_chip_bytes"][i]))
    rows = [_LATENCY[k] for k in keys]
    return (np.array([r[0] for r in rows]), np.array([r[1] for r in rows], dtype=np.int64),
            np.array([r[2] for r in rows], dtype=np.int64))


def rewards(acc: np.ndarray, lat: np.ndarray, rcfg: RewardConfig) -> np.ndarray:
    """The experiment reward of each (accuracy, latency) pair: :func:`nas.core.reward.reward`."""
    return np.array([reward(float(a), float(t), rcfg) for a, t in zip(acc, lat)])


# ---------------------------------------------------------------------------- a landscape


@dataclass
class Reference:
    """What a landscape's fixed random sample and its optimum search found (see the module doc)."""

    sample_size: int
    target_ms: float | None             #: the sample's median latency (the default target)
    top1_threshold: float               #: 99th percentile of the sample's true rewards
    sample_median: float
    sample_best: float
    optimum: float
    optimum_arch: str
    optimum_accuracy: float
    optimum_latency_ms: float
    starts: int
    starts_at_optimum: int
    ascent_steps: int
    evaluated: int
    raised_by_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def text(self) -> str:
        how = (f"steepest coordinate ascent on the true reward from the {self.starts} best of the sample, "
               f"two-decision-change check; {self.starts_at_optimum}/{self.starts} starts ended there, "
               f"{self.evaluated:,} archs evaluated")
        if self.raised_by_run:
            how += "; raised to a better arch one of the runs evaluated"
        return (f"optimum (estimated) {self.optimum:.4f} (accuracy {self.optimum_accuracy:.4f}, "
                f"{self.optimum_latency_ms:.2f} ms; {how}); top 1% = true reward >= {self.top1_threshold:.4f} "
                f"(99th percentile of {self.sample_size:,} random archs, whose median is {self.sample_median:.4f} "
                f"and best {self.sample_best:.4f})")


@dataclass
class Landscape:
    """One surrogate landscape: the table's fitted effects plus effects drawn by ``seed``."""

    seed: int = 0
    fit: TableFit | None = None
    priors: Priors | None = None
    space: Any = None
    coding: Coding | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"landscape seed: expected a non-negative integer, got {self.seed!r}")
        self.space = self.space if self.space is not None else search_spaces.get(FULL_SPACE, **DEPLOYMENT)
        self.fit = fit = self.fit if self.fit is not None else fit_table()
        self.priors = pri = self.priors if self.priors is not None else calibrate(fit, space=self.space)
        self.coding = coding = Coding(self.space, fit)
        self.ref, self.sizes, known = coding.ref, coding.sizes, coding.known
        # One stream per landscape, drawn in a fixed order (every decision, then every pair),
        # so a landscape is the same for a given seed whatever else is drawn.
        rng = np.random.default_rng([self.seed, 0x1A5D])
        self.main: list[np.ndarray] = []
        for d, n in enumerate(self.sizes):
            m = np.zeros(n)
            for c in range(n):
                if c == self.ref[d]:
                    continue
                m[c] = fit.main[known[d][0]] if d in known and known[d][1] == c else rng.normal(pri.main_mean,
                                                                                                 pri.main_sd)
            self.main.append(m)
        self.pair_index: list[tuple[int, int]] = []
        self.pair_tables: list[np.ndarray] = []
        for d, e in itertools.combinations(range(len(self.sizes)), 2):
            active = rng.random() < pri.pair_density  # drawn for every pair: a fixed stream
            both_known = d in known and e in known
            if not (both_known or active):
                continue
            t = np.zeros((self.sizes[d], self.sizes[e]))
            for a in range(self.sizes[d]):
                for b in range(self.sizes[e]):
                    if a == self.ref[d] or b == self.ref[e]:
                        continue
                    v = coding.known_cell(d, a, e, b)
                    t[a, b] = v if v is not None else rng.normal(0.0, pri.pair_sd)
            self.pair_index.append((d, e))
            self.pair_tables.append(t)
        # Flat tables for vectorised lookups.
        self._main_off = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self._main_flat = np.concatenate(self.main)
        self._pd = np.array([p[0] for p in self.pair_index], dtype=np.int64)
        self._pe = np.array([p[1] for p in self.pair_index], dtype=np.int64)
        self._pk = self.sizes[self._pe]
        sizes = [t.size for t in self.pair_tables]
        self._pair_off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._pair_flat = np.concatenate([t.ravel() for t in self.pair_tables]) if sizes else np.zeros(0)
        self._indices: dict[str, np.ndarray] = {}
        # Decoding by stage, each stage's blocks cached: the optimum search decodes ~10^5 archs.
        stages: dict[int, list[int]] = {}
        for i, d in enumerate(self.space.decision_list):
            stages.setdefault(int(d.name.split(".")[0][1:]), []).append(i)
        self._stage_cols = [np.array(stages[k]) for k in sorted(stages)]
        self._blocks: dict[tuple, Any] = {}
        log.debug("landscape %d: %d interacting pairs", self.seed, len(self.pair_index))

    # ------------------------------------------------------------------------------- model

    def indices(self, arch: Arch) -> np.ndarray:
        """The arch's choice indices in the space (cached by arch string); ValueError if not a member."""
        key = arch.to_string()
        idx = self._indices.get(key)
        if idx is None:
            idx = self._indices[key] = np.array(self.space.indices(self.space.encode(arch)), dtype=np.int64)
        return idx

    def arch(self, idx: Sequence[int]) -> Arch:
        """The member with choice indices ``idx`` (what ``space.decode_indices`` gives, faster)."""
        sp, blocks = self.space, []
        for stage, cols in enumerate(self._stage_cols, start=1):
            key = (stage, *(int(idx[c]) for c in cols))
            b = self._blocks.get(key)
            if b is None:
                decs = [sp.decision_list[c] for c in cols]
                b = self._blocks[key] = sp.make_block(stage, {d.name.split(".", 1)[1]: d.choices[int(idx[c])]
                                                              for d, c in zip(decs, cols)})
            blocks.append(b)
        return Arch(stem=sp.make_stem(), stages=tuple(blocks), head=sp.make_head(), resolution=sp.resolution,
                    num_classes=sp.num_classes)

    def eta(self, idx: np.ndarray) -> np.ndarray:
        """The model's logit-scale value of choice-index rows ``idx`` (n, decisions)."""
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        out = self.fit.intercept + self._main_flat[self._main_off + idx].sum(axis=1)
        if len(self._pd):
            cells = self._pair_off + idx[:, self._pd] * self._pk + idx[:, self._pe]
            out = out + self._pair_flat[cells].sum(axis=1)
        return out

    def accuracy(self, idx: np.ndarray) -> np.ndarray:
        """True (noise-free) accuracy of choice-index rows ``idx``."""
        return to_accuracy(self.eta(idx), self.fit.chance)

    def observe(self, idx: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Accuracy observed with standard-normal draws ``z`` (one per row) as the lookup noise."""
        return to_accuracy(self.eta(idx) + self.fit.sigma * np.asarray(z, float), self.fit.chance)

    def true_rewards(self, idx: np.ndarray, rcfg: RewardConfig) -> np.ndarray:
        idx = np.atleast_2d(idx)
        lat = latencies([self.arch(i) for i in idx])[0]
        return rewards(self.accuracy(idx), lat, rcfg)

    def noise(self, run_seed: int, key: str, k: int) -> float:
        """The standard-normal draw of the ``k``-th lookup of arch ``key`` in run ``run_seed``.

        Keyed by (landscape, run seed, arch, lookup count), so every controller's seed ``s``
        sees the same noise on the same arch (common random numbers: paired seeds), and each
        further lookup of an arch is a fresh draw.
        """
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
        return float(np.random.default_rng([self.seed, run_seed, h & 0xFFFFFFFF, h >> 32, k]).standard_normal())

    # --------------------------------------------------------------------- reference points

    def reference(self, rcfg: RewardConfig | None, sample: np.ndarray, starts: int = 10) -> tuple[RewardConfig,
                                                                                                   Reference]:
        """Top-1% threshold and the estimated optimum on the reward ``rcfg`` (default: hard MNAS
        at the median latency of ``sample``, choice-index rows of random archs)."""
        archs = [self.arch(i) for i in sample]
        lat = latencies(archs)[0]
        target = float(np.median(lat))
        rcfg = rcfg or RewardConfig(target_ms=target, preset="hard")
        r = rewards(self.accuracy(sample), lat, rcfg)
        order = np.argsort(-r, kind="stable")[:max(1, min(starts, len(r)))]
        best_idx, best_r, ends, steps, evaluated = None, -math.inf, [], 0, 0
        for i in order:
            idx, val, s, n = self._ascend(sample[i], float(r[i]), rcfg)
            steps, evaluated = steps + s, evaluated + n
            ends.append(tuple(idx))
            if val > best_r:
                best_idx, best_r = idx, val
        arch = self.arch(best_idx)
        return rcfg, Reference(len(sample), target, float(np.percentile(r, 99)), float(np.median(r)),
                               float(r.max()), best_r, arch.to_string(), float(self.accuracy(best_idx)[0]),
                               float(latencies([arch])[0][0]), len(order),
                               sum(e == tuple(best_idx) for e in ends), steps, evaluated)

    def _neighbours(self, idx: np.ndarray, two: bool = False) -> np.ndarray:
        singles = []
        for d, n in enumerate(self.sizes):
            for c in range(n):
                if c != idx[d]:
                    singles.append((d, c))
        moves = [[m] for m in singles]
        if two:
            moves = [[a, b] for a, b in itertools.combinations(singles, 2) if a[0] != b[0]]
        out = np.repeat(idx[None, :], len(moves), axis=0)
        for row, mv in zip(out, moves):
            for d, c in mv:
                row[d] = c
        return out

    def _ascend(self, idx: np.ndarray, val: float, rcfg: RewardConfig) -> tuple[np.ndarray, float, int, int]:
        idx, steps, evaluated = np.array(idx), 0, 0
        while True:
            while True:  # steepest single-decision ascent
                nb = self._neighbours(idx)
                r = self.true_rewards(nb, rcfg)
                evaluated += len(nb)
                j = int(np.nanargmax(r))
                if not r[j] > val + 1e-12:
                    break
                idx, val, steps = nb[j], float(r[j]), steps + 1
            nb = self._neighbours(idx, two=True)  # a local optimum: does any pair of changes beat it?
            r = self.true_rewards(nb, rcfg)
            evaluated += len(nb)
            j = int(np.nanargmax(r))
            if not r[j] > val + 1e-12:
                return idx, val, steps, evaluated
            idx, val, steps = nb[j], float(r[j]), steps + 1


def random_sample(space, n: int, seed: int = 20240) -> np.ndarray:
    """Choice-index rows of ``n`` uniformly random members (a stream of its own, not a run's)."""
    rng = np.random.default_rng([seed, 0x5A3])
    return np.column_stack([rng.integers(len(d.choices), size=n) for d in space.decision_list]).astype(np.int64)
