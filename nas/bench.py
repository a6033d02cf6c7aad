"""``nas bench``: controllers against a table of trained archs, by lookup instead of training.

A table is a CSV with one row per trained arch, in the columns of ``trials.csv``: ``arch``
(the deployment arch string the controller proposes), ``accuracy`` (of the model trained
for it) and ``latency_ms`` (the deployment model's), optionally ``seed`` (rows with other
seeds than the first give the noise of a re-run), ``params``, ``macs``, ``on_chip_bytes``,
``off_chip_bytes``, ``proxy_arch`` and ``proxy_latency_ms`` (the latency of the trained
proxy, which ``--latency proxy`` scores instead). So a search's own ``trials.csv`` is a table
too. The shipped table (``nas/tables/efficientnet_edgetpu_bench.csv``, made by
``benchmarks/make_bench_table.py``) holds every member of ``efficientnet_edgetpu_bench``
at the deployment scale (128 px, width 1, depth 1, 10 classes), its predicted deployment
latency and memory, and the accuracy of the same member at proxy scale (32 px, width 0.25,
depth 0.5: the same decisions) trained on the MNIST digits.

The same controller code and the same reward as ``nas search`` run here; only the trial is
a lookup. Every proposal is a trial (a repeated arch costs a trial too, as it would in a
real search). An arch missing from the table is a failed trial. For each controller and
seed the benchmark records the reward of every trial and reports

- trials to reach the table's best reward, and 99% of it;
- simple regret (best reward in the table minus the best found so far) over trials;
- the Pareto hypervolume (accuracy vs latency) of the archs found so far, as a fraction
  of the whole table's;
- when each controller's mean best-so-far reaches random search's final one.

>>> from nas.bench import Table, run_bench
>>> table = Table.load()                                            # doctest: +SKIP
>>> res = run_bench(table, ["random", "evolution"], seeds=5, trials=50)  # doctest: +SKIP
>>> res.summary()["evolution"]["trials_to_random_final"]            # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .record import Status, TrialRecord
from .reward import RewardConfig, reward

log = logging.getLogger(__name__)

TABLES = Path(__file__).with_name("tables")
DEFAULT_TABLE = TABLES / "efficientnet_edgetpu_bench.csv"
#: The shipped table's archs: the bench space at the deployment scale.
DEFAULT_SPACE = ("efficientnet_edgetpu_bench", {"resolution": 128, "width": 1.0, "depth": 1.0, "num_classes": 10})
REQUIRED = ("arch", "accuracy", "latency_ms")
#: Which latency the reward scores: the deployment model's (``latency_ms``) or the proxy's.
LATENCY_COLUMNS = {"deployment": "latency_ms", "proxy": "proxy_latency_ms"}
EXTRA = ("params", "macs", "on_chip_bytes", "off_chip_bytes", "proxy_params", "proxy_macs", "proxy_on_chip_bytes",
         "proxy_off_chip_bytes")


@dataclass
class Table:
    """One row per arch (the first seed's), plus re-runs for the noise estimate."""

    archs: list[str]
    accuracy: np.ndarray
    latency_ms: np.ndarray  # the latency the reward scores (see ``latency``)
    extra: dict[str, np.ndarray]
    source: str
    reruns: list[tuple[float, float]] = field(default_factory=list)  # (accuracy, re-run accuracy)
    latency: str = "deployment"

    @classmethod
    def load(cls, path: str | Path | None = None, latency: str = "deployment") -> "Table":
        """Read a table; ``latency`` picks the column the reward scores (``deployment``:
        ``latency_ms``; ``proxy``: ``proxy_latency_ms``)."""
        if latency not in LATENCY_COLUMNS:
            raise ValueError(f"--latency: unknown {latency!r}; allowed: {', '.join(LATENCY_COLUMNS)}")
        col = LATENCY_COLUMNS[latency]
        p = Path(path) if path is not None else DEFAULT_TABLE
        if not p.is_file():
            hint = " (the shipped table is made by benchmarks/make_bench_table.py)" if path is None else ""
            raise ValueError(f"table: file {str(p)!r} does not exist{hint}")
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            names = reader.fieldnames or []
            missing = [c for c in REQUIRED if c not in names]
            if missing:
                raise ValueError(f"table {p.name}: missing column(s) {', '.join(missing)}; a table needs "
                                 f"{', '.join(REQUIRED)} (optional: seed, {', '.join(EXTRA)}, proxy_latency_ms)")
            if col not in names:
                raise ValueError(f"--latency: {latency!r} needs a {col} column, which table {p.name} lacks; "
                                 f"allowed here: deployment")
            rows = [r for r in reader if r.get("status", "ok") in ("ok", "")]
        first: dict[str, dict] = {}
        others: dict[str, list[dict]] = {}
        for i, r in enumerate(rows, start=2):
            try:
                float(r["accuracy"]), float(r[col])
            except ValueError:
                raise ValueError(f"table {p.name}: line {i}: accuracy and {col} must be numbers, got "
                                 f"{r['accuracy']!r}, {r[col]!r}") from None
            if r["arch"] in first:
                others.setdefault(r["arch"], []).append(r)
            else:
                first[r["arch"]] = r
        if not first:
            raise ValueError(f"table {p.name}: no rows")
        archs = list(first)
        extra = {c: np.array([float(first[a][c] or "nan") for a in archs]) for c in EXTRA if c in names}
        reruns = [(float(first[a]["accuracy"]), float(o["accuracy"])) for a in others for o in others[a]]
        return cls(archs, np.array([float(first[a]["accuracy"]) for a in archs]),
                   np.array([float(first[a][col]) for a in archs]), extra, str(p), reruns, latency)

    def __len__(self) -> int:
        return len(self.archs)

    @property
    def index(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.archs)}

    def rewards(self, rcfg: RewardConfig) -> np.ndarray:
        return np.array([reward(a, lat, rcfg) for a, lat in zip(self.accuracy, self.latency_ms)])

    def noise(self) -> dict[str, float] | None:
        """Accuracy differences between re-runs of the same arch (seed 0 vs seed 1)."""
        if not self.reruns:
            return None
        d = np.array([b - a for a, b in self.reruns])
        return {"n": len(d), "mean_abs_diff": float(np.abs(d).mean()), "std_diff": float(d.std(ddof=1)) if len(d) > 1
                else 0.0, "rerun_std": float(d.std(ddof=1) / math.sqrt(2)) if len(d) > 1 else 0.0}


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


