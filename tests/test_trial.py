"""The trial: real training on shipped data, latency, reward, and failures that stay trials."""

from __future__ import annotations


import numpy as np
import pytest

from nas.config.experiment import parse_experiment
from nas.core.record import Status, TrialRecord
from nas.trial.entry import run_trial

TINY = "v1-res32:stem-k3-s2-o8-relu:ds-r1-k3-s1-o8-relu,mbconv-r1-k3-s2-e2-o16-relu:head-o64-relu-d0.2"
# A deployment arch (96 px, wide) and the proxy the experiment below trains for it.
DEPLOY = ("v1-res96-cls10:stem-k3-s2-o32-relu:fused_mbconv-r2-k3-s1-e4-o32-relu,mbconv-r4-k5-s2-e6-o96-relu,"
          "mbconv-r2-k3-s2-e6-o160-se0.25-relu:head-o1280-relu-d0.2")
PROXY = {"resolution": 32, "width": 0.25, "depth": 0.5}


def experiment(**sections):
    base = {"name": "t", "seed": 0,
            "space": {"name": "efficientnet_edgetpu", "resolution": 32, "width": 0.25, "depth": 0.25},
            "reward": {"target_ms": 1.8}, "data": {"source": "digits", "limit": 200},
            "train": {"epochs": 2, "batch_size": 32}, "budget": {"trials": 2}}
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return parse_experiment(base)


def test_a_trial_trains_measures_scores_and_reports_every_field():
    epochs = []
    r = run_trial(TINY, experiment(), report=epochs.append, trial_id="t1")
    assert isinstance(r, TrialRecord)
    assert r.status is Status.OK and r.reason is None and r.trial_id == "t1" and r.arch == r.proxy_arch == TINY
    assert 0.0 <= r.accuracy <= 1.0 and r.latency_ms > 0 and r.latency_source == "edgetpu-model"
    assert r.params > 1000 and r.macs > 10_000 and r.off_chip_bytes == 0 and r.ops_on_cpu == 0
    assert (r.proxy_params, r.proxy_macs) == (r.params, r.macs)  # no proxy section: it trains the arch itself
    assert r.epochs == 2 and r.train_s > 0 and r.trial_s >= r.train_s
    assert r.reward == pytest.approx(r.accuracy * (r.latency_ms / 1.8) ** -0.07)
    # One intermediate report per epoch but the last (that one is the final result), for
    # schedulers such as ASHA.
    assert [e.epochs for e in epochs] == [1] and all(e.status is Status.RUNNING for e in epochs)


def test_a_trial_trains_the_proxy_and_scores_the_deployment_model():
    from latency_models import Target, get_source
    from search_spaces import Arch, count_params

    r = run_trial(DEPLOY, experiment(proxy=PROXY, train={"epochs": 1}))
    assert r.status is Status.OK, r.reason
    deploy, small = Arch.from_string(r.arch), Arch.from_string(r.proxy_arch)
    assert (deploy.resolution, small.resolution) == (96, 32) and small.stem.filters == 8
    assert [b.repeats for b in small.stages] == [1, 2, 1]  # ceil(0.5 * repeats)
    # latency, memory, params and MACs are the deployment model's; proxy_* the trained one's
    lat = get_source("edgetpu-model").measure(Target(deploy, input_shape=(96, 96, 3), num_classes=10))
    assert (r.latency_ms, r.on_chip_bytes, r.off_chip_bytes) == (lat.latency_ms, lat.on_chip_bytes,
                                                                 lat.off_chip_bytes)
    assert r.params == count_params(deploy, num_classes=10) > 20 * r.proxy_params
    assert r.proxy_params == count_params(small, num_classes=10) and r.proxy_macs < r.macs / 100
    assert r.reward == pytest.approx(r.accuracy * (r.latency_ms / 1.8) ** -0.07)


def test_constraints_judge_the_deployment_model_not_the_proxy():
    r = run_trial(DEPLOY, experiment(proxy=PROXY, reward={"constraints": {"max_params": 500_000}}))
    assert r.status is Status.INFEASIBLE and r.reason.startswith(f"params {r.params:,} > max_params 500,000")
    assert r.proxy_params < 500_000 and r.train_s is None  # the proxy would have fitted; it was not trained


def test_training_learns_the_digits():
    r = run_trial(TINY, experiment(data={"limit": 600}, train={"epochs": 8, "learning_rate": 0.01}))
    assert r.status is Status.OK and r.accuracy > 0.5, r  # chance is 0.1


def test_a_broken_constraint_is_infeasible_without_training():
    r = run_trial(TINY, experiment(reward={"constraints": {"max_params": 100}}))
    assert r.status is Status.INFEASIBLE and r.reason.startswith("params ") and "max_params 100" in r.reason
    assert r.train_s is None and r.reward is None and not r.usable


