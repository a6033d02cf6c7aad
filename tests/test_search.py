"""The search state, the run folder, `nas search` and `nas export`, through real Ray."""

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

from conftest import COMPILER_LOGS
from nas.config.experiment import parse_experiment
from nas.core.record import FIELDS, Status, TrialRecord
from nas.core.errors import Finished, RunFolderError
from nas.ledger.ledger import Ledger, make_space
from nas.core.record import pareto_front
from nas.ledger.folder import RunFolder
from nas.core.events import Repeat, TellRepeat

# The deployment model (64 px, width 0.5) is searched; each trial trains its 32 px proxy at
# width 0.25 and depth 0.25 of the skeleton's, which is what keeps these tests fast.
TINY_EXPERIMENT = {
    "name": "tiny", "seed": 3,
    "space": {"name": "efficientnet_edgetpu", "resolution": 64, "width": 0.5, "depth": 0.5},
    "proxy": {"resolution": 32, "width": 0.5, "depth": 0.5},
    "controller": {"name": "evolution", "params": {"population": 2, "sample": 2}},
    "reward": {"target_ms": 1.8},
    "data": {"source": "digits", "limit": 200},
    "train": {"epochs": 1, "batch_size": 32},
    "budget": {"trials": 4, "concurrency": 2},
}


def cfg(**changes):
    return parse_experiment({**TINY_EXPERIMENT, **changes})


def fake_result(arch: str, reward: float | None = 0.5, status: str = "ok"):
    return {"status": status, "reward": reward, "accuracy": reward, "latency_ms": 1.0 + len(arch) % 7 / 10,
            "arch": arch}


# ------------------------------------------------------------------------------ state

def test_state_honours_the_budget_and_records_each_trial_once():
    st = Ledger(cfg(), budget=3)
    a, b, c = (st.suggest(t) for t in ("t1", "t2", "t3"))
    assert all(isinstance(x, str) and x.startswith("v1-res64") for x in (a, b, c))
    with pytest.raises(Finished, match=r"budget of 3 trials is spent \(0 done, 3 running\)"):
        st.suggest("t4")  # 3 asked, none finished: still the budget
    assert st.complete("t2", fake_result(b)) is not None
    assert st.complete("t2", fake_result(b, 0.9)) is None  # a re-run after resume is not recorded twice
    assert st.results["t2"].reward == 0.5 and st.results["t2"].arch == b
    assert st.complete("nope", fake_result(b)) is None
    st.complete("t1", {"status": "failed", "reason": "boom"})
    st.complete("t3", {**fake_result(c), "reward": float("nan")})
    with pytest.raises(Finished):
        st.suggest("t5")
    assert st.n_done == 3
    assert st.results["t3"].reward is None  # NaN is stored as "no value"
    assert st.controller.n_failed == 2 and st.controller.best[1] == 0.5


def test_replaying_the_event_log_reproduces_the_next_proposal():
    for name, params in (("evolution", {"population": 3, "sample": 2}), ("mnas", {"batch_size": 2}),
                         ("random", {})):
        c = cfg(controller={"name": name, "params": params})
        st = Ledger(c, budget=20)
        for i in range(8):  # interleaved asks and tells, as with concurrency 2
            st.suggest(f"t{i}")
            if i % 2:
                st.complete(f"t{i - 1}", fake_result(st.archs[f"t{i - 1}"], 0.1 * i))
        again = Ledger.from_json(c, st.to_json())
        assert _next(again) == _next(st), name
        assert again.pending.keys() == st.pending.keys()


def test_the_state_stores_records_without_their_arch_or_empty_fields_and_reads_both_forms():
    c = cfg(controller={"name": "random"})
    st = Ledger(c, budget=3)
    for t in ("t1", "t2"):
        st.suggest(t)
        st.complete(t, fake_result(st.archs[t], 0.4))
    stored = st.state()["results"]["t1"]
    assert "arch" not in stored and None not in stored.values() and stored["reward"] == 0.4
    again = Ledger.from_json(c, st.to_json())
    assert again.results == st.results and again.results["t1"].arch == st.archs["t1"]
    full = json.loads(st.to_json())  # as written before: every field, the arch included
    full["results"] = {t: r.as_dict() for t, r in st.results.items()}
    assert Ledger.from_json(c, json.dumps(full)).results == st.results


