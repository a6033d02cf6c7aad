"""How good is the arch each search picked? Its best trial retrained with fresh seeds.

    python benchmarks/oneshot_recheck.py [--retrains 4] [--results benchmarks/results/oneshot_search.json]

``benchmarks/oneshot_search.py`` scores a search by its best trial's reward. A trial's
accuracy after 3 epochs on 2,000 digits moves by several points with the initial weights,
so the best of 30 trials is partly the luckiest draw of 30, and a search with more trials is
paid for its luck (the winner's curse). Here the best arch of every search in that result
file is retrained ``--retrains`` more times through the real trial path
(:func:`nas.trial.entry.run_trial`, ``experiments/quickstart.yaml``'s recipe, reward and latency
source: the ones every search's trials used), each time with another seed (the initial
weights and which 2,000 of the 2,500 digits train), the same seeds for every search, two trials at a time on the 2 cores. Reported per search: the mean reward
of those retrains (what a user who deploys the pick gets, on average), per seed of the
search and over the seeds, and per seed the one-shot search's mean minus each other's.

Writes ``oneshot_recheck.json`` (``--name``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FRESH_SEED = 1000  #: the retrains' seeds: FRESH_SEED, FRESH_SEED + 1, ... (no search used them)


def _retrain(job: tuple[str, int]) -> tuple[str, int, float | None, str]:
    arch, seed = job
    from nas.config import load_experiment
    from nas.trial import run_trial

    cfg = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    cfg = cfg.model_copy(update={"seed": seed})
    rec = run_trial(arch, cfg, trial_id=f"recheck-{seed}")
    return arch, seed, rec.reward, rec.status.value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--retrains", type=int, default=4)
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "oneshot_search.json")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default="oneshot_recheck.json", help="the result file's name in --out")
    args = ap.parse_args()

    src = json.loads(args.results.read_text())
    picks = {(run["seed"], name): res["best"] for run in src["runs"] for name, res in run.items()
             if isinstance(res, dict) and res.get("best", {}).get("arch")}  # (seed, search) -> its best trial
    seeds = [FRESH_SEED + k for k in range(args.retrains)]
    jobs = sorted({(best["arch"], s) for best in picks.values() for s in seeds})
    t0 = time.monotonic()
    # spawn: each worker sets TensorFlow's threads (1, the recipe's cpus_per_trial) before it loads
    with mp.get_context("spawn").Pool(2, maxtasksperchild=8) as pool:
        done = {}
        for i, (arch, seed, reward, status) in enumerate(pool.imap_unordered(_retrain, jobs), start=1):
            done[arch, seed] = {"reward": reward, "status": status}
            print(f"retrained {i}/{len(jobs)} ({time.monotonic() - t0:.0f} s)", flush=True)
    wall = time.monotonic() - t0

    def mean_of(arch):
        r = [done[arch, s]["reward"] for s in seeds]
        ok = [x for x in r if x is not None]
        return (float(np.mean(ok)) if ok else None), r

    rows: dict[str, dict] = {}
    for (seed, name), best in sorted(picks.items()):
        m, r = mean_of(best["arch"])
        row = rows.setdefault(name, {"per_seed": {}})
        row["per_seed"][str(seed)] = {"arch": best["arch"], "search_best_reward": best["reward"],
                                      "retrained_rewards": r, "retrained_mean": None if m is None else round(m, 4)}
    for name, row in rows.items():
        means = [v["retrained_mean"] for v in row["per_seed"].values() if v["retrained_mean"] is not None]
        row["mean_over_seeds"] = round(float(np.mean(means)), 4) if means else None
    if "oneshot" in rows:
        base = rows["oneshot"]["per_seed"]
        for name, row in rows.items():
            if name != "oneshot":
                row["oneshot_minus_this"] = {s: round(base[s]["retrained_mean"] - v["retrained_mean"], 4)
                                             for s, v in row["per_seed"].items()
                                             if s in base and None not in (base[s]["retrained_mean"],
                                                                           v["retrained_mean"])}
    out = {"command": "python benchmarks/oneshot_recheck.py " + " ".join(sys.argv[1:]),
           "source": str(args.results.relative_to(ROOT)) if args.results.is_relative_to(ROOT) else str(args.results),
           "source_command": src.get("command"), "retrain_seeds": seeds, "wall_s": round(wall, 1),
           "searches": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / args.name).write_text(json.dumps(out, indent=1) + "\n")
    for name, row in rows.items():
        print(f"{name:16s} retrained mean {row['mean_over_seeds']}  "
              f"(search's own best: {[v['search_best_reward'] for v in row['per_seed'].values()]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
