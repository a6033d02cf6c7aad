"""A Pareto front from one-shot supernets at several latency targets, as TuNAS traced one.

    python benchmarks/oneshot_pareto.py [--targets 3 5 8] [--seed 0] [--reward tunas] [--out benchmarks/results]

``experiments/oneshot_quickstart.yaml`` with ``search.oneshot.targets_ms`` set to
``--targets``, through the real CLI on the embedded Ray: one supernet per target, as
parallel Ray tasks sharing the 2 cores, then every target's candidates merged and retrained
standalone as trials (at most ``budget.trials``, 12). Reported per target: the supernet's
time, the mean deployment latency of the controller's samples in the first and last tenth
of its steps, and its candidates; per retrained trial: the target it came from, its
accuracy and deployment latency; and the front of those trials (no other is both more
accurate and faster).

``--reward tunas`` swaps the quickstart's hard MNAS reward (no gain below the target, so
nothing pulls a fast sample up to it) for TuNAS's absolute reward,
``ACC - 0.1 * |LAT/T - 1|``, which pulls the samples' latency toward each target from both
sides; the retrained trials are scored by the same reward.

Writes ``oneshot_pareto.json`` (``oneshot_pareto_tunas.json`` with ``--reward tunas``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from oneshot_search import run_search, tenths  # noqa: E402  (the same nas search call and curve summary)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", type=float, nargs="+", default=[3.0, 5.0, 8.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reward", choices=["mnas", "tunas"], default="mnas",
                    help="mnas: the quickstart's hard MNAS reward; tunas: the absolute reward")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    exp = yaml.safe_load((ROOT / "experiments" / "oneshot_quickstart.yaml").read_text())
    exp["search"]["oneshot"]["targets_ms"] = args.targets
    exp["seed"] = args.seed
    if args.reward == "tunas":
        exp["reward"] = {"kind": "tunas", "target_ms": exp["reward"]["target_ms"]}
    with tempfile.TemporaryDirectory(prefix="oneshot-pareto-") as d:
        tmp = Path(d)
        exp["output"] = str(tmp)
        run = tmp / "pareto"
        wall, rows, _ = run_search(exp, run, tmp)
        per_target = {}
        origin: dict[str, float] = {}
        for t in args.targets:
            folder = run / "oneshot" / f"target-{t:g}ms"
            summary = json.loads((folder / "candidates.json").read_text())
            curves = json.loads((folder / "checkpoint.json").read_text())["curves"]
            lat = tenths(curves["latency_ms"])
            per_target[f"{t:g}"] = {
                "supernet_s": summary["seconds"], "steps": summary["steps"],
                "sampled_latency_ms_tenths": lat, "entropy_tenths": tenths(curves["entropy"]),
                "candidates": [{k: c.get(k) for k in ("arch", "reason", "accuracy", "latency_ms")}
                               for c in summary["candidates"]]}
            for c in summary["candidates"]:
                origin.setdefault(c["arch"], t)
        trials = [{"target_ms": origin.get(row["arch"]), "accuracy": float(row["accuracy"]),
                   "latency_ms": float(row["latency_ms"]), "arch": row["arch"]}
                  for row in rows if row["status"] == "ok"]
    front = sorted((t for t in trials if not any(o["accuracy"] >= t["accuracy"] and o["latency_ms"] <= t["latency_ms"]
                                                and (o["accuracy"], o["latency_ms"]) != (t["accuracy"], t["latency_ms"])
                                                for o in trials)), key=lambda t: t["latency_ms"])
    out = {"command": "python benchmarks/oneshot_pareto.py " + " ".join(sys.argv[1:]), "targets_ms": args.targets,
           "seed": args.seed, "reward": exp["reward"], "wall_s": round(wall, 1), "cpus": os.cpu_count(),
           "per_target": per_target, "trials": trials, "front": front}
    args.out.mkdir(parents=True, exist_ok=True)
    name = "oneshot_pareto" + ("" if args.reward == "mnas" else f"_{args.reward}")
    (args.out / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    for t, v in per_target.items():
        print(f"target {t} ms: supernet {v['supernet_s']:.0f} s, sampled latency {v['sampled_latency_ms_tenths'][0]} -> "
              f"{v['sampled_latency_ms_tenths'][-1]} ms")
    for t in front:
        print(f"front: {t['latency_ms']:.2f} ms, accuracy {t['accuracy']:.3f} (target {t['target_ms']})")
    print(f"wall {wall:.0f} s, {len(trials)} trials")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