class _Cycle:
    """A controller proposing a fixed cycle of members (repeats on purpose), recording what it is told."""

    def __new__(cls, c, order):
        from nas.controllers.base import Controller
        from nas.ledger.ledger import make_space

        class Cycle(Controller):
            name = "cycle"

            def __init__(self, space):
                super().__init__(space)
                self.archs = [space.decode_indices(i) for i in order]
                self.told = []

            def propose(self):
                return self.archs[self.n_proposed % len(self.archs)]

            def tell(self, proposal, result):
                super().tell(proposal, result)
                self.told.append((proposal.key, None if result is None else result.get("reward")))

        return Cycle(make_space(c))


def _bench_cfg(**search):
    return cfg(space={"name": "efficientnet_edgetpu_bench", "resolution": 32, "width": 0.25, "depth": 0.5,
                      "params": {"searched": [2]}}, proxy={}, search=search)


def _idx(*bits):
    return [list(b) for b in bits]


def test_the_queue_is_proposed_first_then_the_controller_and_a_replay_rebuilds_both():
    c = _bench_cfg()
    A, B, C = _idx((0, 0, 0), (1, 0, 0), (0, 1, 0))
    space = make_space(c)
    queue = [space.decode_indices(i).to_string() for i in (C, A)]
    ctrl = _Cycle(c, [A, B])
    st = Ledger(c, budget=4, controller=ctrl, queue=queue)
    got = [st.suggest(f"t{i}") for i in range(3)]
    # the queue first; then the controller, whose A repeats the queue's (answered when t1 is)
    assert got == [*queue, space.decode_indices(B).to_string()] and ctrl.n_proposed == 2
    for i, arch in enumerate(got):
        st.complete(f"t{i}", fake_result(arch, 0.1 * (i + 1)))
    # every result reached the controller, the queue's as bare archs
    assert [k for k, _ in ctrl.told] == [got[0], got[1], got[1], got[2]]
    # the same log replayed into a fresh controller: the queue is not asked of it
    from nas.ledger.ledger import replay

    fresh = _Cycle(c, [A, B])
    asked, _ = replay(fresh, st.events, st.archs, st.results, queue=queue)
    assert fresh.n_proposed == 2 and fresh.told == ctrl.told and not asked


def test_a_proposal_of_a_recorded_arch_is_answered_from_the_record_not_trained():
    c = _bench_cfg()
    A, B, C = _idx((0, 0, 0), (1, 0, 0), (0, 1, 0))
    ctrl = _Cycle(c, [A, B, A, A, C])
    st = Ledger(c, budget=3, controller=ctrl)
    a = st.suggest("t1")
    st.complete("t1", fake_result(a, 0.4))
    b = st.suggest("t2")
    st.complete("t2", fake_result(b, 0.2))
    third = st.suggest("t3")  # A twice (answered with t1's result), then C
    assert third not in (a, b) and st.n_repeats == 2 and st.n_done + len(st.pending) == 3
    assert ctrl.told == [(a, 0.4), (b, 0.2), (a, 0.4), (a, 0.4)]
    assert Repeat(a) in st.events and TellRepeat(a, "t1") in st.events
    with pytest.raises(Finished):
        st.suggest("t4")  # the budget counts trials, not proposals


def test_a_repeat_of_a_running_arch_is_answered_when_that_trial_is_told():
    c = _bench_cfg()
    A, B = _idx((0, 0, 0), (1, 0, 0))
    ctrl = _Cycle(c, [A, A, B])
    st = Ledger(c, budget=4, controller=ctrl)
    a = st.suggest("t1")
    b = st.suggest("t2")  # A again, while t1 runs: not a trial; B is
    assert b != a and st.waiting_archs == [a] and ctrl.told == []
    again = Ledger.from_json(c, st.to_json())
    assert again.waiting_archs == [a]
    st.complete("t1", fake_result(a, 0.7))
    assert ctrl.told == [(a, 0.7), (a, 0.7)] and st.waiting_archs == []


def test_a_batched_tell_answers_waiting_repeats_in_the_order_they_were_proposed():
    # A round of two (A, B) whose slots also drew repeats B then A: after both results, the
    # repeats are told B first, as proposed (``nas bench`` tells its rounds this way).
    c = _bench_cfg()
    A, B, C = _idx((0, 0, 0), (1, 0, 0), (0, 1, 0))
    ctrl = _Cycle(c, [A, B, B, A, C])
    st = Ledger(c, budget=3, controller=ctrl)
    a, b, third = st.suggest("t1"), st.suggest("t2"), st.suggest("t3")
    assert st.waiting_archs == [b, a] and third not in (a, b)
    assert Ledger.from_json(c, st.to_json()).waiting_archs == [b, a]
    for t, r in (("t1", 0.1), ("t2", 0.2), ("t3", 0.3)):
        st.record(t, fake_result(st.archs[t], r))
    st.tell("t1", "t2", "t3")
    assert ctrl.told == [(a, 0.1), (b, 0.2), (third, 0.3), (b, 0.2), (a, 0.1)] and st.waiting_archs == []


