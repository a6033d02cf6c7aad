"""Run by ``tests/test_devices.py`` in a fresh Python (TensorFlow's devices are fixed once it
starts): the CPU split into two logical devices, then the real ``nas export`` on one device
(``train.devices: one``) and on both (``all``: MirroredStrategy) in ``mixed_float16``, and
the real one-shot supernet on one device and on both. Prints one JSON line of what each gave.

    python tests/multidevice_probe.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

EXPERIMENT = {
    "name": "multidevice", "seed": 0,
    "space": {"name": "efficientnet_edgetpu", "resolution": 64, "width": 0.5, "depth": 0.5},
    "proxy": {"resolution": 32, "width": 0.5, "depth": 0.5},
    "reward": {"target_ms": 2.0},
    "data": {"source": "digits", "limit": 800, "val_fraction": 0.3},
    "train": {"epochs": 3, "batch_size": 32},
    "budget": {"trials": 1},
    "search": {"strategy": "oneshot",
               "oneshot": {"epochs": 4, "batch_size": 32, "samples": 2, "candidates": 3, "top_k": 1,
                           "calibration": 2, "classifier_init": "zeros"}},
}


def experiment(**train) -> dict:
    e = dict(EXPERIMENT)
    # the one-shot quickstart's hold: the supernet learns in a few steps (README, one-shot)
    e["space"] = {**e["space"], "hold": {"arch": "efficientnet_edgetpu_s", "decisions": ["block", "expansion"]}}
    e["train"] = {**e["train"], **train}
    return e


def main(out: Path) -> None:
    from nas.trial.devices import split_cpu

    devices = split_cpu(2)
    import tensorflow as tf

    from nas.config.experiment import parse_experiment
    from nas.results.export import export
    from nas.ledger.ledger import make_space
    from nas.oneshot.run import run_supernet
    from nas.ledger.folder import RunFolder

    results: dict = {"devices": devices, "export": {}, "supernet": {}}
    arch = None
    for name, train in (("one", {"devices": "one"}), ("two_mixed", {"devices": "all", "precision": "mixed_float16"})):
        e = experiment(**train)
        cfg = parse_experiment(e)
        arch = arch or make_space(cfg).sample(0).to_string()
        run = RunFolder(out / f"run_{name}")
        run.create(yaml.safe_dump(e), 1)
        t = time.perf_counter()
        summary = export(run.path, arch=arch, scale="proxy")
        import keras

        plain = keras.saving.load_model(out / f"run_{name}" / "export" / "model.keras")
        results["export"][name] = {"accuracy": summary["accuracy"], "int8_accuracy": summary["int8_accuracy"],
                                   "seconds": round(time.perf_counter() - t, 1),
                                   "saved_policy": plain.layers[1].dtype_policy.name}
    for name, train in (("one", {"devices": "one"}), ("two", {"devices": "all"})):
        e = experiment(**train)
        cfg = parse_experiment(e)
        t = time.perf_counter()
        cands = run_supernet(cfg, 2.0, str(out / f"supernet_{name}"))
        summary = json.loads((out / f"supernet_{name}" / "oneshot" / "target-2ms" / "candidates.json").read_text())
        results["supernet"][name] = {"one_shot_accuracy": [c["accuracy"] for c in cands],
                                     "seconds": round(time.perf_counter() - t, 1),
                                     "replicas": summary.get("replicas")}
    results["xla_two"] = _xla_on_two_devices(tf)
    results["logical_devices"] = [d.name for d in tf.config.list_logical_devices("CPU")]
    print("RESULT " + json.dumps(results))


def _xla_on_two_devices(tf) -> dict:
    """The fused step on both devices with XLA (each replica's pass compiled, the all-reduce
    outside) against the same step without XLA: the same weights after a few steps."""
    import keras
    import numpy as np

    from nas.trial.training import Step

    strat = tf.distribute.MirroredStrategy(split_devices(tf), cross_device_ops=tf.distribute.ReductionToOneDevice())
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 3)).astype("float32")
    y = (x[:, :4, :4, 0].mean(axis=(1, 2)) * 6).astype("int32") % 3
    weights = []
    for xla in (False, True):
        with strat.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3, use_bias=False),
                                      keras.layers.BatchNormalization(), keras.layers.ReLU(),
                                      keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
        step = Step(model, "adam", 1e-2, total_steps=10, jit_compile=xla, strategy=strat)
        losses = [step.train(x[i:i + 16], y[i:i + 16]) for i in (0, 16, 0)]
        weights.append(model.get_weights())
    return {"losses_finite": bool(np.all(np.isfinite(losses))),
            "max_weight_difference": float(max(np.max(np.abs(a - b)) for a, b in zip(*weights)))}


def split_devices(tf) -> list[str]:
    return [d.name for d in tf.config.list_logical_devices("CPU")]


if __name__ == "__main__":
    main(Path(sys.argv[1]))
