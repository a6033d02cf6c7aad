"""Which decisions keep the quickstart's supernet from learning in a short run.

    python benchmarks/oneshot_interference.py [--steps 100] [--out benchmarks/results]

The one-shot quickstart's supernet (``experiments/oneshot_quickstart.yaml``: the proxies of
``efficientnet_edgetpu``, 32 px, 2,000 training digits, its optimizer and learning rate) is
trained for ``--steps`` weight steps on uniformly random paths, with only some decision
families drawn and every other decision held at one fixed arch's choice. Each variant starts
from the same initial weights and optimizer state (one traced trainer, reset between
variants), sees the same batches, and reports its mean training loss over the last 30 steps
and the mean one-shot accuracy (BatchNorm on the batch's statistics, as the search scores)
of 8 archs drawn the same way, on a validation batch. ln(10) = 2.30 is chance's loss.

Writes ``oneshot_interference.json`` (``oneshot_interference_zero_classifier.json`` with
``--zero-classifier``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {  # name: the decision families drawn (the rest held at the base arch's)
    "none": (),
    "kernel, filters, repeats, activation, se": ("kernel", "filters", "repeats", "activation", "se"),
    "expansion": ("expansion",),
    "block": ("block",),
    # what a search with space.hold: {decisions: [block]} draws (the one-shot quickstart's)
    "everything but block": ("kernel", "expansion", "filters", "repeats", "activation", "se"),
    "everything (a uniform path)": ("block", "kernel", "expansion", "filters", "repeats", "activation", "se"),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--zero-classifier", action="store_true",
                    help="start the classifier's kernel at zero (a chance-level first loss), to see if the "
                         "large initial logits are what slows the structural decisions")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    from nas.config import load_experiment
    from nas.ledger import make_base_space
    from nas.trial import space_of
    from nas.trial import load_data
    from nas.oneshot import SupernetTrainer
    from search_spaces import Supernet

    cfg = load_experiment(ROOT / "experiments" / "oneshot_quickstart.yaml")
    os_cfg = cfg.search.oneshot
    # the whole space, without the quickstart's space.hold: the block types are one of the families measured
    space = space_of(make_base_space(cfg), cfg)
    split = load_data(cfg, cfg.proxy.resolution)
    names = [d.name for d in space.decision_list]
    base = space.indices(space.sample_choices(np.random.default_rng(0)))

    def draw(rng, families):
        drawn = space.indices(space.sample_choices(rng))
        return space.decode_indices([d if n.split(".", 1)[1] in families else b
                                     for n, d, b in zip(names, drawn, base)])

    net = Supernet(space, num_classes=split.num_classes, seed=cfg.seed)
    trainer = SupernetTrainer(net, optimizer=os_cfg.optimizer, learning_rate=os_cfg.learning_rate,
                              total_steps=args.steps)
    if args.zero_classifier:
        net.predictions.kernel.assign(np.zeros(net.predictions.kernel.shape, "float32"))
    state = trainer.state_variables()
    init = [np.array(v) for v in state]  # before any step: every variant starts here
    t0 = time.monotonic()
    first = trainer.train(split.x_train[:os_cfg.batch_size], split.y_train[:os_cfg.batch_size],
                          space.decode_indices(base))  # traces; the reset below undoes the step
    trace_s = time.monotonic() - t0
    out: dict = {"command": "python benchmarks/oneshot_interference.py " + " ".join(sys.argv[1:]),
                 "steps": args.steps, "zero_classifier": args.zero_classifier, "base_arch": space.decode_indices(base).to_string(),
                 "trace_s": round(trace_s, 1), "chance_loss": round(float(np.log(split.num_classes)), 3),
                 "variants": {}}
    xv, yv = split.x_val[:256], split.y_val[:256]
    for name, families in VARIANTS.items():
        for v, a in zip(state, init):
            v.assign(a)
        rng = np.random.default_rng(1)
        order = np.random.default_rng(2)
        losses = []
        t0 = time.monotonic()
        for i in range(args.steps):
            b = order.choice(split.n_train, size=os_cfg.batch_size, replace=False)
            losses.append(trainer.train(split.x_train[b], split.y_train[b], draw(rng, families)))
        accs = [trainer.batch_accuracy(draw(np.random.default_rng(100 + j), families), xv, yv) for j in range(8)]
        row = {"families": list(families), "loss_first_10": round(float(np.mean(losses[:10])), 3),
               "loss_last_30": round(float(np.mean(losses[-30:])), 3),
               "one_shot_accuracy_mean": round(float(np.mean(accs)), 3),
               "one_shot_accuracy_range": [round(float(min(accs)), 3), round(float(max(accs)), 3)],
               "seconds": round(time.monotonic() - t0, 1)}
        out["variants"][name] = row
        print(f"{name:45s} loss {row['loss_first_10']:.2f} -> {row['loss_last_30']:.2f}  "
              f"one-shot accuracy {row['one_shot_accuracy_mean']:.2f}", flush=True)
    out["first_loss"] = round(first, 3)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ("oneshot_interference" + ("_zero_classifier" if args.zero_classifier else "") + ".json")).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
