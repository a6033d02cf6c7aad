"""Resident memory of one Ray worker over a long run of trials: it must stay flat.

    python benchmarks/memory_over_trials.py [--trials 50] [--out benchmarks/results]

Runs a search of ``--trials`` random EfficientNet-EdgeTPU variants (32 px, width 0.25,
depth 0.5; 1,000 MNIST digits, 2 epochs) through the embedded Ray at concurrency 1, so
every trial runs in the same reused worker process, and reads each trial's resident memory
after its clean-up (``rss_mb`` in trials.csv). Reports the first/last values, the growth
per trial fitted over the second half (after TensorFlow's one-off warm-up) and a plot.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        exp = Path(tmp) / "memory.yaml"
        exp.write_text(yaml.safe_dump({**EXPERIMENT, "budget": {**EXPERIMENT["budget"], "trials": args.trials}}))
        run = Path(tmp) / "run"
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "nas.cli", "search", str(exp), "--out", str(run), "--no-progress"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        wall = time.time() - t0
        with open(run / "trials.csv") as f:
            rows = list(csv.DictReader(f))  # in the order the trials were proposed (one at a time here)
    rss = np.array([float(r["rss_mb"]) for r in rows if r["rss_mb"]])
    n = len(rss)
    half = np.arange(n // 2, n)
    slope = float(np.polyfit(half, rss[half], 1)[0]) if len(half) > 2 else float("nan")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"{n} trials in one worker, {wall:.0f} s: RSS after trial 1 {rss[0]:.0f} MB, after trial {n // 2} "
             f"{rss[n // 2 - 1]:.0f} MB, after trial {n} {rss[-1]:.0f} MB; max {rss.max():.0f} MB; growth over the "
             f"second half {slope:+.2f} MB/trial"]
    (out / "memory_over_trials.md").write_text(lines[0] + "\n\n" + " ".join(f"{v:.0f}" for v in rss) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(np.arange(1, n + 1), rss, marker="o", ms=3)
    ax.set(xlabel="trial (same worker process)", ylabel="resident memory after the trial (MB)",
           title=f"Memory over {n} trials in one Ray worker", ylim=(0, max(rss.max() * 1.2, 100)))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "memory_over_trials.png", dpi=110)
    print(lines[0])


if __name__ == "__main__":
    main()