def test_a_nan_loss_is_a_failed_trial(tmp_path):
    x = np.random.default_rng(0).random((60, 32, 32, 1)).astype(np.float32)
    x[5, 3, 3, 0] = np.nan  # a corrupt image poisons the loss
    np.savez(tmp_path / "bad.npz", x=x, y=np.arange(60) % 3)
    r = run_trial(TINY, experiment(data={"source": f"npz:{tmp_path / 'bad.npz'}", "limit": None}))
    assert r.status is Status.FAILED and r.reason.startswith("NaN loss at epoch 1"), r.reason
    assert r.reward is None


def test_a_conversion_failure_is_a_failed_trial(monkeypatch):
    import latency_models.convert as convert

    def refuse(target):
        raise convert.ConversionError("the converter refused the model")

    monkeypatch.setattr(convert, "cached_int8_tflite", refuse)
    r = run_trial(TINY, experiment(latency={"source": "tflite-cpu"}))
    assert r.status is Status.FAILED and r.reason == "latency: ConversionError: the converter refused the model"


def test_out_of_memory_and_bad_archs_are_failed_trials(monkeypatch):
    import nas.trial.entry as trial

    def oom(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(trial, "train_model", oom)
    r = run_trial(TINY, experiment())
    assert r.status is Status.FAILED and r.reason == "out of memory (MemoryError)"
    r = run_trial("v1-res32:nonsense", experiment())
    assert r.status is Status.FAILED and r.reason.startswith("arch: ")
    r = run_trial(TINY.replace("v1-res32", "v1-res32-cls7"), experiment())
    assert r.status is Status.FAILED and r.reason == "arch: it has 7 classes, the data 10"


def test_trained_models_do_not_stay_alive_between_trials():
    """Regression: TF's gradient registry kept every traced training graph (~100 MB a trial)."""
    import gc

    from tensorflow.python.framework import ops
    from tensorflow.python.framework.func_graph import FuncGraph

    def live_graphs():
        gc.collect()
        return sum(isinstance(o, FuncGraph) for o in gc.get_objects())

    cfg = experiment(train={"epochs": 1})
    run_trial(TINY, cfg)
    after_one = live_graphs()
    for _ in range(2):
        assert run_trial(TINY, cfg).status is Status.OK
    assert live_graphs() <= after_one
    assert not [k for k in ops._gradient_registry._registry if str(k).startswith("CustomGradient-")]


def test_a_trial_in_a_fresh_worker_sizes_tensorflow_to_its_cpus_before_loading_data():
    """A Ray worker's first trial loads the data (TensorFlow resizes it) before training:
    the pool must be sized first, or it keeps all the cores' threads (found when two
    quickstart trials each ran two threads on two cores)."""
    import subprocess
    import sys

    code = f"""
import tensorflow as tf
from tests.test_trial import experiment, TINY
from nas.trial.entry import run_trial
r = run_trial({TINY!r}, experiment(train={{"epochs": 1}}, budget={{"trials": 1, "cpus_per_trial": 1}}))
assert str(r.status) == "ok", r.reason
print("THREADS", tf.config.threading.get_intra_op_parallelism_threads(),
      tf.config.threading.get_inter_op_parallelism_threads())
"""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "THREADS 1 1" in p.stdout


def test_int8_scoring_quantizes_the_trained_proxy_and_rewards_its_accuracy():
    cfg = experiment(score={"accuracy": "int8", "calibration_images": 16, "eval_images": 30})
    r = run_trial(TINY, cfg)
    assert r.status is Status.OK, r.reason
    assert 0.0 <= r.int8_accuracy <= 1.0 and round(r.int8_accuracy * 30) == pytest.approx(r.int8_accuracy * 30)
    assert r.int8_s > 0 and r.scored_accuracy == r.int8_accuracy and 0 <= r.accuracy <= 1
    assert r.reward == pytest.approx(r.int8_accuracy * (r.latency_ms / 1.8) ** -0.07)
    plain = run_trial(TINY, experiment())
    assert plain.int8_accuracy is None and plain.int8_s is None and plain.accuracy == r.accuracy


def test_a_proxy_that_cannot_be_quantized_fails_its_trial_with_the_reason(monkeypatch):
    import nas.trial.entry

    def broken(*a, **k):
        raise RuntimeError("Quantization not yet supported for op: 'FOO'")

    monkeypatch.setattr(nas.trial.entry, "int8_accuracy", broken)
    r = run_trial(TINY, experiment(score={"accuracy": "int8"}))
    assert r.status is Status.FAILED and r.reward is None
    assert r.reason == "int8: RuntimeError: Quantization not yet supported for op: 'FOO'" and r.int8_s is not None
