"""A search with 30% injected failures: does it complete its budget, record every failure, feed the controller no garbage?

    python benchmarks/fault_injection.py [--trials 40] [--out benchmarks/results]

Runs a tiny ``mnas`` search (EfficientNet-EdgeTPU at 32 px, scikit-learn digits, 1 epoch,
2 trials at a time on the embedded Ray, ``ray.max_failures: 1``) with ``faults:`` making
6% of the trials fail in each of five ways: an exception, NaN loss, a conversion failure, a
latency source error and a SIGKILLed worker. The fault of every arch is known in advance
(a hash of the seed and the arch string), so each recorded trial is checked against it.
Writes ``fault_injection.md``.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FAULTS = {"exception": 0.06, "nan_loss": 0.06, "conversion": 0.06, "latency": 0.06, "worker_killed": 0.06, "seed": 0}
EXPERIMENT = {
    "version": 1, "name": "faults", "seed": 0,
    "space": {"name": "efficientnet_edgetpu", "resolution": 32, "width": 0.25, "depth": 0.25},
    "controller": {"name": "mnas", "params": {"batch_size": 4}},
    "reward": {"target_ms": 1.8},
    "data": {"source": "digits", "limit": 300},
    "train": {"epochs": 1, "batch_size": 32},
    "budget": {"trials": 40, "concurrency": 2},
    "ray": {"max_failures": 1},
    "faults": FAULTS,
}
EXPECTED = {
    "exception": "RuntimeError: injected fault: exception",
    "nan_loss": "NaN loss at epoch 1, step 0",
    "conversion": "latency: ConversionError: injected fault",
    "latency": "latency: LatencyError: injected fault",
    "worker_killed": "the trial's worker failed",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()

    from nas.config import parse_experiment
    from nas.trial import pick
    from nas.ledger import Ledger
    from nas.ledger import RunFolder

    exp = {**EXPERIMENT, "budget": {**EXPERIMENT["budget"], "trials": args.trials}}
    cfg = parse_experiment(exp)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "faults.yaml"
        path.write_text(yaml.safe_dump(exp))
        run = Path(tmp) / "run"
        t0 = time.time()
        p = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(path), "--out", str(run), "--no-progress"],
                           cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        wall = time.time() - t0
        if p.returncode != 0:
            sys.exit(f"the search failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
        results = RunFolder(run).results()
        state = Ledger.from_json(cfg, (run / "state.json").read_text())
    rows, mismatches = Counter(), []
    for r in results:
        kind = pick(cfg.faults, r.arch)
        ok = (r.status == "ok") if kind is None else (
            r.status == "failed" and str(r.reason).startswith(EXPECTED[kind]))
        rows[(kind or "none", r.status.value, "" if kind is None else str(r.reason)[:70])] += 1
        if not ok:
            mismatches.append((kind, r.status.value, r.reason))
    c = state.controller
    failed = sum(r.status != "ok" for r in results)
    learned_finite = c.best is not None and math.isfinite(c.best[1]) and (
        getattr(c, "baseline", 0.0) is None or math.isfinite(getattr(c, "baseline", 0.0)))
    summary = (f"{len(results)} of {args.trials} trials recorded in {wall:.0f} s; {failed} failed "
               f"({100 * failed / max(1, len(results)):.0f}%), each with the reason of its injected fault "
               f"({len(mismatches)} mismatches); the controller was told {c.n_feedback} results, counted "
               f"{c.n_failed} as failures and learned from the other {c.n_feedback - c.n_failed} only "
               f"(best reward {c.best[1]:.4f}, baseline {getattr(c, 'baseline', float('nan')):.4f}: "
               f"{'finite' if learned_finite else 'NOT finite'}).")
    lines = [summary, "", "| injected fault | status | recorded reason | trials |", "|---|---|---|---|"]
    for (kind, status, reason), n in sorted(rows.items()):
        lines.append(f"| {kind} | {status} | {reason or '-'} | {n} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fault_injection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if mismatches or len(results) != args.trials or c.n_failed != failed or not learned_finite:
        sys.exit(f"FAILED: {mismatches[:5]}")


if __name__ == "__main__":
    main()
