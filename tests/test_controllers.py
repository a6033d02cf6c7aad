"""Controllers on a synthetic objective with a known optimum; replay; bad results; rewards."""

from __future__ import annotations

import math

import numpy as np
import pytest

import search_spaces as s
from nas.controllers.base import Controller, get_controller, register_controller
from nas.core.record import usable_reward
from nas.core.reward import Constraints, RewardConfig, reward

SPACE = s.get("efficientnet_edgetpu", resolution=32, width=0.25, depth=0.5)
TARGET = np.random.default_rng(123).integers([len(d.choices) for d in SPACE.decision_list])


def objective(arch) -> float:
    """Share of decisions equal to a hidden target: optimum 1.0, random ~0.33."""
    return float(np.mean(np.array(SPACE.indices(SPACE.encode(arch))) == TARGET))


def run(name, trials, seed=0, **params):
    c = get_controller(name, SPACE, seed=seed, **params)
    rewards = []
    for _ in range(trials):
        p = c.ask()
        r = objective(p.arch)
        c.tell(p, {"reward": r, "status": "ok"})
        rewards.append(r)
    return c, np.array(rewards)


FAST_MNAS = {"learning_rate": 0.02, "batch_size": 8, "entropy_weight": 1e-4}


# (mnas without its novelty redraws here, a fifth of the time: what it learns is the point; the
# redraws have their own test below)
@pytest.mark.parametrize("name,params", [("evolution", {"population": 20, "sample": 5}),
                                         ("mnas", {**FAST_MNAS, "novelty": False}),
                                         ("logits", {"learning_rate": 0.1})])
def test_controllers_beat_random_on_a_known_optimum(name, params):
    trials = 240
    _, rand = run("random", trials)
    c, got = run(name, trials, **params)
    assert got[-60:].mean() > rand[-60:].mean() + 0.1, (name, got[-60:].mean(), rand[-60:].mean())
    assert c.best[1] > rand.max()
    if hasattr(c, "most_likely"):  # the policy's mode has learned the target too
        assert objective(c.most_likely()) > rand[-60:].mean() + 0.1, objective(c.most_likely())


@pytest.mark.parametrize("name,params", [("random", {}), ("evolution", {"population": 6, "sample": 3}),
                                         ("mnas", {"batch_size": 4}), ("logits", {"batch_size": 2})])
def test_replay_reproduces_the_next_proposal(name, params):
    c, _ = run(name, 13, seed=5, **params)
    history = []
    fresh = get_controller(name, SPACE, seed=5, **params)
    probe = get_controller(name, SPACE, seed=5, **params)
    for _ in range(13):  # the same run again, recorded
        p = probe.ask()
        history.append((p.key, {"reward": objective(p.arch)}))
        probe.tell(p, history[-1][1])
    for key, result in history:  # the recorded run fed to a fresh controller, proposals redrawn
        p = fresh.ask()
        assert p.key == key
        fresh.tell(p, result)
    assert fresh.ask().key == c.ask().key
    assert fresh.summary()["feedback"] == 13


@pytest.mark.parametrize("name", ["random", "evolution", "mnas"])
def test_bad_results_are_counted_not_learned(name):
    c = get_controller(name, SPACE, seed=1, **({"batch_size": 2} if name == "mnas" else
                                               {"population": 3, "sample": 2} if name == "evolution" else {}))
    bad = [{"reward": float("nan")}, {"reward": float("inf")}, {"reward": None}, None,
           {"reward": 0.9, "status": "failed"}, {"reward": "high"}, {"reward": -float("inf")}]
    for result in bad * 2:
        c.tell(c.ask(), result)
    assert c.n_failed == len(bad) * 2 and c.best is None
    for _ in range(6):
        p = c.ask()
        c.tell(p, {"reward": objective(p.arch)})
    assert c.best is not None and math.isfinite(c.best[1])
    if name == "mnas":
        assert all(np.isfinite(v).all() for v in c.params.values())


def test_same_seed_same_run_and_different_seeds_differ():
    evo = get_controller("evolution", SPACE, seed=3)
    a = [evo.ask().key for _ in range(3)]
    _, r1 = run("mnas", 20, seed=4, batch_size=4)
    _, r2 = run("mnas", 20, seed=4, batch_size=4)
    _, r3 = run("mnas", 20, seed=9, batch_size=4)
    assert (r1 == r2).all() and not (r1 == r3).all() and len(set(a)) == 3


def test_mutation_changes_exactly_one_decision():
    c = get_controller("evolution", SPACE, seed=0, population=2, sample=1)
    parent = c.random_indices()
    for _ in range(50):
        child = c.mutate(parent)
        assert sum(p != q for p, q in zip(parent, child)) == 1


