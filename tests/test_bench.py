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
from nas.bench import DEFAULT_SPACE, DEFAULT_TABLE, Table, hypervolume, run_bench
from nas.reward import RewardConfig

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
