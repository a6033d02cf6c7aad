"""The one-shot search's joint step: warm-up on uniform paths with the controller held still,
then weight steps on the controller's paths and controller steps on validation batches, with
batched, cached latency calls; candidates re-scored at the end; every step traced once."""

from __future__ import annotations

import numpy as np
import pytest

import search_spaces
from nas.controllers.base import get_controller
from nas.data.sources import Split
from nas.config.experiment import OneShotConfig
from nas.oneshot.search import OneShotSearch
from nas.core.record import Status
from nas.core.reward import Constraints, RewardConfig

pytest.importorskip("tensorflow")


def _split(seed=0, n_train=48, n_val=24, classes=3):
    rng = np.random.default_rng(seed)
    x = rng.random((n_train + n_val, 32, 32, 3)).astype("float32")
    y = (x[:, :8, :8].mean(axis=(1, 2, 3)) * 40).astype("int64") % classes
    return Split(x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes)


def test_the_joint_search_warms_up_then_trains_weights_and_controller_together():
    space = search_spaces.get("efficientnet_edgetpu_bench")
    calls = []

    def latency(archs):
        calls.append([a.to_string() for a in archs])
        return [{"latency_ms": 1.0 + sum(b.se_ratio > 0 for b in a.stages), "off_chip_bytes": 0} for a in archs]

    ctrl = get_controller("logits", space, seed=1, learning_rate=0.2)
    settings = OneShotConfig(epochs=2, batch_size=16, warmup=0.25, samples=3, candidates=6, top_k=2,
                               calibration=1)
    search = OneShotSearch(space, space, _split(), ctrl, RewardConfig(target_ms=2.0, preset="hard"), latency,
                           settings, seed=0)
    assert (search.total_steps, search.warmup_steps) == (6, 2)
    assert ctrl.planned == ((6 - 2) * 3, 3)
    for _ in range(2):
        out = search.step()
        assert set(out) == {"loss"} and np.isfinite(out["loss"])
    assert ctrl.n_proposed == 0 and ctrl.n_feedback == 0 and not calls  # held still in the warm-up
    before = [z.copy() for z in ctrl.logits]
    for _ in range(3):
        out = search.step()
        assert 0 <= out["accuracy"] <= 1 and out["latency_ms"] >= 1 and np.isfinite(out["reward"])
    assert ctrl.n_feedback == 9 and ctrl.updates == 9  # every sample told, every one learned from
    assert any(not np.array_equal(a, b) for a, b in zip(before, ctrl.logits))
    # a sample that breaks a hard constraint is told as infeasible: counted, not learned from
    hard = search.rcfg
    search.rcfg = RewardConfig(target_ms=2.0, preset="hard", constraints=Constraints(max_latency_ms=0.5))
    out = search.step()
    assert np.isnan(out["reward"]) and ctrl.n_failed == 3 and ctrl.updates == 9
    assert {r.status for r in search.ledger.results.values()} == {Status.OK, Status.INFEASIBLE}
    search.rcfg = hard
    told = [a for c in calls for a in c]
    assert len(told) == len(set(told)) and all(1 <= len(c) <= 3 for c in calls)  # batched, each arch once
    assert len(search.curves["loss"]) == 6 and len(search.curves["reward"]) == 4
    assert search.curves["entropy"][-1] <= ctrl.max_entropy()
    cands = search.candidates()
    assert cands[0].reason == "most likely" and cands[0].arch == ctrl.most_likely().to_string()
    assert 1 <= len(cands) <= 3 and all(0 <= c.accuracy <= 1 for c in cands)
    sampled = [c.reward for c in cands[1:]]
    assert sampled == sorted(sampled, reverse=True)
    assert all(search.proxy_of(search_spaces.Arch.from_string(c.arch)).to_string() == c.proxy_arch for c in cands)
    # one trace per step kind, whatever the paths
    assert search.trainer.tracing_counts() == {"train": 1, "calibrate": 1, "predict": 1, "predict_batch_stats": 1}


@pytest.mark.parametrize("field,value,message", [
    ("epochs", 0, "search.oneshot.epochs: Input should be greater than or equal to 1 (given 0)"),
    ("warmup", 1.5, "search.oneshot.warmup: Input should be less than 1 (given 1.5)"),
    ("learning_rate", 0, "search.oneshot.learning_rate: Input should be greater than 0 (given 0)"),
    ("samples", "4", "search.oneshot.samples: Input should be a valid integer (given '4')"),
    ("largest_floor", 1.25, "search.oneshot.largest_floor: Input should be less than or equal to 1 (given 1.25)"),
])
def test_bad_settings_are_one_line_errors(field, value, message):
    # The search takes the experiment's own section: built in Python, its errors are one line too.
    with pytest.raises(ValueError) as info:
        OneShotConfig(**{field: value})
    assert str(info.value) == message


def _search(seed=0, epochs=2):
    space = search_spaces.get("efficientnet_edgetpu_bench")

    def latency(archs):
        return [{"latency_ms": 1.0 + sum(b.se_ratio > 0 for b in a.stages), "off_chip_bytes": 0} for a in archs]

    ctrl = get_controller("mnas", space, seed=seed)
    settings = OneShotConfig(epochs=epochs, batch_size=16, warmup=0.25, samples=2, candidates=4, top_k=1,
                               calibration=1)
    return OneShotSearch(space, space, _split(), ctrl, RewardConfig(target_ms=2.0, preset="hard"), latency,
                         settings, seed=seed)


