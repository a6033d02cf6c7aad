"""One-shot against standalone search, with real runs at equal wall time.

    python benchmarks/oneshot_search.py [--seeds 1] [--out benchmarks/results]

For each seed, three searches of the quickstart's problem through the real CLI on the
embedded Ray (the same deployment space at 128 px, proxy, 2,000 training digits, latency
source and hard MNAS reward at 5 ms), one after the other on this machine:

1. ``experiments/oneshot_quickstart.yaml``: the one-shot search (its supernet, then its
   candidates retrained standalone as trials); its wall time sets the others' budget. It
   holds the block types at EfficientNet-EdgeTPU-S's layout (``space.hold``);
2. ``experiments/quickstart.yaml`` with ``controller: mnas``, as many trials as fit in that
   wall time (``budget.time_limit_s``: Ray Tune's time budget, so Ray's start-up is on top),
   over the whole space, as a user runs it;
3. the same with ``controller: random``;
4. and 5. (``--held``, the default) mnas and random over the one-shot search's held space,
   so the search methods also compare on one space;
6. (``--unheld``) the one-shot search without the hold, the ablation of ``space.hold``;
7. (``--also-controller logits``, repeatable) the one-shot search with another controller
   (row ``oneshot_logits``), so the controllers compare in the same run.

Reported per search: wall time, trials, the best reward after standalone training (every
search's trials are trained by the same recipe, so the rewards compare), its arch, the
median reward of its trials, and for the one-shot searches the controller's curves: policy
entropy and the mean deployment latency of the sampled archs in tenths of the controller's
steps, against the target.

Writes ``oneshot_search.json`` (``--name``). ``benchmarks/oneshot_recheck.py`` then retrains
each search's best arch with fresh seeds, which takes the luck out of a best-of-30.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
NAS = [sys.executable, "-m", "nas.cli"]


def run_search(experiment: dict, run: Path, tmp: Path) -> tuple[float, list[dict], str]:
    """``nas search`` of ``experiment`` into ``run`` (a subprocess); wall time, trials.csv rows, stderr."""
    exp = tmp / f"{run.name}.yaml"
    exp.write_text(yaml.safe_dump(experiment))
    t0 = time.monotonic()
    r = subprocess.run([*NAS, "search", str(exp), "--out", str(run), "--no-progress"], capture_output=True,
                       text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, cwd=tmp)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"{run.name}: nas search failed ({r.returncode}): {r.stderr[-3000:]}")
    rows = list(csv.DictReader((run / "trials.csv").open()))
    return wall, rows, r.stderr


def _best(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == "ok" and r["reward"] not in ("", None)]
    if not ok:
        return {"reward": None}
    top = max(ok, key=lambda r: float(r["reward"]))
    return {"reward": float(top["reward"]), "accuracy": float(top["accuracy"]),
            "latency_ms": float(top["latency_ms"]), "arch": top["arch"],
            "median_reward": round(float(np.median([float(r["reward"]) for r in ok])), 4)}


def _oneshot(exp: dict, name: str, seed: int, tmp: Path, target: float) -> dict:
    run = tmp / f"{name}-{seed}"
    wall, rows, _ = run_search({**exp, "seed": seed, "output": str(tmp)}, run, tmp)
    phase = run / "oneshot" / f"target-{target:g}ms"
    summary = json.loads((phase / "candidates.json").read_text())
    ckpt = json.loads((phase / "checkpoint.json").read_text())
    out = {"wall_s": round(wall, 1), "supernet_s": summary["seconds"], "trials": len(rows),
           "best": _best(rows), "candidates": [
               {k: c.get(k) for k in ("arch", "reason", "accuracy", "latency_ms", "reward")}
               for c in summary["candidates"]],
           "retrained": [{"arch": r["arch"], "accuracy": float(r["accuracy"]),
                          "reward": float(r["reward"])} for r in rows if r["status"] == "ok"],
           "entropy_tenths": tenths(ckpt["curves"]["entropy"]),
           "sampled_latency_ms_tenths": tenths(ckpt["curves"]["latency_ms"]),
           "one_shot_accuracy_tenths": tenths(ckpt["curves"]["accuracy"]),
           "loss_tenths": tenths(ckpt["curves"]["loss"])}
    print(f"seed {seed} {name}: {wall:.0f} s, best {out['best']}", flush=True)
    return out


def tenths(values: list[float]) -> list[float]:
    """Means of ``values`` (NaN and None dropped) in tenths of their length."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if len(v) == 0:
        return []
    return [round(float(c.mean()), 4) for c in np.array_split(v, min(10, len(v)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--held", action=argparse.BooleanOptionalAction, default=True,
                    help="also run mnas and random over the one-shot search's held space (default: on)")
    ap.add_argument("--unheld", action="store_true", help="also run the one-shot search without space.hold")
    ap.add_argument("--oneshot", action="append", default=[], metavar="KEY=VALUE",
                    help="override search.oneshot.KEY of the one-shot searches (a YAML value), e.g. "
                         "largest_until=0.5; repeatable")
    ap.add_argument("--also-controller", action="append", default=[], metavar="NAME",
                    help="also run the one-shot search with this controller (e.g. logits); repeatable")
    ap.add_argument("--name", default="oneshot_search.json", help="the result file's name in --out")
    args = ap.parse_args()
    oneshot = yaml.safe_load((ROOT / "experiments" / "oneshot_quickstart.yaml").read_text())
    for kv in args.oneshot:
        key, sep, value = kv.partition("=")
        if not sep:
            raise SystemExit(f"--oneshot: expected KEY=VALUE, got {kv!r}")
        oneshot["search"]["oneshot"][key] = yaml.safe_load(value)
    standalone = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
    target = oneshot["reward"]["target_ms"]
    out: dict = {"command": "python benchmarks/oneshot_search.py " + " ".join(sys.argv[1:]), "target_ms": target,
                 "cpus": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="oneshot-bench-") as d:
        tmp = Path(d)
        hold = oneshot["space"].get("hold")
        standalone_runs = [("mnas", "mnas", None), ("random", "random", None)]
        if args.held and hold:
            standalone_runs += [("mnas_held", "mnas", hold), ("random_held", "random", hold)]
        for seed in range(args.seeds):
            row: dict = {"seed": seed, "oneshot": _oneshot(oneshot, "oneshot", seed, tmp, target)}
            wall = row["oneshot"]["wall_s"]
            for name, controller, held in standalone_runs:
                space = {**standalone["space"], **({"hold": held} if held else {})}
                exp = {**standalone, "seed": seed, "output": str(tmp), "controller": {"name": controller},
                       "space": space, "budget": {**standalone["budget"], "trials": 1000, "time_limit_s": wall}}
                w, rows, _ = run_search(exp, tmp / f"{name}-{seed}", tmp)
                row[name] = {"wall_s": round(w, 1), "trials": len(rows), "best": _best(rows)}
                print(f"seed {seed} {name}: {w:.0f} s, {len(rows)} trials, best {row[name]['best']}", flush=True)
            if args.unheld and hold:
                unheld = {**oneshot, "space": {k: v for k, v in oneshot["space"].items() if k != "hold"}}
                row["oneshot_unheld"] = _oneshot(unheld, "oneshot_unheld", seed, tmp, target)
            for name in args.also_controller:
                other = {**oneshot, "controller": {"name": name}}
                row[f"oneshot_{name}"] = _oneshot(other, f"oneshot_{name}", seed, tmp, target)
            out["runs"].append(row)
    out["hold"] = hold
    for name in [k for k in out["runs"][0] if k != "seed"]:
        vals = [r[name]["best"]["reward"] for r in out["runs"] if r[name]["best"]["reward"] is not None]
        out.setdefault("summary", {})[name] = {
            "mean_best_reward": float(np.mean(vals)) if vals else None,
            "best_rewards": vals,
            "mean_median_reward": float(np.mean([r[name]["best"]["median_reward"] for r in out["runs"]
                                                 if r[name]["best"]["reward"] is not None])) if vals else None,
            "mean_wall_s": float(np.mean([r[name]["wall_s"] for r in out["runs"]])),
            "mean_trials": float(np.mean([r[name]["trials"] for r in out["runs"]]))}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / args.name).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
