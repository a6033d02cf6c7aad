"""keras-tuner integration (nas/trial/hypermodel.py): spaces as HyperModels, searches that report the MNAS reward."""

from __future__ import annotations

import math

import keras_tuner
import numpy as np
import pytest

import search_spaces
from latency_models import LatencyError, LatencySource, MissingHardware, get_source
from nas.data.sources import load
from nas.core.reward import Constraints, RewardConfig, reward
from nas.trial.hypermodel import SpaceHyperModel, hp_values, reward_objective
from search_spaces import Arch, Block, Decision, Head, SearchSpace, Stem

TARGET_MS = 1.8
# Tuners get seed=1, not 0: keras-tuner (1.4.8) takes seed 0 for no seed and draws a random one.


class OddSpace(SearchSpace):
    """A tiny space (two stages at 32 px) with every kind of choice value keras-tuner refuses
    as it is: int/float mixes, numpy scalars, None, tuples, a bool/float mix."""

    name = "odd_kt"

    def decisions(self):
        return [
            Decision("s1.kernel", (3, 5)),                          # ints: kept
            Decision("s1.se", (0, 0.25)),                           # int + float: floats
            Decision("s2.block", ("mbconv", "fused_mbconv")),       # strings: kept
            Decision("s2.skip", (True, False)),                     # bools: strings
            Decision("s2.filters", (np.int64(16), np.int64(24))),   # numpy ints: Python ints
            Decision("s2.layout", ((1, 3), (2, 5))),                # tuples (repeats, kernel): strings
            Decision("s2.se", (False, 0.25)),                       # bool + float: strings
            Decision("head.dropout", (None, 0.2)),                  # None + float: strings
        ]

    def make_arch(self, c):
        repeats, kernel = c["s2.layout"]
        return Arch(
            stem=Stem(8), head=Head(32, dropout=c["head.dropout"] or 0.0), resolution=32, num_classes=10,
            stages=(Block("mbconv", 8, kernel=c["s1.kernel"], expansion=2, se_ratio=c["s1.se"]),
                    Block(c["s2.block"], int(c["s2.filters"]), stride=2, expansion=2, repeats=repeats,
                          kernel=kernel, se_ratio=c["s2.se"] or 0.0, skip=c["s2.skip"])))


@pytest.fixture(scope="module")
def space():
    return search_spaces.get("efficientnet_edgetpu", resolution=32, width=0.25, depth=0.5, num_classes=10)


@pytest.fixture(scope="module")
def data():
    return load("digits", 32, limit=120, seed=0)   # 96 to train, 24 to validate


class EagerSpaceHyperModel(SpaceHyperModel):
    """Compiles eagerly: tracing a 90-layer training step takes several seconds, far more than
    the two steps of these proxy runs, and these tests are about the integration, not
    TensorFlow's graph compiler (test_the_compiled_training_step... runs the real compile)."""

    def compile(self, model):
        model.compile(optimizer=self._make_optimizer(), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], run_eagerly=True)


class FailingSource(LatencySource):
    name, version = "failing", "1"

    def __init__(self, error=LatencyError):
        self.error, self.calls = error, []

    def measure(self, target):
        self.calls.append(target.label)
        raise self.error("no latency for you")


def _search(tuner, data, **kw):
    tuner.search(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val), epochs=1, batch_size=48,
                 verbose=0, **kw)


def _trials(tuner):
    return [tuner.oracle.trials[k] for k in sorted(tuner.oracle.trials)]


def _metrics(trial):
    return {name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics}


# ------------------------------------------------------------------------------ hyperparameters

@pytest.mark.parametrize("make", [OddSpace, lambda: search_spaces.get(
    "efficientnet_edgetpu", resolution=32, width=0.25, depth=0.5, num_classes=10)], ids=["odd", "edgetpu"])
