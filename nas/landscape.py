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

- *Fitted* (:func:`fit_table`): the intercept, the main effects of the table's 9 binary
  decisions (stages 2-4: block, se, repeats +1) and all 36 of their pairwise interactions,
  by least squares (ridge 1e-2) on the logit of the table's seed-0 accuracies. These
  effects are the same in every landscape.
- *Drawn* (by the landscape's ``seed``), for everything the table does not pin down: every
  other choice (kernel, expansion, filters, activation, stages 1, 5, 6, and stages 2-4's
  repeats -1) has a main effect ~ N(mu, s_main^2); each pair of decisions interacts with
  probability ``p`` and an interacting pair's cells are ~ N(0, s_pair^2) (a table pair's
  cells with repeats -1 are drawn too, always).

The priors (:func:`calibrate`; :meth:`Priors.text` prints the numbers) take their *shape*
from the fit and their *scale* from archs of the whole space. Shape: with the unknown
decisions taken to be like the table's, ``s_main`` would be the RMS of the 9 fitted main
effects after removing their estimation noise (mean square minus mean squared standard
error), ``p`` the share of the 36 fitted interactions significant at |t| > 1.96 in excess of
the 5% expected by chance, and ``s_pair`` the de-noised RMS of the fitted interactions over
sqrt(p). Scale: that would spread the whole space's accuracies from chance to 1, which
archs of the whole space trained with the table's recipe do not show (40 of them, from the
``searched_vs_references`` search: accuracy 0.34-0.82, shipped as
``nas/tables/efficientnet_edgetpu_full40.csv``). So both sds are multiplied by one factor
``kappa`` and the unknown main effects get a common mean ``mu`` (the table's reference
choices need not be average ones), both set by maximising the Gaussian marginal likelihood
of those 40 accuracies under the model (the fitted effects fixed, the drawn ones integrated
out, the pair density entering through its variance ``p * s_pair^2``, plus the re-run
noise); the 95% profile-likelihood interval of ``kappa`` is reported with it.

**Noise**: each lookup adds fresh Gaussian noise to ``eta`` with the sd of the table's
re-runs (the 32 archs trained again with seed 1) on the same logit scale: about 0.049 in
accuracy where the table's archs are (accuracy 0.45), less near the asymptotes, as re-runs
of a well-trained net vary less.

