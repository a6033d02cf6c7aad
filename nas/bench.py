"""``nas bench``: controllers by lookup instead of training, on a table or on surrogate landscapes.

**Table mode** (:class:`Table`, :func:`run_bench`). A table is a CSV with one row per trained
arch, in the columns of ``trials.csv``: ``arch`` (the deployment arch string the controller
proposes), ``accuracy`` (of the model trained for it) and ``latency_ms`` (the deployment
model's), optionally ``seed`` (rows with other seeds than the first give the noise of a
re-run), ``params``, ``macs``, ``on_chip_bytes``, ``off_chip_bytes``, ``proxy_arch`` and
``proxy_latency_ms`` (the latency of the trained proxy, which ``--latency proxy`` scores
instead). So a search's own ``trials.csv`` is a table too. The shipped table
(``nas/tables/efficientnet_edgetpu_bench.csv``, made by ``benchmarks/make_bench_table.py``)
holds every member of ``efficientnet_edgetpu_bench`` at the deployment scale (128 px, width
1, depth 1, 10 classes), its predicted deployment latency and memory, and the accuracy of
the same member at proxy scale (32 px, width 0.25, depth 0.5: the same decisions) trained on
the MNIST digits. An arch missing from the table is a failed trial. For each controller and
seed the benchmark reports trials to reach the table's best reward (and 99% of it), simple
regret and the Pareto hypervolume (accuracy vs latency) over trials, and when each
controller's mean best-so-far reaches random search's final one.

**Surrogate mode** (:func:`run_landscapes`, :class:`LandscapeResult`): landscapes over the
whole ``efficientnet_edgetpu`` space (:mod:`nas.landscape`), with noisy lookups; the score of
a run is the true reward of its pick. See :func:`run_landscapes`.

Both modes run the same controller code and reward as ``nas search`` through
:func:`run_controller`: asks in rounds of ``batch`` before any is told (a search's
concurrency), and a proposal of an arch already recorded answered from the record
(``repeats="record"``) or spent as a trial (``"train"``).

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
from typing import Any, Callable, Sequence

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
    batch: int = 1
    repeats: str = "train"
    seed_offset: int = 0
    #: controller -> asks, repeats, distinct (per seed) and the runs that stopped early
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)

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
                "failed_lookups": int(self.counts[name]["failed"].sum()) if name in self.counts
                else int(np.isnan(self.rewards[name]).sum()),
            }
            c = self.counts.get(name)
            if c:
                s |= {"distinct_archs": float(c["distinct"].mean()), "asks": float(c["asks"].mean()),
                      "repeats": float(c["repeats"].mean()), "stopped": c["stopped"]}
            if random_final is not None:
                t = _first(mean_curve >= random_final - 1e-12)
                s["trials_to_random_final"] = t
                s["meets_half_budget_target"] = t is not None and t <= self.trials / 2
            out[name] = s
        return out

    def to_json(self) -> str:
        return json.dumps(_finite({"table": self.table.source, "archs": len(self.table), "trials": self.trials,
                           "latency": self.table.latency,
                           "seeds": self.seeds, "seed_offset": self.seed_offset, "batch": self.batch,
                           "repeats": self.repeats, "reward": {"kind": self.rcfg.kind, "target_ms": self.rcfg.target_ms,
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
                 f"table {self.table_best:.4f}; {self.seeds} seeds ({_seed_range(self.seed_offset, self.seeds)}) x "
                 f"{self.trials} trials, batch {self.batch}, repeats {self.repeats}", "",
                 "| controller | final best reward | final regret | HV fraction | reached best | trials to best "
                 "(median) | to 99% | reaches random's final best at | distinct archs | asks |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for name, s in self.summary().items():
            fb, fr, hv = s["final_best_reward"], s["final_regret"], s["final_hv_fraction"]
            lines.append(f"| {s['label']} | {fb[0]:.4f} ± {fb[1]:.4f} | {fr[0]:.4f} ± {fr[1]:.4f} | "
                         f"{hv[0]:.3f} ± {hv[1]:.3f} | {s['reached_best']} | {s['trials_to_best_median']} | "
                         f"{s['trials_to_99pct_median']} | {_reached(s.get('trials_to_random_final'), self.trials)} | "
                         f"{s.get('distinct_archs', float('nan')):.1f} | {s.get('asks', float('nan')):.1f} |")
        stopped = [f"{name}: {x}" for name, s in self.summary().items() for x in s.get("stopped", [])]
        if stopped:
            lines += ["", "Runs that ended before their budget: " + "; ".join(stopped) + "."]
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
        _save_with_legend_below(fig, ax1, path, 3, 0.045,
                                f"{Path(self.table.source).name}: {len(self.table)} archs, mean of {self.seeds} "
                                "seeds, 95% confidence bands")


def _save_with_legend_below(fig, ax, path, ncol: int, row_height: float, title: str) -> None:
    """One legend under all panels (controller labels with parameters are long), then save."""
    import matplotlib.pyplot as plt

    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(ncol, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05 + row_height * math.ceil(len(labels) / ncol), 1, 1))
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


def _seed_range(offset: int, n: int) -> str:
    return f"seed {offset}" if n == 1 else f"seeds {offset}-{offset + n - 1}"


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


REPEATS = ("record", "train")
#: A run stops after this many proposals in a row that were all repeats (never loops forever).
MAX_CONSECUTIVE_REPEATS = 1000


@dataclass
class Run:
    """One controller run: the arch and observation of every trial, and what the asks cost."""

    keys: list[str]                 #: arch string of each trial, in trial order
    records: list[TrialRecord]      #: what each trial observed (and the controller was told)
    asks: int                       #: proposals, repeats included
    repeats: int                    #: proposals answered from the record (not trials)
    distinct: int                   #: distinct archs proposed
    stop: str | None = None         #: why the run ended before its budget, if it did


def run_controller(ctrl, lookup: Callable[[list[tuple[Any, str, int]]], list[TrialRecord]], *, trials: int,
                   batch: int = 8, repeats: str = "record", max_repeats: int = MAX_CONSECUTIVE_REPEATS,
                   space_size: int | None = None) -> Run:
    """Run a controller for ``trials`` trials in rounds that mirror a search's concurrency.

    Each round asks for ``batch`` new archs (fewer in the last round) before any of them is
    told, looks them all up at once (``lookup`` gets ``(arch, arch string, k)`` with ``k`` the
    number of earlier lookups of that arch in this run) and then tells every result, in
    proposal order. ``repeats``:

    - ``record`` (the default, as in a search): a proposal whose arch is already recorded is
      answered from the record at once (the controller gets the stored observation; no new
      lookup, no noise drawn, not a trial) and the controller is asked again for the slot. A
      repeat of an arch pending in the same round is told that arch's result right after the
      round's new results. The run stops early after ``max_repeats`` consecutive repeats, or
      when the record holds all ``space_size`` archs.
    - ``train``: every proposal is a trial with a fresh lookup, repeats included (the
      behaviour before records answered repeats).

    Before the first ask a controller with a ``plan(budget, concurrency)`` method is told
    ``trials`` and ``batch``, as a search tells it its budget and concurrency.
    """
    if repeats not in REPEATS:
        raise ValueError(f"--repeats: unknown {repeats!r}; allowed: {', '.join(REPEATS)}")
    record: dict[str, TrialRecord] = {}
    looked: dict[str, int] = {}
    keys: list[str] = []
    recs: list[TrialRecord] = []
    proposed: set[str] = set()
    asks = n_repeats = streak = 0
    stop = None
    answer = repeats == "record"
    plan = getattr(ctrl, "plan", None)
    if callable(plan):
        plan(trials, batch)
    while len(keys) < trials and stop is None:
        want = min(batch, trials - len(keys))
        new: list[tuple[Any, str]] = []
        waiting: list[tuple[Any, str]] = []
        in_round: set[str] = set()
        while len(new) < want:
            if answer and space_size is not None and len(record) + len(new) >= space_size:
                stop = f"space exhausted: all {space_size:,} archs recorded"
                break
            arch = ctrl.ask()
            asks += 1
            key = arch.to_string()
            proposed.add(key)
            if answer and key in record:
                ctrl.feedback(arch, record[key].controller_view())
            elif answer and key in in_round:
                waiting.append((arch, key))
            else:
                new.append((arch, key))
                in_round.add(key)
                streak = 0
                continue
            n_repeats += 1
            streak += 1
            if streak >= max_repeats:
                stop = f"stopped after {streak:,} consecutive repeats"
                log.warning("%s: %s at %d trials", getattr(ctrl, "name", "controller"), stop, len(keys))
                break
        counts = []
        for _, key in new:
            counts.append(looked.get(key, 0))
            looked[key] = counts[-1] + 1
        results = lookup([(a, k, c) for (a, k), c in zip(new, counts)]) if new else []
        for (arch, key), rec in zip(new, results):
            record.setdefault(key, rec)
            keys.append(key)
            recs.append(rec)
            ctrl.feedback(arch, rec.controller_view())
        for arch, key in waiting:
            ctrl.feedback(arch, record[key].controller_view())
    return Run(keys, recs, asks, n_repeats, len(proposed), stop)


def _label(name: str, params: dict) -> str:
    return name if not params else f"{name}({', '.join(f'{k}={v}' for k, v in params.items())})"


def run_bench(table: Table, controllers: Sequence[str | tuple[str, dict]], *, seeds: int = 20, trials: int = 100,
              rcfg: RewardConfig | None = None, space=None, seed_offset: int = 0, batch: int = 1,
              repeats: str = "train", max_repeats: int = MAX_CONSECUTIVE_REPEATS) -> BenchResult:
    """Run each controller ``seeds`` times (seeds ``seed_offset``, +1, ...) for ``trials`` lookups each.

    The defaults (one ask at a time, repeats cost a trial) are the protocol of the published
    table benchmark (``benchmarks/controller_bench.py``); ``nas bench`` asks in batches of 8
    and answers repeats from the record (see :func:`run_controller`).
    """
    import search_spaces

    from .controllers import get_controller

    if space is None:
        space = search_spaces.get(DEFAULT_SPACE[0], **DEFAULT_SPACE[1])
    rcfg = rcfg or RewardConfig(target_ms=float(np.median(table.latency_ms)))
    table_rewards = table.rewards(rcfg)
    index = table.index
    ref_acc, ref_lat = float(table.accuracy.min()), float(table.latency_ms.max())
    hv_table = hypervolume(table.accuracy, table.latency_ms, ref_acc, ref_lat)

    def lookup(items):
        out = []
        for _, key, _ in items:
            i = index.get(key)
            if i is None:
                out.append(TrialRecord(status=Status.FAILED, reason="not in the table"))
            else:
                out.append(TrialRecord(status=Status.OK, reward=float(table_rewards[i]),
                                       accuracy=float(table.accuracy[i]), latency_ms=float(table.latency_ms[i])))
        return out

    rewards, best, hv, labels, counts = {}, {}, {}, {}, {}
    for entry in controllers:
        name, params = (entry, {}) if isinstance(entry, str) else entry
        key = _label(name, params)
        labels[key] = key
        R = np.full((seeds, trials), np.nan)
        B = np.full((seeds, trials), np.nan)
        H = np.zeros((seeds, trials))
        C = {"asks": np.zeros(seeds), "repeats": np.zeros(seeds), "distinct": np.zeros(seeds),
             "failed": np.zeros(seeds), "stopped": []}
        for s in range(seeds):
            ctrl = get_controller(name, space, seed=seed_offset + s, **params)
            run = run_controller(ctrl, lookup, trials=trials, batch=batch, repeats=repeats, max_repeats=max_repeats,
                                 space_size=space.size)
            C["asks"][s], C["repeats"][s], C["distinct"][s] = run.asks, run.repeats, run.distinct
            C["failed"][s] = sum(r.status is Status.FAILED for r in run.records)
            if run.stop:
                C["stopped"].append(f"seed {seed_offset + s}: {run.stop} at {len(run.keys)} trials")
            found: list[int] = []
            best_r = -math.inf
            for t in range(trials):
                i = index.get(run.keys[t]) if t < len(run.keys) else None
                if i is not None:
                    R[s, t] = table_rewards[i]
                    best_r = max(best_r, float(table_rewards[i]))
                    found.append(i)
                B[s, t] = best_r if math.isfinite(best_r) else np.nan
                if found and i is not None:
                    f = np.unique(found)
                    H[s, t] = hypervolume(table.accuracy[f], table.latency_ms[f], ref_acc, ref_lat)
                elif t:
                    H[s, t] = H[s, t - 1]
        rewards[key], best[key], hv[key], counts[key] = R, B, H, C
    return BenchResult(table, rcfg, trials, seeds, rewards, best, hv, float(np.nanmax(table_rewards)), hv_table,
                       labels, batch=batch, repeats=repeats, seed_offset=seed_offset, counts=counts)


# ------------------------------------------------------------------------------ surrogate

#: Trial counts at which the surrogate benchmark reports regret.
CHECKPOINTS = (25, 50, 100, 200)
BOOTSTRAP = 2000


def _bootstrap(values: np.ndarray, stat: Callable[[np.ndarray], np.ndarray], n: int = BOOTSTRAP,
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


def _mean(a: np.ndarray) -> np.ndarray:
    return a.mean(axis=1)


def _median(a: np.ndarray) -> np.ndarray:
    return np.quantile(a, 0.5, axis=1, method="inverted_cdf")


def _trials_to(score: np.ndarray, level: np.ndarray | float) -> np.ndarray:
    """Per seed, the first trial (1-based) at which the score reaches ``level``; inf if never."""
    hit = score >= np.asarray(level, float).reshape(-1, 1) - 1e-12
    first = np.argmax(hit, axis=1).astype(float) + 1
    first[~hit.any(axis=1)] = math.inf
    return first


@dataclass
class LandscapeResult:
    """Controllers on surrogate landscapes: per landscape and controller, (seeds, trials) arrays."""

    landscapes: list[Any]           #: nas.landscape.Landscape
    references: list[Any]           #: nas.landscape.Reference, one per landscape
    rcfg: RewardConfig
    labels: list[str]
    seeds: int
    seed_offset: int
    trials: int
    batch: int
    repeats: str
    #: (landscape index, label) -> (seeds, trials): true reward of the pick after each trial
    score: dict[tuple[int, str], np.ndarray]
    #: (landscape index, label) -> per seed: distinct archs proposed, asks, repeats
    counts: dict[tuple[int, str], dict[str, np.ndarray]]
    stopped: dict[tuple[int, str], list[str]]
    seconds: dict[str, float]
    reference_archs: int
    target_from_sample: bool

    @property
    def checkpoints(self) -> list[int]:
        return [t for t in CHECKPOINTS if t < self.trials] + [self.trials]

    @property
    def reference_label(self) -> str | None:
        return "random" if "random" in self.labels else None

    def regret(self, li: int, label: str) -> np.ndarray:
        return self.references[li].optimum - self.score[(li, label)]

    def summary(self) -> list[dict[str, Any]]:
        """Per landscape: {label: metrics}, each a (value, low, high) of the bootstrap."""
        out = []
        ref_label = self.reference_label
        for li, ref in enumerate(self.references):
            per: dict[str, Any] = {}
            rnd_final = self.score[(li, ref_label)][:, -1] if ref_label else None
            for label in self.labels:
                reg = self.regret(li, label)
                s: dict[str, Any] = {"regret": {}, "regret_median": {}}
                for t in self.checkpoints:
                    col = np.nan_to_num(reg[:, t - 1], nan=ref.optimum)  # no usable trial yet: the whole range
                    s["regret"][t] = _bootstrap(col, _mean)
                    s["regret_median"][t] = _bootstrap(col, _median)
                if ref_label and label != ref_label:
                    d = np.nan_to_num(reg[:, -1], nan=ref.optimum) - np.nan_to_num(
                        self.regret(li, ref_label)[:, -1], nan=ref.optimum)
                    s["regret_vs_random"] = _bootstrap(d, _mean)
                    s["better_than_random"] = int(np.sum(d < -1e-12))
                if rnd_final is not None:
                    hits = _trials_to(np.nan_to_num(self.score[(li, label)], nan=-math.inf), rnd_final)
                    s["trials_to_random_final"] = _bootstrap(hits, _median)
                    s["reached_random_final"] = int(np.isfinite(hits).sum())
                hits = _trials_to(np.nan_to_num(self.score[(li, label)], nan=-math.inf), ref.top1_threshold)
                s["trials_to_top1"] = _bootstrap(hits, _median)
                s["reached_top1"] = int(np.isfinite(hits).sum())
                c = self.counts[(li, label)]
                s["distinct_archs"] = _bootstrap(c["distinct"], _mean)
                s["asks"] = float(c["asks"].mean())
                s["repeats"] = float(c["repeats"].mean())
                s["stopped"] = self.stopped[(li, label)]
                per[label] = s
            out.append(per)
        return out

    # ----------------------------------------------------------------------------- output

    def _header(self) -> list[str]:
        land = self.landscapes[0]
        sp = land.space
        target = (f"target {self.rcfg.target_ms:.3f} ms" + (f" (the median latency of {self.reference_archs:,} random "
                                                           "archs)" if self.target_from_sample else ""))
        return [f"Surrogate landscapes over {sp.name} ({sp.resolution} px, width {sp.width:g}, depth {sp.depth:g}, "
                f"{sp.num_classes} classes; {sp.size:.2e} archs): {len(self.landscapes)} landscapes (seeds "
                f"{', '.join(str(x.seed) for x in self.landscapes)}); {self.seeds} run seeds "
                f"({_seed_range(self.seed_offset, self.seeds)[6:] if self.seeds > 1 else self.seed_offset}) x "
                f"{self.trials} trials per controller, asked in batches of {self.batch}, repeats {self.repeats}; "
                f"reward {self.rcfg.kind} (alpha, beta = {self.rcfg.exponents}), {target}; latency from "
                "edgetpu-model.", "", land.fit.text(), "", land.priors.text(), "",
                "Score of a run after t trials: the true (noise-free) reward of its pick, the arch with the best "
                "observed reward so far; regret: the landscape's estimated optimum minus that. Mean over seeds "
                f"[95% bootstrap interval, {BOOTSTRAP} resamples]; trial counts are medians (> budget: not reached) "
                "with k/n = seeds that reached it; 'vs random' is the paired mean difference of final regret (seed s "
                "against random's seed s; negative = lower regret), with the seeds where it is lower. Distinct: "
                "archs proposed per run; asks: proposals including repeats."]

    def markdown(self) -> str:
        lines = self._header()
        T = self.trials
        cps = self.checkpoints
        for li, (land, ref, per) in enumerate(zip(self.landscapes, self.references, self.summary())):
            lines += ["", f"### Landscape {land.seed}", "", ref.text() + ".", "",
                      "| controller | " + " | ".join(f"regret @{t}" for t in cps)
                      + f" | vs random @{T} | trials to random's final best | trials to top 1% | distinct | asks |",
                      "|---|" + "---|" * (len(cps) + 5)]
            for label, s in per.items():
                cells = [_ci(s["regret"][t]) for t in cps]
                vs = (f"{_ci(s['regret_vs_random'], sign=True)} ({s['better_than_random']}/{self.seeds})"
                      if "regret_vs_random" in s else "-")
                rf = (f"{_ci_trials(s['trials_to_random_final'], T)} ({s['reached_random_final']}/{self.seeds})"
                      if "trials_to_random_final" in s else "-")
                top = f"{_ci_trials(s['trials_to_top1'], T)} ({s['reached_top1']}/{self.seeds})"
                lines.append(f"| {label} | " + " | ".join(cells) + f" | {vs} | {rf} | {top} | "
                             f"{s['distinct_archs'][0]:.1f} | {s['asks']:.1f} |")
            stopped = [f"{label}: {x}" for label, s in per.items() for x in s["stopped"]]
            if stopped:
                lines += ["", "Runs that ended before their budget: " + "; ".join(stopped) + "."]
        lines += ["", "Time per run (mean over landscapes and seeds): " + ", ".join(
            f"{label} {self.seconds[label] / (self.seeds * len(self.landscapes)):.2f} s" for label in self.labels)
            + "."]
        return "\n".join(lines)

    def to_json(self) -> str:
        summ = self.summary()
        land0 = self.landscapes[0]
        out = {"mode": "surrogate", "space": {"name": land0.space.name, **land0.space.config()},
               "seeds": self.seeds, "seed_offset": self.seed_offset, "trials": self.trials, "batch": self.batch,
               "repeats": self.repeats, "controllers": self.labels, "checkpoints": self.checkpoints,
               "reward": {"kind": self.rcfg.kind, "target_ms": self.rcfg.target_ms, "exponents": self.rcfg.exponents,
                          "target_from_sample": self.target_from_sample},
               "reference_archs": self.reference_archs, "bootstrap": BOOTSTRAP,
               "model": {"fit": land0.fit.as_dict(), "priors": land0.priors.as_dict(), "text": land0.fit.text(),
                         "priors_text": land0.priors.text()},
               "seconds_per_run": {k: v / (self.seeds * len(self.landscapes)) for k, v in self.seconds.items()},
               "landscapes": []}
        for li, (land, ref, per) in enumerate(zip(self.landscapes, self.references, summ)):
            curves = {}
            for label in self.labels:
                reg = self.regret(li, label)
                curves[label] = {"mean_regret": _json_list(np.nanmean(reg, axis=0)),
                                 "median_regret": _json_list(np.nanmedian(reg, axis=0))}
            out["landscapes"].append({"seed": land.seed, "interacting_pairs": len(land.pair_index),
                                      "reference": ref.as_dict(),
                                      "summary": {k: {m: ({str(t): list(x) for t, x in v.items()}
                                                          if isinstance(v, dict) else v) for m, v in s.items()}
                                                  for k, s in per.items()},
                                      "curves": curves})
        return json.dumps(_finite(out), indent=1, allow_nan=False)

    def plot(self, path: str | Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = len(self.landscapes)
        fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.0), squeeze=False, sharey=True)
        x = np.arange(1, self.trials + 1)
        rng = np.random.default_rng(0)
        w = rng.multinomial(self.seeds, np.full(self.seeds, 1 / self.seeds), size=BOOTSTRAP) / self.seeds
        for li, ax in enumerate(axes[0]):
            for label in self.labels:
                reg = np.nan_to_num(self.regret(li, label), nan=self.references[li].optimum)
                m = reg.mean(axis=0)
                lo, hi = np.quantile(w @ reg, [0.025, 0.975], axis=0)
                line, = ax.plot(x, np.maximum(m, 1e-4), label=label)
                ax.fill_between(x, np.maximum(lo, 1e-4), np.maximum(hi, 1e-4), color=line.get_color(), alpha=0.2)
            for t in self.checkpoints:
                ax.axvline(t, color="0.85", lw=0.8, zorder=0)
            ax.set(xlabel="trials", yscale="log", title=f"landscape {self.landscapes[li].seed}")
            ax.grid(alpha=0.3, which="both")
        axes[0][0].set_ylabel("regret of the pick (true reward)")
        _save_with_legend_below(fig, axes[0][0], path, 4, 0.05,
                                f"{self.seeds} seeds, batch {self.batch}, repeats {self.repeats}: mean regret, "
                                "95% bootstrap bands")


def _ci(v: tuple[float, float, float], sign: bool = False) -> str:
    f = "{:+.4f}" if sign else "{:.4f}"
    return f"{f.format(v[0])} [{f.format(v[1])}, {f.format(v[2])}]"


def _ci_trials(v: tuple[float, float, float], budget: int) -> str:
    def one(x):
        return f"> {budget}" if math.isinf(x) else f"{x:g}"

    if all(math.isinf(x) for x in v):
        return one(v[0])
    return f"{one(v[0])} [{one(v[1])}, {one(v[2])}]"


def landscape_lookup(land, run_seed: int, rcfg: RewardConfig, truth: dict[str, float] | None = None):
    """The ``lookup`` of :func:`run_controller` on a landscape, for run seed ``run_seed``.

    Each item gets the true accuracy plus a fresh noise draw (keyed by landscape, seed, arch
    and lookup count: :meth:`~nas.landscape.Landscape.noise`), the predicted latency and the
    reward of those; an arch outside the space is a failed trial. ``truth`` collects each
    arch's true (noise-free) reward.
    """
    from .landscape import latencies

    truth = truth if truth is not None else {}

    def lookup(items):
        out: list[TrialRecord | None] = [None] * len(items)
        ok, idx = [], []
        for pos, (arch, key, k) in enumerate(items):
            try:
                idx.append(land.indices(arch))
                ok.append((pos, arch, key, k))
            except ValueError as e:
                out[pos] = TrialRecord(status=Status.FAILED, reason=f"not in the space: {e}")
        if ok:
            I = np.array(idx)
            lat, on, off = latencies([a for _, a, _, _ in ok])
            acc = land.observe(I, [land.noise(run_seed, key, k) for _, _, key, k in ok])
            true_acc = land.accuracy(I)
            for j, (pos, _, key, _) in enumerate(ok):
                truth[key] = reward(float(true_acc[j]), float(lat[j]), rcfg)
                out[pos] = TrialRecord(status=Status.OK, reward=reward(float(acc[j]), float(lat[j]), rcfg),
                                       accuracy=float(acc[j]), latency_ms=float(lat[j]), on_chip_bytes=int(on[j]),
                                       off_chip_bytes=int(off[j]), num_classes=land.space.num_classes,
                                       latency_source="edgetpu-model")
        return out

    return lookup


def run_landscapes(controllers: Sequence[str | tuple[str, dict]], *, landscapes: int | Sequence[int] = 3,
                   seeds: int = 20, seed_offset: int = 0, trials: int = 200, batch: int = 8, repeats: str = "record",
                   rcfg: RewardConfig | None = None, reward_args: dict[str, Any] | None = None,
                   reference_archs: int = 10_000, starts: int | None = None,
                   max_repeats: int = MAX_CONSECUTIVE_REPEATS,
                   progress: Callable[[str], None] | None = None) -> LandscapeResult:
    """Run every controller on every landscape for ``seeds`` paired seeds (see :mod:`nas.landscape`).

    ``landscapes`` is a count (seeds 0..N-1) or the landscape seeds. Run seed ``s`` (from
    ``seed_offset``) seeds the controller and keys the lookup noise, so every controller's
    seed ``s`` meets the same noise on the same arch. ``rcfg`` defaults to the reward
    ``reward_args`` (``RewardConfig`` fields but the target; default the hard MNAS reward) at
    the median latency of ``reference_archs`` random archs. The optimum search starts from
    the best ``starts`` of those (default: one in 1,000, at least 1, at most 10).
    """
    import time

    from .controllers import get_controller
    from .landscape import Landscape, calibrate, fit_table, latencies, random_sample

    seeds_l = list(range(landscapes)) if isinstance(landscapes, int) else list(landscapes)
    if not seeds_l:
        raise ValueError("--landscapes: expected at least 1")
    starts = starts if starts is not None else max(1, min(10, reference_archs // 1000))
    fit = fit_table()
    priors = calibrate(fit)
    lands = [Landscape(seed=ls, fit=fit, priors=priors) for ls in seeds_l]
    space = lands[0].space
    sample = random_sample(space, reference_archs)
    target_from_sample = rcfg is None
    if rcfg is None:
        lat = latencies([lands[0].arch(i) for i in sample])[0]
        rcfg = RewardConfig(target_ms=float(np.median(lat)), **({"preset": "hard"} | (reward_args or {})))
    refs = []
    for land in lands:
        t0 = time.perf_counter()
        rcfg, ref = land.reference(rcfg, sample, starts=starts)
        refs.append(ref)
        if progress:
            progress(f"landscape {land.seed}: {ref.text()} ({time.perf_counter() - t0:.0f} s)")
    specs = [(e, {}) if isinstance(e, str) else e for e in controllers]
    labels = [_label(n, p) for n, p in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--controller: each controller once; given {', '.join(labels)}")
    score, counts, stopped = {}, {}, {}
    seconds = dict.fromkeys(labels, 0.0)
    best_seen: dict[int, tuple[float, str]] = {}
    for li, land in enumerate(lands):
        for (name, params), label in zip(specs, labels):
            S = np.full((seeds, trials), np.nan)
            C = {"distinct": np.zeros(seeds), "asks": np.zeros(seeds), "repeats": np.zeros(seeds)}
            stops = []
            t0 = time.perf_counter()
            for s in range(seeds):
                run_seed = seed_offset + s
                truth: dict[str, float] = {}
                lookup = landscape_lookup(land, run_seed, rcfg, truth)
                ctrl = get_controller(name, space, seed=run_seed, **params)
                run = run_controller(ctrl, lookup, trials=trials, batch=batch, repeats=repeats,
                                     max_repeats=max_repeats, space_size=space.size)
                pick, pick_obs = None, -math.inf
                for t in range(trials):
                    if t < len(run.keys):
                        r = run.records[t].reward
                        if run.records[t].usable and r > pick_obs:
                            pick, pick_obs = run.keys[t], r
                    S[s, t] = truth[pick] if pick is not None else np.nan
                C["distinct"][s], C["asks"][s], C["repeats"][s] = run.distinct, run.asks, run.repeats
                if run.stop:
                    stops.append(f"seed {run_seed}: {run.stop} at {len(run.keys)} trials")
                if truth:
                    k = max(truth, key=truth.get)
                    if truth[k] > best_seen.get(li, (-math.inf, ""))[0]:
                        best_seen[li] = (truth[k], k)
            seconds[label] += time.perf_counter() - t0
            score[(li, label)], counts[(li, label)], stopped[(li, label)] = S, C, stops
            if progress:
                progress(f"landscape {land.seed}, {label}: {seeds} seeds in {time.perf_counter() - t0:.1f} s")
    for li, ref in enumerate(refs):  # the optimum is an estimate: any better arch a run met replaces it
        if li in best_seen and best_seen[li][0] > ref.optimum + 1e-12:
            from search_spaces import Arch

            val, key = best_seen[li]
            arch = Arch.from_string(key)
            ref.optimum, ref.optimum_arch, ref.raised_by_run = val, key, True
            ref.optimum_accuracy = float(lands[li].accuracy(lands[li].indices(arch))[0])
            ref.optimum_latency_ms = float(latencies([arch])[0][0])
    return LandscapeResult(lands, refs, rcfg, labels, seeds, seed_offset, trials, batch, repeats, score, counts,
                           stopped, seconds, reference_archs, target_from_sample)
