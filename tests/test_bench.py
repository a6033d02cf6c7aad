"""``nas bench``: controllers against the shipped table by lookup, on a 64-arch slice of it.

The slice is the table's rows whose stage 4 is fixed to the space's first choices
(``efficientnet_edgetpu_bench`` with ``searched=[2, 3]``): real trained archs, small enough
that every controller run takes milliseconds.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import search_spaces
from nas.bench.bench import run_bench
from nas.bench.stats import hypervolume
from nas.bench.table import DEFAULT_SPACE, DEFAULT_TABLE, Table
from nas.core.reward import RewardConfig, reward

def nas(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nas.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})


SLICE_SPACE = {**DEFAULT_SPACE[1], "searched": [2, 3]}  # the deployment scale, stage 4 fixed
STAGE4_FIXED = ("s4.block=mbconv", "s4.se=0", "s4.repeats=")


@pytest.fixture(scope="module")
def slice_csv(tmp_path_factory):
    space = search_spaces.get("efficientnet_edgetpu_bench", **SLICE_SPACE)
    members = {space.make_arch(c).to_string() for c in space.iter_choices()}
    with open(DEFAULT_TABLE, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["arch"] in members]
        fields = reader.fieldnames
    assert {r["arch"] for r in rows} == members, "the shipped table must hold every arch of the slice"
    path = tmp_path_factory.mktemp("bench") / "slice.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def slice_space():
    return search_spaces.get("efficientnet_edgetpu_bench", **SLICE_SPACE)


def test_the_shipped_table_is_the_whole_space_trained():
    table = Table.load()
    space = search_spaces.get(DEFAULT_SPACE[0], **DEFAULT_SPACE[1])
    assert set(table.archs) == {space.make_arch(c).to_string() for c in space.iter_choices()}
    assert len(table) == 512 and all(a.startswith("v1-res128-cls10:") for a in table.archs)
    assert (table.accuracy > 0.15).all() and (table.accuracy <= 1).all()  # chance is 0.1: every arch learned
    # deployment latency, by default: it spans 2x and some members outgrow the SRAM
    assert (table.latency_ms > 2).all() and table.latency_ms.max() / table.latency_ms.min() > 2
    assert 0.1 < (table.extra["off_chip_bytes"] > 0).mean() < 0.5
    assert {"params", "macs", "on_chip_bytes", "off_chip_bytes", "proxy_params", "proxy_macs"} <= set(table.extra)
    assert (table.extra["proxy_params"] * 10 < table.extra["params"]).all()
    noise = table.noise()
    assert noise["n"] >= 30 and 0 < noise["rerun_std"] < 0.1
    proxy = Table.load(latency="proxy")  # the trained proxies' latency: the same rows, hardly any spread
    assert proxy.archs == table.archs and np.array_equal(proxy.accuracy, table.accuracy)
    assert (proxy.latency_ms < 2).all() and proxy.latency_ms.max() / proxy.latency_ms.min() < 1.2


def test_each_row_is_one_member_at_two_scales():
    """The trained proxy is the same member of the bench space (same decisions) at 32 px, width 0.25, depth 0.5."""
    from latency_models import Target, get_source
    from search_spaces import Arch

    big = search_spaces.get(DEFAULT_SPACE[0], **DEFAULT_SPACE[1])
    small = search_spaces.get(DEFAULT_SPACE[0], resolution=32, width=0.25, depth=0.5)
    with open(DEFAULT_TABLE, newline="") as f:
        rows = list(csv.DictReader(f))[::37]
    src = get_source("edgetpu-model")
    for r in rows:
        deploy, trained = Arch.from_string(r["arch"]), Arch.from_string(r["proxy_arch"])
        assert big.indices(big.encode(deploy)) == small.indices(small.encode(trained))
        lat = src.measure(Target(deploy, input_shape=(128, 128, 3), num_classes=10))
        assert float(r["latency_ms"]) == pytest.approx(lat.latency_ms) and int(r["off_chip_bytes"]) == lat.off_chip_bytes


def test_hypervolume_by_hand():
    # Points (lat, acc): (1, 0.5), (2, 0.8); box to (3, 0.0): 1*0.5 + 1*0.8
    assert hypervolume(np.array([0.5, 0.8]), np.array([1.0, 2.0]), 0.0, 3.0) == pytest.approx(1.3)
    # A dominated point adds nothing; points outside the box are ignored.
    assert hypervolume(np.array([0.5, 0.8, 0.4, 0.9]), np.array([1.0, 2.0, 2.5, 3.5]), 0.0, 3.0) == \
        pytest.approx(1.3)
    assert hypervolume(np.array([0.1]), np.array([5.0]), 0.0, 3.0) == 0.0


def test_runs_controllers_by_lookup_and_reports(slice_csv, slice_space):
    table = Table.load(slice_csv)
    assert len(table) == 64
    rcfg = RewardConfig(target_ms=float(np.median(table.latency_ms)))
    res = run_bench(table, ["random", "evolution", ("mnas", {"batch_size": 4})], seeds=4, trials=40, rcfg=rcfg,
                    space=slice_space)
    best_reward = float(np.nanmax(table.rewards(rcfg)))
    assert res.table_best == pytest.approx(best_reward)
    summary = res.summary()
    assert list(summary) == ["random", "evolution", "mnas(batch_size=4)"]
    for name, b in res.best_so_far.items():
        assert b.shape == (4, 40)
        assert (np.diff(b, axis=1) >= 0).all()  # best so far never decreases
        assert (b <= best_reward + 1e-12).all()
        hv = res.hv_so_far[name] / res.hv_table
        assert (np.diff(hv, axis=1) >= -1e-12).all() and (hv <= 1 + 1e-9).all()
        assert summary[name]["failed_lookups"] == 0  # every arch of the slice is in the table
    # The same seed gives the same runs (controllers are deterministic).
    again = run_bench(table, ["evolution"], seeds=4, trials=40, rcfg=rcfg, space=slice_space)
    assert np.array_equal(again.rewards["evolution"], res.rewards["evolution"], equal_nan=True)
    # 40 draws from 64 archs: random finds the best in some seeds, not all, typically.
    assert 0 < summary["random"]["final_hv_fraction"][0] <= 1


def test_an_arch_missing_from_the_table_is_a_failed_trial(slice_csv, slice_space, tmp_path):
    with open(slice_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    half = tmp_path / "half.csv"
    with open(half, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[::2])
    table = Table.load(half)
    res = run_bench(table, ["random"], seeds=2, trials=30, space=slice_space)
    failed = res.summary()["random"]["failed_lookups"]
    assert 0 < failed < 60 and np.isnan(res.rewards["random"]).sum() == failed


def test_a_table_without_proxy_latency_cannot_score_it(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("arch,accuracy,latency_ms\nx,0.5,1.0\n")
    assert Table.load(p).latency == "deployment"
    with pytest.raises(ValueError, match=r"^--latency: 'proxy' needs a proxy_latency_ms column, which table t.csv "
                                         r"lacks; allowed here: deployment$"):
        Table.load(p, latency="proxy")


@pytest.mark.parametrize("content, message", [
    ("arch,accuracy\nx,0.5\n", "missing column(s) latency_ms"),
    ("arch,accuracy,latency_ms\nx,high,1.0\n", "line 2: accuracy and latency_ms must be numbers, got 'high', '1.0'"),
    ("arch,accuracy,latency_ms\n", "no rows"),
])
def test_bad_tables(tmp_path, content, message):
    p = tmp_path / "t.csv"
    p.write_text(content)
    with pytest.raises(ValueError, match="table t.csv: " + __import__("re").escape(message)):
        Table.load(p)
    with pytest.raises(ValueError, match="table: file '/nonexistent.csv' does not exist"):
        Table.load("/nonexistent.csv")


def test_cli_writes_json_markdown_and_plot(slice_csv, tmp_path):
    out = tmp_path / "bench"
    r = nas("bench", "--table", slice_csv, "--param", "searched=[2,3]", "-c", "random",
            "-c", "evolution:population=8,sample=3",
            "--seeds", "3", "--trials", "24", "--target-ms", "3.0", "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "| evolution(population=8, sample=3) |" in r.stdout and "target 3.000 ms of deployment latency" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.md", "bench.png"]
    data = json.loads((out / "bench.json").read_text())
    assert data["seeds"] == 3 and data["trials"] == 24 and data["archs"] == 64 and data["latency"] == "deployment"
    assert len(data["curves"]["random"]["best_so_far_mean"]) == 24
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "bench.md").read_text().startswith("table slice.csv: 64 archs")
    r = nas("bench", "--table", slice_csv, "--param", "searched=[2,3]", "-c", "random", "--latency", "proxy",
            "--seeds", "2", "--trials", "10", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"target 1\.\d+ ms of proxy latency", r.stdout)  # the proxies' median


@pytest.mark.parametrize("args, message", [
    (["-c", "evolushun"], "--controller: unknown name 'evolushun'; allowed: "),
    (["-c", "evolution:population=1"], "controller.population: expected an integer >= 2, got 1"),
    (["-c", "mnas:batchsize"], "--controller: expected NAME:KEY=VALUE,... (e.g. mnas:batch_size=4), got 'batchsize'"),
    (["--table", "/nonexistent.csv"], "table: file '/nonexistent.csv' does not exist"),
    (["--reward", "mnas", "--preset", "soft", "--alpha", "0.1", "--seeds", "0"], "Invalid value for '--seeds'"),
    (["--param", "searched=[7]"], "searched: expected a non-empty list of distinct stages from [2, 3, 4], got (7,)"),
    (["--latency", "host"], "Invalid value for '--latency': 'host' is not one of 'deployment', 'proxy'."),
])
def test_cli_errors(tmp_path, args, message):
    r = nas("bench", *args, "--out", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not (tmp_path / "o").exists()


def test_cli_refuses_a_folder_with_results(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "bench.json").write_text("{}")
    r = nas("bench", "--out", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 2 and "--out: folder" in r.stderr and "exists and is not empty" in r.stderr
    assert (tmp_path / "o" / "bench.json").read_text() == "{}"


# ------------------------------------------------------------------ batched asks and repeats

from nas.bench.bench import MAX_CONSECUTIVE_REPEATS, run_controller  # noqa: E402
from nas.controllers.base import Controller  # noqa: E402
from nas.bench.landscape_bench import run_landscapes  # noqa: E402
from nas.core.record import Status, TrialRecord  # noqa: E402


class Scripted(Controller):
    """Proposes a fixed list of choice-index vectors, cycling; logs what it is told."""

    name = ""

    def __init__(self, space, seed=0, script=((0,) * 6,)):
        super().__init__(space, seed)
        self.script, self.told, self.planned = [list(s) for s in script], [], None

    def plan(self, budget, concurrency):
        self.planned = (budget, concurrency)

    def propose(self):
        return self.space.decode_indices(self.script[self.n_proposed % len(self.script)])

    def tell(self, proposal, result):
        self.told.append((proposal.key, result))
        super().tell(proposal, result)


def counting_lookup():
    calls = []

    def lookup(items):
        calls.append([(key, k) for _, key, k in items])
        return [TrialRecord(status=Status.OK, reward=0.1 * len(sum(calls, [])) + 0.01 * j, accuracy=0.5,
                            latency_ms=1.0) for j, _ in enumerate(items)]
    return lookup, calls


A, B, C, D = (0, 0, 0, 0, 0, 0), (1, 0, 0, 0, 0, 0), (0, 1, 0, 0, 0, 0), (0, 0, 1, 0, 0, 0)


def test_a_repeat_is_answered_from_the_record_and_is_not_a_trial(slice_space):
    ctrl = Scripted(slice_space, script=[A, B, A, C, A, B, D])
    lookup, calls = counting_lookup()
    run = run_controller(ctrl, lookup, trials=4, batch=2)
    keys = {s: slice_space.decode_indices(list(s)).to_string() for s in (A, B, C, D)}
    # rounds: [A, B] looked up; then A (recorded: told at once), C, A (told at once), B (told at once), D
    assert [[k for k, _ in c] for c in calls] == [[keys[A], keys[B]], [keys[C], keys[D]]]
    assert run.keys == [keys[A], keys[B], keys[C], keys[D]] and len(run.records) == 4
    assert (run.asks, run.repeats, run.distinct, run.stop) == (7, 3, 4, None)
    assert ctrl.planned == (4, 2)  # told the budget and the batch before the first ask, as a search does
    # every ask was told once; each repeat got the very observation stored for its arch
    assert len(ctrl.told) == 7 == ctrl.n_feedback
    stored = dict(zip(run.keys, (r.controller_view() for r in run.records)))
    assert all(result == stored[key] for key, result in ctrl.told)
    assert [k for k, _ in ctrl.told] == [keys[A], keys[B], keys[A], keys[A], keys[B], keys[C], keys[D]]


def test_a_repeat_of_an_arch_pending_in_the_round_is_told_its_result_after_the_round(slice_space):
    ctrl = Scripted(slice_space, script=[A, A, B, C])
    lookup, calls = counting_lookup()
    run = run_controller(ctrl, lookup, trials=3, batch=3)
    keys = [slice_space.decode_indices(list(s)).to_string() for s in (A, B, C)]
    assert calls == [[(keys[0], 0), (keys[1], 0), (keys[2], 0)]]  # one round, A looked up once
    assert [k for k, _ in ctrl.told] == [keys[0], keys[1], keys[2], keys[0]]
    assert ctrl.told[3][1] == ctrl.told[0][1] and run.repeats == 1


def test_repeats_train_makes_every_proposal_a_trial_with_a_fresh_lookup(slice_space):
    ctrl = Scripted(slice_space, script=[A, A, B])
    lookup, calls = counting_lookup()
    run = run_controller(ctrl, lookup, trials=6, batch=2, repeats="train")
    ka, kb = (slice_space.decode_indices(list(s)).to_string() for s in (A, B))
    assert run.keys == [ka, ka, kb, ka, ka, kb] and run.repeats == 0 and run.distinct == 2
    # k counts earlier lookups of the arch: the noise of each lookup is a fresh draw
    assert sum(calls, []) == [(ka, 0), (ka, 1), (kb, 0), (ka, 2), (ka, 3), (kb, 1)]
    with pytest.raises(ValueError, match="--repeats: unknown 'again'; allowed: record, train"):
        run_controller(ctrl, lookup, trials=1, repeats="again")


def test_a_controller_that_only_repeats_is_stopped(slice_space):
    ctrl = Scripted(slice_space, script=[A])
    lookup, calls = counting_lookup()
    run = run_controller(ctrl, lookup, trials=50, batch=8)
    assert len(run.keys) == 1 and run.asks == 1 + MAX_CONSECUTIVE_REPEATS
    assert run.stop.startswith(f"stopped after {MAX_CONSECUTIVE_REPEATS:,} consecutive repeats: ") and len(calls) == 1
    assert ctrl.n_feedback == run.asks  # the pending ones were told before stopping


def test_table_mode_answers_repeats_from_the_record(slice_csv, slice_space):
    table = Table.load(slice_csv)
    res = run_bench(table, ["random"], seeds=2, trials=80, space=slice_space, batch=8, repeats="record")
    s = res.summary()["random"]
    # 64 archs: random records all of them, then the run stops (no trial wasted on a repeat)
    assert s["distinct_archs"] == 64 and s["asks"] > 64 and len(s["stopped"]) == 2
    assert "space exhausted: all 64 archs recorded" in s["stopped"][0]
    assert (np.isfinite(res.rewards["random"]).sum(axis=1) == 64).all()
    assert res.best_so_far["random"][:, -1] == pytest.approx(res.table_best)
    old = run_bench(table, ["random"], seeds=2, trials=80, space=slice_space)  # batch 1, repeats cost trials
    assert old.summary()["random"]["distinct_archs"] < 64 + 1 and np.isfinite(old.rewards["random"]).all()


# ---------------------------------------------------------------------------- landscapes

from nas.bench.landscape import Landscape, latencies, random_sample  # noqa: E402
from nas.bench.landscape_fit import calibrate, fit_table, table_codings  # noqa: E402


@pytest.fixture(scope="module")
def fitted():
    fit = fit_table()
    return fit, calibrate(fit)


def test_the_fit_reproduces_the_table(fitted):
    fit, _ = fitted
    table = Table.load()
    x = table_codings(table)
    pred = fit.predict(x)
    err = pred - table.accuracy
    # in sample: about the re-run noise (0.049), which the model cannot and should not fit
    assert np.sqrt(np.mean(err ** 2)) < 0.05 and np.corrcoef(pred, table.accuracy)[0, 1] > 0.9
    assert fit.sigma_accuracy == pytest.approx(table.noise()["rerun_std"]) and fit.n_reruns == 32
    # held out: fitted on 7/8 of the rows, the other eighth predicted about as well
    rows = np.arange(len(table))
    held = rows[rows % 8 == 3]
    part = fit_table(table, rows=rows[rows % 8 != 3])
    held_err = part.predict(x[held]) - table.accuracy[held]
    assert np.sqrt(np.mean(held_err ** 2)) < 0.06
    assert np.corrcoef(part.predict(x[held]), table.accuracy[held])[0, 1] > 0.85
    assert fit.shape_main_sd > 0 and 0 < fit.pair_density < 1 and fit.shape_pair_sd > 0


def test_landscapes_keep_the_fit_on_the_table_and_draw_the_rest_by_seed(fitted):
    fit, pri = fitted
    assert 0 < pri.kappa_interval[0] <= pri.kappa <= pri.kappa_interval[1] and pri.sample == 40
    assert pri.main_sd == pytest.approx(pri.kappa * fit.shape_main_sd)
    table = Table.load()
    a, b, a2 = (Landscape(seed=s, fit=fit, priors=pri) for s in (0, 1, 0))
    on_table = np.array([a.indices(search_spaces.Arch.from_string(k)) for k in table.archs])
    fitted_acc = fit.predict(table_codings(table))
    for land in (a, b):  # the table's archs hold only fitted choices: every landscape gives the fit
        assert land.accuracy(on_table) == pytest.approx(fitted_acc)
    sample = random_sample(a.space, 500)
    assert np.array_equal(a.accuracy(sample), a2.accuracy(sample))
    assert not np.allclose(a.accuracy(sample), b.accuracy(sample))
    acc = a.accuracy(sample)
    assert 0.1 < acc.min() and acc.max() < 1  # between chance and perfect, by the link
    assert 0.35 < np.median(acc) < 0.75  # calibrated on 40 trained archs of the space: 0.34-0.82, median 0.59


def test_latency_is_the_predictors_and_noise_is_fresh_and_paired(fitted):
    from latency_models import Target, get_source

    fit, pri = fitted
    land = Landscape(seed=0, fit=fit, priors=pri)
    archs = [land.arch(i) for i in random_sample(land.space, 3, seed=7)]
    assert archs == [land.space.decode_indices(list(map(int, i))) for i in random_sample(land.space, 3, seed=7)]
    lat, _, off = latencies(archs)
    src = get_source("edgetpu-model")
    for arch, ms, o in zip(archs, lat, off):
        m = src.measure(Target(arch, input_shape=(128, 128, 3), num_classes=10))
        assert ms == pytest.approx(m.latency_ms) and o == m.off_chip_bytes
    key = archs[0].to_string()
    draws = [land.noise(3, key, k) for k in range(50)]
    assert len(set(draws)) == 50 and abs(np.mean(draws)) < 0.5  # a fresh draw per lookup
    assert land.noise(3, key, 1) == draws[1] and land.noise(4, key, 1) != draws[1]  # keyed by seed, arch, count
    idx = land.indices(archs[0])[None, :]
    obs = [float(land.observe(idx, [z])[0]) for z in draws]
    assert np.std(obs) > 0 and abs(np.mean(obs) - land.accuracy(idx)[0]) < 0.05


def test_on_a_landscape_a_repeat_costs_no_noise_unless_trained(fitted):
    from nas.bench.landscape_bench import landscape_lookup

    fit, pri = fitted
    land = Landscape(seed=0, fit=fit, priors=pri)
    rcfg = RewardConfig(target_ms=6.0, preset="hard")
    script = [list(random_sample(land.space, 1, seed=3)[0])]
    truth = {}
    trained = run_controller(Scripted(land.space, script=script), landscape_lookup(land, 5, rcfg, truth), trials=6,
                             batch=3, repeats="train")
    obs = [r.accuracy for r in trained.records]
    assert len(set(obs)) == 6 and trained.distinct == 1  # six trials of one arch: six fresh draws
    assert list(truth.values()) == [reward(float(land.accuracy(land.indices(land.arch(script[0])))[0]),
                                           float(trained.records[0].latency_ms), rcfg)]
    ctrl = Scripted(land.space, script=script)
    recorded = run_controller(ctrl, landscape_lookup(land, 5, rcfg), trials=6, batch=3, max_repeats=20)
    assert len(recorded.records) == 1 and recorded.records[0].accuracy == obs[0]  # the same seed's first draw
    assert all(told == recorded.records[0].controller_view() for _, told in ctrl.told)
    assert recorded.stop.startswith("stopped after 20 consecutive repeats: the controller has converged")


@pytest.fixture(scope="module")
def small_bench():
    return run_landscapes(["random", ("evolution", {"population": 20, "sample": 3})], landscapes=[0, 1], seeds=3,
                          trials=24, batch=4, reference_archs=150)


def test_landscape_bench_scores_the_picks_true_reward(small_bench):
    res = small_bench
    evo = "evolution(population=20, sample=3)"
    assert res.checkpoints == [24] and res.labels == ["random", evo]
    for li, ref in enumerate(res.references):
        assert ref.top1_threshold <= ref.sample_best <= ref.optimum
        for label in res.labels:
            sc = res.score[(li, label)]
            assert sc.shape == (3, 24) and np.isfinite(sc).all() and (sc <= ref.optimum + 1e-12).all()
            assert (res.counts[(li, label)]["distinct"] <= 24).all()
    # Paired seeds: evolution's first 20 proposals are random draws from the same seeded
    # stream as random search's, and the noise is keyed by (landscape, seed, arch): the same
    # picks, so the same scores, until evolution starts mutating.
    for li in (0, 1):
        assert np.array_equal(res.score[(li, evo)][:, :20], res.score[(li, "random")][:, :20])
    summ = res.summary()
    s = summ[0][evo]
    assert set(s) >= {"regret", "regret_vs_random", "trials_to_random_final", "trials_to_top1", "distinct_archs"}
    lo, mid, hi = s["regret"][24][1], s["regret"][24][0], s["regret"][24][2]
    assert lo <= mid <= hi
    # random reaches its own final best at or before its last trial, in every seed
    assert summ[0]["random"]["reached_random_final"] == 3
    md = res.markdown()
    assert "Priors for every other choice and pair: main effect ~ N(" in md and "### Landscape 1" in md
    data = json.loads(res.to_json())
    assert data["landscapes"][1]["seed"] == 1 and len(data["landscapes"][0]["curves"]["random"]["mean_regret"]) == 24
    assert data["model"]["priors"]["kappa"] > 0


def test_seed_offset_shifts_the_runs(small_bench):
    evo = ("evolution", {"population": 20, "sample": 3})
    later = run_landscapes([evo], landscapes=[1], seeds=1, seed_offset=2, trials=24, batch=4, reference_archs=150)
    key = "evolution(population=20, sample=3)"
    assert later.references[0].optimum == small_bench.references[1].optimum
    assert np.array_equal(later.score[(0, key)][0], small_bench.score[(1, key)][2])


STUBBORN = '''
from nas.controllers.base import Controller


class Stubborn(Controller):
    """Always proposes the same arch."""

    def propose(self):
        return self.space.decode_indices([0] * len(self.space.decision_list))


class Walker(Controller):
    """Changes one decision of its last proposal each time (a user's own controller)."""

    def __init__(self, space, seed=0, step=1):
        super().__init__(space, seed)
        self.idx, self.step = [0] * len(space.decision_list), step

    def propose(self):
        d = int(self.rng.integers(len(self.idx)))
        self.idx[d] = (self.idx[d] + self.step) % len(self.space.decision_list[d].choices)
        return self.space.decode_indices(self.idx)
'''


def test_cli_surrogate_runs_user_controllers_and_stops_one_that_only_repeats(tmp_path):
    (tmp_path / "my_ctrl.py").write_text(STUBBORN)
    out = tmp_path / "sur"
    r = nas("bench", "--mode", "surrogate", "--landscapes", "1", "--seeds", "2", "--trials", "16", "--batch", "4",
            "--reference-archs", "100", "-c", "random", "-c", "my_ctrl:Walker:step=2", "-c", "my_ctrl:Stubborn",
            "--seed-offset", "7", "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "| my_ctrl:Walker(step=2) |" in r.stdout and "| my_ctrl:Stubborn |" in r.stdout
    assert "2 run seeds (7-8)" in r.stdout
    assert ("my_ctrl:Stubborn: seed 7: stopped after 1,000 consecutive repeats: the controller has converged "
            "(max_repeats) at 1 trials") in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.md", "bench.png"]
    data = json.loads((out / "bench.json").read_text())
    assert data["seed_offset"] == 7 and data["repeats"] == "record" and data["batch"] == 4
    stub = data["landscapes"][0]["summary"]["my_ctrl:Stubborn"]
    assert stub["distinct_archs"][0] == 1 and stub["asks"] == 1001


def test_cli_surrogate_repeats_train_spends_trials_on_repeats(tmp_path):
    (tmp_path / "my_ctrl.py").write_text(STUBBORN)
    r = nas("bench", "--mode", "surrogate", "--landscapes", "1", "--seeds", "1", "--trials", "8",
            "--reference-archs", "100", "-c", "random", "-c", "my_ctrl:Stubborn", "--repeats", "train", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"\| my_ctrl:Stubborn \|.*\| 1\.0 \| 8\.0 \|$", r.stdout, re.M), r.stdout


def test_cli_table_mode_takes_user_controllers_batches_and_seed_offset(slice_csv, tmp_path):
    (tmp_path / "my_ctrl.py").write_text(STUBBORN)
    r = nas("bench", "--table", slice_csv, "--param", "searched=[2,3]", "-c", "random", "-c", "my_ctrl:Walker",
            "--seeds", "2", "--seed-offset", "3", "--trials", "20", "--batch", "4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 seeds (seeds 3-4) x 20 trials, batch 4, repeats record" in r.stdout and "| my_ctrl:Walker |" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--landscapes", "2"], "--landscapes: applies to --mode surrogate only; given 2 with --mode table"),
    (["--mode", "surrogate", "--table", "x.csv"], "--table: applies to --mode table only; given 'x.csv' with "
                                                  "--mode surrogate"),
    (["--mode", "surrogate", "--latency", "proxy"], "--latency: applies to --mode table only"),
    (["--batch", "0"], "Invalid value for '--batch': 0 is not in the range x>=1."),
    (["--repeats", "skip"], "Invalid value for '--repeats': 'skip' is not one of 'record', 'train'."),
    (["--seed-offset", "-1"], "Invalid value for '--seed-offset': -1 is not in the range x>=0."),
    (["-c", "no_such_mod:Ctrl"], "controller 'no_such_mod:Ctrl': cannot import it (No module named 'no_such_mod')"),
    (["-c", "collections:OrderedDict"], "controller 'collections:OrderedDict': <class "),
    (["-c", "random", "-c", "random"], "--controller: 'random' given twice; give each controller once"),
    (["--mode", "surrogate", "-c", "mnas:batch_size=0"], "controller.batch_size: expected an integer in [1, 10000]"),
])
def test_cli_bench_option_errors(tmp_path, args, message):
    r = nas("bench", *args, "--out", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not (tmp_path / "o").exists()
