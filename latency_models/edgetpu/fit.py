"""Fitting the ``edgetpu-model`` constants to measured networks (:mod:`latency_models.edgetpu.model`).

:func:`fit` minimises squared log errors of latency (and of on/off-chip bytes where known) by
bounded least squares, with weak priors that keep every constant physical. The activation
reserve moves layers between cached and streamed, a step function no gradient sees, so it is
searched on a grid (:data:`RESERVE_GRID`). Rows measured on other set-ups (the Dev Board, the
NAS-Bench-201 host) share the chip constants and get their own host constants
(:data:`SETUP_NAMES`: fixed cost, link, clock). :func:`calibrate` refits a user's own set-up:
the host constants from a handful of rows, every constant from 30 or more.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from latency_models.edgetpu.model import MIB, Constants, op_arrays, evaluate_ops, load_constants, predict_arrays



@dataclass(frozen=True)
class CalibrationRow:
    """One measured network: its analysis, latency, and memory split when known.

    ``setup`` names the board and host it was measured on ("" is the primary set-up, whose
    constants are the fit's result); rows of other set-ups share every chip constant and get
    their own host constants (:data:`SETUP_NAMES`).
    """

    name: str
    analysis: Any
    latency_ms: float
    on_chip_bytes: float | None = None
    off_chip_bytes: float | None = None
    link: str = "usb3"
    setup: str = ""
    # Residual weight: many rows of one small family can be down-weighted so that they do
    # not outvote the few rows of every other kind of network.
    weight: float = 1.0


# Physical bounds of the fitted constants (the Edge TPU's 4 TOPS = 2e12 MAC/s peak; USB 3's
# 5 Gb/s line rate; a clock between libedgetpu's reduced and full frequency).
BOUNDS = {
    "peak_macs_per_s": (5e11, 2.2e12), "depthwise_efficiency": (0.01, 1.0), "fc_efficiency": (0.005, 1.0),
    "op_overhead_s": (1e-7, 2e-4), "inference_overhead_s": (1e-5, 3e-3), "link_bytes_per_s": (5e7, 6.25e8),
    "activation_reserve": (0.5, 12.0), "elementwise_bytes_per_s": (1e8, 2e10), "clock": (0.25, 1.5),
}

# The activation reserve decides which layers are cached and which streamed: the loss is a
# step function of it, flat between steps, which a gradient method cannot follow. So the
# reserve is searched on this grid, the other constants fitted at each point.
RESERVE_GRID = {"activation_reserve": (2.0, 3.0, 4.0),
                "max_reserve_bytes": tuple(int(m * MIB) for m in (1.5, 2.0, 2.5, 3.0, 3.5))}

# What differs between two set-ups (board, host, runtime) measuring the same chip.
SETUP_NAMES = ("inference_overhead_s", "link_bytes_per_s", "clock")
MIN_SETUP_ROWS = 3


def _with(c: Constants, names: Sequence[str], theta) -> Constants:
    return replace(c, **{n: float(math.exp(t)) for n, t in zip(names, theta)})


class _Batch:
    """The rows of one (set-up, link), their ops concatenated: one vectorised evaluation per
    group and residual call, instead of one per row (fits run thousands of calls)."""

    def __init__(self, rows: Sequence[CalibrationRow], arrays: Sequence[dict[str, np.ndarray]], idx: list[int]):
        self.idx = idx
        self.link = rows[idx[0]].link
        self.setup = rows[idx[0]].setup
        self.a = {k: np.concatenate([arrays[i][k] for i in idx]) for k in arrays[idx[0]] if k not in ("in_bytes", "out_bytes")}
        self.n_ops = [len(arrays[i]["kind"]) for i in idx]
        self.io = np.array([float(arrays[i]["in_bytes"][0] + arrays[i]["out_bytes"][0]) for i in idx])
        self.lat = np.log([rows[i].latency_ms for i in idx])
        self.w = np.array([rows[i].weight for i in idx])
        mem = [(j, rows[i]) for j, i in enumerate(idx) if rows[i].on_chip_bytes is not None or rows[i].off_chip_bytes is not None]
        self.mem = mem

    def residuals(self, c: Constants) -> list[float]:
        r = evaluate_ops(self.a, self.n_ops, self.io, c, self.link)
        out = list(self.w * (np.log(r["latency_s"] * 1e3) - self.lat))
        # Memory split, where the compiler reported it; 1 MiB keeps log() sane near zero.
        for j, row in self.mem:
            if row.on_chip_bytes is not None:
                out.append(0.5 * (math.log(r["on_chip"][j] + MIB) - math.log(row.on_chip_bytes + MIB)))
            if row.off_chip_bytes is not None:
                out.append(0.5 * (math.log(r["off_chip"][j] + MIB) - math.log(row.off_chip_bytes + MIB)))
        return out


def _batches(rows: Sequence[CalibrationRow], arrays) -> list[_Batch]:
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r.setup, r.link), []).append(i)
    return [_Batch(rows, arrays, idx) for idx in groups.values()]


def _setup_names(n_rows: int) -> tuple[str, ...]:
    """The host constants a secondary set-up with ``n_rows`` rows gets: all of them from
    :data:`MIN_SETUP_ROWS` rows on, else its link alone (one or two rows cannot tell a fixed
    cost from a clock; the link is what differs most between a USB stick and a board)."""
    return SETUP_NAMES if n_rows >= MIN_SETUP_ROWS else ("link_bytes_per_s",)


def _split(theta, names, layout):
    """The primary constants' part of ``theta`` and each set-up's (name, names, values)."""
    k = len(names)
    out = []
    for setup, snames in layout:
        out.append((setup, snames, theta[k:k + len(snames)]))
        k += len(snames)
    return theta[:len(names)], out


def _per_setup(c: Constants, parts) -> dict[str, Constants]:
    return {"": c} | {setup: _with(c, snames, values) for setup, snames, values in parts}


def _residuals(theta, names, layout, base, batches, prior, prior_weight):
    own, parts = _split(theta, names, layout)
    c = _with(base, names, own)
    per_setup = _per_setup(c, parts)
    res = []
    for b in batches:
        res.extend(b.residuals(per_setup[b.setup]))
    # Weak priors: the chip constants towards the starting point, each other set-up's host
    # constants towards the primary set-up's (a set-up with one row cannot move them far).
    res.extend(prior_weight * (own - prior))
    for _, snames, values in parts:
        res.extend(prior_weight * (values - np.array([math.log(getattr(c, n)) for n in snames])))
    return np.array(res)


def _starts(x0: np.ndarray, names: Sequence[str], lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    # The efficiencies trade off against each other (depthwise against element-wise time, say):
    # a second start from the middle of their ranges keeps one poor basin from deciding the fit.
    mid = x0.copy()
    for i, n in enumerate(names):
        if n in ("depthwise_efficiency", "fc_efficiency", "elementwise_bytes_per_s", "op_overhead_s"):
            mid[i] = (lo[i] + hi[i]) / 2
    return [x0] if np.allclose(mid, x0) else [x0, mid]


def fit(rows: Sequence[CalibrationRow], base: Constants | None = None, *,
        names: Sequence[str] | None = None, prior_weight: float = 0.05,
        grid: dict[str, Sequence[float]] | None = None) -> tuple[Constants, dict[str, Any]]:
    """Fit the constants to measured rows; returns them and a fit report (errors per row).

    ``names`` are the continuous constants to fit (default :meth:`Constants.fitted_names`);
    ``grid`` maps step-like constants to the values to search (default :data:`RESERVE_GRID`
    when every constant is fitted, else none). Rows of several set-ups share the chip constants.
    """
    from scipy.optimize import least_squares

    if not rows:
        raise ValueError("edgetpu-model fit: no calibration rows")
    base = base or Constants()
    names = tuple(names or Constants.fitted_names())
    if grid is None:
        grid = RESERVE_GRID if set(Constants.fitted_names()) <= set(names) else {}
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.setup] = counts.get(r.setup, 0) + 1
    layout = [(setup, _setup_names(counts[setup])) for setup in sorted(set(counts) - {""})]
    every = list(names) + [n for _, snames in layout for n in snames]
    arrays = [op_arrays(r.analysis) for r in rows]
    batches = _batches(rows, arrays)
    lo = np.array([math.log(BOUNDS[n][0]) for n in every])
    hi = np.array([math.log(BOUNDS[n][1]) for n in every])
    best = None
    points = [dict(zip(grid, v)) for v in itertools.product(*grid.values())] if grid else [{}]
    for point in points:
        b = replace(base, **point)
        x0 = np.array([math.log(getattr(b, n)) for n in every])
        x0 = np.clip(x0, lo + 1e-9, hi - 1e-9)
        prior = x0[:len(names)].copy()
        for start in _starts(x0, names, lo, hi):
            sol = least_squares(_residuals, start, bounds=(lo, hi),
                                args=(names, layout, b, batches, prior, prior_weight))
            if best is None or sol.cost < best[0]:
                best = (sol.cost, b, sol.x)
    _, b, x = best
    own, parts = _split(x, names, layout)
    c = _with(b, names, own)
    per_setup = _per_setup(c, parts)
    report = []
    for a, r in zip(arrays, rows):
        p = predict_arrays(a, per_setup[r.setup], r.link)
        report.append({"name": r.name, "setup": r.setup, "measured_ms": r.latency_ms,
                       "predicted_ms": round(p.latency_ms, 4),
                       "error": round(p.latency_ms / r.latency_ms - 1, 4), "on_chip_mib": round(p.on_chip_bytes / MIB, 3),
                       "off_chip_mib": round(p.off_chip_bytes / MIB, 3),
                       "measured_on_chip_mib": None if r.on_chip_bytes is None else round(r.on_chip_bytes / MIB, 3),
                       "measured_off_chip_mib": None if r.off_chip_bytes is None else round(r.off_chip_bytes / MIB, 3)})
    errs = np.abs([row["error"] for row in report])
    summary = {"rows": report, "median_abs_error": float(np.median(errs)), "max_abs_error": float(errs.max()),
               "fitted": list(names) + list(grid),
               "setups": {name: {n: getattr(cs, n) for n in SETUP_NAMES} for name, cs in per_setup.items() if name}}
    return c, summary


# Host-dependent constants: what differs between one board/host set-up and another. With few
# measured rows only these are refitted; the per-op efficiencies need many rows to be told apart.
HOST_NAMES = SETUP_NAMES
MIN_ROWS_FOR_OP_EFFICIENCIES = 30


def calibration_names(n_rows: int) -> tuple[str, ...]:
    """Which constants a calibration on ``n_rows`` measured networks refits: the host constants,
    or every rate (the clock is then redundant: it only scales the on-chip rates together)."""
    return HOST_NAMES if n_rows < MIN_ROWS_FOR_OP_EFFICIENCIES else Constants.fitted_names()


def calibrate(rows: Sequence[CalibrationRow], base: Constants | None = None) -> tuple[Constants, dict[str, Any]]:
    """Refit a set-up's constants from its measured rows, starting from ``base`` (default: the
    shipped fit): the host constants from a handful of rows, every constant from many."""
    base = base or load_constants().constants
    return fit(rows, base, names=calibration_names(len(rows)))