def test_controller_registry_and_parameters():
    with pytest.raises(ValueError, match="unknown name 'mnasx'.*did you mean 'mnas'"):
        get_controller("mnasx", SPACE)
    with pytest.raises(ValueError, match="controller.population: expected an integer >= 2"):
        get_controller("evolution", SPACE, population=1)
    with pytest.raises(ValueError, match="controller.algorithm: unknown 'a2c'"):
        get_controller("mnas", SPACE, algorithm="a2c")
    with pytest.raises(ValueError, match="bad parameters.*temperature"):
        get_controller("random", SPACE, temperature=2)

    class Mine(Controller):
        name = "mine-test"

        def propose(self):
            return self.space.decode_indices([0] * len(self.space.decision_list))

    register_controller(Mine)
    assert get_controller("mine-test", SPACE).ask().arch == SPACE.decode_indices([0] * len(SPACE.decision_list))
    with pytest.raises(ValueError, match="already registered"):
        register_controller(type("Other", (Mine,), {}))


def test_mnas_paper_preset_follows_the_paper():
    c = get_controller("mnas", SPACE, preset="paper")
    c.plan(100, 4)  # the paper's settings do not depend on the budget
    assert c.hidden == 100 and c.baseline_decay == 0.95 and c.algorithm == "ppo" and c.batch_size == 8
    assert c.learning_rate == pytest.approx(3.5e-4) and c.entropy_weight == 1e-5
    assert (c.advantage, c.elite) == ("baseline", 0)
    assert max(float(np.abs(v).max()) for v in c.params.values()) <= 0.1
    c.ask()
    assert 0 < c.summary()["entropy"] <= math.log(8)


def test_mnas_default_preset_derives_step_size_and_batch_from_the_budget():
    from nas.controllers.mnas import PAPER, REACH

    c = get_controller("mnas", SPACE)
    c.plan(200, 8)
    assert c.batch_size == 8 and c.optimizer.lr == c.learning_rate
    # the policy's reach over the budget (updates x epochs x step): REACH, less than the paper's over 8,000 models
    assert (200 / c.batch_size) * c.ppo_epochs * c.learning_rate == pytest.approx(REACH)
    assert PAPER["learning_rate"] * PAPER["ppo_epochs"] * 8000 / PAPER["batch_size"] == pytest.approx(1.75) and REACH < 1.75
    assert (c.advantage, c.elite, c.novelty) == ("rank", 8, True)
    small = get_controller("mnas", SPACE)
    small.plan(4, 1)
    assert small.batch_size == 2 and small.learning_rate == 0.05  # clipped
    given = get_controller("mnas", SPACE, learning_rate=0.002)
    given.plan(200, 8)
    assert given.learning_rate == 0.002 and given.batch_size == 8
    batch = get_controller("mnas", SPACE, batch_size=16)  # edgetpu_imagenet.yaml: 8,000 trials
    batch.plan(8000, 4)
    assert batch.batch_size == 16 and batch.learning_rate == pytest.approx(PAPER["learning_rate"])
    with pytest.raises(ValueError, match="controller.preset: unknown 'mnas'; allowed: budget, paper"):
        get_controller("mnas", SPACE, preset="mnas")


def test_mnas_never_reproposes_an_arch_it_has_tried_while_new_ones_remain():
    """A policy made sure of one arch (its logits pushed far) still proposes archs not yet tried:
    novelty redraws, widening the policy, instead of spending asks on repeats."""
    from search_spaces import CategoricalSpace

    space = CategoricalSpace({"a": (0, 1, 2), "b": (0, 1, 2)})
    c = get_controller("mnas", space, seed=3)
    for t in range(len(c.sizes)):
        c.params[f"hb{t}"][:] = [20.0] + [0.0] * (c.sizes[t] - 1)  # p(choice 0) ~ 1 everywhere
    keys = [c.ask().key for _ in range(9)]
    assert len(set(keys)) == 9  # the whole space, no repeat
    off = get_controller("mnas", space, seed=3, novelty=False)
    for t in range(len(off.sizes)):
        off.params[f"hb{t}"][:] = [20.0] + [0.0] * (off.sizes[t] - 1)
    assert len({off.ask().key for _ in range(9)}) == 1  # without it: the one arch, over and over


