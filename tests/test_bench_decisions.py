"""Decision tables: ``nas bench`` on any categorical decisions (the table is the space), the
shipped NAS-Bench-201 landscapes, and the generic ``SearchSpace.encode``'s index."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import search_spaces
from nas.bench.bench import run_bench
from nas.bench.launch import prepare
from nas.bench.table import SHIPPED, TABLES, Table
from nas.core.reward import RewardConfig
from search_spaces import CategoricalSpace, Point, SpaceTooLarge

from conftest import ROOT


def nas(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nas.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------ the space


def test_a_categorical_space_decodes_encodes_and_parses_points():
    space = CategoricalSpace({"op": ("conv3x3", "skip"), "width": (16, 32), "rate": (0.5, 1.0)}, label="toy")
    assert space.size == 8 and space.label == "toy" and [d.name for d in space.decision_list] == ["op", "width", "rate"]
    for c in space.iter_choices():
        p = space.decode(c)
        assert isinstance(p, Point) and space.encode(p) == c and space.encode(p.to_string()) == c
        assert space.parse(p.to_string()) == p and space.contains(p) and hash(p) == hash(space.parse(p.to_string()))
    p = space.decode_indices([1, 0, 1])
    assert p.to_string() == "op=skip,width=16,rate=1.0" and p.choices == {"op": "skip", "width": 16, "rate": 1.0}
    assert space.parse("rate=1.0,op=skip,width=16") == p  # any order; the string is canonical
    assert not space.contains(CategoricalSpace({"op": ("skip",)}).decode({"op": "skip"}))
    with pytest.raises(ValueError, match="nothing to build"):
        space.build(p)


@pytest.mark.parametrize("text, message", [
    ("op=skip,width=16", "missing decision 'rate'"),
    ("op=skip,width=16,rate=1.0,op=skip", "decision 'op' given twice"),
    ("op=skip,width=64,rate=1.0", "'64' is not a choice of 'width'; allowed: 16, 32"),
    ("op=skip,depth=2,rate=1.0", "unknown decision 'depth'"),
    ("op:skip", "token 'op:skip' is not name=value"),
])
def test_a_point_string_is_parsed_strictly(text, message):
    space = CategoricalSpace({"op": ("conv3x3", "skip"), "width": (16, 32), "rate": (0.5, 1.0)}, label="toy")
    with pytest.raises(ValueError, match=re.escape(message)):
        space.parse(text)


@pytest.mark.parametrize("decisions, message", [
    ({"a,b": (1, 2)}, "decision name 'a,b' holds ','"),
    ({"a": ("x=y", "z")}, "choice 'x=y' is empty or holds ',' or '='"),
    ({"a": (1, "1")}, "choices 1 and '1' are both written '1'"),
    ({"a": (float("nan"), 1.0)}, "is not a finite number"),
])
def test_a_categorical_space_refuses_choices_its_strings_cannot_tell_apart(decisions, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        CategoricalSpace(decisions)


# ------------------------------------------------------------------------ decision tables

TINY = """d:op,d:width,d:act[relu|swish],accuracy,latency_ms,params,note
conv3x3,32,relu,0.70,2.0,100,a
skip,16,relu,0.50,0.5,50,b
conv5x5,8,swish,0.80,3.0,200,c
skip,32,swish,0.55,0.7,60,d
"""


def test_a_decision_table_is_its_own_space(tmp_path):
    table = Table.load(write(tmp_path / "tiny.csv", TINY))
    space = table.space
    # numbers in numeric order (typed), other values in order of appearance, declared as declared
    assert [(d.name, d.choices) for d in space.decision_list] == [
        ("op", ("conv3x3", "skip", "conv5x5")), ("width", (8, 16, 32)), ("act", ("relu", "swish"))]
    assert space.size == 18 and len(table) == 4 and space.label == "tiny"
    assert table.archs[0] == "op=conv3x3,width=32,act=relu" and table.index["op=skip,width=32,act=swish"] == 3
    assert list(table.accuracy) == [0.70, 0.50, 0.80, 0.55] and list(table.extra["params"]) == [100, 50, 200, 60]
    assert table.noise() is None and all(space.contains(space.parse(a)) for a in table.archs)


def test_numbers_written_two_ways_are_one_choice(tmp_path):
    table = Table.load(write(tmp_path / "t.csv", "d:rate,d:k,accuracy,latency_ms\n1,3,0.5,1\n0.5,5,0.6,1\n1.0,5,"
                                                  "0.7,1\n"))
    assert table.space.decision_list[0].choices == (0.5, 1.0) and table.space.decision_list[1].choices == (3, 5)
    assert table.archs == ["rate=1.0,k=3", "rate=0.5,k=5", "rate=1.0,k=5"]


@pytest.mark.parametrize("content, message", [
    ("d:op,accuracy,latency_ms\nskip,0.5,1\nconv,0.6,1\nskip,0.7,1\n",
     "line 4: the same decisions as line 2 (op=skip); a decision table holds each point once"),
    ("d:op,d:k,accuracy,latency_ms\nskip,,0.5,1\n", "line 2: column d:k is empty"),
    ("d:op,d:k,accuracy,latency_ms\nskip\n", "line 2: accuracy and latency_ms must be numbers, got None, None"),
    ("d:op[skip|conv],accuracy,latency_ms\nskip,0.5,1\npool,0.5,1\n",
     "line 3: column d:op[skip|conv]: 'pool' is not one of its declared choices skip, conv"),
    ("d:k[3|5],accuracy,latency_ms\n3,0.5,1\n3.0,0.5,1\n", "line 3: column d:k[3|5]: '3.0' is not one of its "
                                                          "declared choices 3, 5"),
    ("d:op,accuracy,latency_ms\n\"a=b\",0.5,1\n", "line 2: column d:op: 'a=b' holds ',' or '='"),
    ("d:op,d:op,accuracy,latency_ms\na,b,0.5,1\n", "column 'd:op': decision 'op' is declared twice"),
    ("d:,accuracy,latency_ms\na,0.5,1\n", "column 'd:': expected d:<name> or d:<name>[<choice>|<choice>|...]"),
    ("d:op[a|a],accuracy,latency_ms\na,0.5,1\n", "column 'd:op[a|a]': declares 'a' twice"),
    ("d:op[a|],accuracy,latency_ms\na,0.5,1\n", "column 'd:op[a|]': declared choices must be non-empty"),
    ("arch,d:op,accuracy,latency_ms\nx,a,0.5,1\n", "has both an arch column and decision columns (d:op)"),
    ("d:op,latency_ms\na,1\n", "missing column(s) accuracy; a table needs arch, accuracy, latency_ms or decision "
                               "columns d:<name> instead of arch"),
    ("d:op,accuracy,latency_ms\n", "no rows"),
])
def test_bad_decision_tables(tmp_path, content, message):
    with pytest.raises(ValueError, match="^table t.csv: " + re.escape(message)):
        Table.load(write(tmp_path / "t.csv", content))


GRID = {"op": ("conv3x3", "conv5x5", "skip", "pool"), "width": (8, 16, 32), "se": ("no", "yes")}  # 24 points


@pytest.fixture(scope="module")
def grid_table(tmp_path_factory):
    """A 24-point landscape with 4 points missing: accuracy rises with width and conv, latency too."""
    space = CategoricalSpace(GRID)
    path = tmp_path_factory.mktemp("grid") / "grid.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["d:op", "d:width", "d:se", "accuracy", "latency_ms"])
        for i, c in enumerate(space.iter_choices()):
            if i % 6 == 5:
                continue
            acc = 0.3 + 0.1 * GRID["width"].index(c["width"]) + 0.05 * (c["op"] != "skip") + 0.02 * (c["se"] == "yes")
            w.writerow([c["op"], c["width"], c["se"], f"{acc:.3f}", f"{1 + c['width'] / 8 + 0.3 * (c['se'] == 'yes'):.2f}"])
    return path


def test_every_controller_runs_on_a_decision_table(grid_table):
    table = Table.load(grid_table)
    assert len(table) == 20 and table.space.size == 24
    controllers = ["random", "evolution", ("evolution", {"population": 4, "sample": 2}), ("mnas", {"batch_size": 4}),
                   "optuna", "logits"]
    res = run_bench(table, controllers, seeds=2, trials=30, batch=4, repeats="record")
    summary = res.summary()
    assert res.table_best == pytest.approx(float(np.nanmax(table.rewards(res.rcfg))))
    for name, s in summary.items():
        best = np.nan_to_num(res.best_so_far[name], nan=-1.0)  # NaN: no usable trial yet
        assert (np.diff(best, axis=1) >= 0).all() and (best <= res.table_best + 1e-12).all()
        assert s["distinct_archs"] <= 24
        # 4 of the 24 points are missing: proposing one is a failed trial, never a crash (the other NaN
        # rewards are trials after a run stopped: all 20 points recorded, or only repeats proposed)
        assert s["failed_lookups"] <= int(np.isnan(res.rewards[name]).sum())
    assert sum(s["failed_lookups"] for s in summary.values()) > 0
    assert "table grid.csv: 20 archs of a 24-point space (3 decisions)" in res.markdown()
    # the default space of run_bench is the table's own; the same seed gives the same run
    again = run_bench(table, ["evolution"], seeds=2, trials=30, batch=4, repeats="record", space=table.space)
    assert np.array_equal(again.rewards["evolution"], res.rewards["evolution"], equal_nan=True)


def test_a_decision_table_has_no_space_option(grid_table):
    with pytest.raises(ValueError, match=r"^--space/--param: table grid.csv declares its own space \(decision columns "
                                         r"op, width, se\); they apply to tables of arch strings only$"):
        prepare("table", table=grid_table, space_name="efficientnet_edgetpu_bench")
    launch = prepare("table", [("random", {})], table=grid_table)
    assert launch.space is launch.table.space
    assert launch.rcfg.target_ms == pytest.approx(float(np.median(launch.table.latency_ms)))


def test_cli_runs_a_decision_table_and_names_bad_input(grid_table, tmp_path):
    out = tmp_path / "b"
    r = nas("bench", "--table", grid_table, "-c", "random", "-c", "mnas:batch_size=4", "--seeds", "2", "--trials",
            "12", "--batch", "4", "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "table grid.csv: 20 archs of a 24-point space (3 decisions)" in r.stdout and "| mnas(batch_size=4) |" in r.stdout
    data = json.loads((out / "bench.json").read_text())
    assert data["archs"] == 20 and len(data["curves"]["random"]["best_so_far_mean"]) == 12
    bad = write(tmp_path / "bad.csv", "d:op,accuracy,latency_ms\nskip,0.5,1\nskip,0.6,1\n")
    for args, message in [(["--table", bad], "error: table bad.csv: line 3: the same decisions as line 2 (op=skip)"),
                          (["--table", grid_table, "--param", "x=1"], "error: --space/--param: table grid.csv declares "
                                                                       "its own space")]:
        r = nas("bench", *args, "--seeds", "1", "--trials", "2", cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), r.stderr


# --------------------------------------------------------------- the shipped NB201 tables

EAGLE = ROOT.parent / "shared" / "data" / "edgetpu" / "eagle_nb201" / "calibration.csv"
OPS = ("none", "skip", "conv1x1", "conv3x3", "avgpool3x3")


@pytest.mark.parametrize("name", ["nb201-cifar100", "nb201-imagenet16"])
def test_the_shipped_nb201_tables(name):
    table = Table.load(name)
    assert Path(table.source) == SHIPPED[name] and SHIPPED[name].stat().st_size < 1.5e6
    space = table.space
    assert [d.name for d in space.decision_list] == ["e1_0", "e2_0", "e2_1", "e3_0", "e3_1", "e3_2"]
    assert all(d.choices == OPS for d in space.decision_list) and space.size == 15_625
    # every cell with a path from the cell's input to its output; the 341 without one are not rows
    assert len(table) == 15_284 and len(set(table.archs)) == len(table)
    assert "e1_0=none,e2_0=none,e2_1=none,e3_0=none,e3_1=none,e3_2=none" not in table.index
    assert "e1_0=conv3x3,e2_0=none,e2_1=none,e3_0=none,e3_1=skip,e3_2=none" in table.index  # 0 -> 1 -> 3
    top = 0.74 if name == "nb201-cifar100" else 0.48
    assert 0.008 <= table.accuracy.min() and 0.6 * top < table.accuracy.max() < top
    assert 0.4 < table.latency_ms.min() and table.latency_ms.max() < 3.5
    with open(table.source, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["latency_from"] for r in rows} == {"measured", "edgetpu-model"}
    measured = {",".join(f"{d}={r[c]}" for d, c in zip([d.name for d in space.decision_list], list(rows[0])[:6])):
                float(r["latency_ms"]) for r in rows if r["latency_from"] == "measured"}
    assert len(measured) == 1000
    if EAGLE.is_file():  # the measured rows are EAGLE's published figures
        with open(EAGLE, newline="") as f:
            eagle = {",".join(f"{d.name}={OPS[int(ch)]}" for d, ch in zip(space.decision_list, r["arch_vector"])):
                     float(r["latency_ms"]) for r in csv.DictReader(f)}
        assert measured == eagle
    # the predicted rows sit on the measured rows' scale (calibrated), not edgetpu-model's USB-host level
    pred = np.array([float(r["latency_ms"]) for r in rows if r["latency_from"] != "measured"])
    assert abs(np.median(pred) / np.median(list(measured.values())) - 1) < 0.25


def test_the_nb201_table_runs_from_the_cli_by_name(tmp_path):
    r = nas("bench", "--table", "nb201-imagenet16", "-c", "random", "-c", "evolution", "--seeds", "2", "--trials",
            "16", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "table nb201_imagenet16.csv: 15284 archs of a 15,625-point space (6 decisions)" in r.stdout
    assert str(SHIPPED["nb201-cifar100"]).startswith(str(TABLES))


# ------------------------------------------------------------ the generic encode's index


class CountingTiny(search_spaces.SearchSpace):
    """Four decisions of three: 81 archs, and a count of make_arch calls."""

    name = ""

    def __init__(self, choices: int = 3, decisions: int = 4):
        self.n, self.k, self.calls = choices, decisions, 0

    def decisions(self):
        return [search_spaces.Decision(f"s{i}.filters", tuple(8 * (j + 1) for j in range(self.n)))
                for i in range(1, self.k + 1)]

    def make_arch(self, c):
        from search_spaces import Arch, Block, Head, Stem

        self.calls += 1
        return Arch(stem=Stem(8), head=Head(32), resolution=32,
                    stages=tuple(Block("mbconv", c[f"s{i}.filters"], kernel=3, stride=1, expansion=2)
                                 for i in range(1, self.k + 1)))


def test_encode_indexes_the_space_once_not_per_call():
    space = CountingTiny()
    members = [space.decode(c) for c in space.iter_choices()]
    assert len(members) == 81 and space.calls == 81
    space.calls = 0
    for _ in range(5):
        for arch, c in zip(members, space.iter_choices()):
            assert space.encode(arch) == c
    assert space.calls == 81  # one enumeration, then look-ups (enumerating per call: ~16,000 calls)
    other = CountingTiny(choices=4).decode({f"s{i}.filters": 32 for i in range(1, 5)})
    with pytest.raises(ValueError, match=r"^arch is not in space CountingTiny: v1-"):
        space.encode(other)
    assert not space.contains(other) and space.calls == 81


BIG_SPACE = """
from search_spaces import Arch, Block, Decision, Head, SearchSpace, Stem


