"""Statistics, text and plot helpers of the ``nas bench`` reports (table and surrogate mode).

>>> import numpy as np
>>> hypervolume(np.array([0.5, 0.7]), np.array([1.0, 2.0]), ref_acc=0.0, ref_lat=3.0)
1.2
>>> ci_text((0.1, 0.05, 0.2))
'0.1000 [0.0500, 0.2000]'
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np

#: Resamples of every bootstrap interval.
BOOTSTRAP = 2000


# --------------------------------------------------- over trials and seeds (table mode)


def hypervolume(acc: np.ndarray, lat: np.ndarray, ref_acc: float, ref_lat: float) -> float:
    """Area dominated by the points (higher accuracy, lower latency) inside the reference box.

    Swept left to right in latency: between consecutive latencies the dominated height is
    the best accuracy of the points to the left.
    """
    keep = (acc > ref_acc) & (lat < ref_lat)
    if not keep.any():
        return 0.0
    order = np.argsort(lat[keep], kind="stable")
    a, l = acc[keep][order], lat[keep][order]
    widths = np.diff(np.append(l, ref_lat))
    return float(np.sum((np.maximum.accumulate(a) - ref_acc) * widths))

def first_hit(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) + 1 if len(idx) else None

def median_hits(hits: list[int | None], budget: int) -> str:
    vals = sorted(h if h is not None else math.inf for h in hits)
    med = vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
    return f"> {budget}" if math.isinf(med) else f"{med:g}"

def mean_ci(v: np.ndarray) -> tuple[float, float]:
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return (float("nan"), float("nan"))
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0

def band(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Columns can be all-NaN (no seed found a table arch yet): NaN band there, no warning.
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = np.nanmean(a, axis=0)
        n = np.sum(np.isfinite(a), axis=0)
        h = 1.96 * np.nanstd(a, axis=0, ddof=1) / np.sqrt(np.maximum(n, 1)) if a.shape[0] > 1 else np.zeros_like(m)
    return m, np.nan_to_num(h)


# ----------------------------------------- bootstrap over paired seeds (surrogate mode)


def bootstrap(values: np.ndarray, stat: Callable[[np.ndarray], np.ndarray], n: int = BOOTSTRAP,
              seed: int = 0) -> tuple[float, float, float]:
    """``stat`` of ``values`` (one per seed) and its 95% percentile bootstrap interval.

    ``stat`` maps an (resamples, seeds) array to (resamples,); ``inf`` (not reached) is a
    value like any other, so a median can be ``inf`` and the interval open-ended.
    """
    v = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    boot = stat(v[rng.integers(len(v), size=(n, len(v)))])
    lo, hi = np.quantile(boot, [0.025, 0.975], method="inverted_cdf")
    return float(stat(v[None, :])[0]), float(lo), float(hi)

def row_mean(a: np.ndarray) -> np.ndarray:
    return a.mean(axis=1)

def row_median(a: np.ndarray) -> np.ndarray:
    return np.quantile(a, 0.5, axis=1, method="inverted_cdf")

def trials_to(score: np.ndarray, level: np.ndarray | float) -> np.ndarray:
    """Per seed, the first trial (1-based) at which the score reaches ``level``; inf if never."""
    hit = score >= np.asarray(level, float).reshape(-1, 1) - 1e-12
    first = np.argmax(hit, axis=1).astype(float) + 1
    first[~hit.any(axis=1)] = math.inf
    return first


# --------------------------------------------------------------------------------- text


def reached_text(t: int | None, budget: int) -> str:
    return f"> {budget}" if t is None else str(t)

def seed_range(offset: int, n: int) -> str:
    return f"seed {offset}" if n == 1 else f"seeds {offset}-{offset + n - 1}"

def ci_text(v: tuple[float, float, float], sign: bool = False) -> str:
    f = "{:+.4f}" if sign else "{:.4f}"
    return f"{f.format(v[0])} [{f.format(v[1])}, {f.format(v[2])}]"

def ci_trials_text(v: tuple[float, float, float], budget: int) -> str:
    def one(x):
        return f"> {budget}" if math.isinf(x) else f"{x:g}"

    if all(math.isinf(x) for x in v):
        return one(v[0])
    return f"{one(v[0])} [{one(v[1])}, {one(v[2])}]"


# ---------------------------------------------------------------- strict JSON and plots


def finite(o: Any) -> Any:
    """NaN/inf -> None all through, so the JSON is strict (other tools reject NaN)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite(v) for v in o]
    return o

def json_list(a: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in a]

def save_with_legend_below(fig, ax, path, ncol: int, row_height: float, title: str) -> None:
    """One legend under all panels (controller labels with parameters are long), then save."""
    import matplotlib.pyplot as plt

    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(ncol, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05 + row_height * math.ceil(len(labels) / ncol), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
