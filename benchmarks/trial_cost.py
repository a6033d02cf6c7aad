"""The fixed and per-epoch cost of a trial, old training path vs new, side by side in one run.

    python benchmarks/trial_cost.py [--archs 10] [--seeds 2] [--out benchmarks/results]
    python benchmarks/trial_cost.py --quickstart [--repeats 1]

**Trials.** ``--archs`` members of the quickstart's space (``experiments/quickstart.yaml``:
the deployment model at 128 px, its proxy at 32 px, width 0.25, depth 0.5, 2,000 training
images, batch 64, 3 epochs), each trained through :func:`nas.trial.entry.run_trial` on one
thread, as a quickstart trial is, by every path in ``PATHS`` and with each of ``--seeds``
seeds, the paths alternating so the machine's state is shared. For each trial:

- *epoch cost*: the mean of its 2nd and 3rd epochs (validation included);
- *fixed cost*: the trial's wall time minus 3 epoch costs: building the model, tracing and
  first-running the step, the latency reading (all that does not scale with epochs);
- accuracy. The old and new paths run the same arch with the same seed; the *re-run
  noise* is the spread of one path's accuracy over seeds (a seed changes the data split,
  the initial weights and the shuffling), which is what "within re-run noise" compares with.

**Quickstart** (``--quickstart``): ``nas search experiments/quickstart.yaml`` through the CLI
on the embedded Ray, with the old path (``train.loop: keras``) and the new default,
alternating, ``--repeats`` times each: wall time and the trials' times.

Writes ``trial_cost.json``/``.md`` (or ``quickstart_time.json``/``.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"

#: label -> train-section overrides. "keras" is the path before this benchmark's change.
PATHS = {
    "keras (model.fit)": {"loop": "keras"},
    "step + grappler": {"loop": "step", "graph_optimizer": True},
    "step (default)": {"loop": "step", "graph_optimizer": False},
}
OLD, NEW = "keras (model.fit)", "step (default)"


def trials(n_archs: int, seeds: int) -> dict:
    import search_spaces
    from nas.config import load_experiment
    from nas.trial import load_data
    from nas.trial import run_trial

    base = load_experiment(QUICKSTART)
    for seed in range(seeds):  # a warm worker has its data loaded: keep loading out of the trial times
        load_data(base.model_copy(update={"seed": seed}), base.proxy.resolution)
    space = search_spaces.get(base.space.name, **base.space.kwargs())
    rng = np.random.default_rng(2024)
    archs = [space.sample(rng).to_string() for _ in range(n_archs)]
    rows = []
    for i, arch in enumerate(archs):
        for seed in range(seeds):
            order = list(PATHS) if (i + seed) % 2 == 0 else list(reversed(PATHS))
            for label in order:
                if label != NEW and label != OLD and seed > 0:
                    continue  # the grappler variant once per arch: it is not what the noise test compares
                cfg = base.model_copy(update={"seed": seed, "train": base.train.model_copy(update=PATHS[label])})
                ends: list[float] = []
                rec = run_trial(arch, cfg, report=lambda r: ends.append(r.train_s))
                ends.append(rec.train_s)
                epoch = statistics.mean(np.diff(ends)) if len(ends) > 1 else float("nan")
                row = {"arch": arch, "seed": seed, "path": label, "status": str(rec.status), "accuracy": rec.accuracy,
                       "trial_s": rec.trial_s, "build_s": rec.build_s, "latency_s": rec.latency_s, "train_s": rec.train_s,
                       "epoch_ends_s": ends, "epoch_s": epoch, "first_epoch_s": ends[0],
                       "fixed_s": rec.trial_s - len(ends) * epoch, "proxy_params": rec.proxy_params}
                rows.append(row)
                print(f"[{i + 1}/{n_archs} seed {seed}] {label:18s} trial {rec.trial_s:6.2f} s  epoch {epoch:5.2f} s  "
                      f"fixed {row['fixed_s']:6.2f} s  acc {rec.accuracy}", flush=True)
    return {"archs": archs, "rows": rows}


def summarise(data: dict) -> dict:
    rows = data["rows"]
    out = {}
    for label in PATHS:
        r = [x for x in rows if x["path"] == label]
        out[label] = {k: statistics.median(x[k] for x in r) for k in ("trial_s", "fixed_s", "epoch_s", "first_epoch_s",
                                                                      "build_s")}
        out[label]["fixed_over_epoch"] = statistics.median(x["fixed_s"] / x["epoch_s"] for x in r)
        out[label]["n"] = len(r)
    acc = {(x["arch"], x["seed"], x["path"]): x["accuracy"] for x in rows}
    seeds = sorted({x["seed"] for x in rows})
    same_seed = [abs(acc[(a, s, NEW)] - acc[(a, s, OLD)]) for a in data["archs"] for s in seeds]
    rerun = [abs(acc[(a, seeds[0], p)] - acc[(a, seeds[1], p)]) for a in data["archs"] for p in (OLD, NEW)] \
        if len(seeds) > 1 else []
    new_mean = [np.mean([acc[(a, s, NEW)] for s in seeds]) for a in data["archs"]]
    old_mean = [np.mean([acc[(a, s, OLD)] for s in seeds]) for a in data["archs"]]
    from scipy.stats import spearmanr, ttest_rel

    out["accuracy"] = {
        "median_abs_diff_same_seed": float(np.median(same_seed)), "max_abs_diff_same_seed": float(np.max(same_seed)),
        "median_abs_diff_rerun": float(np.median(rerun)) if rerun else None,
        "max_abs_diff_rerun": float(np.max(rerun)) if rerun else None,
        "mean_new_minus_old": float(np.mean(np.array(new_mean) - np.array(old_mean))),
        "paired_t_p": float(ttest_rel(new_mean, old_mean).pvalue),
        "spearman_old_new": float(spearmanr(old_mean, new_mean)[0]),
    }
    return out


def trials_markdown(data: dict, s: dict) -> str:
    lines = ["# Trial cost: old vs new training path", "",
             f"`python benchmarks/trial_cost.py --archs {len(data['archs'])} --seeds {len({r['seed'] for r in data['rows']})}`"
             " (quickstart trial: proxy 32 px / width 0.25 / depth 0.5, 2,000 images, batch 64, 3 epochs, one thread).",
             "", "| path | trials | trial (s) | fixed (s) | epoch (s) | fixed / epoch | first epoch (s) | build (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for label in PATHS:
        v = s[label]
        lines.append(f"| {label} | {v['n']} | {v['trial_s']:.2f} | {v['fixed_s']:.2f} | {v['epoch_s']:.2f} | "
                     f"{v['fixed_over_epoch']:.2f} | {v['first_epoch_s']:.2f} | {v['build_s']:.2f} |")
    a = s["accuracy"]
    lines += ["", "Medians over trials. Fixed = trial wall time minus 3 x the epoch cost (mean of epochs 2-3).", "",
              "Accuracy, old vs new path on the same archs:", "",
              f"- same arch, same seed: median |diff| {a['median_abs_diff_same_seed']:.3f}, "
              f"max {a['max_abs_diff_same_seed']:.3f}"]
    if a["median_abs_diff_rerun"] is not None:
        lines.append(f"- re-run noise (same arch and path, another seed): median |diff| "
                     f"{a['median_abs_diff_rerun']:.3f}, max {a['max_abs_diff_rerun']:.3f}")
    lines += [f"- mean (new - old) over archs, seeds averaged: {a['mean_new_minus_old']:+.4f} "
              f"(paired t-test p = {a['paired_t_p']:.2f}); Spearman of the archs' accuracies, old vs new: "
              f"{a['spearman_old_new']:.2f}", "", "| arch | seed | path | accuracy | trial (s) | fixed (s) |",
              "|---|---|---|---|---|---|"]
    idx = {a: i for i, a in enumerate(data["archs"])}
    for r in data["rows"]:
        lines.append(f"| {idx[r['arch']]} | {r['seed']} | {r['path']} | {r['accuracy']:.3f} | {r['trial_s']:.2f} | "
                     f"{r['fixed_s']:.2f} |")
    lines += ["", "Archs:", ""] + [f"{i}. `{a}`" for i, a in enumerate(data["archs"])]
    return "\n".join(lines) + "\n"


def quickstart(repeats: int) -> dict:
    runs = []
    exe = Path(sys.executable).with_name("nas")
    for rep in range(repeats):
        for label, train in (("old (train.loop: keras)", {"loop": "keras"}), ("new (defaults)", {})):
            cfg = yaml.safe_load(QUICKSTART.read_text())
            cfg["train"].update(train)
            with tempfile.TemporaryDirectory() as tmp:
                exp = Path(tmp) / "quickstart.yaml"
                exp.write_text(yaml.safe_dump(cfg, sort_keys=False))
                t = time.perf_counter()
                p = subprocess.run([str(exe), "search", str(exp), "--out", str(Path(tmp) / "run")],
                                   capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
                wall = time.perf_counter() - t
                if p.returncode != 0:
                    raise SystemExit(f"{label}: nas search failed ({p.returncode}):\n{p.stderr[-3000:]}")
                from nas.core import read_csv

                recs = read_csv((Path(tmp) / "run" / "trials.csv").read_text())
            t_s = [r.trial_s for r in recs]
            runs.append({"label": label, "repeat": rep, "wall_s": wall, "trials": len(recs),
                         "median_trial_s": statistics.median(t_s), "max_trial_s": max(t_s),
                         "ok": sum(str(r.status) == "ok" for r in recs)})
            print(f"{label}: {wall:.0f} s, {len(recs)} trials, median trial {statistics.median(t_s):.1f} s", flush=True)
    return {"runs": runs}


def quickstart_markdown(d: dict) -> str:
    lines = ["# Quickstart wall time, old vs new training path", "",
             f"`python benchmarks/trial_cost.py --quickstart --repeats {max(r['repeat'] for r in d['runs']) + 1}` "
             "(`nas search experiments/quickstart.yaml`, embedded Ray, 12 trials, concurrency 2, 2 cores).", "",
             "| run | repeat | wall (s) | trials | ok | median trial (s) | slowest trial (s) |", "|---|---|---|---|---|---|---|"]
    for r in d["runs"]:
        lines.append(f"| {r['label']} | {r['repeat']} | {r['wall_s']:.0f} | {r['trials']} | {r['ok']} | "
                     f"{r['median_trial_s']:.1f} | {r['max_trial_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--quickstart", action="store_true")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.quickstart:
        d = quickstart(a.repeats)
        (out / "quickstart_time.json").write_text(json.dumps(d, indent=1))
        (out / "quickstart_time.md").write_text(quickstart_markdown(d))
        print(quickstart_markdown(d))
        return
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)  # a quickstart trial's one CPU
    tf.config.threading.set_inter_op_parallelism_threads(1)
    data = trials(a.archs, a.seeds)
    s = summarise(data)
    (out / "trial_cost.json").write_text(json.dumps({**data, "summary": s}, indent=1))
    md = trials_markdown(data, s)
    (out / "trial_cost.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
