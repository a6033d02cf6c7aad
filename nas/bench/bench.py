"""``nas bench`` on a table: controllers by lookup instead of training, and the loop both modes share.

**Table mode** (:func:`run_bench`, :class:`BenchResult`): each proposal is looked up in a
table of trained archs (:mod:`nas.bench.table`); an arch missing from the table is a failed
trial. For each controller and seed the benchmark reports trials to reach the table's best
reward (and 99% of it), simple regret and the Pareto hypervolume (accuracy vs latency) over
trials, and when each controller's mean best-so-far reaches random search's final one.

**Surrogate mode** (:mod:`nas.bench.landscape_bench`): landscapes over the whole
``efficientnet_edgetpu`` space (:mod:`nas.bench.landscape`), with noisy lookups; the score of a
run is the true reward of its pick.

Both modes run the same controller code, reward and :class:`~nas.ledger.ledger.Ledger` as ``nas
search`` through :func:`run_controller`: asks in rounds of ``batch`` before any is told (a search's
concurrency), and a proposal of an arch already recorded answered from the record
(``repeats="record"``) or spent as a trial (``"train"``).

>>> from nas.bench.bench import run_bench
>>> from nas.bench.table import Table
>>> table = Table.load()                                            # doctest: +SKIP
>>> res = run_bench(table, ["random", "evolution"], seeds=5, trials=50)  # doctest: +SKIP
>>> res.summary()["evolution"]["trials_to_random_final"]            # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import search_spaces

from nas.bench.stats import (band, finite, first_hit, hypervolume, json_list, mean_ci, median_hits, reached_text,
                          save_with_legend_below, seed_range)
from nas.bench.table import DEFAULT_SPACE, Table
from nas.controllers.base import get_controller
from nas.core.errors import Finished
from nas.ledger.ledger import Ledger
from nas.core.record import Status, TrialRecord
from nas.core.reward import RewardConfig

log = logging.getLogger(__name__)


# ------------------------------------------------------------ the loop both modes share

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

    The bookkeeping is a search's :class:`~nas.ledger.ledger.Ledger` (its ``repeats``, ``max_repeats``
    and space exhaustion), so a benchmark and a search treat repeats alike. Before the first
    ask the controller is told ``plan(trials, batch)``, as a search tells it its budget and
    concurrency.
    """
    if repeats not in REPEATS:
        raise ValueError(f"--repeats: unknown {repeats!r}; allowed: {', '.join(REPEATS)}")
    # The ledger of a search, with a round of ``batch`` trials out at a time: repeats are
    # answered, waited for and counted exactly as in ``nas search``.
    ledger = Ledger(None, trials, ctrl, plan=(trials, batch), repeats=repeats, max_repeats=max_repeats,
                    space_size=space_size)
    asked_before = ctrl.n_proposed
    looked: dict[str, int] = {}
    stop = None
    while ledger.n_done < trials and stop is None:
        new: list[tuple[str, str]] = []  # (trial id, arch string)
        for _ in range(min(batch, trials - ledger.n_done)):
            tid = f"t{len(ledger.archs)}"
            try:
                new.append((tid, ledger.suggest(tid)))
            except Finished as e:  # the budget is never spent mid-round: converged or exhausted
                stop = str(e)
                break
        counts = []
        for _, key in new:
            counts.append(looked.get(key, 0))
            looked[key] = counts[-1] + 1
        results = lookup([(ledger.parsed(k), k, c) for (_, k), c in zip(new, counts)]) if new else []
        for (tid, _), rec in zip(new, results):
            ledger.record(tid, rec)
        ledger.tell(*(tid for tid, _ in new))
    recs = ledger.ordered_results()
    return Run([r.arch for r in recs], recs, ctrl.n_proposed - asked_before, ledger.n_repeats,
               ledger.n_distinct, stop)


def controller_label(name: str, params: dict) -> str:
    """How a controller and its parameters are named in the results: ``mnas(batch_size=4)``."""
    return name if not params else f"{name}({', '.join(f'{k}={v}' for k, v in params.items())})"


# --------------------------------------------------------------------------- table mode