def test_mnas_advantages_are_centred_ranks_and_the_best_are_replayed():
    from nas.controllers.mnas import _centred_rank

    rewards = np.array([0.1, 0.5, 0.5, 0.9])
    assert [_centred_rank(r, rewards) for r in (0.1, 0.5, 0.9)] == [-0.375, 0.0, 0.375]
    c = get_controller("mnas", SPACE, seed=0, batch_size=4, elite=2)
    seen = []
    real = c.loss_gradients

    def spy(actions, old, adv):
        seen.append(np.array(adv))
        return real(actions, old, adv)

    c.loss_gradients = spy
    archs = [c.ask() for _ in range(4)]
    for a, r in zip(archs, (0.2, 0.8, 0.4, 0.6)):
        c.tell(a, {"reward": r})
    assert np.allclose(seen[0], [-0.375, 0.375, -0.125, 0.125])  # ranks, not rewards minus a baseline
    best = c.space.indices(c.space.encode(archs[1].arch))
    before = c._forward(np.array([best]))[1][0]
    c.elite, c.buffer = 2, [(best, before, 0.8)]
    c.history.append((best, 0.8))
    c._update()
    assert c._forward(np.array([best]))[1][0] > before  # the best so far made more likely


def test_mnas_runs_its_whole_budget_on_a_small_space_under_the_hard_reward():
    """The failure that motivated novelty: on a 729-member space with a flat-then-steep reward,
    the paper's recipe converges onto archs it has tried and ends on max_repeats."""
    from nas.bench.bench import run_controller
    from nas.core.record import Status, TrialRecord
    from search_spaces import CategoricalSpace

    space = CategoricalSpace({f"d{i}": (0, 1, 2) for i in range(6)})
    rng = np.random.default_rng(0)
    value = {m: float(rng.random()) for m in (space.decode(c).to_string() for c in space.iter_choices())}

    def lookup(items):
        return [TrialRecord(status=Status.OK, arch=k, reward=min(0.7, value[k]), accuracy=value[k], latency_ms=1.0)
                for _, k, _ in items]

    run = run_controller(get_controller("mnas", space, seed=0), lookup, trials=150, batch=8, max_repeats=200,
                         space_size=space.size)
    assert run.stop is None and len(set(run.keys)) == 150 and run.asks < 170


def test_a_search_tells_its_controller_the_budget_and_keeps_it_on_resume():
    from nas.config.experiment import parse_experiment
    from nas.ledger.ledger import Ledger

    c = parse_experiment({"space": {"name": "efficientnet_edgetpu_bench"}, "reward": {"target_ms": 2},
                          "budget": {"trials": 40, "concurrency": 4}})
    st = Ledger(c, 40)
    assert st.controller.planned == (40, 4) and st.controller.batch_size == 4
    again = Ledger.from_json(c, st.to_json(), budget=400)  # --max-trials 400 on resume
    assert again.controller.planned == (40, 4) and again.controller.learning_rate == st.controller.learning_rate


# ----------------------------------------------------------------------------------- rewards


def test_mnas_reward():
    soft = RewardConfig(target_ms=2.0)
    assert reward(0.8, 2.0, soft) == pytest.approx(0.8)
    assert reward(0.8, 4.0, soft) == pytest.approx(0.8 * 2 ** -0.07)
    assert reward(0.8, 1.0, soft) == pytest.approx(0.8 * 0.5 ** -0.07)  # faster is rewarded too
    hard = RewardConfig(target_ms=2.0, preset="hard")
    assert reward(0.8, 1.0, hard) == pytest.approx(0.8) and reward(0.8, 4.0, hard) == pytest.approx(0.4)
    custom = RewardConfig(target_ms=2.0, preset=None, alpha=-0.15, beta=-0.5)
    assert reward(0.8, 4.0, custom) == pytest.approx(0.8 * 2 ** -0.5)
    assert math.isnan(reward(float("nan"), 1.0, soft)) and math.isnan(reward(0.8, 0.0, soft))


def test_tunas_reward_and_validation():
    t = RewardConfig(kind="tunas", target_ms=2.0)
    assert reward(0.8, 3.0, t) == pytest.approx(0.8 - 0.1 * 0.5)
    assert reward(0.8, 1.0, t) == pytest.approx(0.8 - 0.1 * 0.5)
    # the config section is the runtime's reward: built in Python, its errors are one line too
    with pytest.raises(ValueError, match=r"^reward.kind: Input should be 'mnas' or 'tunas' \(given 'flops'\)$"):
        RewardConfig(kind="flops", target_ms=1.0)
    with pytest.raises(ValueError, match=r"^reward.target_ms: Input should be greater than 0 \(given 0\)$"):
        RewardConfig(target_ms=0)
    with pytest.raises(ValueError, match=r"^reward.preset: Input should be 'soft' or 'hard' \(given 'medium'\)$"):
        RewardConfig(target_ms=1.0, preset="medium")
    with pytest.raises(ValueError, match=r"^reward: with preset null give alpha and beta$"):
        RewardConfig(target_ms=1.0, preset=None, alpha=None, beta=-0.1)
    with pytest.raises(ValueError, match=r"^reward.target_ms: missing \(required\)$"):
        RewardConfig()
    # the absolute reward has no preset: given one (or alpha) it says so instead of ignoring it
    assert t.preset is None and RewardConfig(target_ms=2.0).preset == "soft"
    with pytest.raises(ValueError, match=r"kind tunas .* takes only beta .*got preset 'hard', alpha None"):
        RewardConfig(kind="tunas", target_ms=2.0, preset="hard")
    with pytest.raises(ValueError, match=r"kind tunas .*got preset None, alpha -0.1"):
        RewardConfig(kind="tunas", target_ms=2.0, alpha=-0.1)


