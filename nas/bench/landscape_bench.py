"""``nas bench --mode surrogate``: controllers on the surrogate landscapes of :mod:`nas.bench.landscape`.

Every controller runs on every landscape for the same run seeds (paired: a seed meets the
same lookup noise on the same arch whatever the controller) through
:func:`nas.bench.bench.run_controller`, the loop of the table mode. The score of a run after ``t``
trials is the true (noise-free) reward of its pick, the arch with the best observed reward so
far; :class:`LandscapeResult` reports regret, trials to reach random search's final best and
the top 1%, with bootstrap intervals over seeds. See :func:`run_landscapes`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from search_spaces import Arch

from nas.bench.bench import MAX_CONSECUTIVE_REPEATS, controller_label, run_controller
from nas.bench.stats import (BOOTSTRAP, bootstrap, ci_text, ci_trials_text, finite, json_list, row_mean, row_median,
                          save_with_legend_below, seed_range, trials_to)
from nas.controllers.base import get_controller
from nas.bench.landscape import Landscape, Reference, latencies, random_sample
from nas.bench.landscape_fit import calibrate, fit_table
from nas.core.record import Status, TrialRecord
from nas.core.reward import RewardConfig, reward

#: Trial counts at which the surrogate benchmark reports regret.
CHECKPOINTS = (25, 50, 100, 200)


@dataclass
class LandscapeResult:
    """Controllers on surrogate landscapes: per landscape and controller, (seeds, trials) arrays."""

    landscapes: list[Landscape]
    references: list[Reference]     #: one per landscape
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
                    s["regret"][t] = bootstrap(col, row_mean)
                    s["regret_median"][t] = bootstrap(col, row_median)
                if ref_label and label != ref_label:
                    d = np.nan_to_num(reg[:, -1], nan=ref.optimum) - np.nan_to_num(
                        self.regret(li, ref_label)[:, -1], nan=ref.optimum)
                    s["regret_vs_random"] = bootstrap(d, row_mean)
                    s["better_than_random"] = int(np.sum(d < -1e-12))
                if rnd_final is not None:
                    hits = trials_to(np.nan_to_num(self.score[(li, label)], nan=-math.inf), rnd_final)
                    s["trials_to_random_final"] = bootstrap(hits, row_median)
                    s["reached_random_final"] = int(np.isfinite(hits).sum())
                hits = trials_to(np.nan_to_num(self.score[(li, label)], nan=-math.inf), ref.top1_threshold)
                s["trials_to_top1"] = bootstrap(hits, row_median)
                s["reached_top1"] = int(np.isfinite(hits).sum())
                c = self.counts[(li, label)]
                s["distinct_archs"] = bootstrap(c["distinct"], row_mean)
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
                f"({seed_range(self.seed_offset, self.seeds)[6:] if self.seeds > 1 else self.seed_offset}) x "
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
                cells = [ci_text(s["regret"][t]) for t in cps]
                vs = (f"{ci_text(s['regret_vs_random'], sign=True)} ({s['better_than_random']}/{self.seeds})"
                      if "regret_vs_random" in s else "-")
                rf = (f"{ci_trials_text(s['trials_to_random_final'], T)} ({s['reached_random_final']}/{self.seeds})"
                      if "trials_to_random_final" in s else "-")
                top = f"{ci_trials_text(s['trials_to_top1'], T)} ({s['reached_top1']}/{self.seeds})"
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
                curves[label] = {"mean_regret": json_list(np.nanmean(reg, axis=0)),
                                 "median_regret": json_list(np.nanmedian(reg, axis=0))}
            out["landscapes"].append({"seed": land.seed, "interacting_pairs": len(land.pair_index),
                                      "reference": ref.as_dict(),
                                      "summary": {k: {m: ({str(t): list(x) for t, x in v.items()}
                                                          if isinstance(v, dict) else v) for m, v in s.items()}
                                                  for k, s in per.items()},
                                      "curves": curves})
        return json.dumps(finite(out), indent=1, allow_nan=False)

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
        save_with_legend_below(fig, axes[0][0], path, 4, 0.05,
                               f"{self.seeds} seeds, batch {self.batch}, repeats {self.repeats}: mean regret, "
                               "95% bootstrap bands")


def landscape_lookup(land, run_seed: int, rcfg: RewardConfig, truth: dict[str, float] | None = None):
    """The ``lookup`` of :func:`~nas.bench.bench.run_controller` on a landscape, for run seed ``run_seed``.

    Each item gets the true accuracy plus a fresh noise draw (keyed by landscape, seed, arch
    and lookup count: :meth:`~nas.bench.landscape.Landscape.noise`), the predicted latency and the
    reward of those; an arch outside the space is a failed trial. ``truth`` collects each
    arch's true (noise-free) reward.
    """
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
    """Run every controller on every landscape for ``seeds`` paired seeds (see :mod:`nas.bench.landscape`).

    ``landscapes`` is a count (seeds 0..N-1) or the landscape seeds. Run seed ``s`` (from
    ``seed_offset``) seeds the controller and keys the lookup noise, so every controller's
    seed ``s`` meets the same noise on the same arch. ``rcfg`` defaults to the reward
    ``reward_args`` (``RewardConfig`` fields but the target; default the hard MNAS reward) at
    the median latency of ``reference_archs`` random archs. The optimum search starts from
    the best ``starts`` of those (default: one in 1,000, at least 1, at most 10).
    """
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
        args = reward_args or {}
        default = {"preset": "hard"} if args.get("kind", "mnas") == "mnas" else {}
        rcfg = RewardConfig(target_ms=float(np.median(lat)), **(default | args))
    refs = []
    for land in lands:
        t0 = time.perf_counter()
        rcfg, ref = land.reference(rcfg, sample, starts=starts)
        refs.append(ref)
        if progress:
            progress(f"landscape {land.seed}: {ref.text()} ({time.perf_counter() - t0:.0f} s)")
    specs = [(e, {}) if isinstance(e, str) else e for e in controllers]
    labels = [controller_label(n, p) for n, p in specs]
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
            val, key = best_seen[li]
            arch = Arch.from_string(key)
            ref.optimum, ref.optimum_arch, ref.raised_by_run = val, key, True
            ref.optimum_accuracy = float(lands[li].accuracy(lands[li].indices(arch))[0])
            ref.optimum_latency_ms = float(latencies([arch])[0][0])
    return LandscapeResult(lands, refs, rcfg, labels, seeds, seed_offset, trials, batch, repeats, score, counts,
                           stopped, seconds, reference_archs, target_from_sample)
