"""What the largest-choice warm-up (``search.oneshot.largest_until``/``largest_floor``) buys.

    python benchmarks/oneshot_warmup.py [--steps 256] [--out benchmarks/results]

The one-shot quickstart's supernet (``experiments/oneshot_quickstart.yaml``: 32 px proxies,
2,000 training digits, its optimizer, learning rate and zero classifier) is trained for
``--steps`` weight steps (the quickstart's 256) by :class:`nas.oneshot.search.OneShotSearch`'s own
path schedule, once per setting of the warm-up: each step draws a uniformly random path (a
stand-in for a policy that has not narrowed yet) and sets each numeric decision of it to its
largest choice with the search's probability (1 falling to ``largest_floor`` at the share
``largest_until`` of the steps). Every setting starts from the same weights, optimizer state
and random state (the search's one stream draws the paths and the batch order). Reported: the loss over the last 30 steps and the one-shot accuracy of 16
uniformly drawn archs, as the search scores its samples (BatchNorm on one validation
batch's statistics) and as it re-scores its candidates (on the 500 validation digits after
recalibrating BatchNorm on 4 training batches, 8 of the archs). Run on the quickstart's held
space (block types at EfficientNet-EdgeTPU-S's) and, with ``--unheld``, on the whole space.

Writes ``oneshot_warmup.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {  # name: (largest_until, largest_floor)
    "uniform paths (no largest warm-up)": (0.0, 0.0),
    "TuNAS: 1 -> 0 over the first quarter": (0.25, 0.0),
    "1 -> 0 over the first half": (0.5, 0.0),
    "1 -> 0.25 over the first half, then 0.25 (the real runs' setting)": (0.5, 0.25),
}


def _measure(space_name: str, space, cfg, split, steps: int) -> dict:
    from nas.controllers import get_controller
    from nas.config import OneShotConfig
    from nas.oneshot import OneShotSearch
    from nas.core import RewardConfig
    from nas.oneshot import calibration_batches

    o = cfg.search.oneshot
    epochs = max(1, round(steps / -(-split.n_train // o.batch_size)))  # the LR schedule spans the run
    # warmup 1: every step draws a uniform path, so only the largest-choice schedule differs
    base = OneShotConfig(epochs=epochs, batch_size=o.batch_size, optimizer=o.optimizer, learning_rate=o.learning_rate,
                           warmup=1.0, classifier_init=o.classifier_init)
    search = OneShotSearch(space, space, split, get_controller("logits", space, seed=0), RewardConfig(target_ms=1.0),
                           lambda archs: [{"latency_ms": 1.0} for _ in archs], base, seed=cfg.seed)
    steps = search.total_steps
    state = search.trainer.state_variables()
    init = [np.array(v) for v in state]
    t0 = time.monotonic()
    search.trainer.train(split.x_train[:o.batch_size], split.y_train[:o.batch_size], space.sample(0))  # traces
    trace_s = time.monotonic() - t0
    evals = [space.decode(space.sample_choices(np.random.default_rng(100 + j))) for j in range(16)]
    xv, yv = split.x_val[:256], split.y_val[:256]
    out = {"space": space_name, "steps": steps, "decisions": len(space.decision_list),
           "trace_s": round(trace_s, 1), "settings": {}}
    for name, (until, floor) in SETTINGS.items():
        for v, a in zip(state, init):
            v.assign(a)
        search.settings = replace(base, largest_until=until, largest_floor=floor)
        search.step_index, search.trainer.steps = 0, 0
        search.rng = np.random.default_rng([cfg.seed, 17])
        search.curves["loss"] = []
        t0 = time.monotonic()
        while search.step_index < steps:
            search.step()
        train_s = time.monotonic() - t0
        batch = [search.trainer.batch_accuracy(a, xv, yv) for a in evals]
        rng = np.random.default_rng(7)
        recal = [search.trainer.accuracy(a, split.x_val, split.y_val,
                                         calibration=calibration_batches(split.x_train, 4, o.batch_size, rng))
                 for a in evals[:8]]
        row = {"largest_until": until, "largest_floor": floor,
               "loss_last_30": round(float(np.mean(search.curves["loss"][-30:])), 3),
               "one_shot_accuracy_batch_stats": round(float(np.mean(batch)), 3),
               "batch_stats_range": [round(float(min(batch)), 3), round(float(max(batch)), 3)],
               "one_shot_accuracy_recalibrated": round(float(np.mean(recal)), 3),
               "recalibrated_range": [round(float(min(recal)), 3), round(float(max(recal)), 3)],
               "train_s": round(train_s, 1)}
        out["settings"][name] = row
        print(f"{space_name:6s} {name:58s} loss {row['loss_last_30']:.2f}  one-shot accuracy "
              f"{row['one_shot_accuracy_batch_stats']:.3f} (recalibrated {row['one_shot_accuracy_recalibrated']:.3f})",
              flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--unheld", action="store_true", help="also on the whole space (without space.hold)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    from nas.config import load_experiment
    from nas.ledger import make_base_space, make_space
    from nas.trial import space_of
    from nas.trial import load_data

    cfg = load_experiment(ROOT / "experiments" / "oneshot_quickstart.yaml")
    split = load_data(cfg, cfg.proxy.resolution)
    spaces = [("held", make_space(cfg))] + ([("whole", make_base_space(cfg))] if args.unheld else [])
    out = {"command": "python benchmarks/oneshot_warmup.py " + " ".join(sys.argv[1:]), "steps": args.steps,
           "chance": round(1 / split.num_classes, 3), "runs": []}
    for name, space in spaces:
        out["runs"].append(_measure(name, space_of(space, cfg), cfg, split, args.steps))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "oneshot_warmup.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
