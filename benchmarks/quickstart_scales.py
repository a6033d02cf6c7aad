"""Proxy vs deployment scale: does latency decide anything, and what does a quickstart cost?

    python benchmarks/quickstart_scales.py [--repeats 2] [--n 1000] [--out benchmarks/results]

1. **Spreads at both scales** (no training): ``--n`` random members of
   ``efficientnet_edgetpu`` at the proxy scale the quickstart used to search (32 px, width
   0.25, depth 0.5) and at its new deployment scale (128 px, width 1.0), 10 classes; the
   ``edgetpu-model`` latency percentiles, the share that streams parameters off-chip, and
   EfficientNet-EdgeTPU-S at each scale.
2. **The two quickstarts side by side**, alternating, ``--repeats`` times each, through the
   real CLI on the embedded Ray: the quickstart as it was (the proxy-scale space searched
   and scored as itself, soft MNAS reward at 1.8 ms) and as shipped now
   (``experiments/quickstart.yaml``: the deployment model searched, its proxy trained).
   For each run: wall time, the trials' deployment latency span, how many stream
   parameters off-chip, and whether latency changed decisions (Spearman of reward vs
   accuracy; is the best-reward trial the most accurate one?).

Writes ``quickstart_scales.json`` and ``quickstart_scales.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The quickstart before the deployment/proxy split (the commit before it, experiments/quickstart.yaml).
BEFORE = {
    "version": 1, "name": "quickstart", "seed": 0,
    "space": {"name": "efficientnet_edgetpu", "resolution": 32, "width": 0.25, "depth": 0.5},
    "controller": {"name": "mnas", "params": {"batch_size": 2}},
    "reward": {"kind": "mnas", "target_ms": 1.8, "preset": "soft"},
    "latency": {"source": "edgetpu-model"},
    "data": {"source": "mnist5k", "limit": 2500},
    "train": {"epochs": 3, "batch_size": 64, "optimizer": "adam", "learning_rate": 0.003, "schedule": "cosine"},
    "budget": {"trials": 12, "concurrency": 2, "cpus_per_trial": 1},
    "output": "runs",
}
SCALES = {"proxy scale (32 px, width 0.25, depth 0.5)": {"resolution": 32, "width": 0.25, "depth": 0.5},
          "deployment scale (128 px, width 1.0)": {"resolution": 128, "width": 1.0, "depth": 1.0}}


def spreads(n: int) -> dict:
    import search_spaces
    from latency_models import Target, get_source

    src = get_source("edgetpu-model")
    out = {}
    for label, kw in SCALES.items():
        space = search_spaces.get("efficientnet_edgetpu", num_classes=10, **kw)
        rng = np.random.default_rng(0)
        lat, off = [], []
        for _ in range(n):
            a = space.sample(rng)
            r = src.measure(Target(a, input_shape=(a.resolution,) * 2 + (3,), num_classes=10))
            lat.append(r.latency_ms)
            off.append(r.off_chip_bytes)
        s = search_spaces.reference("efficientnet_edgetpu_s", num_classes=10, **kw)
        rs = src.measure(Target(s, input_shape=(s.resolution,) * 2 + (3,), num_classes=10))
        p = np.percentile(lat, [5, 50, 95])
        out[label] = {"n": n, "p5_ms": p[0], "p50_ms": p[1], "p95_ms": p[2], "max_ms": float(np.max(lat)),
                      "p95_over_p5": p[2] / p[0], "off_chip_share": float(np.mean(np.array(off) > 0)),
                      "edgetpu_s_ms": rs.latency_ms, "edgetpu_s_off_chip_bytes": rs.off_chip_bytes}
    return out


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def run(label: str, experiment: Path, work: Path) -> dict:
    from nas.ledger import RunFolder

    out = work / f"run-{len(list(work.glob('run-*')))}"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(experiment), "--out", str(out), "--no-progress"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"{label}: nas search failed:\n{p.stderr[-3000:]}")
    rows = RunFolder(out).results()
    ok = [r for r in rows if r.usable]
    lat = [r.latency_ms for r in rows if r.latency_ms is not None]
    best_reward = max(ok, key=lambda r: r.reward)
    best_acc = max(ok, key=lambda r: r.accuracy)
    return {"label": label, "wall_s": wall, "trials": len(rows), "usable": len(ok),
            "mean_trial_s": float(np.mean([r.trial_s for r in rows])),
            "latency_min_ms": min(lat), "latency_max_ms": max(lat), "latency_span": max(lat) / min(lat),
            "off_chip": sum(r.off_chip for r in rows), "infeasible": sum(r.status.value == "infeasible" for r in rows),
            "spearman_reward_accuracy": spearman([r.reward for r in ok], [r.accuracy for r in ok]),
            "reward_over_accuracy_min": min(r.reward / r.accuracy for r in ok),
            "reward_over_accuracy_max": max(r.reward / r.accuracy for r in ok),
            "best_reward_is_most_accurate": best_reward.trial_id == best_acc.trial_id,
            "best": {"arch": best_reward.arch, "proxy_arch": best_reward.proxy_arch, "accuracy": best_reward.accuracy,
                     "latency_ms": best_reward.latency_ms, "reward": best_reward.reward,
                     "off_chip_bytes": best_reward.off_chip_bytes},
            "most_accurate": {"accuracy": best_acc.accuracy, "latency_ms": best_acc.latency_ms,
                              "off_chip_bytes": best_acc.off_chip_bytes}}


def markdown(res: dict) -> str:
    lines = ["Spreads of `edgetpu-model` latency over random members of `efficientnet_edgetpu` (10 classes):", "",
             "| scale | members | p5 / p50 / p95 ms | max ms | p95 / p5 | off-chip share | EfficientNet-EdgeTPU-S |",
             "|---|---|---|---|---|---|---|"]
    for label, s in res["spreads"].items():
        lines.append(f"| {label} | {s['n']} | {s['p5_ms']:.2f} / {s['p50_ms']:.2f} / {s['p95_ms']:.2f} | "
                     f"{s['max_ms']:.1f} | {s['p95_over_p5']:.2f}x | {s['off_chip_share']:.0%} | "
                     f"{s['edgetpu_s_ms']:.2f} ms, {s['edgetpu_s_off_chip_bytes']:,} B off-chip |")
    lines += ["", "The quickstart before and after, alternating on this machine (12 trials each, 2 at a time):", "",
              "| run | wall s | mean trial s | deployment latency of its trials | span | off-chip | "
              "Spearman(reward, accuracy) | reward / accuracy | best reward is the most accurate |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        lines.append(f"| {r['label']} | {r['wall_s']:.0f} | {r['mean_trial_s']:.1f} | {r['latency_min_ms']:.2f}-"
                     f"{r['latency_max_ms']:.2f} ms | {r['latency_span']:.2f}x | {r['off_chip']} of {r['trials']} | "
                     f"{r['spearman_reward_accuracy']:.3f} | {r['reward_over_accuracy_min']:.3f}-"
                     f"{r['reward_over_accuracy_max']:.3f} | {'yes' if r['best_reward_is_most_accurate'] else 'no'} |")
    for label in dict.fromkeys(r["label"] for r in res["runs"]):
        walls = [r["wall_s"] for r in res["runs"] if r["label"] == label]
        lines.append(f"\n{label}: wall time {', '.join(f'{w:.0f}' for w in walls)} s (mean {np.mean(walls):.0f} s)")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1, help="runs of each quickstart, alternating (default 1)")
    ap.add_argument("--n", type=int, default=1000, help="random members per scale for the spreads")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    res = {"spreads": spreads(args.n), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        before = work / "quickstart_before.yaml"
        before.write_text(yaml.safe_dump(BEFORE))
        for i in range(args.repeats):
            for label, exp in (("before: proxy scale searched", before),
                               ("now: deployment searched, proxy trained", ROOT / "experiments" / "quickstart.yaml")):
                r = run(label, exp, work)
                print(f"{label}: {r['wall_s']:.0f} s, latency span {r['latency_span']:.2f}x, off-chip {r['off_chip']}, "
                      f"spearman {r['spearman_reward_accuracy']:.3f}", flush=True)
                res["runs"].append(r)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quickstart_scales.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    md = markdown(res)
    (out / "quickstart_scales.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