def test_constraints_make_candidates_infeasible_with_a_reason():
    c = Constraints(max_off_chip_bytes=0, max_params=1000, all_ops_on_tpu=True, max_latency_ms=5)
    assert c.violation({"off_chip_bytes": 0, "params": 10, "ops_on_cpu": 0, "latency_ms": 1}) is None
    assert c.violation({"off_chip_bytes": 4096}) == "off_chip_bytes 4,096 > max_off_chip_bytes 0"
    assert "params 2,000 > max_params 1,000" == c.violation({"params": 2000})
    assert "all_ops_on_tpu" in c.violation({"ops_on_cpu": 3})
    assert "max_latency_ms 5" in c.violation({"latency_ms": 7.5})
    assert usable_reward({"reward": 0.5, "status": "infeasible"}) is None


@pytest.mark.parametrize("algorithm", ["ppo", "reinforce"])
def test_policy_gradient_matches_finite_differences(algorithm):
    small = s.get("my_spaces:TinySpace")
    c = get_controller("mnas", small, seed=2, hidden=6, algorithm=algorithm, entropy_weight=0.05, init_range=0.5)
    rng = np.random.default_rng(0)
    actions = np.array([[int(rng.integers(len(d.choices))) for d in small.decision_list] for _ in range(4)])
    old = c._forward(actions, batch=4)[1] + rng.normal(0, 0.1, 4)  # ratios away from 1: both PPO branches
    adv = rng.normal(0, 1, 4)
    _, grads = c.loss_gradients(actions, old, adv)
    for key in ("W", "b", "start", "e0", "hw1", "hb4"):
        p = c.params[key]
        for idx in [tuple(rng.integers(p.shape)) for _ in range(4)]:
            keep = p[idx]
            p[idx] = keep + 1e-6
            up = c.loss_gradients(actions, old, adv)[0]
            p[idx] = keep - 1e-6
            down = c.loss_gradients(actions, old, adv)[0]
            p[idx] = keep
            assert grads[key][idx] == pytest.approx((up - down) / 2e-6, rel=1e-4, abs=1e-8), (key, idx)


def test_the_budget_step_size_gives_both_algorithms_the_same_reach():
    from nas.controllers.mnas import REACH

    space = s.get("efficientnet_edgetpu_bench", resolution=32, width=0.25, depth=0.5)
    moves = {}
    for algorithm in ("ppo", "reinforce"):
        c = get_controller("mnas", space, algorithm=algorithm)
        c.plan(budget=400, concurrency=4)
        steps_per_update = c.ppo_epochs if algorithm == "ppo" else 1
        moves[algorithm] = c.learning_rate * steps_per_update * 400 / c.batch_size
    assert moves["ppo"] == pytest.approx(REACH) and moves["reinforce"] == pytest.approx(REACH)


def test_import_paths_fail_clearly():
    from latency_models import get_source

    with pytest.raises(ValueError, match="controller 'nowhere:Ctrl': cannot import it"):
        get_controller("nowhere:Ctrl", SPACE)
    with pytest.raises(ValueError, match="is not a Controller subclass"):
        get_controller("search_spaces:Arch", SPACE)
    with pytest.raises(ValueError, match="latency source 'nowhere:Src': cannot import it"):
        get_source("nowhere:Src")


def test_mnas_in_a_one_shot_search_learns_as_mnasnet_does():
    c = get_controller("mnas", SPACE, seed=0)
    c.for_weight_sharing()
    assert (c.advantage, c.elite, c.novelty) == ("baseline", 0, False)
    kept = get_controller("mnas", SPACE, seed=0, advantage="rank", elite=4)
    kept.for_weight_sharing()
    assert (kept.advantage, kept.elite, kept.novelty) == ("rank", 4, False)
    with pytest.raises(ValueError, match="controller.advantage: unknown 'z'; allowed: rank, baseline"):
        get_controller("mnas", SPACE, advantage="z")
