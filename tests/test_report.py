"""``nas report``: the Markdown page, plots and TensorBoard logs of a run folder.

The run folder is a real one (experiment copy, state.json with the controller's ask/tell
log, trials.csv) made by driving :class:`Ledger` with a looked-up "trial": the
``edgetpu-model`` latency of each proposed arch and an accuracy that grows with its size,
so the report is tested without training anything.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest
import yaml

from latency_models import Target, get_source
from nas.config.experiment import parse_experiment
from nas.results.report import build, windowed_decision_entropy
from nas.core.reward import reward
from nas.trial import proxy
from nas.ledger.ledger import Ledger
from nas.core.record import pareto_front
from nas.ledger.folder import RunFolder
from search_spaces import Arch, count_params

EXPERIMENT = {
    "name": "report-test", "seed": 1,
    # A deployment model the SRAM constrains (128 px, width 1), trained as a 32 px proxy.
    "space": {"name": "efficientnet_edgetpu", "resolution": 128, "width": 1.0, "num_classes": 10},
    "proxy": {"resolution": 32, "width": 0.25, "depth": 0.5},
    "controller": {"name": "mnas", "params": {"batch_size": 4}},
    "reward": {"target_ms": 1.8},
    "data": {"source": "digits", "limit": 200},
    "budget": {"trials": 24, "concurrency": 1},
}
FAIL_EVERY = 7
CLASSES = 10  # a trial's head has the data's classes: the report must measure that model, not a default head


def nas(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nas.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cfg = parse_experiment(EXPERIMENT)
    path = tmp_path_factory.mktemp("report") / "run"
    run = RunFolder(path)
    run.create(yaml.safe_dump(EXPERIMENT), EXPERIMENT["budget"]["trials"])
    src, rcfg = get_source("edgetpu-model"), cfg.reward
    st = Ledger(cfg, EXPERIMENT["budget"]["trials"])
    for i in range(EXPERIMENT["budget"]["trials"]):
        tid = f"t{i:03d}"
        arch = st.suggest(tid)
        if i % FAIL_EVERY == FAIL_EVERY - 1:
            st.complete(tid, {"status": "failed", "reason": "NaN loss in epoch 1"})
            continue
        a = Arch.from_string(arch)
        lat = src.measure(Target(a, input_shape=(128, 128, 3), num_classes=CLASSES))
        small = proxy.of(a, cfg)
        width = sum(s.filters * s.repeats for s in small.stages)
        acc = 0.5 + 0.4 * (1 - math.exp(-width / 400))
        st.complete(tid, {"status": "ok", "accuracy": acc, "latency_ms": lat.latency_ms,
                          "reward": reward(acc, lat.latency_ms, rcfg), "params": count_params(a, num_classes=10),
                          "num_classes": CLASSES, "on_chip_bytes": lat.on_chip_bytes,
                          "off_chip_bytes": lat.off_chip_bytes, "proxy_arch": small.to_string(),
                          "proxy_params": count_params(small, num_classes=10)})
    run.save(st)
    return path


def test_windowed_decision_entropy():
    same = windowed_decision_entropy([[1, 0]] * 10, [3, 2], window=5)
    assert same == [0.0] * 10
    cycle = windowed_decision_entropy([[i % 3, i % 2] for i in range(12)], [3, 2], window=6)
    assert cycle[-1] == pytest.approx((math.log(3) + math.log(2)) / 2)
    assert cycle[0] == 0.0  # one proposal says nothing


def test_build_reads_the_run(run_dir):
    rep = build(run_dir, top=2)
    n = EXPERIMENT["budget"]["trials"]
    assert len(rep.results) == n
    # mnas proposes once per ask: the replayed policy entropy has one value per trial, starts
    # near uniform (weights uniform(-0.1, 0.1)) and stays below the uniform maximum
    assert len(rep.policy_entropy) == n and len(rep.decision_entropy) == n
    assert 0.9 * rep.max_entropy < rep.policy_entropy[0] <= rep.max_entropy + 1e-9
    assert all(0 <= e <= rep.max_entropy + 1e-9 for e in rep.decision_entropy)
    assert [r.trial_id for r, _ in rep.breakdowns] == [
        r.trial_id for r in sorted((r for r in rep.results if r.usable), key=lambda r: -r.reward)[:2]]
    for r, lat in rep.breakdowns:
        assert lat.latency_ms == pytest.approx(r.latency_ms)  # same source, same (deployment) arch
        assert lat.layers and sum(ly.on_chip_bytes + ly.off_chip_bytes for ly in lat.layers) == (
            lat.on_chip_bytes + lat.off_chip_bytes)
    assert {ref.label for ref in rep.references} == {"EfficientNet-EdgeTPU-S", "MnasNet-A1"}
    assert all(ref.latency_ms > 0 and ref.accuracy is None for ref in rep.references)
    # references at the deployment scale: EfficientNet-EdgeTPU-S at 128 px, 10 classes
    s_ref = next(ref for ref in rep.references if ref.key == "efficientnet_edgetpu_s")
    assert s_ref.arch.startswith("v1-res128-cls10:stem-k3-s2-o32-relu:")


def test_nas_report_writes_the_page_plots_and_tensorboard(run_dir):
    p = nas("report", run_dir, "--top", "2")
    assert p.returncode == 0, p.stderr
    out = run_dir / "report"
    assert {"report.md", "pareto.png", "reward.png", "entropy.png", "tensorboard"} <= {f.name for f in out.iterdir()}
    for png in ("pareto.png", "reward.png", "entropy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / png).stat().st_size > 10_000
    md = (out / "report.md").read_text()
    results = RunFolder(run_dir).results()
    front = pareto_front(results)
    section = md.split("## Pareto front")[1].split("##")[0]
    assert re.findall(r"^\| (t\d+) \|", section, re.M) == [r.trial_id for r in front]
    n_failed = EXPERIMENT["budget"]["trials"] // FAIL_EVERY
    assert f"| {n_failed} | failed: NaN loss in epoch 1 |" in md
    assert md.count("### t") == 2 and "| share |" in md
    assert "EfficientNet-EdgeTPU-S" in md and "MnasNet-A1" in md
    assert "Pareto front" in p.stdout and "reference MnasNet-A1:" in p.stdout
    # deployment terms: the scales side by side, the SRAM and who exceeded it
    n_off = sum(r.off_chip for r in results)
    assert 0 < n_off < len(results)
    assert f"{n_off} of {len(results) - n_failed} stream parameters from the host" in md
    assert "trained as a proxy at 32 px, width x0.25, depth x0.5" in md and "| proxy params |" in md
    assert re.search(r"trained as `v1-res32-cls10:", md)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    scalars = {tag: {e.step: e.value for e in ea.Scalars(tag)} for tag in ea.Tags()["scalars"]}
    assert "search/best_arch" in ea.Tags()["tensors"]
    ok = {i + 1: r.reward for i, r in enumerate(results) if r.usable}
    assert scalars["trial/reward"].keys() == ok.keys()
    assert all(scalars["trial/reward"][k] == pytest.approx(ok[k], rel=1e-6) for k in ok)
    assert len(scalars["controller/policy_entropy"]) == len(results)
    assert sum(scalars["trial/failed"].values()) == n_failed
    # the search logged the same per-trial scalars live, into the run folder
    live = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    live.Reload()
    for tag in ("trial/reward", "trial/failed", "search/best_reward"):
        assert {e.step: e.value for e in live.Scalars(tag)} == scalars[tag], tag

    # a second report replaces the first, nothing else is left behind
    p = nas("report", run_dir, "--no-tensorboard")
    assert p.returncode == 0, p.stderr
    assert not (out / "tensorboard").exists()
    assert sorted(f.name for f in run_dir.iterdir() if f.name.startswith(".")) == []


@pytest.mark.parametrize("case, message", [
    ("missing", "RUN_DIR: '{d}' does not exist"),
    ("not_a_run", "is not a run folder (no experiment.yaml)"),
    ("no_trials", "has no finished trial yet"),
    ("out_taken", "exists and is not a report folder; choose another --out"),
])
def test_report_errors(run_dir, tmp_path, case, message):
    args = []
    d = tmp_path / "x"
    if case == "not_a_run":
        d.mkdir()
    elif case == "no_trials":
        RunFolder(d).create(yaml.safe_dump(EXPERIMENT), 3)
    elif case == "out_taken":
        d = run_dir
        taken = tmp_path / "taken"
        taken.mkdir()
        (taken / "keep.txt").write_text("mine")
        args = ["--out", taken]
    p = nas("report", d, "--no-tensorboard", *args)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message.format(d=d) in lines[0], p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
    if case == "out_taken":
        assert [f.name for f in taken.iterdir()] == ["keep.txt"]
    if case == "no_trials":
        assert not (d / "report").exists()


def test_rankings_are_compared_over_the_pairs_neither_score_ties():
    from nas.results.report import _flipped

    # (1,2)-(2,1) flips; (1,2)-(3,3) and (2,1)-(3,3) agree; (1,2)-(3,1) flips
    assert _flipped([(1, 2), (2, 1), (3, 3)]) == (3, 1)
    assert _flipped([(1, 2), (2, 1), (3, 3), (3, 1)]) == (4, 2)  # (3,1) ties (2,1) and (3,3): left out
    assert _flipped([]) == (0, 0)