def test_every_decision_is_one_choice_and_every_value_round_trips(make):
    space = make()
    hm = SpaceHyperModel(space, target_ms=TARGET_MS)
    hp = keras_tuner.HyperParameters()
    hm.declare_hyperparameters(hp)
    # One Choice per decision, same names, same order, values in the decision's order.
    assert [h.name for h in hp.space] == [d.name for d in space.decision_list]
    for h, d in zip(hp.space, space.decision_list):
        assert isinstance(h, keras_tuner.engine.hyperparameters.Choice)
        assert list(h.values) == hp_values(d) and len(h.values) == len(d.choices)
        assert len({type(v) for v in h.values}) == 1 and type(h.values[0]) in (int, float, str)
    base = {d.name: d.choices[0] for d in space.decision_list}
    for d in space.decision_list:
        for value in d.choices:
            choices = {**base, d.name: value}
            hv = hm.hp_values_of(choices)
            back = hm.choices_from_hp(hv)
            assert back[d.name] == value and type(back[d.name]) is type(value), (d.name, value, hv[d.name])
            assert hm.arch_from_hp(hv) == space.decode(choices)
            # Through an Arch and through keras-tuner's own HyperParameters (as a trial holds them).
            assert hm.hp_values_of(space.decode(choices)) == hv
            kt_hp = keras_tuner.HyperParameters()
            for name, v in hv.items():
                kt_hp.Fixed(name, v)
            assert hm.choices_from_hp(kt_hp) == choices


def test_hp_values_of_the_odd_space():
    got = {d.name: hp_values(d) for d in OddSpace().decision_list}
    assert got == {
        "s1.kernel": [3, 5], "s1.se": [0.0, 0.25], "s2.block": ["mbconv", "fused_mbconv"],
        "s2.skip": ["True", "False"], "s2.filters": [16, 24], "s2.layout": ["(1, 3)", "(2, 5)"],
        "s2.se": ["False", "0.25"], "head.dropout": ["None", "0.2"],
    }
    assert all(type(v) is int for v in got["s2.filters"])
    # Choices whose strings would collide stay apart by their index.
    assert hp_values(Decision("x", ("1", 1))) == ["0:'1'", "1:1"]


def test_unknown_or_missing_hp_values_are_named():
    hm = SpaceHyperModel(OddSpace(), target_ms=TARGET_MS)
    values = hm.hp_values_of(OddSpace().sample(0))
    with pytest.raises(ValueError, match=r"'s1.kernel': 7 is not one of its values; allowed: 3, 5"):
        hm.choices_from_hp({**values, "s1.kernel": 7})
    with pytest.raises(ValueError, match=r"'s2.skip': True is not one of its values; allowed: 'True', 'False'"):
        hm.choices_from_hp({**values, "s2.skip": True})   # the hp value is the string
    with pytest.raises(ValueError, match=r"missing 'head.dropout'"):
        hm.choices_from_hp({k: v for k, v in values.items() if k != "head.dropout"})
    # Names a tuner adds (Hyperband's) are not decisions and are ignored.
    assert hm.arch_from_hp({**values, "tuner/epochs": 2}) == OddSpace().sample(0)


@pytest.mark.parametrize("kwargs, match", [
    ({"latency": "edgetpu-modle", "target_ms": 1.0},
     r"^latency: unknown source 'edgetpu-modle'; allowed: .*edgetpu-model"),
    ({"latency": 3, "target_ms": 1.0}, r"^latency: expected a source name or a LatencySource, got int"),
    ({"target_ms": -1.0}, r"^target_ms: expected a positive number of milliseconds, got -1.0"),
    ({"target_ms": 0}, r"^target_ms: expected a positive number of milliseconds, got 0"),
    ({"target_ms": "2"}, r"^target_ms: expected a positive number of milliseconds, got '2'"),
    ({"target_ms": True}, r"^target_ms: expected a positive number of milliseconds, got True"),
    ({"target_ms": math.inf}, r"^target_ms: expected a positive number of milliseconds, got inf"),
    ({}, r"^target_ms: missing; allowed: a positive latency target"),
    ({"reward": RewardConfig(target_ms=2.0), "target_ms": 2.0}, r"^target_ms: given with reward="),
    ({"reward": {"target_ms": 2.0}}, r"^reward: expected a nas.core.reward.RewardConfig, got dict"),
    ({"target_ms": 1.0, "optimizer": "adamw"}, r"^optimizer: unknown 'adamw'; allowed: adam, sgd, rmsprop"),
    ({"target_ms": 1.0, "learning_rate": 0}, r"^learning_rate: expected a positive number, got 0"),
    ({"target_ms": 1.0, "bn_momentum": 1.0}, r"^bn_momentum: expected a number in \(0, 1\) or None, got 1.0"),
    ({"target_ms": 1.0, "on_failure": "ignore"}, r"^on_failure: unknown 'ignore'; allowed: skip, zero"),
    ({"reward": RewardConfig(kind="tunas", target_ms=1.0), "on_failure": "zero"},
     r"^on_failure: 'zero' needs an MNAS"),
    ({"target_ms": 1.0, "input_shape": (32, 32)}, r"^input_shape: expected \(height, width, channels\)"),
    ({"target_ms": 1.0, "num_classes": 1}, r"^num_classes: expected an integer >= 2 or None, got 1"),
])
def test_bad_arguments_are_one_line_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        SpaceHyperModel(OddSpace(), **kwargs)
    assert "\n" not in str(e.value)


