"""Learned predictors: features, fitting, held-out evaluation, safe files, CLI, profiles."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import search_spaces as s
from latency_models import get_source
from latency_models import learned as L
from latency_models.profile import COLUMNS, ProfilePlan, profile, read_profile


def synthetic_rows(n=120, seed=0):
    """Profile rows whose latency is a known function of the features (plus 2% noise)."""
    rng = np.random.default_rng(seed)
    plan = ProfilePlan(("mnasnet", "efficientnet_edgetpu"), resolutions=(32, 64), widths=(0.25, 0.5),
                       depths=(0.5,), seed=seed)
    rows = []
    for i, name, cfg, arch in plan.rows():
        if i == n:
            break
        x = L.features([arch], 10)[0]
        ms = 0.02 + x[L._INDEX["total_macs"]] / 4e9 + x[L._INDEX["n_ops"]] * 0.004
        rows.append({"row": i, "space": name, "arch": arch.to_string(), "num_classes": 10, "source": "tflite-cpu",
                     "source_version": "synthetic", "latency_ms": ms * (1 + 0.02 * rng.standard_normal()),
                     "status": "ok"})
    return rows


def test_features_need_no_graph_and_reflect_the_arch():
    a = s.reference("mobilenet_v2", width=0.5, resolution=64)
    x = L.features([a, a.to_string()], 10)
    assert x.shape == (2, len(L.FEATURES)) and (x[0] == x[1]).all()
    assert x[0, L._INDEX["total_macs"]] == s.count_macs(a, num_classes=10)
    assert x[0, L._INDEX["dw3x3.count"]] == sum(b.repeats for b in a.stages)


def test_fit_keeps_the_best_kind_and_evaluates_on_held_out_rows(tmp_path):
    rows = synthetic_rows()
    predictor, scores = L.fit_predictor(rows, kinds=("additive", "gbt"), holdout=0.25, seed=1)
    assert set(scores) == {"additive", "gbt"} and predictor.kind == "additive"  # the truth is additive
    assert scores["additive"]["within_10pct"] >= 0.9 and scores["additive"]["spearman"] > 0.95
    d = predictor.save(tmp_path / "p")
    again = L.Predictor.load(d)
    np.testing.assert_allclose(again.predict([r["arch"] for r in rows[:5]], 10), predictor.predict(
        [r["arch"] for r in rows[:5]], 10))
    ev = L.evaluate(again, rows)
    assert ev["rows"].startswith("held-out") and ev["n"] == predictor.meta["n_test"]
    assert ev["mape"] == pytest.approx(scores["additive"]["mape"])
    assert L.evaluate(again, rows[:40])["rows"].startswith("all rows")


@pytest.mark.parametrize("kind", ["gbt", "mlp"])
def test_tree_and_mlp_files_round_trip_without_pickle(tmp_path, kind):
    rows = synthetic_rows(60)
    predictor, _ = L.fit_predictor(rows, kinds=(kind,), seed=0)
    d = predictor.save(tmp_path / kind)
    files = sorted(p.name for p in d.iterdir())
    assert files == sorted(["predictor.json", "model.lgb.txt" if kind == "gbt" else "model.npz"])
    if kind == "mlp":
        with np.load(d / "model.npz", allow_pickle=False) as z:  # plain arrays only
            assert all(z[k].dtype != object for k in z.files)
    archs = [r["arch"] for r in rows[:4]]
    np.testing.assert_allclose(L.Predictor.load(d).predict(archs, 10), predictor.predict(archs, 10), rtol=1e-9)


def test_predictor_files_are_refused_when_foreign(tmp_path):
    predictor, _ = L.fit_predictor(synthetic_rows(40), kinds=("additive",))
    d = predictor.save(tmp_path / "p")
    meta = json.loads((d / "predictor.json").read_text())
    cases = [({**meta, "version": 99}, "version 99 is not supported; this toolkit reads version 1"),
             ({**meta, "format": "pickle"}, "not a latency predictor"),
             ({**meta, "kind": "svm"}, "unknown kind 'svm'"),
             ({**meta, "features": ["a"]}, "its features differ"),
             ({**meta, "state": {"scale": [1], "w": [1]}}, "weights do not match the feature list")]
    for bad, message in cases:
        (d / "predictor.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            L.Predictor.load(d)
    (d / "predictor.json").write_text("{ not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        L.Predictor.load(d)
    with pytest.raises(ValueError, match="no predictor.json"):
        L.Predictor.load(tmp_path / "missing")


def test_fit_input_errors():
    with pytest.raises(ValueError, match="needs at least 20"):
        L.fit_predictor(synthetic_rows(10))
    with pytest.raises(ValueError, match="predictor kind: unknown 'forest'"):
        L.fit_predictor(synthetic_rows(30), kinds=("forest",))


def test_profile_file_errors(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a latency profile, missing columns arch, latency_ms, status"):
        read_profile(p)
    with pytest.raises(ValueError, match="no such file"):
        read_profile(tmp_path / "none.csv")


def test_profile_is_stratified_and_resumable(tmp_path, monkeypatch):
    class Fake:
        name, measured = "fake", False

        def __init__(self):
            self.calls = 0

        def describe(self):
            return "fake/1"

        def measure(self, target):
            from latency_models import LatencyResult

            self.calls += 1
            return LatencyResult(latency_ms=s.count_macs(target.arch) / 1e7, source="fake", source_version="1")

    plan = ProfilePlan(("efficientnet_edgetpu",), resolutions=(32,), widths=(0.25,), depths=(0.5,), seed=3)
    # Every value of every decision appears equally often in the first rounds.
    rows = [r for _, r in zip(range(10), plan.rows())]
    kinds = [arch.stages[0].expansion for *_, arch in rows]
    assert sorted(kinds) == sorted([1, 2, 4, 6, 8] * 2)
    out = tmp_path / "p.csv"
    src = Fake()
    profile(plan, src, 6, out, progress=False)
    # Simulate a kill mid-write: a torn last line.
    with out.open("a") as fh:
        fh.write("6,efficientnet_edgetpu,{},v1-res32:stem")
    written = profile(plan, src, 10, out, progress=False)
    assert [r["row"] for r in written] == [6, 7, 8, 9] and src.calls == 10
    table = read_profile(out)
    assert [int(r["row"]) for r in table] == list(range(10))
    assert tuple(csv.DictReader(out.open()).fieldnames) == COLUMNS
    with pytest.raises(ValueError, match="exists; use resume"):
        profile(plan, src, 10, out, progress=False, resume=False)


def test_cli_fit_eval_predict(tmp_path, capsys):
    from nas.cli import main

    rows = synthetic_rows(80)
    p = tmp_path / "profile.csv"
    with p.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    assert main(["latency", "fit", str(p), "-o", str(tmp_path / "pred"), "--kinds", "additive"]) == 0
    assert "<- kept" in capsys.readouterr().out
    assert main(["latency", "eval", str(tmp_path / "pred"), str(p), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["n"] == 16 and ev["within_10pct"] > 0.8
    assert main(["latency", "predict", rows[0]["arch"], "--source", str(tmp_path / "pred"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["latency_ms"] > 0
    assert main(["latency", "fit", str(p), "-o", str(tmp_path / "pred")]) == 2
    assert "already exists" in capsys.readouterr().err
    src = get_source(str(tmp_path / "pred"))
    assert src.predictor.kind == "additive"


def test_shards_split_the_rows_and_merge(tmp_path):
    from latency_models.profile import read_profiles

    class Fake:
        name, measured = "fake", False

        def describe(self):
            return "fake/1"

        def measure(self, target):
            from latency_models import LatencyResult

            return LatencyResult(latency_ms=1.0, source="fake", source_version="1")

    plan = ProfilePlan(("mnasnet",), resolutions=(32,), widths=(0.25,), depths=(0.5,))
    for k in (0, 1, 2):
        profile(plan, Fake(), 8, tmp_path / f"s{k}.csv", progress=False, shard=(k, 3))
    parts = [read_profile(tmp_path / f"s{k}.csv") for k in (0, 1, 2)]
    assert [int(r["row"]) for r in parts[1]] == [1, 4, 7]
    merged = read_profiles([tmp_path / f"s{k}.csv" for k in (0, 1, 2)] + [tmp_path / "s0.csv"])
    assert [int(r["row"]) for r in merged] == list(range(8))
    with pytest.raises(ValueError, match="shard: expected K/M"):
        profile(plan, Fake(), 8, tmp_path / "x.csv", progress=False, shard=(3, 3))


def test_an_edgetpu_profile_refits_the_edgetpu_model(tmp_path, capsys):
    """What `nas latency profile --source edgetpu` + `nas latency fit` does on a Coral host,
    with the device simulated by the model itself under different constants."""
    from dataclasses import replace

    from latency_models.edgetpu import model as em
    from latency_models.analysis import analyze_arch
    from nas.cli import main

    device = replace(em.load_constants().constants, link_bytes_per_s=2.0e8, inference_overhead_s=9e-4)
    plan = ProfilePlan(("efficientnet_edgetpu",), resolutions=(96, 160), widths=(0.5, 1.0, 1.5), depths=(1.0,))
    rows = []
    for i, name, cfg, arch in plan.rows():
        if i == 40:
            break
        p = em.predict_arrays(em.op_arrays(analyze_arch(arch, None, 10)), device)
        rows.append({"row": i, "space": name, "arch": arch.to_string(), "num_classes": 10, "source": "edgetpu",
                     "source_version": "edgetpu/1", "latency_ms": p.latency_ms, "on_chip_bytes": p.on_chip_bytes,
                     "off_chip_bytes": p.off_chip_bytes, "status": "ok"})
    csv_path = tmp_path / "tpu.csv"
    with csv_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    assert main(["latency", "fit", str(csv_path), "-o", str(tmp_path / "mine")]) == 0
    assert "edgetpu-model refitted on 40 measured archs" in capsys.readouterr().out
    mine = get_source(str(tmp_path / "mine"))
    assert mine.name == "edgetpu-model"
    assert mine.model.constants.link_bytes_per_s == pytest.approx(2.0e8, rel=0.1)
    arch = s.Arch.from_string(rows[7]["arch"])
    assert mine(arch, num_classes=10).latency_ms == pytest.approx(rows[7]["latency_ms"], rel=0.05)