@dataclass
class BenchResult:
    table: Table
    rcfg: RewardConfig
    trials: int
    seeds: int
    #: controller -> (seeds, trials) arrays
    rewards: dict[str, np.ndarray]
    best_so_far: dict[str, np.ndarray]
    hv_so_far: dict[str, np.ndarray]
    table_best: float
    hv_table: float
    labels: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        rnd = self.best_so_far.get("random")
        random_final = float(np.nanmean(rnd[:, -1])) if rnd is not None else None
        for name, best in self.best_so_far.items():
            mean_curve = _band(best)[0]
            hit = [_first(row >= self.table_best - 1e-12) for row in best]
            hit99 = [_first(row >= 0.99 * self.table_best) for row in best]
            s: dict[str, Any] = {
                "label": self.labels.get(name, name),
                "final_best_reward": _mean_ci(best[:, -1]),
                "final_regret": _mean_ci(self.table_best - best[:, -1]),
                "final_hv_fraction": _mean_ci(self.hv_so_far[name][:, -1] / self.hv_table),
                "reached_best": f"{sum(h is not None for h in hit)}/{len(hit)}",
                "trials_to_best_median": _median_hits(hit, self.trials),
                "trials_to_99pct_median": _median_hits(hit99, self.trials),
                "failed_lookups": int(np.isnan(self.rewards[name]).sum()),
            }
            if random_final is not None:
                t = _first(mean_curve >= random_final - 1e-12)
                s["trials_to_random_final"] = t
                s["meets_half_budget_target"] = t is not None and t <= self.trials / 2
            out[name] = s
        return out

    def to_json(self) -> str:
        return json.dumps(_finite({"table": self.table.source, "archs": len(self.table), "trials": self.trials,
                           "latency": self.table.latency,
                           "seeds": self.seeds, "reward": {"kind": self.rcfg.kind, "target_ms": self.rcfg.target_ms,
                                                           "exponents": self.rcfg.exponents},
                           "table_best_reward": self.table_best, "noise": self.table.noise(),
                           "summary": self.summary(),
                           "curves": {n: {"best_so_far_mean": _json_list(_band(b)[0]),
                                          "hv_fraction_mean": _json_list(_band(self.hv_so_far[n])[0]
                                                                         / self.hv_table)}
                                      for n, b in self.best_so_far.items()}}), indent=1, allow_nan=False)

    def markdown(self) -> str:
        lines = [f"table {Path(self.table.source).name}: {len(self.table)} archs; reward {self.rcfg.kind} "
                 f"target {self.rcfg.target_ms:.3f} ms of {self.table.latency} latency "
                 f"(alpha, beta = {self.rcfg.exponents}); best reward in the "
                 f"table {self.table_best:.4f}; {self.seeds} seeds x {self.trials} trials", "",
                 "| controller | final best reward | final regret | HV fraction | reached best | trials to best "
                 "(median) | to 99% | reaches random's final best at |", "|---|---|---|---|---|---|---|---|"]
        for name, s in self.summary().items():
            fb, fr, hv = s["final_best_reward"], s["final_regret"], s["final_hv_fraction"]
            lines.append(f"| {s['label']} | {fb[0]:.4f} ± {fb[1]:.4f} | {fr[0]:.4f} ± {fr[1]:.4f} | "
                         f"{hv[0]:.3f} ± {hv[1]:.3f} | {s['reached_best']} | {s['trials_to_best_median']} | "
                         f"{s['trials_to_99pct_median']} | {_reached(s.get('trials_to_random_final'), self.trials)} |")
        lines.append("")
        lines.append("± is the 95% confidence half-width of the mean over seeds; trial counts are medians over "
                     "seeds (> budget: not reached by most seeds).")
        return "\n".join(lines)

    def plot(self, path: str | Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        x = np.arange(1, self.trials + 1)
        for name, best in self.best_so_far.items():
            label = self.labels.get(name, name)
            regret = np.maximum(self.table_best - best, 1e-5)
            m, h = _band(regret)
            line, = ax1.plot(x, m, label=label)
            ax1.fill_between(x, np.maximum(m - h, 1e-5), m + h, color=line.get_color(), alpha=0.2)
            hv = self.hv_so_far[name] / self.hv_table
            m, h = _band(hv)
            ax2.plot(x, m, label=label, color=line.get_color())
            ax2.fill_between(x, m - h, np.minimum(m + h, 1), color=line.get_color(), alpha=0.2)
        ax1.set(xlabel="trials", ylabel="simple regret (reward)", yscale="log",
                title="best reward in the table minus best found")
        ax2.set(xlabel="trials", ylabel="hypervolume / table's", ylim=(0, 1.02),
                title=f"Pareto hypervolume (accuracy vs {self.table.latency} latency)")
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
        # One legend under both panels: controller labels with parameters are long.
        handles, labels = ax1.get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
        fig.suptitle(f"{Path(self.table.source).name}: {len(self.table)} archs, mean of {self.seeds} seeds, "
                     "95% confidence bands")
        rows = math.ceil(len(labels) / 3)
        fig.tight_layout(rect=(0, 0.05 + 0.045 * rows, 1, 1))
        fig.savefig(path, dpi=110)
        plt.close(fig)


def _finite(o: Any) -> Any:
    """NaN/inf -> None all through, so the JSON is strict (other tools reject NaN)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_list(a: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in a]


def _reached(t: int | None, budget: int) -> str:
    return f"> {budget}" if t is None else str(t)


def _first(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) + 1 if len(idx) else None


def _median_hits(hits: list[int | None], budget: int) -> str:
    vals = sorted(h if h is not None else math.inf for h in hits)
    med = vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
    return f"> {budget}" if math.isinf(med) else f"{med:g}"


def _mean_ci(v: np.ndarray) -> tuple[float, float]:
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return (float("nan"), float("nan"))
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0


def _band(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Columns can be all-NaN (no seed found a table arch yet): NaN band there, no warning.
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = np.nanmean(a, axis=0)
        n = np.sum(np.isfinite(a), axis=0)
        h = 1.96 * np.nanstd(a, axis=0, ddof=1) / np.sqrt(np.maximum(n, 1)) if a.shape[0] > 1 else np.zeros_like(m)
    return m, np.nan_to_num(h)


def run_bench(table: Table, controllers: Sequence[str | tuple[str, dict]], *, seeds: int = 20, trials: int = 100,
              rcfg: RewardConfig | None = None, space=None, seed_offset: int = 0) -> BenchResult:
    """Run each controller ``seeds`` times (seeds ``seed_offset``, +1, ...) for ``trials`` lookups each."""
    import search_spaces

    from .controllers import get_controller

    if space is None:
        space = search_spaces.get(DEFAULT_SPACE[0], **DEFAULT_SPACE[1])
    rcfg = rcfg or RewardConfig(target_ms=float(np.median(table.latency_ms)))
    table_rewards = table.rewards(rcfg)
    index = table.index
    ref_acc, ref_lat = float(table.accuracy.min()), float(table.latency_ms.max())
    hv_table = hypervolume(table.accuracy, table.latency_ms, ref_acc, ref_lat)
    rewards, best, hv, labels = {}, {}, {}, {}
    for entry in controllers:
        name, params = (entry, {}) if isinstance(entry, str) else entry
        key = name if not params else f"{name}({', '.join(f'{k}={v}' for k, v in params.items())})"
        labels[key] = key
        R = np.full((seeds, trials), np.nan)
        B = np.full((seeds, trials), np.nan)
        H = np.zeros((seeds, trials))
        for s in range(seeds):
            ctrl = get_controller(name, space, seed=seed_offset + s, **params)
            found: list[int] = []
            best_r = -math.inf
            for t in range(trials):
                arch = ctrl.ask()
                i = index.get(arch.to_string())
                if i is None:
                    ctrl.feedback(arch, TrialRecord(status=Status.FAILED, reason="not in the table").controller_view())
                else:
                    r = float(table_rewards[i])
                    ctrl.feedback(arch, TrialRecord(status=Status.OK, reward=r, accuracy=float(table.accuracy[i]),
                                                    latency_ms=float(table.latency_ms[i])).controller_view())
                    R[s, t] = r
                    best_r = max(best_r, r)
                    found.append(i)
                B[s, t] = best_r if math.isfinite(best_r) else np.nan
                if found and (i is not None):
                    f = np.unique(found)
                    H[s, t] = hypervolume(table.accuracy[f], table.latency_ms[f], ref_acc, ref_lat)
                elif t:
                    H[s, t] = H[s, t - 1]
        rewards[key], best[key], hv[key] = R, B, H
    return BenchResult(table, rcfg, trials, seeds, rewards, best, hv, float(np.nanmax(table_rewards)), hv_table,
                       labels)