def test_reward_objective():
    obj = reward_objective()
    assert (obj.name, obj.direction) == ("reward", "max")


# ------------------------------------------------------------------------------ searches

@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")  # keras-tuner reloads weights only
def test_random_search_reports_the_reward_of_its_accuracy_and_latency(space, data, tmp_path):
    hm = EagerSpaceHyperModel(space, latency="edgetpu-model", target_ms=TARGET_MS, seed=0)
    tuner = keras_tuner.RandomSearch(hm, objective=reward_objective(), max_trials=2, seed=1,
                                     directory=tmp_path, project_name="random")
    _search(tuner, data)
    trials = _trials(tuner)
    assert [t.status for t in trials] == ["COMPLETED", "COMPLETED"]
    predictor, archs = get_source("edgetpu-model"), []
    for t in trials:
        arch = hm.arch_from_hp(t.hyperparameters)
        assert space.contains(arch)
        archs.append(arch)
        m = _metrics(t)
        assert 0.0 <= m["val_accuracy"] <= 1.0
        assert m["latency_ms"] == pytest.approx(predictor(arch).latency_ms, rel=1e-9)
        expected = reward(m["val_accuracy"], m["latency_ms"], RewardConfig(target_ms=TARGET_MS))
        assert m["reward"] == pytest.approx(expected, rel=1e-9)
        assert t.score == pytest.approx(m["reward"])
        # The trial's hp values are exactly the ones its arch maps to.
        assert hm.hp_values_of(arch) == {d.name: t.hyperparameters.values[d.name] for d in space.decision_list}
    assert archs[0] != archs[1]
    assert set(hm._latency_cache) >= {a.to_string() for a in archs}

    best_hp = tuner.get_best_hyperparameters()[0]
    best = max(trials, key=lambda t: t.score)
    assert best_hp.values == best.hyperparameters.values and space.contains(hm.arch_from_hp(best_hp))
    # The best model keras-tuner kept has the accuracy the trial reported.
    model = tuner.get_best_models(1)[0]
    _, acc = model.evaluate(data.x_val, data.y_val, verbose=0)
    assert acc == pytest.approx(_metrics(best)["val_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_a_folder_is_searched_through_the_same_pipelines_the_trials_read(space, tmp_path):
    """An image folder (decoded into the node's store, never held whole) fed to keras-tuner as
    the split's tf.data pipelines."""
    from nas.data.sources import StoreSettings
    from test_data import make_folder

    make_folder(tmp_path / "imgs", counts=(20, 12, 8), size=24, corrupt=1)
    split = load(f"folder:{tmp_path / 'imgs'}", 32, settings=StoreSettings(cache_dir=str(tmp_path / "cache")))
    train, val = split.datasets(16, augment="photo", seed=0)
    hm = EagerSpaceHyperModel(space, latency="edgetpu-model", target_ms=TARGET_MS, seed=0)
    tuner = keras_tuner.RandomSearch(hm, objective=reward_objective(), max_trials=1, seed=1,
                                     directory=tmp_path, project_name="folder")
    tuner.search(train, validation_data=val, epochs=1, verbose=0)
    [t] = _trials(tuner)
    assert t.status == "COMPLETED" and 0.0 <= _metrics(t)["val_accuracy"] <= 1.0
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1


@pytest.mark.slow
def test_bayesian_optimization_over_a_user_space_with_odd_values(data, tmp_path):
    space = OddSpace()
    cfg = RewardConfig(target_ms=0.5, preset="hard")
    hm = EagerSpaceHyperModel(space, latency="edgetpu-model", reward=cfg)
    tuner = keras_tuner.BayesianOptimization(hm, objective=reward_objective(), max_trials=2, num_initial_points=1,
                                             seed=1, directory=tmp_path, project_name="bayes")
    _search(tuner, data)
    trials = _trials(tuner)
    assert [t.status for t in trials] == ["COMPLETED", "COMPLETED"]   # the second one from the Gaussian process
    for t in trials:
        arch = hm.arch_from_hp(t.hyperparameters)
        assert space.contains(arch)
        m = _metrics(t)
        assert m["reward"] == pytest.approx(reward(m["val_accuracy"], m["latency_ms"], cfg), rel=1e-9)
    best = hm.arch_from_hp(tuner.get_best_hyperparameters()[0])
    assert space.contains(best) and best == space.decode(hm.choices_from_hp(tuner.get_best_hyperparameters()[0]))


@pytest.mark.slow
def test_the_compiled_training_step_leaves_no_graph_behind(data, tmp_path):
    # The production compile (a traced training step), on the small space so tracing stays cheap.
    import tensorflow.python.framework.ops as ops

    def custom_gradients():
        return [k for k in ops._gradient_registry._registry if str(k).startswith("CustomGradient-")]

    hm = SpaceHyperModel(OddSpace(), target_ms=TARGET_MS)
    tuner = keras_tuner.RandomSearch(hm, objective=reward_objective(), max_trials=1, seed=1, directory=tmp_path,
                                     project_name="graph")
    before = custom_gradients()
    _search(tuner, data)
    (trial,) = _trials(tuner)
    assert trial.status == "COMPLETED" and 0 <= _metrics(trial)["val_accuracy"] <= 1
    # Tracing registered gradient functions holding the training graph; fit() dropped them.
    assert custom_gradients() == [] and before == []


# ------------------------------------------------------------------------------ failures

def test_latency_failure_skips_the_trial_without_training(data, tmp_path):
    source = FailingSource()
    hm = SpaceHyperModel(OddSpace(), latency=source, target_ms=TARGET_MS)
    tuner = keras_tuner.RandomSearch(hm, objective=reward_objective(), max_trials=2, seed=1,
                                     max_consecutive_failed_trials=10, directory=tmp_path, project_name="skip")
    _search(tuner, data)
    trials = _trials(tuner)
    assert len(trials) == 2 and all(t.status == "FAILED" for t in trials)
    assert all("latency: LatencyError: no latency for you" in t.message for t in trials)
    assert all(not t.metrics.metrics for t in trials)             # nothing reported, nothing trained
    archs = {hm.arch_from_hp(t.hyperparameters).to_string() for t in trials}
    assert sorted(source.calls) == sorted(archs)                  # once per arch: failures are cached


def test_latency_failure_can_score_zero(data, tmp_path):
    hm = SpaceHyperModel(OddSpace(), latency=FailingSource(), target_ms=TARGET_MS, on_failure="zero")
    tuner = keras_tuner.RandomSearch(hm, objective=reward_objective(), max_trials=2, seed=1,
                                     directory=tmp_path, project_name="zero")
    _search(tuner, data)
    trials = _trials(tuner)
    assert [t.status for t in trials] == ["COMPLETED", "COMPLETED"]
    assert [_metrics(t) for t in trials] == [{"reward": 0.0}, {"reward": 0.0}]


def test_broken_constraint_skips_the_trial(data, tmp_path):
    cfg = RewardConfig(target_ms=TARGET_MS, constraints=Constraints(max_latency_ms=1e-6))
    hm = SpaceHyperModel(OddSpace(), reward=cfg)
    tuner = keras_tuner.RandomSearch(hm, objective=reward_objective(), max_trials=1, seed=1,
                                     directory=tmp_path, project_name="constraint")
    _search(tuner, data)
    (trial,) = _trials(tuner)
    assert trial.status == "FAILED" and "> max_latency_ms 1e-06" in trial.message


def test_missing_hardware_stops_the_search(data, tmp_path):
    hm = SpaceHyperModel(OddSpace(), latency=FailingSource(MissingHardware), target_ms=TARGET_MS)
    tuner = keras_tuner.RandomSearch(hm, objective=reward_objective(), max_trials=3, directory=tmp_path,
                                     project_name="hw")
    with pytest.raises(keras_tuner.errors.FatalRuntimeError, match="latency: no latency for you"):
        _search(tuner, data)


def test_search_without_validation_data_stops(data, tmp_path):
    hm = SpaceHyperModel(OddSpace(), target_ms=TARGET_MS)
    tuner = keras_tuner.RandomSearch(hm, objective=reward_objective(), max_trials=1, directory=tmp_path,
                                     project_name="noval")
    with pytest.raises(keras_tuner.errors.FatalValueError, match="validation_data"):
        tuner.search(data.x_train, data.y_train, epochs=1, verbose=0)
