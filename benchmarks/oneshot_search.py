"""One-shot against standalone search, with real runs at equal wall time.

    python benchmarks/oneshot_search.py [--seeds 1] [--out benchmarks/results]

For each seed, three searches of the quickstart's problem through the real CLI on the
embedded Ray (the same deployment space at 128 px, proxy, 2,000 training digits, latency
source and hard MNAS reward at 5 ms), one after the other on this machine:

1. ``experiments/oneshot_quickstart.yaml``: the one-shot search (its supernet, then its
   candidates retrained standalone as trials); its wall time sets the others' budget;
2. ``experiments/quickstart.yaml`` with ``controller: mnas``, as many trials as fit in that
   wall time (``budget.time_limit_s``: Ray Tune's time budget, so Ray's start-up is on top);
3. the same with ``controller: random``.

Reported per search: wall time, trials, the best reward after standalone training (every
search's trials are trained by the same recipe, so the rewards compare), its arch, and for
the one-shot search the controller's curves: policy entropy and the mean deployment latency
of the sampled archs in tenths of the controller's steps, against the target.

Writes ``oneshot_search.json``.
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


def _search(experiment: dict, run: Path, tmp: Path) -> tuple[float, list[dict], str]:
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
            "latency_ms": float(top["latency_ms"]), "arch": top["arch"]}


def _tenths(values: list[float]) -> list[float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if len(v) == 0:
        return []
    return [round(float(c.mean()), 4) for c in np.array_split(v, min(10, len(v)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    oneshot = yaml.safe_load((ROOT / "experiments" / "oneshot_quickstart.yaml").read_text())
    standalone = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
    target = oneshot["reward"]["target_ms"]
    out: dict = {"command": "python benchmarks/oneshot_search.py " + " ".join(sys.argv[1:]), "target_ms": target,
                 "cpus": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="oneshot-bench-") as d:
        tmp = Path(d)
        for seed in range(args.seeds):
            row: dict = {"seed": seed}
            exp = {**oneshot, "seed": seed, "output": str(tmp)}
            wall, rows, _ = _search(exp, tmp / f"oneshot-{seed}", tmp)
            summary = json.loads((tmp / f"oneshot-{seed}" / "oneshot" / f"target-{target:g}ms" / "candidates.json")
                                 .read_text())
            ckpt = json.loads((tmp / f"oneshot-{seed}" / "oneshot" / f"target-{target:g}ms" / "checkpoint.json")
                              .read_text())
            row["oneshot"] = {"wall_s": round(wall, 1), "supernet_s": summary["seconds"], "trials": len(rows),
                              "best": _best(rows), "candidates": [
                                  {k: c[k] for k in ("arch", "why", "one_shot_accuracy", "latency_ms", "reward")}
                                  for c in summary["candidates"]],
                              "retrained": [{"arch": r["arch"], "accuracy": float(r["accuracy"]),
                                             "reward": float(r["reward"])} for r in rows if r["status"] == "ok"],
                              "entropy_tenths": _tenths(ckpt["curves"]["entropy"]),
                              "sampled_latency_ms_tenths": _tenths(ckpt["curves"]["latency_ms"]),
                              "one_shot_accuracy_tenths": _tenths(ckpt["curves"]["accuracy"]),
                              "loss_tenths": _tenths(ckpt["curves"]["loss"])}
            print(f"seed {seed} one-shot: {wall:.0f} s, best {row['oneshot']['best']}", flush=True)
            for name in ("mnas", "random"):
                exp = {**standalone, "seed": seed, "output": str(tmp), "controller": {"name": name},
                       "budget": {**standalone["budget"], "trials": 1000, "time_limit_s": round(wall, 1)}}
                w, rows, _ = _search(exp, tmp / f"{name}-{seed}", tmp)
                row[name] = {"wall_s": round(w, 1), "trials": len(rows), "best": _best(rows)}
                print(f"seed {seed} {name}: {w:.0f} s, {len(rows)} trials, best {row[name]['best']}", flush=True)
            out["runs"].append(row)
    for name in ("oneshot", "mnas", "random"):
        vals = [r[name]["best"]["reward"] for r in out["runs"] if r[name]["best"]["reward"] is not None]
        out.setdefault("summary", {})[name] = {
            "mean_best_reward": float(np.mean(vals)) if vals else None,
            "mean_wall_s": float(np.mean([r[name]["wall_s"] for r in out["runs"]])),
            "mean_trials": float(np.mean([r[name]["trials"] for r in out["runs"]]))}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "oneshot_search.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
