"""Live TensorBoard logs of a search: one step per recorded trial, never twice, never fatal."""

from __future__ import annotations

import logging

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nas.config.experiment import parse_experiment
from nas.ledger.ledger import Ledger
from nas.ledger.folder import RunFolder

EXPERIMENT = {
    "name": "tblog-test", "seed": 3,
    "space": {"name": "efficientnet_edgetpu", "resolution": 32, "width": 0.25, "depth": 0.5},
    "controller": {"name": "random"},
    "reward": {"target_ms": 1.8},
    "data": {"source": "digits", "limit": 200},
    "budget": {"trials": 9},
}


def _scalars(folder):
    ea = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def _result(i: int) -> dict:
    if i % 4 == 3:
        return {"status": "failed", "reason": "NaN loss in epoch 1"}
    acc = 0.5 + 0.03 * i
    return {"status": "ok", "accuracy": acc, "latency_ms": 1.8, "reward": acc - 0.01, "params": 1000 + i}


def _new_run(tmp_path):
    cfg = parse_experiment(EXPERIMENT)
    run = RunFolder(tmp_path / "run")
    run.create(yaml.safe_dump(EXPERIMENT), 9)
    return cfg, run, Ledger(cfg, 9)


def _search(run: RunFolder, state: Ledger, ids: range) -> None:
    for i in ids:
        tid = f"t{i:03d}"
        state.suggest(tid)
        run.save(state)  # a proposal: nothing new to log
        state.complete(tid, _result(i))
        run.save(state)


def test_each_recorded_trial_is_logged_once_across_a_resume(tmp_path):
    cfg, run, state = _new_run(tmp_path)
    _search(run, state, range(5))
    s = _scalars(run.path / "tensorboard")  # readable while the search runs
    assert [step for step, _ in s["trial/failed"]] == [1, 2, 3, 4, 5]

    # a new process resumes the run: it must go on at step 6, not log 1-5 again
    resumed = RunFolder(run.path)
    state = resumed.read_state(cfg, 9)
    _search(resumed, state, range(5, 9))
    resumed.tensorboard.close()
    s = _scalars(run.path / "tensorboard")
    assert [step for step, _ in s["trial/failed"]] == list(range(1, 10))
    assert [v for _, v in s["trial/failed"]] == [float(i % 4 == 3) for i in range(9)]
    ok = [i for i in range(9) if i % 4 != 3]
    assert s["trial/accuracy"] == [(i + 1, pytest.approx(0.5 + 0.03 * i)) for i in ok]
    best = [(i + 1, pytest.approx(max(0.49 + 0.03 * j for j in ok if j <= i))) for i in ok]
    assert s["search/best_reward"] == best
    assert len(list((run.path / "tensorboard").glob("events.out.tfevents.*"))) == 2


def test_a_torn_event_file_is_read_up_to_the_tear(tmp_path):
    cfg, run, state = _new_run(tmp_path)
    _search(run, state, range(3))
    run.tensorboard.close()
    (f,) = (run.path / "tensorboard").glob("events.out.tfevents.*")
    f.write_bytes(f.read_bytes()[:-7])  # a search killed in the middle of a record
    resumed = RunFolder(run.path)
    state = resumed.read_state(cfg, 9)
    _search(resumed, state, range(3, 4))
    resumed.tensorboard.close()
    steps = [step for step, _ in _scalars(run.path / "tensorboard")["trial/failed"]]
    assert steps[-1] == 4 and len(set(steps)) == len(steps) >= 3


def test_logging_that_fails_warns_once_and_the_search_goes_on(tmp_path, caplog):
    _, run, state = _new_run(tmp_path)
    (run.path / "tensorboard").write_text("a file where the folder should be")
    with caplog.at_level(logging.WARNING, logger="nas.ledger.tblog"):
        _search(run, state, range(4))
    warnings = [r.getMessage() for r in caplog.records if r.name == "nas.ledger.tblog"]
    assert len(warnings) == 1 and warnings[0].startswith("TensorBoard logging stopped (the search goes on)")
    assert len(run.results()) == 4


def test_event_files_are_written_and_read_back_without_tensorflow(tmp_path):
    """The search driver logs every trial: TensorBoard's own writer would import TensorFlow."""
    import subprocess
    import sys

    code = ("import sys; from nas.ledger.tblog import EventLog, logged_steps; "
            f"e = EventLog({str(tmp_path)!r}); e.scalar('trial/failed', 0.0, 3); e.close(); "
            f"print(logged_steps({str(tmp_path)!r}), 'tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["3", "False"]
    acc = EventAccumulator(str(tmp_path))  # TensorBoard reads what it wrote
    acc.Reload()
    assert [(s.step, s.value) for s in acc.Scalars("trial/failed")] == [(3, 0.0)]
