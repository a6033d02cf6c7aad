"""The accuracy model of the surrogate landscapes (:mod:`nas.bench.landscape`): fitted part, priors of the rest.

:func:`fit_table` fits the intercept, the main effects of the shipped table's 9 binary
decisions and their 36 pairwise interactions on the logit scale of the chance-to-perfect
range (:func:`to_eta`, :func:`to_accuracy`), with the table's re-run noise; these effects are
the same in every landscape. :func:`calibrate` sets the distributions (:class:`Priors`) of the
effects a landscape draws for everything the table does not pin down, from archs of the
whole space. :class:`Coding` says where the table's decisions sit in the whole space. The
module docstring of :mod:`nas.bench.landscape` gives the model and how both are set.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import search_spaces
from search_spaces import Arch

from nas.bench.table import DEFAULT_SPACE, TABLES, Table

FULL_SPACE = "efficientnet_edgetpu"
#: The quickstart's deployment scale, the table's ``arch`` column's.
DEPLOYMENT = {"resolution": 128, "width": 1.0, "depth": 1.0, "num_classes": 10}
RIDGE = 1e-2
#: |t| above which a fitted interaction counts as real when calibrating the pair density.
T_SIGNIFICANT = 1.96


def to_eta(acc: np.ndarray, chance: float) -> np.ndarray:
    """Accuracy -> the model's logit scale of the range from ``chance`` to 1."""
    z = (np.asarray(acc, float) - chance) / (1 - chance)
    return np.log(z / (1 - z))


def to_accuracy(eta: np.ndarray, chance: float) -> np.ndarray:
    """The model's logit scale -> accuracy (never below ``chance`` nor above 1)."""
    return chance + (1 - chance) / (1 + np.exp(-np.asarray(eta, float)))


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
        return to_accuracy(self.design(x) @ np.concatenate([[self.intercept], self.main, self.pair]), self.chance)

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
    y = to_eta(acc, chance)
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
    sigma = float(np.std(to_eta(rb, chance) - to_eta(ra, chance), ddof=1) / math.sqrt(2))
    sigma_acc = float(np.std(rb - ra, ddof=1) / math.sqrt(2))
    # The priors' shape: effects like the fitted ones, once the fit's own estimation noise is
    # taken out of the fitted effects' spread.
    main_sd = float(math.sqrt(max(np.mean(main ** 2) - np.mean(se_main ** 2), 0.0)))
    n_sig = int(np.sum(np.abs(pair / se_pair) > T_SIGNIFICANT))
    density = float(np.clip((n_sig / len(pairs) - 0.05) / 0.95, 1.0 / len(pairs), 1.0))
    pair_sd = float(math.sqrt(max(np.mean(pair ** 2) - np.mean(se_pair ** 2), 0.0) / density))
    fitted = to_accuracy(F @ w, chance)
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
    y = to_eta(tab.accuracy, fit.chance)
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
