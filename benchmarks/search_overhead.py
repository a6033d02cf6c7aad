"""What a search costs, and how much of it is Ray: the quickstart, timed three ways in one run.

    python benchmarks/search_overhead.py [--experiment experiments/quickstart.yaml] [--trials 12]

1. the quickstart as shipped (Ray, its concurrency): its wall time;
2. the same budget through Ray at concurrency 1, with the ``random`` controller;
3. the same trials in-process (``nas search --runner local``), no Ray.

(2) and (3) run the very same archs (the random controller's proposals do not depend on
rewards), so their difference is what Ray costs: starting the embedded cluster and a worker
process, scheduling, and reporting. Each run is a fresh ``nas search`` process, timed from
start to exit. Per-trial times (build, train, latency) come from the runs' trials.csv.
Prints a Markdown table (for the README) and writes JSON beside it with ``--json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_search(exp: dict, out: Path, runner: str) -> dict:
    exp_file = out.with_suffix(".yaml")
    exp_file.write_text(yaml.safe_dump(exp))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(exp_file), "--out", str(out), "--runner",
                        runner, "--no-progress"], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"nas search failed ({runner}):\n{r.stderr[-3000:]}")
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))

    def mean(k):
        vals = [float(row[k]) for row in rows if row[k]]
        return statistics.fmean(vals) if vals else float("nan")

    return {"runner": runner, "concurrency": exp["budget"]["concurrency"], "controller": exp["controller"]["name"],
            "trials": len(rows), "ok": sum(row["status"] == "ok" for row in rows), "wall_s": wall,
            "trial_s": mean("trial_s"), "build_s": mean("build_s"), "train_s": mean("train_s"),
            "latency_s": mean("latency_s"), "sum_trial_s": sum(float(row["trial_s"]) for row in rows),
            "archs": [row["arch"] for row in rows], "trials_per_hour": len(rows) / wall * 3600}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default=str(ROOT / "experiments" / "quickstart.yaml"))
    ap.add_argument("--trials", type=int, default=None, help="budget (default: the experiment's)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()

    base = yaml.safe_load(Path(args.experiment).read_text())
    if args.trials:
        base["budget"]["trials"] = args.trials
    with tempfile.TemporaryDirectory(prefix="nas-overhead-") as tmp:
        tmp = Path(tmp)
        shipped = run_search(base, tmp / "quickstart", "ray")
        same = {**base, "controller": {"name": "random"}, "budget": {**base["budget"], "concurrency": 1}}
        ray1 = run_search(same, tmp / "ray1", "ray")
        local = run_search(same, tmp / "local", "local")
    if ray1["archs"] != local["archs"]:
        print("warning: the Ray and in-process runs trained different archs", file=sys.stderr)

    n = ray1["trials"]
    overhead_s = ray1["wall_s"] - local["wall_s"]
    per_trial = overhead_s / n
    result = {"quickstart": shipped, "ray_c1": ray1, "local_c1": local, "ray_overhead_s": overhead_s,
              "ray_overhead_per_trial_s": per_trial, "ray_overhead_fraction": per_trial / local["trial_s"]}
    for r in (shipped, ray1, local):
        r.pop("archs")

    print(f"quickstart ({shipped['controller']}, {shipped['trials']} trials, concurrency {shipped['concurrency']}): "
          f"{shipped['wall_s']:.0f} s wall, {shipped['ok']} ok\n")
    print("| run | trials | wall s | trials/hour | mean trial s | build s | train s | latency s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in (("quickstart, Ray, concurrency %d" % shipped["concurrency"], shipped),
                    ("random, Ray, concurrency 1", ray1), ("random, in-process (no Ray)", local)):
        print(f"| {name} | {r['trials']} | {r['wall_s']:.1f} | {r['trials_per_hour']:.0f} | {r['trial_s']:.2f} | "
              f"{r['build_s']:.2f} | {r['train_s']:.2f} | {r['latency_s']:.3f} |")
    print(f"\nRay overhead: {overhead_s:.1f} s over {n} trials = {per_trial:.2f} s per trial = "
          f"{result['ray_overhead_fraction']:.1%} of the in-process trial time ({local['trial_s']:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
