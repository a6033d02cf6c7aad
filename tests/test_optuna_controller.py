"""The Optuna controller: seeded, members of the space, failures and infeasible archs told as
such, multi-objective, strict parameters, learns, and replays to the same state."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

import search_spaces as s
from nas.controllers.base import controller_names, get_controller

SMALL = s.get("efficientnet_edgetpu_bench", resolution=32, width=0.25, depth=0.5, num_classes=10)
BIG = s.get("efficientnet_edgetpu", resolution=32, width=0.25, depth=0.5)
TARGET = {sp.label: np.random.default_rng(123).integers([len(d.choices) for d in sp.decision_list])
          for sp in (SMALL, BIG)}


def objective(space, arch) -> float:
    """Share of decisions equal to a hidden target: one best choice per decision, optimum 1."""
    return float(np.mean(np.array(space.indices(space.encode(arch))) == TARGET[space.label]))


def result(space, arch) -> dict:
    """A synthetic record view: accuracy is the objective, latency grows with the repeats."""
    acc = objective(space, arch)
    lat = 1.0 + 0.1 * sum(b.repeats for b in arch.stages)
    return {"status": "ok", "reward": acc, "accuracy": acc, "latency_ms": lat}


def drive(c, n, space=SMALL, pending=2, outcome=None):
    """n asks and tells with ``pending`` trials outstanding; returns the (arch, result) told."""
    told, queue = [], []
    outcome = outcome or (lambda a: result(space, a))

    def tell(proposal):
        out = outcome(proposal.arch)
        c.tell(proposal, out)
        told.append((proposal.arch, out))

    for _ in range(n):
        queue.append(c.ask())
        if len(queue) >= pending:
            tell(queue.pop(0))
    for proposal in queue:
        tell(proposal)
    return told


def test_registered_and_imported_only_when_used():
    assert "optuna" in controller_names()
    code = "import sys, nas.controllers.base; assert not {'optuna', 'nas.controllers.optuna'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_same_seed_same_run_and_different_seeds_differ():
    runs = [[a.to_string() for a, _ in drive(get_controller("optuna", SMALL, seed=seed, n_startup_trials=4), 20)]
            for seed in (3, 3, 4)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_proposals_are_members_of_the_space_and_match_their_trials():
    c = get_controller("optuna", SMALL, seed=0, n_startup_trials=3)
    drive(c, 12)
    for t in c.study.trials:
        arch = s.Arch.from_string(t.user_attrs["arch"])
        idx = SMALL.indices(SMALL.encode(arch))
        assert idx == [t.params[d.name] for d in SMALL.decision_list]
        assert SMALL.decode_indices(idx) == arch
    assert set(c.study.trials[0].params) == {d.name for d in SMALL.decision_list}


def test_failed_and_infeasible_trials_reach_optuna_as_such():
    from optuna.trial import TrialState

    c = get_controller("optuna", SMALL, seed=1, n_startup_trials=2)
    outcomes = [
        {"status": "ok", "reward": 0.7, "accuracy": 0.7, "latency_ms": 2.0},
        {"status": "stopped", "reward": 0.4, "accuracy": 0.4, "latency_ms": 1.5, "epochs": 1},  # ASHA: usable
        {"status": "infeasible", "latency_ms": 9.0, "reason": "latency_ms 9.000 > max_latency_ms 5"},
        {"status": "infeasible", "reason": "params 2,000,000 > max_params 1,000,000"},  # nothing measured
        {"status": "failed", "reason": "NaN loss"},
        None,
        {"reward": "high"},  # unreadable
        {"status": "ok", "reward": float("nan")},
    ]
    for o in outcomes:
        c.tell(c.ask(), o)
    trials = c.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4 + [TrialState.FAIL] * 4
    assert [t.values for t in trials[:4]] == [[0.7], [0.4], [0.0], [0.0]]
    assert [t.constraints for t in trials[:4]] == [{"infeasible": 0.0}] * 2 + [{"infeasible": 1.0}] * 2
    assert [t.user_attrs["status"] for t in trials] == ["ok", "stopped", "infeasible", "infeasible", "failed",
                                                        "failed", "failed", "ok"]
    assert trials[2].user_attrs["reason"] == "latency_ms 9.000 > max_latency_ms 5"
    assert "unreadable result" in trials[6].user_attrs["reason"]
    assert c.n_feedback == 8 and c.n_failed == 6 and c.best[1] == 0.7 and not c.open
    # the constrained sampler keeps going (it ranks the infeasible ones after the feasible)
    drive(c, 6)
    assert len(c.study.trials) == 14


def test_the_constrained_sampler_steers_away_from_infeasible_archs():
    first = BIG.decision_list[0]
    assert len(first.choices) == 2

    def outcome(a):
        if BIG.indices(BIG.encode(a))[0] != 0:  # half the space breaks a hard constraint
            return {"status": "infeasible", "latency_ms": 9.0, "reason": "too slow"}
        return result(BIG, a)

    c = get_controller("optuna", BIG, seed=0)
    told = drive(c, 80, space=BIG, outcome=outcome)
    late = [o["status"] == "infeasible" for _, o in told[50:]]
    assert np.mean(late) < 0.25, np.mean(late)


@pytest.mark.parametrize("sampler,params", [("motpe", {"n_startup_trials": 5}), ("nsga2", {"population_size": 6})])
def test_multi_objective_on_accuracy_and_latency(sampler, params):
    from optuna.study import StudyDirection

    c = get_controller("optuna", SMALL, seed=2, sampler=sampler, **params)
    assert c.objectives == ("accuracy", "latency_ms")
    assert c.study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    told = drive(c, 24)
    c.tell(c.ask(), {"status": "infeasible", "reason": "off chip"})
    c.tell(c.ask(), {"status": "infeasible", "latency_ms": 7.5, "reason": "too slow"})
    done = c.study.trials
    assert [t.values for t in done[-2:]] == [[0.0, math.inf], [0.0, 7.5]]
    assert done[0].values == [told[0][1]["accuracy"], told[0][1]["latency_ms"]]
    front = c.study.best_trials
    assert front and all(t.constraints == {"infeasible": 0.0} for t in front)
    # a usable result without the objectives' fields cannot be told: FAIL, and still counted as usable
    c.tell(c.ask(), {"status": "ok", "reward": 0.5})
    assert c.study.trials[-1].state.name == "FAIL" and c.best is not None
    assert c.summary()["sampler"] == sampler


def test_settings_reach_the_sampler():
    c = get_controller("optuna", SMALL, seed=0, n_startup_trials=3, multivariate=False, constant_liar=False)
    sp = c.study.sampler
    assert (sp._n_startup_trials, sp._multivariate, sp._constant_liar) == (3, False, False)
    d = get_controller("optuna", SMALL)
    assert (d.study.sampler._n_startup_trials, d.study.sampler._multivariate, d.study.sampler._constant_liar) == (
        10, True, True)
    assert d.objectives == ("reward",)
    n = get_controller("optuna", SMALL, sampler="nsga2", objectives=["reward"])
    assert n.study.sampler._population_size == 20 and len(n.study.directions) == 1


@pytest.mark.parametrize("params,message", [
    ({"sampler": "cmaes"}, "controller.sampler: unknown 'cmaes'; allowed: tpe, nsga2, motpe"),
    ({"objectives": ["accuracy", "flops"]}, "controller.objectives: expected a list of distinct names from reward, "
                                            "accuracy, latency_ms, got ['accuracy', 'flops']"),
    ({"objectives": []}, "controller.objectives: expected a list"),
    ({"sampler": "motpe", "objectives": ["reward"]}, "controller.objectives: motpe is multi-objective"),
    ({"n_startup_trials": -1}, "controller.n_startup_trials: expected an integer in [0, 100000], got -1"),
    ({"n_startup_trials": 2.5}, "controller.n_startup_trials: expected an integer"),
    ({"multivariate": "yes"}, "controller.multivariate: expected true or false, got 'yes'"),
    ({"constant_liar": 1}, "controller.constant_liar: expected true or false, got 1"),
    ({"population_size": 10}, "controller.population_size: an NSGA-II setting, but sampler is tpe"),
    ({"sampler": "nsga2", "constant_liar": False}, "controller.constant_liar: a TPE setting, but sampler is nsga2"),
    ({"sampler": "nsga2", "population_size": 1}, "controller.population_size: expected an integer in [2, 100000]"),
    ({"seeds": 3}, "controller 'optuna': bad parameters {'seeds': 3}"),
])
def test_bad_parameters_are_one_line(params, message):
    with pytest.raises(ValueError) as e:
        get_controller("optuna", SMALL, **params)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_tpe_learns_a_known_optimum_better_than_random():
    c = get_controller("optuna", BIG, seed=0)
    tpe = [o["reward"] for _, o in drive(c, 80, space=BIG)]
    rnd = get_controller("random", BIG, seed=0)
    rand = [o["reward"] for _, o in drive(rnd, 80, space=BIG)]
    # proposals made after ~60 results, against random's over the whole run
    assert np.mean(tpe[60:]) > np.mean(rand) + 0.1, (np.mean(tpe[60:]), np.mean(rand))
    assert c.best[1] > max(rand)


@pytest.mark.parametrize("params", [{"n_startup_trials": 4}, {"sampler": "motpe", "n_startup_trials": 4},
                                    {"sampler": "nsga2", "population_size": 4}])
def test_replay_with_pending_trials_rebuilds_the_same_state(params):
    c = get_controller("optuna", SMALL, seed=7, **params)
    events, queue = [], []
    for i in range(18):  # two pending at a time, and failures and infeasible ones among them
        queue.append(c.ask())
        events.append(("ask", None))
        if len(queue) == 2:
            p = queue.pop(0)
            out = (None if i % 7 == 3 else {"status": "infeasible", "latency_ms": 8.0} if i % 5 == 4
                   else result(SMALL, p.arch))
            c.tell(p, out)
            events.append(("tell", (p.key, out)))
    fresh, asked = get_controller("optuna", SMALL, seed=7, **params), []
    for kind, told in events:  # as a ledger replays: each result goes back with the fresh proposal
        if kind == "ask":
            asked.append(fresh.ask())
        else:
            p = asked.pop(0)
            assert p.key == told[0]
            fresh.tell(p, told[1])
    assert len(c.open) == len(fresh.open) == 1 and fresh.n_superseded == 0
    assert [fresh.ask().key for _ in range(5)] == [c.ask().key for _ in range(5)]


def test_resume_through_the_search_state_continues_the_same_search():
    from nas.config.experiment import parse_experiment
    from nas.ledger.ledger import Ledger

    cfg = parse_experiment({
        "space": {"name": "efficientnet_edgetpu_bench", "resolution": 32, "width": 0.25, "depth": 0.5,
                  "num_classes": 10},
        "controller": {"name": "optuna", "params": {"n_startup_trials": 4}},
        "reward": {"target_ms": 2.0}, "budget": {"trials": 40}})
    st = Ledger(cfg, 40)
    running = []
    for i in range(16):
        running.append((f"t{i}", st.suggest(f"t{i}")))
        if len(running) == 2:
            tid, arch = running.pop(i % 2)  # out of order, as concurrent trials finish
            a = s.Arch.from_string(arch)
            st.complete(tid, {"status": "failed", "reason": "x"} if i % 6 == 5 else result(SMALL, a))
    back = Ledger.from_json(cfg, st.to_json())
    assert back.pending == st.pending and back.controller.n_superseded == 0
    assert [back.suggest(f"n{i}") for i in range(5)] == [st.suggest(f"n{i}") for i in range(5)]


def test_feedback_no_pending_trial_proposed_is_learned_and_the_stray_closed():
    from optuna.trial import TrialState

    other = get_controller("optuna", SMALL, seed=11, n_startup_trials=2)
    history = drive(other, 10, pending=1)
    c = get_controller("optuna", SMALL, seed=12, n_startup_trials=2)
    for a, result in history:  # redrawn proposals differ from the recorded archs
        c.ask()
        c.tell(a, result)
    states = [t.state for t in c.study.trials]
    assert TrialState.RUNNING not in states and not c.open
    complete = [t for t in c.study.trials if t.state is TrialState.COMPLETE]
    assert [t.user_attrs["arch"] for t in complete] == [a.to_string() for a, _ in history]
    assert [t.values[0] for t in complete] == [o["reward"] for _, o in history]
    assert c.n_superseded == sum(t.user_attrs.get("status") == "superseded" for t in c.study.trials) > 0
    # a repeat of a told arch, with nothing pending: added as a trial of its own, nothing closed
    n = len(c.study.trials)
    c.tell(*history[0])
    assert len(c.study.trials) == n + 1 and c.study.trials[-1].user_attrs["arch"] == history[0][0].to_string()


def test_a_replay_that_diverges_late_closes_the_newest_pending_trial():
    c = get_controller("optuna", SMALL, seed=7)
    p1, p2 = c.ask(), c.ask()
    x = next(a for a in (SMALL.decode_indices(i) for i in np.ndindex(*[len(d.choices) for d in SMALL.decision_list]))
             if a not in (p1.arch, p2.arch))
    c.tell(x, result(SMALL, x))    # the record's arch for the second ask is not p2's (a changed controller)
    c.tell(p1, result(SMALL, p1.arch))  # the first ask is still open: told to its own trial
    first, second, added = c.study.trials
    assert (first.user_attrs["arch"], first.state.name, first.values) == (p1.key, "COMPLETE",
                                                                          [objective(SMALL, p1.arch)])
    assert (second.user_attrs["arch"], second.user_attrs["status"]) == (p2.key, "superseded")
    assert (added.user_attrs["arch"], added.state.name) == (x.to_string(), "COMPLETE")
    assert c.n_superseded == 1 and not c.open


def test_an_experiment_may_name_it():
    from nas.config.experiment import parse_experiment
    from nas.run.launch import check
    from nas.ledger.ledger import make_controller

    base = {"space": {"name": "efficientnet_edgetpu_bench", "resolution": 32}, "reward": {"target_ms": 2.0},
            "budget": {"trials": 4}, "data": {"source": "digits"}}
    cfg = parse_experiment({**base, "controller": {"name": "optuna", "params": {"sampler": "motpe"}}})
    check(cfg)  # what `nas search` runs on an experiment before any work
    c = make_controller(cfg)
    assert c.name == "optuna" and c.sampler_name == "motpe" and c.seed == cfg.seed
    assert make_controller(parse_experiment({**base, "controller": {"name": "optuna"}})).sampler_name == "tpe"
    bad = parse_experiment({**base, "controller": {"name": "optuna", "params": {"sampler": "random"}}})
    with pytest.raises(ValueError, match=r"^controller.sampler: unknown 'random'; allowed: tpe, nsga2, motpe$"):
        make_controller(bad)
