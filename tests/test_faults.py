"""Injected faults (the experiment's ``faults:``) take the real failure paths and never stop a search."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import yaml

from nas.config.experiment import FaultsConfig, parse_experiment
from nas.controllers.base import get_controller
from nas.trial.faults import KINDS, pick
from nas.ledger.ledger import Ledger, make_space
from nas.ledger.folder import RunFolder
from nas.trial.entry import run_trial

BASE = {
    "name": "faults", "seed": 2,
    # num_classes given (the search would count the digits' 10 itself), so the archs the test
    # expects are the very strings the search proposes
    "space": {"name": "efficientnet_edgetpu", "resolution": 32, "width": 0.25, "depth": 0.25, "num_classes": 10},
    "controller": {"name": "random"},
    "reward": {"target_ms": 1.8},
    "data": {"source": "digits", "limit": 200},
    "train": {"epochs": 1, "batch_size": 32},
    "budget": {"trials": 10, "concurrency": 2},
    "ray": {"max_failures": 1},
}

EXPECTED_REASON = {
    "exception": "RuntimeError: injected fault: exception",
    "nan_loss": "NaN loss at epoch 1, step 0",
    "conversion": "latency: ConversionError: injected fault",
    "latency": "latency: LatencyError: injected fault",
}


def test_pick_is_deterministic_and_follows_the_fractions():
    f = FaultsConfig(exception=0.1, nan_loss=0.1, conversion=0.1, latency=0.1, worker_killed=0.1, seed=4)
    keys = [f"arch-{i}" for i in range(5000)]
    picks = [pick(f, k) for k in keys]
    assert picks == [pick(f, k) for k in keys]
    for kind in KINDS:
        assert abs(picks.count(kind) / len(keys) - 0.1) < 0.02, kind
    assert abs(picks.count(None) / len(keys) - 0.5) < 0.03
    assert all(pick(FaultsConfig(), k) is None for k in keys[:100])
    assert pick(FaultsConfig(latency=1.0), "x") == "latency"


def test_fractions_over_one_are_refused():
    with pytest.raises(ValueError, match=r"faults: the fractions add up to 1.2; at most 1 is allowed"):
        parse_experiment({**BASE, "faults": {"exception": 0.6, "latency": 0.6}})
    with pytest.raises(ValueError, match=r"faults.nan_loss: Input should be less than or equal to 1"):
        parse_experiment({**BASE, "faults": {"nan_loss": 1.5}})


ARCH = "v1-res32:stem-k3-s2-o8-relu:ds-r1-k3-s1-o8-relu:head-o64-relu-d0.2"


@pytest.mark.parametrize("kind", [*EXPECTED_REASON, "worker_killed"])
def test_each_fault_is_a_failed_trial_with_its_reason(kind):
    cfg = parse_experiment({**BASE, "faults": {kind: 1.0}})
    r = run_trial(ARCH, cfg)  # in this process: a worker_killed fault must not kill it
    assert r.status == "failed" and r.reward is None
    if kind == "worker_killed":
        assert r.reason.startswith("RuntimeError: injected fault: worker_killed (simulated")
    else:
        assert r.reason == EXPECTED_REASON[kind]
    clean = run_trial(ARCH, parse_experiment(BASE))
    assert clean.status == "ok" and clean.accuracy > 0


def _covering_seed(cfg_dict, fractions, n):
    """A faults seed under which the first n archs of the (feedback-independent) random
    controller meet every kind of fault at least once."""
    cfg = parse_experiment(cfg_dict)
    ctrl = get_controller("random", make_space(cfg), seed=cfg.seed)
    archs = [ctrl.ask().key for _ in range(n)]
    for seed in range(500):
        f = FaultsConfig(**fractions, seed=seed)
        kinds = [pick(f, a) for a in archs]
        if set(KINDS) <= set(kinds) and kinds.count(None) >= 2:
            return seed, dict(zip(archs, kinds))
    raise AssertionError("no covering seed")


def test_a_search_with_injected_failures_completes_its_budget_through_ray(tmp_path):
    fractions = {k: 0.1 for k in KINDS}
    seed, expected = _covering_seed(BASE, fractions, BASE["budget"]["trials"])
    exp = {**BASE, "faults": {**fractions, "seed": seed}}
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(exp))
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(path), "--out", str(out), "--no-progress"],
                       capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert p.returncode == 0, p.stderr[-3000:]
    results = RunFolder(out).results()
    assert len(results) == BASE["budget"]["trials"]  # the budget is met despite half the trials failing
    assert sorted(r.arch for r in results) == sorted(expected)
    for r in results:
        kind = expected[r.arch]
        if kind is None:
            assert r.status == "ok" and r.accuracy > 0, r
        elif kind == "worker_killed":  # Ray retried it (max_failures 1), it died again: a failed trial
            assert r.status == "failed" and r.reason.startswith("the trial's worker failed"), r
        else:
            assert r.status == "failed" and r.reason == EXPECTED_REASON[kind], r
    # the controller was told every trial, and learned from none of the failures
    cfg = parse_experiment(exp)
    state = Ledger.from_json(cfg, (out / "state.json").read_text())
    c = state.controller
    n_failed = sum(k is not None for k in expected.values())
    assert c.n_feedback == len(results) and c.n_failed == n_failed
    assert c.best is not None and math.isfinite(c.best[1])
    assert json.loads((out / "state.json").read_text())["untold"] == []