class Big(SearchSpace):
    def decisions(self):
        return [Decision(f"s{i}.filters", tuple(range(8, 72, 8))) for i in range(1, 7)]

    def make_arch(self, c):
        return Arch(stem=Stem(8), head=Head(32), resolution=32, stages=tuple(
            Block("mbconv", c[f"s{i}.filters"], kernel=3, stride=1, expansion=2) for i in range(1, 7)))
"""


def test_a_space_too_large_to_index_says_so_in_one_line(tmp_path):
    big = CountingTiny(choices=8, decisions=6)  # 262,144 members, no encode of its own
    arch = big.decode_indices([0] * 6)
    message = (r"^space CountingTiny has 262,144 members, too many for the generic encode\(\) to index \(at most "
               r"200,000\): give CountingTiny its own encode\(arch\) returning the arch's choices")
    for call in (big.encode, big.contains):
        with pytest.raises(SpaceTooLarge, match=message):
            call(arch)
    assert isinstance(SpaceTooLarge("x"), ValueError)  # a user error: one line and exit 2 from the CLI
    (tmp_path / "big_space.py").write_text(BIG_SPACE)
    table = write(tmp_path / "t.csv", f'arch,accuracy,latency_ms\n"{arch.to_string()}",0.5,1\n')
    r = nas("bench", "--table", table, "--space", "big_space:Big", "-c", "evolution", "--seeds", "1", "--trials",
            "2", cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert re.match("error: " + message[1:].replace("CountingTiny", "Big"), lines[0]), lines[0]


def test_reward_on_a_decision_table_is_the_searchs(grid_table):
    table = Table.load(grid_table)
    rcfg = RewardConfig(target_ms=2.0, preset="hard")
    res = run_bench(table, ["random"], seeds=1, trials=5, rcfg=rcfg)
    found = [a for a in res.rewards["random"][0] if np.isfinite(a)]
    assert set(np.round(found, 12)) <= set(np.round(table.rewards(rcfg), 12))
