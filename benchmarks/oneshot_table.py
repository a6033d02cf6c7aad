"""The one-shot search on the shipped table: does the policy find the table's best archs, and
at what cost next to standalone search?

    python benchmarks/oneshot_table.py [--seeds 3] [--controller logits] [--controller mnas]
    python benchmarks/oneshot_table.py --controller mnas --controller mnas/reinforce --name oneshot_table_algorithms

A controller is ``NAME`` or ``NAME/ALGORITHM`` (``mnas/reinforce``: the LSTM policy learning
with REINFORCE instead of its default PPO). ``--name`` names the result file
(``benchmarks/results/NAME.json``, default ``oneshot_table``).

The controller proposes deployment members of ``efficientnet_edgetpu_bench`` (128 px, width
1, depth 1), scored by the table's reward (the hard MNAS reward at the table's median
deployment latency, as ``benchmarks/controller_bench.py`` reports it). The supernet holds the
table's proxies (32 px, width 0.25, depth 0.5: the same decisions) and trains on the table's
1,600 digits; latency is the table's (the edgetpu-model prediction of each deployment arch).
For each controller and seed the one-shot phase runs, then its candidates (the most likely
arch and the best ``--top-k`` of the final policy's samples) are "retrained standalone" by
looking up their table accuracy, which is what training them with the table's recipe gave.

Reported per controller: wall time of the one-shot phase, the table reward of its best
candidate (the one a search would keep after retraining), that reward's rank among the 512,
regret to the table's best, and for comparison what random search and the table's
``mnas``/``evolution`` reach with the same wall time spent on standalone trials (each trial
costing the table's measured training time of its arch plus a fixed overhead per trial,
``--overhead-s``, default 6 s as measured by ``benchmarks/trial_cost.py``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--controller", action="append", default=None,
                    help="logits, mnas or mnas/reinforce, mnas/ppo (repeatable)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--overhead-s", type=float, default=6.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default="oneshot_table", help="result file name, without .json")
    args = ap.parse_args()
    controllers = args.controller or ["logits", "mnas"]

    import numpy as np

    import search_spaces
    from nas.bench import run_bench
    from nas.bench import DEFAULT_SPACE, Table
    from nas.controllers import get_controller
    from nas.data import load
    from nas.config import OneShotConfig
    from nas.oneshot import OneShotSearch
    from nas.core import RewardConfig
    from nas.trial import limit_threads
    from oneshot_rank import DATA, SPACE

    limit_threads(os.cpu_count() or 2)
    table = Table.load()
    rcfg = RewardConfig(target_ms=float(np.median(table.latency_ms)), preset="hard")
    rewards = table.rewards(rcfg)
    best = float(np.nanmax(rewards))
    order = np.argsort(-rewards)
    rank_of = {table.archs[i]: r + 1 for r, i in enumerate(order)}
    train_s = {}
    with open(ROOT / "nas" / "bench" / "tables" / "efficientnet_edgetpu_bench.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["seed"] == "0":
                train_s[r["arch"]] = float(r["train_s"])
    deploy = search_spaces.get(DEFAULT_SPACE[0], **DEFAULT_SPACE[1])
    proxies = search_spaces.get("efficientnet_edgetpu_bench", **SPACE)
    split = load(DATA["source"], SPACE["resolution"], limit=DATA["limit"], val_fraction=DATA["val_fraction"],
                 seed=DATA["seed"])
    index = table.index

    def latency(archs):
        return [{"latency_ms": float(table.latency_ms[index[a.to_string()]])} for a in archs]

    mean_trial_s = float(np.mean(list(train_s.values()))) + args.overhead_s
    out = {"table_best_reward": best, "reward": {"kind": "mnas", "preset": "hard", "target_ms": rcfg.target_ms},
           "mean_standalone_trial_s": mean_trial_s, "runs": {}, "command": "python benchmarks/oneshot_table.py "
           + " ".join(sys.argv[1:])}
    for name in controllers:
        runs = []
        for seed in range(args.seeds):
            kind, _, algorithm = name.partition("/")
            ctrl = get_controller(kind, deploy, seed=seed, **({"algorithm": algorithm} if algorithm else {}))
            settings = OneShotConfig(epochs=args.epochs, samples=args.samples, top_k=args.top_k)
            search = OneShotSearch(deploy, proxies, split, ctrl, rcfg, latency, settings, seed=seed)
            t0 = time.perf_counter()
            res = search.run()
            wall = time.perf_counter() - t0
            cands = res.candidates
            retrain_s = sum(train_s[c.arch] + args.overhead_s for c in cands)
            found = [(rewards[index[c.arch]], c) for c in cands]
            top_r, top_c = max(found, key=lambda t: t[0])
            ent = [e for e in res.curves["entropy"] if np.isfinite(e)]
            lat = res.curves["latency_ms"]
            runs.append({"seed": seed, "oneshot_s": round(wall, 1), "retrain_s": round(retrain_s, 1),
                         "total_s": round(wall + retrain_s, 1), "best_candidate": top_c.arch,
                         "best_candidate_reward": float(top_r), "rank": rank_of[top_c.arch],
                         "regret": best - float(top_r),
                         "most_likely_rank": rank_of[cands[0].arch] if cands and cands[0].reason.startswith("most")
                         else None,
                         "entropy_first_last": [ent[0], ent[-1]] if ent else None,
                         "sampled_latency_first_last_100": [float(np.mean(lat[:100])), float(np.mean(lat[-100:]))],
                         "candidates": [c.as_dict(drop_empty=True) for c in cands]})
            print(f"{name} seed {seed}: {wall:.0f} s one-shot + {retrain_s:.0f} s retraining; best candidate "
                  f"reward {top_r:.4f} (rank {rank_of[top_c.arch]} of {len(table)}), entropy "
                  f"{ent[0] if ent else float('nan'):.3f} -> {ent[-1] if ent else float('nan'):.3f}", flush=True)
        out["runs"][name] = runs
    # Standalone searches given the same wall time, from the table: trials = time / trial cost.
    equal = float(np.mean([r["total_s"] for rs in out["runs"].values() for r in rs]))
    trials = max(1, int(equal // mean_trial_s))
    bench = run_bench(table, ["random", "evolution", "mnas"], seeds=20, trials=trials, rcfg=rcfg, batch=2,
                      repeats="record")
    summary = bench.summary()
    out["equal_wall_time"] = {"seconds": equal, "standalone_trials": trials,
                              **{n: {"final_best_reward": s["final_best_reward"],
                                     "final_regret": s["final_regret"]} for n, s in summary.items()}}
    for name, rs in out["runs"].items():
        vals = np.array([r["best_candidate_reward"] for r in rs])
        out["runs_summary"] = out.get("runs_summary", {}) | {name: {
            "mean_best_candidate_reward": float(vals.mean()), "mean_regret": float(best - vals.mean()),
            "mean_total_s": float(np.mean([r["total_s"] for r in rs]))}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({"runs_summary": out["runs_summary"], "equal_wall_time": out["equal_wall_time"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
