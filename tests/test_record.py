"""The trial record: one typed result, its conversions, the one definition of usable, and run
folders made before deployment and proxy were told apart."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nas.controllers.base import get_controller
from nas.core.record import (FIELDS, RecordError, usable_reward, Status, TrialRecord, best_result, csv_text, pareto_front,
                        read_csv)
from nas.ledger.ledger import Ledger
from nas.ledger.folder import RunFolder
from search_spaces import Arch

LEGACY = Path(__file__).parent / "data" / "run_v1"  # made by the toolkit before this record existed

FULL = TrialRecord(trial_id="t1", status=Status.OK, reward=0.71, accuracy=0.75, latency_ms=5.25, params=4_000_000,
                   macs=600_000_000, num_classes=10, on_chip_bytes=6_000_000, off_chip_bytes=1_234_567,
                   ops_on_tpu=80, ops_on_cpu=0, proxy_params=250_000, proxy_macs=3_000_000, epochs=3, train_s=12.5,
                   build_s=0.3, latency_s=0.01, trial_s=13.0, rss_mb=800.5, peak_rss_mb=900.0,
                   latency_source="edgetpu-model", node="host/abc", arch="v1-res128-cls10:x", proxy_arch="v1-res32:y")


def test_every_conversion_round_trips():
    assert TrialRecord.from_dict(FULL.as_dict()) == FULL                     # state.json
    assert read_csv(csv_text([FULL, TrialRecord(trial_id="t2")])) == [FULL, TrialRecord(trial_id="t2")]  # trials.csv
    assert TrialRecord.from_ray({**FULL.to_ray(), "training_iteration": 3, "time_this_iter_s": 1.0}) == FULL
    assert list(FULL.as_dict()) == list(FIELDS)
    json.dumps(FULL.as_dict(), allow_nan=False)  # strict JSON


def test_no_value_is_none_here_nan_for_ray_and_empty_in_csv():
    rec = TrialRecord(trial_id="t", status="failed", reason="NaN loss", reward=float("nan"), accuracy=None)
    assert rec.reward is None and rec.accuracy is None and rec.status is Status.FAILED
    ray = rec.to_ray()
    assert math.isnan(ray["reward"]) and math.isnan(ray["params"]) and ray["reason"] == "NaN loss"
    assert ray["status"] == "failed" and ray["arch"] is None
    row = rec.csv_row()
    assert row["reward"] == "" and row["status"] == "failed"
    assert TrialRecord.from_ray(ray) == rec == TrialRecord.from_csv_row(row)


def test_a_worker_that_died_is_a_failed_record():
    assert TrialRecord.from_ray(None, error=True, why="SIGKILL") == TrialRecord(
        status=Status.FAILED, reason="the trial's worker failed: SIGKILL")
    assert TrialRecord.from_ray({}).status is Status.FAILED


def test_bad_values_are_named():
    with pytest.raises(RecordError, match=r"^status: unknown 'great'; allowed: running, ok, stopped, infeasible"):
        TrialRecord(status="great")
    with pytest.raises(RecordError, match=r"^params: expected an integer, got 1.5"):
        TrialRecord(params=1.5)
    bad = csv_text([FULL]).replace(",4000000,", ",four,")
    with pytest.raises(RecordError, match=r"^trials.csv: line 2: params: expected a number, got 'four'"):
        read_csv(bad)
    with pytest.raises(RecordError, match=r"not a trials table \(no trial_id, status, arch column\)"):
        read_csv("a,b\n1,2\n")


def test_one_definition_of_usable_everywhere():
    stopped = FULL.replace(trial_id="s", status=Status.STOPPED, reward=0.9, accuracy=0.92, latency_ms=6.0)
    infeasible = FULL.replace(trial_id="i", status=Status.INFEASIBLE, reward=None, accuracy=None, latency_ms=1.0)
    failed = FULL.replace(trial_id="f", status=Status.FAILED, reward=0.99)  # a reward on a failed trial never counts
    nan = FULL.replace(trial_id="n", reward=float("nan"))
    records = [FULL, stopped, infeasible, failed, nan]
    assert [r.usable for r in records] == [True, True, False, False, False]
    # controllers, the Pareto front and the best result all say the same
    assert [usable_reward(r.controller_view()) for r in records] == [0.71, 0.9, None, None, None]
    assert [r.trial_id for r in pareto_front(records)] == ["t1", "s"]
    assert best_result(records).trial_id == "s"
    assert usable_reward({"reward": 0.5}) == 0.5  # a plain mapping (user code, nas bench) counts as ok
    assert usable_reward({"reward": 0.5, "status": "weird"}) is None


def test_a_controller_learns_from_a_stopped_trial(tmp_path):
    import search_spaces

    space = search_spaces.get("efficientnet_edgetpu", resolution=32, width=0.25, depth=0.25)
    c = get_controller("evolution", space, population=2, sample=2)
    p = c.ask()
    c.tell(p, FULL.replace(status=Status.STOPPED, reward=0.4).controller_view())
    assert c.best == (p.arch, 0.4) and c.n_failed == 0


def test_the_controllers_view_is_read_only():
    view = FULL.controller_view()
    assert view["reward"] == 0.71 and view["status"] == "ok" and view["proxy_arch"] == "v1-res32:y"
    with pytest.raises(TypeError):
        view["reward"] = 1.0  # type: ignore[index]


# ------------------------------------------------------------------------------ runs made before

def legacy_copy(tmp_path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(LEGACY, dest)
    return dest


def test_a_run_made_before_reads_as_records_whose_proxy_is_the_arch(tmp_path):
    run = RunFolder(legacy_copy(tmp_path))
    header = (run.path / "trials.csv").read_text().splitlines()[0]
    assert "proxy_arch" not in header  # really the old format
    rows = run.results()
    assert len(rows) == 3 and all(r.proxy_arch == r.arch and r.proxy_params == r.params for r in rows)

    cfg = run.experiment()
    st = run.read_state(cfg)  # state.json version 1, replayed into a fresh controller
    assert st.n_done == 3 and st.controller.n_feedback == 3
    assert [st.results[t] for t in st.results] == rows
    # its archs have no class count; the space of a run made before has none either
    assert cfg.space.num_classes is None and Arch.from_string(rows[0].arch).num_classes is None


def nas(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nas.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_a_run_made_before_still_reports(tmp_path):
    run = legacy_copy(tmp_path)
    r = nas("report", run, "--no-tensorboard", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    md = (run / "report" / "report.md").read_text()
    assert "trained as itself (no proxy section)" in md and "Pareto front (proxy accuracy vs deployment latency)" in md


@pytest.mark.slow
def test_a_run_made_before_resumes_and_its_table_gains_the_proxy_columns(tmp_path):
    run = legacy_copy(tmp_path)
    before = RunFolder(run).results()
    r = nas("search", run / "experiment.yaml", "--out", run, "--resume", "--max-trials", "4", "--runner", "local",
            "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    after = RunFolder(run).results()
    assert after[:3] == before and len(after) == 4 and after[3].status is Status.OK
    assert (run / "trials.csv").read_text().splitlines()[0] == ",".join(FIELDS)
    assert after[3].proxy_arch == after[3].arch  # no proxy section: the arch trains itself, as before
    assert Arch.from_string(after[3].arch).num_classes is None  # the run's space, unchanged
    assert json.loads((run / "state.json").read_text())["version"] == 2


def test_a_state_of_an_unknown_version_is_one_clear_line(tmp_path):
    from nas.config.experiment import load_experiment
    from nas.core.errors import RunFolderError

    run = legacy_copy(tmp_path)
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps({**state, "version": 7}))
    with pytest.raises(RunFolderError, match=r"state.json: not a search state this version can resume "
                                             r"\(version 7, expected one of \(1, 2\)\)"):
        Ledger.from_json(load_experiment(run / "experiment.yaml"), (run / "state.json").read_text(),
                              where="state.json")
