"""Resident memory of one Ray worker over a long run of trials: it must stay flat.

    python benchmarks/memory_over_trials.py [--trials 50] [--compare] [--out benchmarks/results]

Runs a search of ``--trials`` random EfficientNet-EdgeTPU variants (32 px, width 0.25,
depth 0.5; 1,000 MNIST digits, 2 epochs) through the embedded Ray at concurrency 1, so
every trial runs in the same reused worker process, and reads each trial's resident memory
after its clean-up (``rss_mb`` in trials.csv). Reports the first/last values, the growth
per trial fitted over the second half (after TensorFlow's one-off warm-up) and a plot.

The search runs with the toolkit's defaults: jemalloc as the workers' allocator
(``train.allocator``) and TensorFlow's oneDNN kernels off (``train.onednn``). ``--compare``
also runs the same trials twice more, one after the other, each flipping one default: with
glibc's malloc (worker memory creeps up as TensorFlow's small long-lived allocations pin
freed pages) and with oneDNN on (its never-freed per-shape kernel caches grow the worker).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

EXPERIMENT = {
    "version": 1, "name": "memory", "seed": 0,
    "space": {"name": "efficientnet_edgetpu", "resolution": 32, "width": 0.25, "depth": 0.5},
    "controller": {"name": "random"},
    "reward": {"target_ms": 1.8},
    "data": {"source": "mnist5k", "limit": 1000},
    "train": {"epochs": 2, "batch_size": 64, "learning_rate": 0.003},
    "budget": {"trials": 50, "concurrency": 1, "cpus_per_trial": 2},
}


def run_search(trials: int, train: dict | None = None, ray: dict | None = None) -> tuple[list[float], float]:
    """RSS after each trial (MB, in the order proposed) and the wall time of the search."""
    exp = {**EXPERIMENT, "budget": {**EXPERIMENT["budget"], "trials": trials},
           "train": {**EXPERIMENT["train"], **(train or {})}, "ray": ray or {}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "memory.yaml"
        path.write_text(yaml.safe_dump(exp))
        run = Path(tmp) / "run"
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "nas.cli", "search", str(path), "--out", str(run), "--no-progress"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        wall = time.time() - t0
        with open(run / "trials.csv") as f:
            rows = list(csv.DictReader(f))  # in the order the trials were proposed (one at a time here)
    return [float(r["rss_mb"]) for r in rows if r["rss_mb"]], wall


def summary(label: str, rss, wall: float) -> str:
    import numpy as np

    rss = np.asarray(rss)
    n = len(rss)
    half = np.arange(n // 2, n)
    slope = float(np.polyfit(half, rss[half], 1)[0]) if len(half) > 2 else float("nan")
    return (f"{label}: {n} trials, {wall:.0f} s: RSS after trial 1 {rss[0]:.0f} MB, after trial "
            f"{n // 2} {rss[n // 2 - 1]:.0f} MB, after trial {n} {rss[-1]:.0f} MB; max {rss.max():.0f} MB; growth "
            f"over the second half {slope:+.2f} MB/trial")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--compare", action="store_true",
                    help="also run with glibc's malloc and with oneDNN on, and plot all three")
    ap.add_argument("--fresh-workers", action="store_true",
                    help="only run with ray.reuse_workers: false (a new worker process per trial)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    import numpy as np

    if args.fresh_workers:
        runs = {"a fresh worker per trial (ray.reuse_workers: false)": run_search(args.trials,
                                                                                  ray={"reuse_workers": False})}
    else:
        runs = {"jemalloc, oneDNN off (the defaults)": run_search(args.trials)}
    if args.compare and not args.fresh_workers:
        runs["glibc malloc (train.allocator: system)"] = run_search(args.trials, train={"allocator": "system"})
        runs["oneDNN on (train.onednn: true)"] = run_search(args.trials, train={"onednn": True})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [summary(label, rss, wall) for label, (rss, wall) in runs.items()]
    text = "\n".join(f"- {ln}" for ln in lines) + "\n\nRSS after each trial (MB):\n\n" + "\n".join(
        f"- {label}: " + " ".join(f"{v:.0f}" for v in rss) for label, (rss, _) in runs.items())
    name = "memory_fresh_workers" if args.fresh_workers else "memory_over_trials"
    (out / f"{name}.md").write_text(text + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 3.5))
    top = 100.0
    for label, (rss, _) in runs.items():
        ax.plot(np.arange(1, len(rss) + 1), rss, marker="o", ms=3, label=label)
        top = max(top, max(rss) * 1.2)
    ax.set(xlabel="trial" if args.fresh_workers else "trial (same worker process)",
           ylabel="resident memory after the trial (MB)",
           title=f"Memory over {args.trials} trials" + ("" if args.fresh_workers else " in one Ray worker"),
           ylim=(0, top))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