**Latency**: the ``edgetpu-model`` predictor on the deployment arch, through its batched path
(:func:`latency_models.fast.predict_batch`, equal to ``get_source("edgetpu-model").measure``
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
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import search_spaces
from search_spaces import Arch

from .bench_table import DEFAULT_SPACE, TABLES, Table
from .reward import RewardConfig, reward

log = logging.getLogger(__name__)

FULL_SPACE = "efficientnet_edgetpu"
#: The quickstart's deployment scale, the table's ``arch`` column's.
DEPLOYMENT = {"resolution": 128, "width": 1.0, "depth": 1.0, "num_classes": 10}
RIDGE = 1e-2
#: |t| above which a fitted interaction counts as real when calibrating the pair density.
T_SIGNIFICANT = 1.96

# Latency, on/off-chip bytes of deployment archs: the predictor is deterministic and the
# landscapes share the archs' latencies, so one cache serves every landscape, seed and run.
_LATENCY: dict[str, tuple[float, int, int]] = {}


def _logit(acc: np.ndarray, chance: float) -> np.ndarray:
    z = (np.asarray(acc, float) - chance) / (1 - chance)
    return np.log(z / (1 - z))


def _accuracy(eta: np.ndarray, chance: float) -> np.ndarray:
    return chance + (1 - chance) / (1 + np.exp(-np.asarray(eta, float)))


def latencies(archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latency_ms, on_chip_bytes, off_chip_bytes) of deployment archs, from the cache or predicted."""
    keys = [a.to_string() for a in archs]
    missing = {k: a for k, a in zip(keys, archs) if k not in _LATENCY}
    if missing:
        from latency_models.fast import predict_batch

        r = predict_batch(list(missing.values()), DEPLOYMENT["num_classes"])
        for i, k in enumerate(missing):
            _LATENCY[k] = (float(r["latency_ms"][i]), int(r["on_chip_bytes"][i]), int(r["off_chip_bytes"][i]))
    rows = [_LATENCY[k] for k in keys]
    return (np.array([r[0] for r in rows]), np.array([r[1] for r in rows], dtype=np.int64),
            np.array([r[2] for r in rows], dtype=np.int64))


def rewards(acc: np.ndarray, lat: np.ndarray, rcfg: RewardConfig) -> np.ndarray:
    """The experiment reward of each (accuracy, latency) pair: :func:`nas.reward.reward`."""
    return np.array([reward(float(a), float(t), rcfg) for a, t in zip(acc, lat)])


# --------------------------------------------------------------------------------- the fit


@dataclass(frozen=True)
class TableFit:
    """Main effects and pairwise interactions of the table's 9 binary decisions (logit scale)."""

    decisions: tuple[str, ...]
    choices: tuple[tuple, ...]            #: each decision's two choices; the first is the reference
    intercept: float
    main: np.ndarray                      #: (9,) effect of each decision's second choice
    pairs: tuple[tuple[int, int], ...]    #: (36,) decision index pairs
    pair: np.ndarray                      #: (36,) interaction of both second choices
    se_main: np.ndarray
    se_pair: np.ndarray
    chance: float
    sigma: float                          #: re-run noise sd, logit scale (what a lookup adds)
    sigma_accuracy: float                 #: the same in accuracy (the table's rerun_std)
    resid_sd: float                       #: residual sd of the fit, logit scale
    rmse_accuracy: float                  #: in-sample RMS error of the fitted accuracies
    n_rows: int
    n_reruns: int
    shape_main_sd: float                  #: de-noised RMS of the fitted main effects
    pair_density: float                   #: excess share of significant interactions
    shape_pair_sd: float                  #: de-noised RMS of the fitted interactions / sqrt(density)
    significant_pairs: int

    def design(self, x: np.ndarray) -> np.ndarray:
        """Model matrix of 0/1 codings ``x`` (n, 9): intercept, mains, pairwise products."""
        x = np.asarray(x, float)
        return np.column_stack([np.ones(len(x)), x] + [x[:, i] * x[:, j] for i, j in self.pairs])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Fitted accuracy of 0/1 codings ``x`` (n, 9)."""
        return _accuracy(self.design(x) @ np.concatenate([[self.intercept], self.main, self.pair]), self.chance)

    def as_dict(self) -> dict[str, Any]:
        return {"decisions": list(self.decisions), "choices": [list(c) for c in self.choices],
                "scale": f"logit of (accuracy - {self.chance:g}) / (1 - {self.chance:g})", "ridge": RIDGE,
                "intercept": self.intercept, "main": dict(zip(self.decisions, map(float, self.main))),
                "main_se": dict(zip(self.decisions, map(float, self.se_main))),
                "pairs": {f"{self.decisions[i]}*{self.decisions[j]}": float(v)
                          for (i, j), v in zip(self.pairs, self.pair)},
                "pair_se_rms": float(np.sqrt(np.mean(self.se_pair ** 2))),
                "noise_sd_logit": self.sigma, "noise_sd_accuracy": self.sigma_accuracy,
                "reruns": self.n_reruns, "rows": self.n_rows, "resid_sd_logit": self.resid_sd,
                "rmse_accuracy": self.rmse_accuracy,
                "shape": {"main_sd": self.shape_main_sd, "pair_density": self.pair_density,
                          "pair_sd": self.shape_pair_sd, "significant_pairs": self.significant_pairs}}

    def text(self) -> str:
        top = sorted(zip(self.pairs, self.pair, self.se_pair), key=lambda p: -abs(p[1] / p[2]))[:2]
        inter = ", ".join(f"{self.decisions[i]} x {self.decisions[j]} {v:+.3f}" for (i, j), v, _ in top)
        mains = ", ".join(f"{d} {m:+.3f}" for d, m in zip(self.decisions, self.main))
        return (f"Accuracy model: additive on the logit of (accuracy - {self.chance:g}) / {1 - self.chance:g}, "
                f"fitted to {self.n_rows} table rows (ridge {RIDGE:g}): intercept {self.intercept:+.3f}; main "
                f"effects {mains}; {len(self.pairs)} interactions (RMS {np.sqrt(np.mean(self.pair ** 2)):.3f}, "
                f"standard error {np.sqrt(np.mean(self.se_pair ** 2)):.3f}; largest {inter}); in-sample RMS error "
                f"{self.rmse_accuracy:.4f} in accuracy. Noise per lookup: N(0, {self.sigma:.3f}^2) on the logit "
                f"scale, from {self.n_reruns} re-runs (sd {self.sigma_accuracy:.4f} in accuracy).")


def _bench_space():
    return search_spaces.get(DEFAULT_SPACE[0], **DEFAULT_SPACE[1])


def table_codings(table, space=None) -> np.ndarray:
    """The 0/1 choice index of each of the bench space's decisions for every table arch (n, 9)."""
    space = space or _bench_space()
    return np.array([space.indices(space.encode(Arch.from_string(a))) for a in table.archs], dtype=np.int64)


def fit_table(table=None, rows: np.ndarray | None = None, chance: float | None = None) -> TableFit:
    """Fit the main + pairwise model to the table (all rows, or the row indices ``rows``)."""
    table = table if table is not None else Table.load()
    space = _bench_space()
    decs = space.decision_list
    if any(len(d.choices) != 2 for d in decs):
        raise ValueError("fit_table: the bench space's decisions must be binary")
    chance = chance if chance is not None else 1.0 / DEPLOYMENT["num_classes"]
    x = table_codings(table, space)
    acc = np.asarray(table.accuracy, float)
    if rows is not None:
        x, acc = x[rows], acc[rows]
    if not ((acc > chance) & (acc < 1)).all():
        raise ValueError(f"fit_table: accuracies must lie in ({chance:g}, 1) for the logit scale")
    pairs = tuple(itertools.combinations(range(len(decs)), 2))
    proto = TableFit(tuple(d.name for d in decs), tuple(d.choices for d in decs), 0.0, np.zeros(0), pairs,
                     np.zeros(0), np.zeros(0), np.zeros(0), chance, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    F = proto.design(x)
    y = _logit(acc, chance)
    penalty = np.eye(F.shape[1]) * RIDGE
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    A_inv = np.linalg.inv(F.T @ F + penalty)
    w = A_inv @ F.T @ y
    resid = y - F @ w
    dof = max(len(y) - F.shape[1], 1)
    resid_sd = float(np.sqrt(resid @ resid / dof))
    se = np.sqrt(np.diag(resid_sd ** 2 * A_inv @ F.T @ F @ A_inv))
    main, pair, se_main, se_pair = w[1:1 + len(decs)], w[1 + len(decs):], se[1:1 + len(decs)], se[1 + len(decs):]
    # Noise: the re-runs' spread on the same scale (differences of two runs: sd / sqrt 2).
    reruns = [(a, b) for a, b in table.reruns if chance < min(a, b) and max(a, b) < 1]
    if len(reruns) < 2:
        raise ValueError("fit_table: the table needs at least 2 re-run rows (a seed other than the first) "
                         "to measure the noise")
    ra, rb = np.array(reruns).T
    sigma = float(np.std(_logit(rb, chance) - _logit(ra, chance), ddof=1) / math.sqrt(2))
    sigma_acc = float(np.std(rb - ra, ddof=1) / math.sqrt(2))
    # The priors' shape: effects like the fitted ones, once the fit's own estimation noise is
    # taken out of the fitted effects' spread.
    main_sd = float(math.sqrt(max(np.mean(main ** 2) - np.mean(se_main ** 2), 0.0)))
    n_sig = int(np.sum(np.abs(pair / se_pair) > T_SIGNIFICANT))
    density = float(np.clip((n_sig / len(pairs) - 0.05) / 0.95, 1.0 / len(pairs), 1.0))
    pair_sd = float(math.sqrt(max(np.mean(pair ** 2) - np.mean(se_pair ** 2), 0.0) / density))
    fitted = _accuracy(F @ w, chance)
    return TableFit(proto.decisions, proto.choices, float(w[0]), main, pairs, pair, se_main, se_pair, chance, sigma,
                    sigma_acc, resid_sd, float(np.sqrt(np.mean((fitted - acc) ** 2))), len(y), len(reruns),
                    main_sd, density, pair_sd, n_sig)


# ----------------------------------------------------------------------------- the priors

FULL_SAMPLE = TABLES / "efficientnet_edgetpu_full40.csv"


class Coding:
    """How the table's decisions sit in the full space: each decision's reference choice, and
    for the 9 fitted decisions (full index -> (fit index, full index of the second choice))."""

    def __init__(self, space, fit: TableFit):
        decs = space.decision_list
        names = [d.name for d in decs]
        bench = _bench_space()
        # The reference: what every table arch holds outside the fitted decisions, read off
        # the table's first member in this space.
        first = space.encode(bench.make_arch({d.name: d.choices[0] for d in bench.decision_list}))
        self.choices = first
        self.ref = np.array([d.index(first[d.name]) for d in decs], dtype=np.int64)
        self.sizes = np.array([len(d.choices) for d in decs], dtype=np.int64)
        self.known: dict[int, tuple[int, int]] = {}
        for j, (name, choices) in enumerate(zip(fit.decisions, fit.choices)):
            d = names.index(name)
            if decs[d].index(choices[0]) != self.ref[d]:
                raise ValueError(f"landscape: decision {name}'s reference differs between the table and the space")
            self.known[d] = (j, decs[d].index(choices[1]))
        self.fitted_pair = {fit.pairs[p]: float(fit.pair[p]) for p in range(len(fit.pairs))}

    def known_cell(self, d: int, a: int, e: int, b: int) -> float | None:
        """The fitted interaction of choices (d=a, e=b), or None if the table does not pin it."""
        if d in self.known and e in self.known and self.known[d][1] == a and self.known[e][1] == b:
            return self.fitted_pair[tuple(sorted((self.known[d][0], self.known[e][0])))]
        return None

    def split(self, idx: np.ndarray, fit: TableFit) -> tuple[float, set, set]:
        """An arch's fitted part of eta, and the unknown main choices and pair cells it holds."""
        known = fit.intercept
        mains, cells = set(), set()
        off = [d for d in range(len(idx)) if idx[d] != self.ref[d]]
        for d in off:
            if d in self.known and self.known[d][1] == idx[d]:
                known += float(fit.main[self.known[d][0]])
            else:
                mains.add((d, int(idx[d])))
        for d, e in itertools.combinations(off, 2):
            v = self.known_cell(d, int(idx[d]), e, int(idx[e]))
            if v is None:
                cells.add((d, e, int(idx[d]), int(idx[e])))
            else:
                known += v
        return known, mains, cells


@dataclass(frozen=True)
class Priors:
    """The drawn effects' distributions (see the module docstring for how they are set)."""

    main_mean: float
    main_sd: float
    pair_density: float
    pair_sd: float
    kappa: float
    kappa_interval: tuple[float, float]
    mu_interval: tuple[float, float]
    sample: int
    source: str
    shape_main_sd: float
    shape_pair_sd: float

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    def text(self) -> str:
        return (f"Priors for every other choice and pair: main effect ~ N({self.main_mean:+.4f}, "
                f"{self.main_sd:.3f}^2); each pair of decisions interacts with probability {self.pair_density:.3f}, "
                f"cells ~ N(0, {self.pair_sd:.3f}^2). Shape from the fit (sds {self.shape_main_sd:.3f} and "
                f"{self.shape_pair_sd:.3f} if the other decisions were like the table's), scaled by kappa "
                f"{self.kappa:.2f} (95% interval {self.kappa_interval[0]:.2f}-{self.kappa_interval[1]:.2f}) with "
                f"mean mu (95% {self.mu_interval[0]:+.4f} to {self.mu_interval[1]:+.4f}) by maximum marginal "
                f"likelihood of {self.sample} archs of the whole space trained with the table's recipe "
                f"({Path(self.source).name}).")


def calibrate(fit: TableFit, sample: str | Path | None = None, space=None) -> Priors:
    """Scale ``kappa`` and mean ``mu`` of the drawn effects from archs of the whole space.

    Under the model an arch's logit accuracy is its fitted part, plus ``mu`` times the
    number of unknown main choices it holds, plus Gaussian terms with covariance
    ``kappa^2 * (s_main^2 * shared main choices + p * s_pair^2 * shared pair cells)``
    between two archs, plus the re-run noise ``sigma^2`` on the diagonal. ``mu`` has a
    closed form (generalised least squares) given ``kappa``; ``kappa`` is the maximum of the
    profile likelihood on a grid of 0.01.
    """
    space = space if space is not None else search_spaces.get(FULL_SPACE, **DEPLOYMENT)
    tab = Table.load(sample if sample is not None else FULL_SAMPLE)
    coding = Coding(space, fit)
    parts = [coding.split(np.array(space.indices(space.encode(Arch.from_string(a)))), fit) for a in tab.archs]
    y = _logit(tab.accuracy, fit.chance)
    base = np.array([p[0] for p in parts])
    count = np.array([len(p[1]) for p in parts], float)
    shared_main = np.array([[len(a[1] & b[1]) for b in parts] for a in parts], float)
    shared_cells = np.array([[len(a[2] & b[2]) for b in parts] for a in parts], float)
    unit = fit.shape_main_sd ** 2 * shared_main + fit.pair_density * fit.shape_pair_sd ** 2 * shared_cells
    grid = np.round(np.arange(0.0, 2.0001, 0.01), 2)
    prof = []
    for kappa in grid:
        C = kappa ** 2 * unit + fit.sigma ** 2 * np.eye(len(y))
        Ci = np.linalg.inv(C)
        var_mu = 1.0 / (count @ Ci @ count)
        mu = var_mu * (count @ Ci @ (y - base))
        r = y - base - mu * count
        prof.append((-0.5 * (r @ Ci @ r + np.linalg.slogdet(C)[1]), mu, var_mu))
    ll = np.array([p[0] for p in prof])
    best = int(np.argmax(ll))
    inside = grid[ll >= ll[best] - 1.92]  # chi-square(1) 95% / 2
    kappa, mu, var_mu = float(grid[best]), float(prof[best][1]), float(prof[best][2])
    half = 1.96 * math.sqrt(var_mu)
    return Priors(mu, kappa * fit.shape_main_sd, fit.pair_density, kappa * fit.shape_pair_sd, kappa,
                  (float(inside.min()), float(inside.max())), (mu - half, mu + half), len(y), str(tab.source),
                  fit.shape_main_sd, fit.shape_pair_sd)


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
        return _accuracy(self.eta(idx), self.fit.chance)

    def observe(self, idx: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Accuracy observed with standard-normal draws ``z`` (one per row) as the lookup noise."""
        return _accuracy(self.eta(idx) + self.fit.sigma * np.asarray(z, float), self.fit.chance)

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