def test_repeats_train_again_when_asked_to():
    c = _bench_cfg(repeats="train")
    A = _idx((0, 0, 0))[0]
    st = Ledger(c, budget=3, controller=_Cycle(c, [A]))
    assert st.suggest("t1") == st.suggest("t2") == st.suggest("t3") and st.n_repeats == 0


def test_a_controller_that_only_repeats_ends_the_search_with_a_warning(caplog):
    c = _bench_cfg(max_repeats=5)
    A = _idx((0, 0, 0))[0]
    ctrl = _Cycle(c, [A])
    st = Ledger(c, budget=10, controller=ctrl)
    a = st.suggest("t1")
    st.complete("t1", fake_result(a, 0.5))
    with caplog.at_level("WARNING", logger="nas.ledger.ledger"):
        with pytest.raises(Finished, match="converged"):
            st.suggest("t2")
    assert st.finished() and st.n_repeats == 5 and len(ctrl.told) == 6
    assert "5 archs in a row that this run had already recorded (search.max_repeats)" in caplog.text
    assert "ends after 1 trials of 10" in caplog.text


def _next(state) -> str:
    """The next proposal, or why there is none."""
    try:
        return state.suggest("next")
    except Finished as e:
        return f"finished: {e}"


def test_resume_replays_repeats_exactly():
    # 8 members and a controller that soon prefers some: repeats are common, unless mnas redraws
    # archs it has tried (novelty, its default), which must replay exactly too.
    for name, params in (("mnas", {"batch_size": 2, "learning_rate": 0.01, "novelty": False, "advantage": "baseline",
                                   "elite": 0}),
                         ("evolution", {"population": 2, "sample": 2}),
                         ("mnas", {"batch_size": 2, "learning_rate": 0.01})):
        c = _bench_cfg(max_repeats=200)  # enough not to converge within the 6 asks below; 1,000 is slow
        c = c.model_copy(update={"controller": c.controller.model_copy(update={"name": name, "params": params})})
        st = Ledger(c, budget=7)
        running = []
        for i in range(6):
            try:
                st.suggest(f"t{i}")
                running.append(f"t{i}")
            except Finished:
                pass
            if len(running) == 2 or i == 5:  # two running at a time
                for t in running:
                    st.complete(t, fake_result(st.archs[t], 0.1 * (sum(map(ord, st.archs[t])) % 7)))
                running = []
        novel = params.get("novelty", name == "mnas")
        assert (st.n_repeats == 0 if novel else st.n_repeats > 0) and not st.converged, name  # (a converged
        # ledger's resume asks again)
        again = Ledger.from_json(c, st.to_json())
        assert again.controller.n_feedback == st.controller.n_feedback
        assert again.waiting_archs == st.waiting_archs and again.n_repeats == st.n_repeats
        assert _next(again) == _next(st), name
        assert again.events == st.events


def test_a_stopped_trial_keeps_its_partial_reward_and_batches_are_told_later():
    st = Ledger(cfg(), budget=4)
    a = st.suggest("t1")
    rec = st.record("t1", {**fake_result(a, 0.3), "status": "running", "epochs": 1})
    assert rec.status is Status.STOPPED and "after 1 epochs" in rec.reason and rec.usable
    assert st.controller.n_feedback == 0  # recorded for the tables, not yet told
    st.tell("t1")
    st.tell("t1")
    assert st.controller.n_feedback == 1 and st.controller.best[1] == 0.3


def test_orphans_asked_before_a_crash_are_reissued_not_lost():
    st = Ledger(cfg(), budget=3)
    archs = [st.suggest(t) for t in ("t1", "t2", "t3")]
    st.record("t1", fake_result(archs[0]))
    # The runner's last checkpoint knew only t2: t3's arch is re-run under a new id, and
    # t1's recorded result, which the runner will never complete, is told now.
    st.adopt_orphans({"t2"})
    assert st.controller.n_feedback == 1
    assert st.suggest("n1") == archs[2]
    with pytest.raises(Finished):
        st.suggest("n2")
    again = Ledger.from_json(cfg(), st.to_json())
    assert set(again.pending) == {"t2", "n1"}