def test_a_killed_search_resumes_from_its_checkpoint_and_refuses_one_of_other_settings(tmp_path):
    a = _search()
    for _ in range(4):  # past the warm-up: weights, optimizer, controller and data order all moved
        a.step()
    a.save(tmp_path)
    weights = [np.array(v.numpy()) for v in a.trainer.state_variables()]
    saved = {"events": list(a.ledger.events), "results": dict(a.ledger.results), "rng": a.rng.bit_generator.state}
    a.step()  # after the checkpoint: lost with the kill, and redone by the resumed search

    # each sampled path is a trial record of the search's ledger, as in a standalone search
    assert [e.as_list() for e in saved["events"]] == [["ask", "s2.0"], ["ask", "s2.1"], ["tell", "s2.0"],
                                                      ["tell", "s2.1"], ["ask", "s3.0"], ["ask", "s3.1"],
                                                      ["tell", "s3.0"], ["tell", "s3.1"]]
    assert all(r.status is Status.OK and 0 <= r.accuracy <= 1 and r.latency_ms >= 1 and r.proxy_arch
               for r in saved["results"].values())

    b = _search()
    assert not b.restore(tmp_path / "none")  # no checkpoint there: a fresh start
    assert b.restore(tmp_path) and b.step_index == 4
    assert b.rng.bit_generator.state == saved["rng"]
    assert b.ledger.events == saved["events"] and b.ledger.results == saved["results"]
    for w, v in zip(weights, b.trainer.state_variables(), strict=True):
        np.testing.assert_array_equal(w, v.numpy())  # weights, BN statistics, Adam's slots, the step count
    assert b.trainer.update.iterations == 4
    # the controller, rebuilt by the ledger's replay, is where the original was at step 4:
    # it proposes what the original proposed at step 5 (the random state of the data is back too)
    assert [b.controller.ask().key for _ in range(2)] == [a.ledger.archs["s4.0"], a.ledger.archs["s4.1"]]
    assert not np.array_equal(b._order, np.zeros(0))
    # the same checkpoint, for a search of other settings, is refused (not resumed as if it were its own)
    with pytest.raises(ValueError, match="resume: .* was made with .*total_steps"):
        _search(epochs=3).restore(tmp_path)


def test_weight_steps_take_the_largest_choices_with_a_probability_falling_to_a_floor():
    from nas.oneshot.search import largest_choices

    space = search_spaces.get("efficientnet_edgetpu_bench")
    # block types have no order: never forced; SE and repeats: their largest choice
    assert largest_choices(space) == [None if d.name.endswith(".block") else int(np.argmax(d.choices))
                                      for d in space.decision_list]
    ctrl = get_controller("logits", space, seed=1)
    settings = OneShotConfig(epochs=2, batch_size=8, warmup=0.5, samples=1, candidates=2, top_k=1,
                               calibration=1, largest_until=0.5, largest_floor=0.25)
    search = OneShotSearch(space, space, _split(), ctrl, RewardConfig(target_ms=2.0, preset="hard"),
                           lambda archs: [{"latency_ms": 1.0} for _ in archs], settings, seed=0)
    assert search.total_steps == 12
    assert [search.largest_p(t) for t in (0, 3, 6, 9, 11)] == [1.0, 0.625, 0.25, 0.25, 0.25]
    small = space.decode_indices([0] * len(space.decision_list))
    fused = space.decode_indices([1 if d.name.endswith(".block") else 0 for d in space.decision_list])
    # at the first step every numeric decision is its largest, the block types as drawn
    for arch in (small, fused):
        big = space.indices(space.encode(search.weight_path(arch)))
        assert big == [i if b is None else b for i, b in
                       zip(space.indices(space.encode(arch)), largest_choices(space))]
    # at the floor, a quarter of the numeric decisions, drawn independently
    search.step_index = 9
    forced = [v for _ in range(400) for d, v in zip(space.decision_list, space.indices(space.encode(
              search.weight_path(small)))) if not d.name.endswith(".block")]
    assert 0.2 < np.mean(forced) < 0.3
    # the trained path is the forced one: a step at p = 1 trains the largest proxy
    trained = []
    search.trainer.train = lambda x, y, arch: trained.append(arch.to_string()) or 0.0
    search.step_index = 0
    search.step()
    assert len(trained) == 1
    idx = space.indices(space.encode(search_spaces.Arch.from_string(trained[0])))
    assert all(i == b for i, b in zip(idx, largest_choices(space)) if b is not None)


def test_without_the_largest_warm_up_a_path_is_trained_as_drawn():
    space = search_spaces.get("efficientnet_edgetpu_bench")
    settings = OneShotConfig(epochs=1, batch_size=8, largest_until=0, largest_floor=0)
    search = OneShotSearch(space, space, _split(), get_controller("logits", space, seed=1),
                           RewardConfig(target_ms=2.0), lambda archs: [{"latency_ms": 1.0} for _ in archs],
                           settings, seed=0)
    arch = space.decode_indices([0] * len(space.decision_list))
    assert search.largest_p() == 0 and search.weight_path(arch) is arch
