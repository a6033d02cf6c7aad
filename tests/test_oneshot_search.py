"""``search.strategy: oneshot`` through ``nas search``: a supernet in this process, its
candidates retrained as ordinary trials in the same run folder, TensorBoard curves, resume
after a kill, and ``nas report`` on the result. (Supernets as parallel Ray tasks:
``tests/test_folder_search.py``.)"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

TINY = {
    "version": 1, "name": "os", "seed": 1,
    "space": {"name": "efficientnet_edgetpu_bench"},  # (its supernet traces in a third of the full space's time)
    "controller": {"name": "logits", "params": {"learning_rate": 0.1}},
    "reward": {"target_ms": 1.8, "preset": "hard"},
    "data": {"source": "digits", "limit": 160},
    "train": {"epochs": 1, "batch_size": 32},
    "budget": {"trials": 3, "concurrency": 2},
    "search": {"strategy": "oneshot",
               "oneshot": {"epochs": 2, "batch_size": 32, "warmup": 0.25, "samples": 2, "candidates": 4,
                           "top_k": 1, "calibration": 1}},
}


def nas(*args, cwd, timeout=900):
    return subprocess.run([sys.executable, "-m", "nas.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def experiment(tmp_path: Path, **oneshot) -> Path:
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["search"]["oneshot"].update(oneshot)
    p = tmp_path / "os.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def tags(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def test_a_killed_oneshot_search_resumes_then_retrains_its_candidates_as_trials(tmp_path):
    exp = experiment(tmp_path, epochs=6, checkpoint_s=0.1)
    run = tmp_path / "run"
    ckpt = run / "oneshot" / "target-1.8ms" / "checkpoint.json"
    p = subprocess.Popen([sys.executable, "-m", "nas.cli", "search", str(exp), "--out", str(run), "--runner",
                          "local", "--no-progress"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:  # killed past the warm-up, in the middle of the supernet's training
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and p.poll() is None:
            if ckpt.is_file() and json.loads(ckpt.read_text())["step"] >= 8:
                break
            time.sleep(0.2)
        assert p.poll() is None, "the search ended before it could be killed"
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
    saved = json.loads(ckpt.read_text())
    assert 8 <= saved["step"] < saved["total_steps"] and saved["ledger"]["results"]
    assert not (run / "oneshot" / "candidates.json").exists() and not (run / "trials.csv").exists()

    r = nas("search", exp, "--out", run, "--resume", "--runner", "local", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "one-shot search with logits (1 supernet, 1.8 ms)" in r.stderr
    assert "supernet 1.8 ms: done" in r.stderr and "supernet 1.8 ms: step 0/" not in r.stderr  # went on
    done = json.loads((run / "oneshot" / "target-1.8ms" / "candidates.json").read_text())
    assert done["resumed"] and done["steps"] == saved["total_steps"]
    assert done["tracing"] == {"train": 1, "calibrate": 1, "predict": 1, "predict_batch_stats": 1}
    cands = json.loads((run / "oneshot" / "candidates.json").read_text())["candidates"]
    assert 1 <= len(cands) <= 2 and cands[0]["reason"] == "most likely"
    meta = json.loads((run / "run.json").read_text())
    # retrained as the search's queue, under the experiment's own controller (not a list of archs)
    assert meta["budget"] == len(cands) and "controller.name" not in meta["overrides"]
    assert meta["overrides"]["search.queue"] == [c["arch"] for c in cands]
    rows = list(csv.DictReader((run / "trials.csv").open()))
    assert sorted(row["arch"] for row in rows) == sorted(c["arch"] for c in cands)  # each retrained once
    assert all(row["status"] == "ok" for row in rows)
    assert {"oneshot/loss", "oneshot/entropy", "oneshot/latency_ms", "oneshot/reward"} <= tags(
        run / "tensorboard" / "oneshot-1.8ms")
    rep = nas("report", run, cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr[-2000:]
    page = (run / "report" / "report.md").read_text()  # under the experiment's controller, not a list's
    assert "with the `logits` controller" in page and "## One-shot candidates" in page
    assert all(row["trial_id"] in page for row in rows)  # each candidate beside its retrained trial
    # resuming a finished one-shot run trains no supernet and no trial again
    again = nas("search", exp, "--out", run, "--resume", "--runner", "local", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "supernet 1.8 ms: step" not in again.stderr
    assert len(list(csv.DictReader((run / "trials.csv").open()))) == len(rows)


def test_the_driver_checks_a_oneshot_experiment_without_loading_tensorflow(tmp_path):
    from conftest import ROOT

    code = (f"from nas.run.launch import prepare; prepare({str(ROOT / 'experiments' / 'oneshot_quickstart.yaml')!r}, "
            f"out={str(tmp_path / 'run')!r}); import sys; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'ray') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]" and not (tmp_path / "run").exists()


def test_candidates_of_several_targets_merge_most_likely_first_then_by_reward():
    from nas.oneshot.run import merged_candidates, retrain_overrides

    def c(arch, why, reward):
        return {"arch": arch, "reason": why, "reward": reward}

    a = [c("A", "most likely", 0.5), c("B", "sampled", 0.7), c("C", "sampled", 0.2)]
    b = [c("D", "most likely (infeasible)", float("nan")), c("B", "sampled", 0.6), c("E", "sampled", 0.9)]
    assert [x["arch"] for x in merged_candidates([a, b], 10)] == ["A", "D", "E", "B", "C"]
    assert [x["arch"] for x in merged_candidates([a, b], 3)] == ["A", "D", "E"]
    o = retrain_overrides(merged_candidates([a], 2))
    assert o == {"search.queue": ["A", "B"], "budget.trials": 2}


def test_the_list_controller_proposes_its_archs_in_order():
    import search_spaces
    from nas.controllers.base import get_controller

    space = search_spaces.get("efficientnet_edgetpu_bench")
    archs = [space.sample(i).to_string() for i in range(2)]
    ctrl = get_controller("list", space, archs=archs)
    assert [ctrl.ask().key for _ in range(3)] == [*archs, archs[0]]
    with pytest.raises(ValueError, match=r"controller.archs: expected a non-empty list of arch strings, got \[\]"):
        get_controller("list", space, archs=[])
