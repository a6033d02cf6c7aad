"""GPUs, precision, XLA and several devices, tested on a machine with none of them.

Each runs the real code path: the Ray resources a trial asks for (Ray's logical GPUs place
them in tests/test_service.py), TensorFlow's CPU split into two logical devices under
MirroredStrategy (the export and the supernet, in a fresh Python), mixed precision and XLA
on the CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from nas.cli import install
from nas.config.experiment import parse_experiment

BASE = {"space": {"name": "efficientnet_edgetpu", "resolution": 32, "width": 0.25, "depth": 0.25},
        "reward": {"target_ms": 2}, "data": {"source": "digits", "limit": 100}, "budget": {"trials": 1}}


def cfg(**sections):
    return parse_experiment({**BASE, **{k: {**BASE.get(k, {}), **v} for k, v in sections.items()}})


@pytest.mark.parametrize("gpus, ok", [(0, True), (0.25, True), (1, True), (2, True), (1.5, False), (0.5, True)])
def test_gpus_per_trial_is_a_share_of_one_card_or_whole_cards(gpus, ok):
    if ok:
        assert cfg(budget={"gpus_per_trial": gpus}).budget.gpus_per_trial == gpus
    else:
        with pytest.raises(ValueError, match=r"budget.gpus_per_trial: 1.5 is neither a share of one GPU nor whole "
                                             r"GPUs; allowed: 0 \(CPU\), a fraction in \(0, 1\]"):
            cfg(budget={"gpus_per_trial": gpus})


def test_trials_ask_ray_for_their_gpus_and_the_device_only_while_they_measure_on_it():
    from nas.trial.devices import trial_resources

    assert trial_resources(cfg()) == {"cpu": 1.0}
    assert trial_resources(cfg(budget={"cpus_per_trial": 2})) == {"cpu": 2}
    assert trial_resources(cfg(budget={"gpus_per_trial": 0.25})) == {"cpu": 1.0, "gpu": 0.25}
    # edgetpu: a measurement service by default, so a trial never holds the device ...
    assert trial_resources(cfg(latency={"source": "edgetpu"})) == {"cpu": 1.0}
    # ... unless it measures itself, as before (latency.service.mode: trial)
    assert trial_resources(cfg(latency={"source": "edgetpu", "service": {"mode": "trial"}})) == {"cpu": 1.0,
                                                                                                "edgetpu": 1}


def test_cpu_tuning_applies_to_cpu_trials_and_gpu_memory_is_capped_when_a_card_is_shared():
    from nas.trial.devices import gpu_trial, memory_mode
    from nas.trial.worker import onednn_env

    cpu, shared, whole = cfg(), cfg(budget={"gpus_per_trial": 0.5}), cfg(budget={"gpus_per_trial": 1})
    assert onednn_env(cpu) == {"TF_ENABLE_ONEDNN_OPTS": "0"}  # off in CPU trials (nas.trial.worker says why)
    assert onednn_env(shared) == {}  # TensorFlow's own default in GPU trials
    assert onednn_env(cfg(budget={"gpus_per_trial": 1}, train={"onednn": False})) == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert (gpu_trial(cpu), gpu_trial(shared)) == (False, True)
    assert (memory_mode(shared), memory_mode(whole)) == ("cap", "growth")
    assert memory_mode(cfg(budget={"gpus_per_trial": 0.5}, train={"gpu_memory": "growth"})) == "growth"


def test_gpu_trials_on_a_machine_without_gpus_stop_before_any_work(monkeypatch):
    from latency_models import MissingHardware
    from nas.trial.devices import check_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(MissingHardware, match=r"budget.gpus_per_trial: 1, but this machine has 0 GPU\(s\) for Ray"):
        check_gpus(cfg(budget={"gpus_per_trial": 1}))
    check_gpus(cfg(budget={"gpus_per_trial": 1}, ray={"num_gpus": 2}))  # logical GPUs, as the tests use
    check_gpus(cfg(budget={"gpus_per_trial": 1}, ray={"address": "head:6379"}))  # checked once joined
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    check_gpus(cfg(budget={"gpus_per_trial": 2}))


def test_exactly_one_tensorflow_build_must_be_installed():
    assert install.problem({"tensorflow-cpu": "2.21.0"}) is None
    assert install.problem({}) == ("TensorFlow is not installed: pip install -e '.[cpu]' (CPU) or pip install -e "
                                   "'.[gpu]' (Linux with an NVIDIA GPU)")
    both = install.problem({"tensorflow-cpu": "2.21.0", "tensorflow": "2.21.0"})
    assert both == ("two TensorFlow builds are installed side by side (tensorflow 2.21.0, tensorflow-cpu 2.21.0) "
                    "and overwrite each other's files: pip uninstall -y tensorflow tensorflow-cpu, then pip install "
                    "-e '.[gpu]' (or the other extra)")
    assert install.builds(lambda n: {"tensorflow": "2.21.0", "tensorflow-intel": "2.21.0"}.get(n)) == {
        "tensorflow": "2.21.0"}  # the Windows wheel's own companion is not a second build
    install.check()  # this test environment: exactly one


def _tiny_model(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3, padding="same", use_bias=False),
                             keras.layers.BatchNormalization(), keras.layers.ReLU(),
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(3, activation="softmax", dtype="float32")])


def _data():
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 3)).astype("float32")
    y = (x[:, :4, :4, 0].mean(axis=(1, 2)) * 6).astype("int32") % 3
    return x, y


def test_xla_compiles_the_step_the_traced_step_computes():
    from nas.trial.training import Step

    x, y = _data()
    plain, xla = _tiny_model(), _tiny_model()
    s1 = Step(plain, "adam", 1e-2, total_steps=20)
    s2 = Step(xla, "adam", 1e-2, total_steps=20, jit_compile=True)
    for i in range(0, 64, 16):
        l1, l2 = s1.train(x[i:i + 16], y[i:i + 16]), s2.train(x[i:i + 16], y[i:i + 16])
        assert l1 == pytest.approx(l2, rel=1e-4)
    for a, b in zip(plain.get_weights(), xla.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)  # XLA fuses: float rounding differs


def test_mixed_precision_scales_the_loss_skips_a_step_that_overflows_and_keeps_learning():
    import keras
    import tensorflow as tf

    from nas.trial.training import Step

    x, y = _data()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = _tiny_model()
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.layers[0].compute_dtype == "float16" and model.layers[-1].compute_dtype == "float32"
    step = Step(model, "adam", 1e-2, total_steps=100, loss_scale=True)
    assert float(step.loss_scale.scale.numpy()) == 2.0 ** 15
    losses = [step.train(x[i % 4 * 16:(i % 4 + 1) * 16], y[i % 4 * 16:(i % 4 + 1) * 16]) for i in range(40)]
    assert all(np.isfinite(losses)) and np.mean(losses[-4:]) < np.mean(losses[:4])
    # a loss scale so large the float16 gradients overflow: the step is skipped, the scale halves
    step.loss_scale.scale.assign(2.0 ** 40)
    before, it = [w.copy() for w in model.get_weights()], step.iterations
    step.train(x[:16], y[:16])
    assert float(step.loss_scale.scale.numpy()) == 2.0 ** 39 and step.iterations == it
    trainable = {id(v) for v in model.trainable_weights}
    for w, a in zip(model.weights, before):
        if id(w) in trainable:
            np.testing.assert_array_equal(w.numpy(), a)
    assert tf.reduce_all(tf.math.is_finite(model.weights[0].value))


def test_several_devices_train_the_export_and_the_supernet_as_one_device_does(tmp_path):
    """In a fresh Python with TensorFlow's CPU split into two logical devices: ``nas export``
    on one device and on both (MirroredStrategy) in mixed_float16, and a one-shot supernet on
    one device and on both. Same data, seed and steps: the accuracies agree within noise, and
    the exported model is plain float32 Keras whatever it was trained in."""
    r = subprocess.run([sys.executable, "tests/multidevice_probe.py", str(tmp_path)], capture_output=True, text=True,
                       timeout=900, cwd=str(__import__("conftest").ROOT))
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert out["logical_devices"] == ["/device:CPU:0", "/device:CPU:1"]
    ex = out["export"]
    assert all(v["saved_policy"] == "float32" for v in ex.values())
    assert ex["one"]["accuracy"] > 0.6, ex  # it learned: the comparison means something
    # 240 validation images: one accuracy's standard error is ~0.02, two runs' paths differ
    assert abs(ex["two_mixed"]["accuracy"] - ex["one"]["accuracy"]) <= 0.1, ex
    assert abs(ex["two_mixed"]["int8_accuracy"] - ex["two_mixed"]["accuracy"]) <= 0.1, ex
    sn = out["supernet"]
    assert [sn[k]["replicas"] for k in ("one", "two")] == [1, 2]
    one = np.mean(sn["one"]["one_shot_accuracy"])
    assert one > 0.7, sn
    # 4 epochs: one device gave 0.89, two 0.85 (at 6, where one-shot accuracy levels off,
    # 0.84-0.89 and 0.86-0.92 over two seeds; each replica normalises by its half of the batch,
    # as Keras's BatchNorm does)
    assert abs(np.mean(sn["two"]["one_shot_accuracy"]) - one) <= 0.1, sn
    # XLA on both devices (each replica compiled, the all-reduce outside) steps as without it
    assert out["xla_two"]["losses_finite"] and out["xla_two"]["max_weight_difference"] < 1e-3, out["xla_two"]


def test_mixed_precision_trains_a_trial_and_a_supernet_with_finite_loss_and_float32_accuracy():
    """The trial's path (the fused step, loss scaling) on real digits in float32 and in
    mixed_float16 on the CPU: the same accuracy within noise; and a supernet built under
    mixed_float16 (float16 masks and convolutions, BatchNorm statistics in float32) trains."""
    import keras

    from nas.trial import proxy
    from nas.trial.devices import precision
    from nas.ledger.ledger import make_space
    from nas.trial.recipe import load_data, train_model
    from search_spaces import build_model

    accs = {}
    for prec in ("float32", "mixed_float16"):
        c = cfg(data={"limit": 800, "val_fraction": 0.3}, train={"epochs": 3, "batch_size": 32, "precision": prec},
                space={"width": 0.5, "resolution": 64, "depth": 0.5},
                proxy={"resolution": 32, "width": 0.5, "depth": 0.5})
        small = proxy.of(make_space(c).sample(0), c)
        split = load_data(c, small.resolution)
        keras.utils.set_random_seed(0)
        with precision(c):
            model = build_model(small, (32, 32, 3), split.num_classes, seed=0)
        assert model.layers[-1].compute_dtype == "float32"
        assert model.layers[1].compute_dtype == ("float16" if prec == "mixed_float16" else "float32")
        accs[prec], _ = train_model(model, split, c)
    assert accs["float32"] > 0.6 and abs(accs["mixed_float16"] - accs["float32"]) <= 0.1, accs

    from test_oneshot import _split

    from nas.controllers.base import get_controller
    from nas.config.experiment import OneShotConfig
    from nas.oneshot.search import OneShotSearch
    from nas.core.reward import RewardConfig
    import search_spaces

    space = search_spaces.get("efficientnet_edgetpu_bench", searched=[2])  # 8 archs: a supernet traced fast
    keras.config.set_dtype_policy("mixed_float16")
    try:
        search = OneShotSearch(space, space, _split(), get_controller("logits", space, seed=1),
                               RewardConfig(target_ms=2.0, preset="hard"),
                               lambda archs: [{"latency_ms": 1.5, "off_chip_bytes": 0} for _ in archs],
                               OneShotConfig(epochs=2, batch_size=16, samples=2, candidates=2, top_k=1,
                                               calibration=1), loss_scale=True)
    finally:
        keras.config.set_dtype_policy("float32")
    assert search.net.compute_dtype == "float16"
    result = search.run()
    assert all(np.isfinite(result.curves["loss"])) and result.candidates
    assert all(0 <= c.accuracy <= 1 for c in result.candidates)