def test_pareto_front():
    rows = [TrialRecord(trial_id=str(i), status=s, accuracy=a, latency_ms=l, reward=a)
            for i, (s, a, l) in enumerate([("ok", 0.9, 2.0), ("ok", 0.8, 1.0), ("ok", 0.85, 2.5),
                                           ("ok", 0.95, 3.0), ("failed", 0.99, 0.5), ("ok", float("nan"), 1.0),
                                           ("stopped", 0.97, 4.0), ("infeasible", 0.99, 0.4)])]
    # The one definition of usable: an ASHA-stopped trial counts, failed and infeasible ones do not.
    assert [r.trial_id for r in pareto_front(rows)] == ["1", "0", "3", "6"]


def test_the_run_folder_is_written_atomically_and_never_reused(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.create("name: x\n", budget=2)
    with pytest.raises(RunFolderError, match="already exists; pass --resume"):
        run.create("name: x\n", budget=2)
    st = Ledger(cfg(), budget=2)
    a = st.suggest("t1")
    st.complete("t1", {**fake_result(a, 0.7), "params": 1234})
    run.save(st)
    assert sorted(p.name for p in run.path.iterdir()) == ["best_arch.txt", "experiment.yaml", "pareto.csv",
                                                          "run.json", "state.json", "tensorboard", "trials.csv"]
    rows = run.results()
    assert rows == [st.results["t1"]] and rows[0].params == 1234 and rows[0].reward == 0.7
    assert (run.path / "trials.csv").read_text().splitlines()[0] == ",".join(FIELDS)
    assert (run.path / "best_arch.txt").read_text().strip() == a


def test_local_runner_resumes_without_repeating(tmp_path, monkeypatch):
    import nas.run.runner as runner

    calls = []

    def fake_trial(arch, c, trial_id="", report=None, latency=None):
        calls.append(trial_id)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the search during the second trial
        return {**fake_result(arch, 0.1 * len(calls)), "trial_id": trial_id}

    monkeypatch.setattr(runner, "run_trial", fake_trial)
    run = RunFolder(tmp_path / "run")
    run.create("x: 1\n", 3)
    with pytest.raises(KeyboardInterrupt):
        runner.run_local(cfg(), run, 3)
    assert [r.trial_id for r in run.results()] == ["local_00000"]
    st = runner.run_local(cfg(), run, 3, resume=True)
    assert [r.trial_id for r in run.results()] == ["local_00000", "local_00002", "local_00003"]
    assert st.n_done == 3 and calls == ["local_00000", "local_00001", "local_00002", "local_00003"]


# ------------------------------------------------------------------------------ the command line

def nas(*args, cwd, timeout=600, env=None):
    return subprocess.run([sys.executable, "-m", "nas.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})


def write_experiment(tmp_path: Path, **changes) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump({**TINY_EXPERIMENT, **changes}))
    return p


@pytest.mark.parametrize("changes, message", [
    ({"space": {"name": "efficientnet_edgtpu", "resolution": 32}}, "space: unknown name 'efficientnet_edgtpu'; allowed: efficientnet_edgetpu, efficientnet_edgetpu_bench, mnasnet, or module:Class (did you mean 'efficientnet_edgetpu'?)"),
    ({"controller": {"name": "mnass"}}, "controller: unknown name 'mnass'"),
    ({"latency": {"source": "edgetpu-modle"}}, "did you mean 'edgetpu-model'"),
    ({"data": {"source": "folder:/nonexistent/images"}}, "data.source: folder '/nonexistent/images' does not exist"),
    ({"budget": {"trials": 0}}, "budget.trials: Input should be greater than or equal to 1 (given 0)"),
    ({"trainer": {}}, "trainer: unknown key"),
])
def test_bad_experiments_stop_before_any_work(tmp_path, changes, message):
    exp = write_experiment(tmp_path, **changes)
    r = nas("search", exp, "--out", tmp_path / "run", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not (tmp_path / "run").exists()


def test_search_refuses_an_existing_run_and_a_resume_of_nothing(tmp_path):
    exp = write_experiment(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    r = nas("search", exp, "--out", tmp_path / "run", cwd=tmp_path)
    assert r.returncode == 2 and "already exists; pass --resume" in r.stderr
    r = nas("search", exp, "--out", tmp_path / "run", "--resume", cwd=tmp_path)
    assert r.returncode == 2 and "is not a run folder (no experiment.yaml)" in r.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["keep.txt"]
    r = nas("search", tmp_path / "missing.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "no such file" in r.stderr


def read_trials(run: Path) -> list[dict]:
    with open(run / "trials.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One real search through embedded Ray: 4 tiny trials, 2 at a time."""
    tmp = tmp_path_factory.mktemp("search")
    exp = write_experiment(tmp)
    t0 = time.monotonic()
    r = nas("search", exp, "--out", tmp / "run", "--no-progress", cwd=tmp)
    return tmp, exp, r, time.monotonic() - t0


def test_search_end_to_end_through_ray(searched):
    tmp, _, r, _ = searched
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp / "run"
    rows = read_trials(run)
    assert len(rows) == 4 and len({row["trial_id"] for row in rows}) == 4
    assert list(rows[0]) == list(FIELDS)
    assert all(row["status"] == "ok" and float(row["latency_ms"]) > 0 and int(row["params"]) > 0 for row in rows)
    # arch: the deployment model (the space's 64 px, the data's 10 classes); proxy_arch: what was trained
    assert all(row["arch"].startswith("v1-res64-cls10:") and row["proxy_arch"].startswith("v1-res32-cls10:")
               for row in rows)
    assert all(int(row["proxy_params"]) < int(row["params"]) and int(row["proxy_macs"]) < int(row["macs"])
               for row in rows)
    assert {"experiment.yaml", "trials.csv", "pareto.csv", "best_arch.txt", "state.json", "ray", "tensorboard"} <= \
        {p.name for p in run.iterdir()}
    assert (run / "ray" / "search" / "tuner.pkl").is_file()  # Ray's own experiment state
    best = max(rows, key=lambda row: float(row["reward"]))
    assert (run / "best_arch.txt").read_text().strip() == best["arch"]
    assert "Pareto front (proxy accuracy vs deployment latency)" in r.stdout and best["arch"] in r.stdout
    assert r.stderr.count("ok ") >= 4  # one progress line per trial
    state = json.loads((run / "state.json").read_text())
    assert [e[0] for e in state["events"]].count("tell") == 4
    assert json.loads((run / "run.json").read_text())["overrides"]["space.num_classes"] == 10


def test_the_latency_of_a_trial_is_what_nas_latency_predict_says_for_its_arch(searched):
    tmp, _, r, _ = searched
    row = read_trials(tmp / "run")[0]
    out = nas("latency", "predict", row["arch"], "--json", cwd=tmp)
    assert out.returncode == 0, out.stderr
    predicted = json.loads(out.stdout)
    assert predicted["latency_ms"] == pytest.approx(float(row["latency_ms"]), rel=1e-9)
    assert predicted["off_chip_bytes"] == int(row["off_chip_bytes"])


def test_a_killed_search_resumes_losing_and_repeating_nothing_and_extends_when_finished(tmp_path):
    exp = write_experiment(tmp_path, budget={"trials": 4, "concurrency": 1})
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "nas.cli", "search", str(exp), "--out", str(run), "--no-progress"],
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (run / "trials.csv").is_file() or len(read_trials(run)) < 1:
        assert p.poll() is None, "the search ended before it could be killed"
        time.sleep(0.5)
    os.killpg(p.pid, signal.SIGKILL)  # the driver and its embedded Ray, mid-search
    p.wait()
    done = read_trials(run)
    assert 1 <= len(done) < 4
    archs = json.loads((run / "state.json").read_text())["archs"]
    pending = [a for t, a in archs.items() if t not in {d["trial_id"] for d in done}]
    r = nas("search", exp, "--out", run, "--resume", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_trials(run)
    assert rows[:len(done)] == done and len(rows) == 4
    assert len({row["trial_id"] for row in rows}) == 4 and all(row["status"] == "ok" for row in rows)
    if pending:  # Ray's own experiment was restored (Tuner.restore), not started afresh
        assert not (run / "ray" / "search-2").exists()
        # ...and what was asked before the kill ran (under its id, or a new one if Ray had not
        # checkpointed it yet), so the controller's proposals are not lost either.
        assert set(pending) <= {row["arch"] for row in rows}
    # a finished search resumed with a larger budget goes on from where it ended
    r = nas("search", exp, "--out", run, "--resume", "--max-trials", "5", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    after = read_trials(run)
    assert after[:4] == rows and len(after) == 5 and len({row["trial_id"] for row in after}) == 5


def test_export_writes_a_model_that_plain_keras_loads_and_evaluates(searched, tmp_path):
    """The deployment model, trained and written. No edgetpu_compiler here: a fake one on PATH
    copies the model and prints a real compiler log (tests/data/compiler_logs), so the export's compile
    branch runs end to end (it once read fields the compiler report does not have); without
    ../shared the export runs as on a machine without the compiler (also the proxy test's)."""
    tmp, _, r, _ = searched
    assert r.returncode == 0
    run = tmp / "run"
    log_file = COMPILER_LOGS / "v15_all_mapped_small_spill.txt"
    env = {}
    if log_file.is_file():
        from test_edgetpu_source import make_fake_compiler

        args_file = make_fake_compiler(tmp_path / "bin", log_file)
        env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"
    out = nas("export", run, "--epochs", "1", cwd=tmp, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    exp = run / "export"
    files = {p.name for p in exp.iterdir()}
    assert {"model.keras", "model_int8.tflite", "arch.txt", "summary.json"} <= files
    summary = json.loads((exp / "summary.json").read_text())
    if env:
        from latency_models.edgetpu.report import parse_compiler_output

        assert "model_int8.tflite" in args_file.read_text()  # the compiler was run on the int8 file
        assert "model_edgetpu.tflite" in files and "model_edgetpu.tflite" in summary["files"]
        report = parse_compiler_output(log_file.read_text())
        assert summary["edgetpu_compiler"] == {"on_chip_bytes": report.on_chip_bytes,
                                               "off_chip_bytes": report.off_chip_bytes,
                                               "ops_on_tpu": report.n_ops_on_tpu, "ops_on_cpu": report.n_ops_on_cpu}
    best = (run / "best_arch.txt").read_text().strip()
    # What is exported is the deployment model: the best arch itself, at the space's 64 px.
    assert summary["scale"] == "deployment" and summary["arch"] == summary["deployment_arch"] == best
    assert (exp / "arch.txt").read_text().strip() == best and summary["input"]["shape"] == [64, 64, 3]
    row = next(r for r in read_trials(run) if r["arch"] == best)
    assert summary["proxy_arch"] == row["proxy_arch"] and summary["params"] == int(row["params"])
    assert summary["latency_ms"] == pytest.approx(float(row["latency_ms"]))
    assert summary["latency_source"] == "edgetpu-model" and summary["latency_ms"] > 0 and summary["tflite_cpu_ms"] > 0
    assert 0 <= summary["accuracy"] <= 1 and summary["model"]["params"] == summary["params"]
    assert (exp / "model_int8.tflite").read_bytes()[4:8] == b"TFL3"
    # A Python that never imports the toolkit loads and evaluates the model.
    probe = f"""
import sys, numpy as np, keras
from sklearn.datasets import load_digits
m = keras.saving.load_model({str(exp / 'model.keras')!r})
assert m.input_shape == (None, 64, 64, 3), m.input_shape
d = load_digits()
x = keras.ops.convert_to_numpy(keras.ops.image.resize(np.repeat(d.images[..., None] / 16.0, 3, -1), (64, 64)))
loss, acc = m.evaluate(x[:100].astype("float32"), d.target[:100], verbose=0)
assert not any(k.split('.')[0] in ('nas', 'search_spaces', 'latency_models') for k in sys.modules)
print("ACC", acc)
"""
    r = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=300,
                       cwd=tmp, env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    assert 0 <= float(r.stdout.split("ACC")[-1]) <= 1
    again = nas("export", run, "--epochs", "1", cwd=tmp)
    assert again.returncode == 2 and "already exists and is not empty" in again.stderr


def test_the_python_api_searches_reports_and_exports_the_proxy(searched, tmp_path):
    """The README's Python example: nas.search of an Experiment (here the local runner),
    nas.report, and nas.export of the proxy, which trains the small model and reports the
    deployment model's latency."""
    import nas as api

    tmp, exp, _, _ = searched
    ledger = api.search(api.Experiment.load(exp).replace(**{"budget.trials": 1}), out=tmp_path / "api",
                        runner="local")
    assert ledger.best() is not None and (tmp_path / "api" / "best_arch.txt").read_text().strip() == ledger.best().arch
    rep = api.report(tmp_path / "api", tensorboard=False)
    assert [r.trial_id for r in rep.results] == [r.trial_id for r in ledger.ordered_results()]
    assert (tmp_path / "api" / "report" / "report.md").is_file()
    run = tmp / "run"
    api.export(run, scale="proxy", epochs=1, out=tmp / "proxy_export")
    summary = json.loads((tmp / "proxy_export" / "summary.json").read_text())
    best = (run / "best_arch.txt").read_text().strip()
    row = next(r for r in read_trials(run) if r["arch"] == best)
    assert summary["scale"] == "proxy" and summary["arch"] == row["proxy_arch"] != best
    assert summary["deployment_arch"] == best and summary["input"]["shape"] == [32, 32, 3]
    assert summary["model"]["params"] == int(row["proxy_params"]) < summary["params"] == int(row["params"])
    assert summary["latency_ms"] == pytest.approx(float(row["latency_ms"]))  # the deployment model's
    assert summary["tflite_cpu_ms"] > 0 and summary["model"]["tflite_cpu_ms"] > 0
    bad = nas("export", run, "--scale", "tiny", cwd=tmp)
    assert bad.returncode == 2 and "'tiny' is not one of 'deployment', 'proxy'" in bad.stderr


def test_asha_stops_trials_on_their_per_epoch_reward(tmp_path):
    exp = write_experiment(tmp_path, controller={"name": "random"}, train={"epochs": 2, "batch_size": 32},
                           budget={"trials": 4, "concurrency": 2},
                           ray={"scheduler": "asha", "grace_epochs": 1})
    r = nas("search", exp, "--out", tmp_path / "run", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_trials(tmp_path / "run")
    assert len(rows) == 4 and {row["status"] for row in rows} <= {"ok", "stopped"}
    for row in rows:  # a stopped trial keeps the reward ASHA judged it on, at fewer epochs
        assert float(row["reward"]) >= 0 and (row["status"] == "stopped" or int(row["epochs"]) == 2)
        if row["status"] == "stopped":
            assert int(row["epochs"]) < 2 and "stopped early by the scheduler" in row["reason"]


def with_train(**settings):
    return cfg(train={**TINY_EXPERIMENT.get("train", {}), **settings})


def jemalloc_or_skip() -> str:
    from nas.trial.worker import jemalloc_path

    lib = jemalloc_path()
    if lib is None:
        pytest.skip("this Ray install has no libjemalloc.so (not Linux?)")
    return lib


@pytest.mark.parametrize("onednn", [False, True])
def test_trial_processes_run_tensorflow_with_onednn_as_configured(tmp_path, onednn):
    from nas.trial.worker import onednn_env

    c = with_train(onednn=onednn)
    assert onednn_env(c) == {"TF_ENABLE_ONEDNN_OPTS": "1" if onednn else "0"}  # Ray workers' runtime_env
    # the in-process runner sets it before TensorFlow loads; TensorFlow then reports it
    code = ("import sys, yaml; from nas.config.experiment import parse_experiment; from nas.run.runner import run_local; "
            "from nas.ledger.folder import RunFolder; "
            "run_local(parse_experiment(yaml.safe_load(sys.argv[1])), RunFolder(sys.argv[2]), 0); "
            "from tensorflow.python.util import _pywrap_util_port as p; print(p.IsMklEnabled())")
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    p = subprocess.run([sys.executable, "-c", code, yaml.safe_dump(c.model_dump()), str(tmp_path / "run")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == str(onednn)


def test_allocator_env_preloads_the_jemalloc_ray_ships(monkeypatch):
    from nas.trial.worker import allocator_env

    lib = jemalloc_or_skip()
    assert os.path.isfile(lib) and lib.endswith("ray/core/libjemalloc.so")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("MALLOC_CONF", raising=False)
    assert allocator_env(cfg()) == {"LD_PRELOAD": lib}  # the default
    assert allocator_env(with_train(allocator="system")) == {}
    # what the user preloads stays (once); their jemalloc settings reach the workers
    monkeypatch.setenv("LD_PRELOAD", f"/opt/libfoo.so:{lib}")
    monkeypatch.setenv("MALLOC_CONF", "narenas:2")
    assert allocator_env(cfg()) == {"LD_PRELOAD": f"{lib}:/opt/libfoo.so", "MALLOC_CONF": "narenas:2"}


JEMALLOC_PURGE = """
import ctypes
from nas.trial.worker import _malloc_trim, rss_mb as _rss_mb
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
blocks = [libc.malloc(16 << 10) for _ in range(4096)]  # 64 MB; one big block would be returned at once
for b in blocks:
    ctypes.memset(b, 1, 16 << 10)
for b in blocks:
    libc.free(b)
before = _rss_mb()
_malloc_trim()
print(before - _rss_mb())
"""


def test_a_trial_end_gives_jemallocs_freed_pages_back():
    lib = jemalloc_or_skip()
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_CONF"}
    p = subprocess.run([sys.executable, "-c", JEMALLOC_PURGE], capture_output=True, text=True, timeout=60,
                       env={**env, "LD_PRELOAD": lib})
    assert p.returncode == 0, p.stderr[-2000:]
    # jemalloc keeps freed pages resident for its decay time (10 s) unless purged: 0 MB then
    assert float(p.stdout) > 24, p.stdout


WORKER_PROBE = """
import json, os, sys
from nas.config.experiment import parse_experiment
from nas.run.runner import _local_only_env, _quiet_env
from nas.trial.worker import _malloc_trim, jemalloc_loaded
cfg = parse_experiment(json.loads(sys.argv[1]))
_quiet_env()
_local_only_env(cfg)
import ray
from nas.run.ray_runner import init_ray
assert init_ray(cfg)
probe = ray.remote(lambda: [jemalloc_loaded(), os.environ.get("TF_ENABLE_ONEDNN_OPTS"), _malloc_trim()])
print(json.dumps([jemalloc_loaded(), *ray.get(probe.remote())]))
ray.shutdown()
"""


@pytest.mark.slow
def test_ray_workers_run_with_the_configured_allocator():
    jemalloc_or_skip()
    for allocator, loaded in [("jemalloc", True), ("system", False)]:
        c = with_train(allocator=allocator)
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "RAY_ADDRESS")}
        p = subprocess.run([sys.executable, "-c", WORKER_PROBE, json.dumps(c.model_dump())], capture_output=True,
                           text=True, env={**env, "PYTHONWARNINGS": "ignore"}, timeout=180)
        assert p.returncode == 0, p.stderr[-3000:]
        # the driver keeps its allocator; the worker Ray starts for the trials gets the configured one
        assert json.loads(p.stdout.strip().splitlines()[-1]) == [False, loaded, "0", None], allocator


def test_a_worker_without_the_jemalloc_it_asked_for_warns_once(monkeypatch, caplog):
    import logging

    from nas.trial import worker

    monkeypatch.setattr(worker, "_allocator_checked", False)
    monkeypatch.setenv("LD_PRELOAD", "/elsewhere/ray/core/libjemalloc.so")  # ld.so ignored it: not mapped here
    with caplog.at_level(logging.WARNING, logger="nas.trial.worker"):
        worker.check_allocator(with_train(allocator="system"))  # not asked for: silent
        worker.check_allocator(cfg())
        worker.check_allocator(cfg())
    assert [r.getMessage() for r in caplog.records if r.name == "nas.trial.worker"] == [
        "train.allocator=jemalloc, but this worker runs without it (LD_PRELOAD=/elsewhere/ray/core/libjemalloc.so): "
        "its memory may creep up from trial to trial"]


def test_onednn_that_cannot_take_effect_is_warned_about(tmp_path, monkeypatch, caplog):
    import logging
    import types

    from nas.run.runner import run_local

    monkeypatch.setitem(sys.modules, "tensorflow", sys.modules.get("tensorflow") or types.ModuleType("tensorflow"))
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    with caplog.at_level(logging.WARNING, logger="nas.trial.worker"):
        run_local(cfg(), RunFolder(tmp_path / "run"), 0)
    assert [r.getMessage() for r in caplog.records if r.name == "nas.trial.worker"] == [
        "TensorFlow is already loaded in this process: train.onednn=False cannot take effect here"]
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"  # a loaded TensorFlow is not lied to



def test_export_warns_when_the_int8_model_falls_below_the_float_one(searched, tmp_path, monkeypatch, caplog):
    """Post-training quantization that breaks a model is said, with figures (a stand-in int8
    evaluation that gets nothing right: the real one is run by the tests above)."""
    import logging

    import nas.results.export

    tmp, _, r, _ = searched
    monkeypatch.setattr(nas.results.export, "evaluate_tflite", lambda tflite, x, y: 0.0)
    with caplog.at_level(logging.WARNING, logger="nas.results.export"):
        summary = nas.results.export.export(tmp / "run", scale="proxy", epochs=1, out=tmp_path / "x")
    assert summary["int8_accuracy"] == 0.0 and summary["int8"]["below_margin"] is (summary["int8"]["float_accuracy"]
                                                                                   > 0.02)
    assert summary["recipe"]["epochs"] == 1 and 0 < summary["int8"]["calibration_images"] <= 200  # (all, if fewer)
    if summary["int8"]["below_margin"]:
        assert "post-training quantization hurts this model" in caplog.text and "export.int8_margin 0.02" in caplog.text
