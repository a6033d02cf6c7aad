"""Does the MNAS controller beat random on real landscapes? Every controller on NAS-Bench-201.

    python benchmarks/controller_real.py [--seeds 30] [--seed-offset 0] [--trials 150] [--batch 8]
        [--surrogate-seeds 30] [--out benchmarks/results]

**Real landscapes** (``nas/bench/tables/nb201_cifar100.csv``, ``nb201_imagenet16.csv``): the 15,284
NAS-Bench-201 cells with a path from input to output (the other 341 are failed trials when
proposed), their real 200-epoch accuracy on CIFAR-100 and ImageNet16-120, and
their Edge TPU latency (measured where EAGLE measured it, else ``edgetpu-model``'s
prediction of the same network; the tables say which). Each is run at two latency targets
(the 20th and 40th percentile of the table's latencies) under both MNAS rewards (hard:
alpha 0, beta -1; soft: -0.07/-0.07), as ``nas bench`` runs a decision table: asks in
rounds of ``--batch``, repeats answered from the record, ``--trials`` trials.

**Surrogate landscapes**: ``nas bench --mode surrogate``'s three landscapes over the whole
``efficientnet_edgetpu`` space (the hard reward at the median latency), same trials and batch.

Controllers: random, mnas, optuna, evolution, each with its defaults. For each landscape:
final regret (mean over seeds, 95% interval), trials until the mean best-so-far reaches
random search's final mean best, and the runs that ended early. The checks of issue 34: mnas's
final regret interval lies below random's, mnas reaches random's final best in at most half
the trials random takes, and no run ends early. Writes ``controller_real.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONTROLLERS = ("random", "mnas", "optuna", "evolution")
TABLES = {"NB201 CIFAR-100": "nb201_cifar100.csv", "NB201 ImageNet16-120": "nb201_imagenet16.csv"}
SETTINGS = [(20, "hard"), (40, "hard"), (20, "soft"), (40, "soft")]


def ci(x: np.ndarray) -> tuple[float, float, float]:
    x = np.asarray(x, float)
    h = 1.96 * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else 0.0
    return float(x.mean()), float(x.mean() - h), float(x.mean() + h)


def hit(curve: np.ndarray, level: float) -> int | None:
    ok = np.flatnonzero(curve >= level - 1e-12)
    return int(ok[0]) + 1 if len(ok) else None


def real(args, progress) -> list[dict]:
    from nas.bench import run_bench
    from nas.bench import TABLES as TABLE_DIR, Table
    from nas.core import RewardConfig

    rows = []
    for land, file in TABLES.items():
        table = Table.load(TABLE_DIR / file)
        for pct, preset in SETTINGS:
            target = float(np.percentile(table.latency_ms, pct))
            rcfg = RewardConfig(target_ms=target, preset=preset)
            res = run_bench(table, list(CONTROLLERS), seeds=args.seeds, trials=args.trials, rcfg=rcfg,
                            seed_offset=args.seed_offset, batch=args.batch, repeats="record")
            rnd = res.best_so_far["random"]
            rnd_final = float(np.nanmean(rnd[:, -1]))
            row = {"landscape": land, "target_percentile": pct, "target_ms": target, "reward": preset,
                   "table_best": res.table_best, "controllers": {}}
            for name, best in res.best_so_far.items():
                c = res.counts[name]
                row["controllers"][name] = {
                    "final_regret": ci(res.table_best - best[:, -1]),
                    "trials_to_random_final": hit(np.nanmean(best, axis=0), rnd_final),
                    "stopped_early": len(c["stopped"]), "asks": float(c["asks"].mean()),
                    "distinct": float(c["distinct"].mean())}
            rows.append(row)
            progress(f"{land} p{pct} {preset}: " + ", ".join(
                f"{n} {v['final_regret'][0]:.4f}/{v['trials_to_random_final']}" for n, v in row["controllers"].items()))
    return rows


def surrogate(args, progress) -> list[dict]:
    from nas.bench import run_landscapes

    res = run_landscapes(list(CONTROLLERS), landscapes=3, seeds=args.surrogate_seeds, seed_offset=1000,
                         trials=args.trials, batch=args.batch)
    rows = []
    for li, per in enumerate(res.summary()):
        row = {"landscape": f"surrogate {li}", "target_percentile": 50, "target_ms": res.rcfg.target_ms,
               "reward": "hard", "controllers": {}}
        for name in CONTROLLERS:
            reg = np.nan_to_num(res.regret(li, name)[:, -1], nan=res.references[li].optimum)
            score = np.nan_to_num(res.score[(li, name)], nan=-np.inf)
            rnd_final = float(np.mean(res.score[(li, "random")][:, -1]))
            row["controllers"][name] = {
                "final_regret": ci(reg), "trials_to_random_final": hit(score.mean(axis=0), rnd_final),
                "stopped_early": len(res.stopped[(li, name)]), "asks": per[name]["asks"],
                "distinct": per[name]["distinct_archs"][0]}
        rows.append(row)
        progress(f"surrogate {li}: " + ", ".join(f"{n} {v['final_regret'][0]:.4f}/{v['trials_to_random_final']}"
                                                 for n, v in row["controllers"].items()))
    return rows


def checks(row: dict) -> dict:
    c = row["controllers"]
    m, r = c["mnas"], c["random"]
    half = r["trials_to_random_final"] / 2 if r["trials_to_random_final"] else None
    return {"regret_apart": m["final_regret"][2] < r["final_regret"][1],
            "half_the_trials": half is not None and m["trials_to_random_final"] is not None
            and m["trials_to_random_final"] <= half,
            "no_early_stop": all(v["stopped_early"] == 0 for v in c.values())}


def markdown(rows: list[dict], args, seconds: float) -> str:
    head = ("| landscape | target | reward | " + " | ".join(f"{n}: regret / trials to random's best" for n in CONTROLLERS)
            + " | mnas below random (95%) | mnas in half random's trials | no early stop |")
    out = ["# Controllers on real and surrogate landscapes\n",
           f"`python benchmarks/controller_real.py --seeds {args.seeds} --seed-offset {args.seed_offset} --trials "
           f"{args.trials} --batch {args.batch} --surrogate-seeds {args.surrogate_seeds}` ({seconds:.0f} s). "
           "Regret: the landscape's best reward minus the best found, mean over seeds (95% interval); trials: "
           "when the mean best-so-far reaches random search's final mean best.\n", head,
           "|" + "---|" * (3 + len(CONTROLLERS) + 3)]
    for row in rows:
        ch = checks(row)
        cells = []
        for n in CONTROLLERS:
            v = row["controllers"][n]
            lo, hi = v["final_regret"][1:]
            t = v["trials_to_random_final"]
            cells.append(f"{v['final_regret'][0]:.4f} [{lo:.4f}, {hi:.4f}] / {t if t else '>' + str(args.trials)}")
        target = f"p{row['target_percentile']} ({row['target_ms']:.3f} ms)"
        out.append(f"| {row['landscape']} | {target} | {row['reward']} | " + " | ".join(cells) + " | "
                   + " | ".join("yes" if ch[k] else "**no**" for k in ("regret_apart", "half_the_trials",
                                                                      "no_early_stop")) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--seed-offset", type=int, default=0)
    ap.add_argument("--trials", type=int, default=150)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--surrogate-seeds", type=int, default=30)
    ap.add_argument("--skip-surrogate", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    t0 = time.time()

    def progress(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f} s] {msg}", flush=True)

    with threadpool_limits(1):
        rows = real(args, progress)
        if not args.skip_surrogate:
            rows += surrogate(args, progress)
    seconds = time.time() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "controller_real.json").write_text(json.dumps({"args": vars(args), "seconds": seconds, "rows": [
        {**r, "checks": checks(r)} for r in rows]}, indent=1) + "\n")
    (out / "controller_real.md").write_text(markdown(rows, args, seconds))
    print(markdown(rows, args, seconds))


if __name__ == "__main__":
    main()