@dataclass
class BenchResult:
    """Controllers on a table: per controller, (seeds, trials) arrays of what each run found."""

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
            mean_curve = band(best)[0]
            hit = [first_hit(row >= self.table_best - 1e-12) for row in best]
            hit99 = [first_hit(row >= 0.99 * self.table_best) for row in best]
            s: dict[str, Any] = {
                "label": self.labels.get(name, name),
                "final_best_reward": mean_ci(best[:, -1]),
                "final_regret": mean_ci(self.table_best - best[:, -1]),
                "final_hv_fraction": mean_ci(self.hv_so_far[name][:, -1] / self.hv_table),
                "reached_best": f"{sum(h is not None for h in hit)}/{len(hit)}",
                "trials_to_best_median": median_hits(hit, self.trials),
                "trials_to_99pct_median": median_hits(hit99, self.trials),
                "failed_lookups": int(self.counts[name]["failed"].sum()) if name in self.counts
                else int(np.isnan(self.rewards[name]).sum()),
            }
            c = self.counts.get(name)
            if c:
                s |= {"distinct_archs": float(c["distinct"].mean()), "asks": float(c["asks"].mean()),
                      "repeats": float(c["repeats"].mean()), "stopped": c["stopped"]}
            if random_final is not None:
                t = first_hit(mean_curve >= random_final - 1e-12)
                s["trials_to_random_final"] = t
                s["meets_half_budget_target"] = t is not None and t <= self.trials / 2
            out[name] = s
        return out

    def to_json(self) -> str:
        return json.dumps(finite({"table": self.table.source, "archs": len(self.table), "trials": self.trials,
                           "latency": self.table.latency,
                           "seeds": self.seeds, "seed_offset": self.seed_offset, "batch": self.batch,
                           "repeats": self.repeats, "reward": {"kind": self.rcfg.kind, "target_ms": self.rcfg.target_ms,
                                                           "exponents": self.rcfg.exponents},
                           "table_best_reward": self.table_best, "noise": self.table.noise(),
                           "summary": self.summary(),
                           "curves": {n: {"best_so_far_mean": json_list(band(b)[0]),
                                          "hv_fraction_mean": json_list(band(self.hv_so_far[n])[0]
                                                                         / self.hv_table)}
                                      for n, b in self.best_so_far.items()}}), indent=1, allow_nan=False)

    def markdown(self) -> str:
        of_space = (f" of a {self.table.space.size:,}-point space ({len(self.table.space.decision_list)} decisions)"
                    if self.table.space is not None else "")
        lines = [f"table {Path(self.table.source).name}: {len(self.table)} archs{of_space}; reward {self.rcfg.kind} "
                 f"target {self.rcfg.target_ms:.3f} ms of {self.table.latency} latency "
                 f"(alpha, beta = {self.rcfg.exponents}); best reward in the "
                 f"table {self.table_best:.4f}; {self.seeds} seeds ({seed_range(self.seed_offset, self.seeds)}) x "
                 f"{self.trials} trials, batch {self.batch}, repeats {self.repeats}", "",
                 "| controller | final best reward | final regret | HV fraction | reached best | trials to best "
                 "(median) | to 99% | reaches random's final best at | distinct archs | asks |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for name, s in self.summary().items():
            fb, fr, hv = s["final_best_reward"], s["final_regret"], s["final_hv_fraction"]
            lines.append(f"| {s['label']} | {fb[0]:.4f} ± {fb[1]:.4f} | {fr[0]:.4f} ± {fr[1]:.4f} | "
                         f"{hv[0]:.3f} ± {hv[1]:.3f} | {s['reached_best']} | {s['trials_to_best_median']} | "
                         f"{s['trials_to_99pct_median']} | {reached_text(s.get('trials_to_random_final'), self.trials)} | "
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
            m, h = band(regret)
            line, = ax1.plot(x, m, label=label)
            ax1.fill_between(x, np.maximum(m - h, 1e-5), m + h, color=line.get_color(), alpha=0.2)
            hv = self.hv_so_far[name] / self.hv_table
            m, h = band(hv)
            ax2.plot(x, m, label=label, color=line.get_color())
            ax2.fill_between(x, m - h, np.minimum(m + h, 1), color=line.get_color(), alpha=0.2)
        ax1.set(xlabel="trials", ylabel="simple regret (reward)", yscale="log",
                title="best reward in the table minus best found")
        ax2.set(xlabel="trials", ylabel="hypervolume / table's", ylim=(0, 1.02),
                title=f"Pareto hypervolume (accuracy vs {self.table.latency} latency)")
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
        # One legend under both panels: controller labels with parameters are long.
        save_with_legend_below(fig, ax1, path, 3, 0.045,
                               f"{Path(self.table.source).name}: {len(self.table)} archs, mean of {self.seeds} "
                               "seeds, 95% confidence bands")


def run_bench(table: Table, controllers: Sequence[str | tuple[str, dict]], *, seeds: int = 20, trials: int = 100,
              rcfg: RewardConfig | None = None, space=None, seed_offset: int = 0, batch: int = 1,
              repeats: str = "train", max_repeats: int = MAX_CONSECUTIVE_REPEATS) -> BenchResult:
    """Run each controller ``seeds`` times (seeds ``seed_offset``, +1, ...) for ``trials`` lookups each.

    ``space`` defaults to the table's own (a decision table) or the shipped table's. The
    defaults (one ask at a time, repeats cost a trial) are the protocol of the published
    table benchmark (``benchmarks/controller_bench.py``); ``nas bench`` asks in batches of 8
    and answers repeats from the record (see :func:`run_controller`).
    """
    if space is None:  # a decision table is its own space; an arch table's archs are the default space's
        space = table.space or search_spaces.get(DEFAULT_SPACE[0], **DEFAULT_SPACE[1])
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
        key = controller_label(name, params)
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
