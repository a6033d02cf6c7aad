"""A user's image folder end to end: a generated folder of small JPEGs (imbalanced classes, a
few corrupt files, a file that is not an image) through a standalone search on Ray, its
export, and a one-shot search of two latency targets (parallel Ray tasks) whose decoded images are
over the memory budget."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from test_data import make_folder
from test_search import nas

pytestmark = pytest.mark.slow


def _experiment(tmp_path, **changes) -> str:
    e = {"name": "folder", "seed": 2,
         "space": {"name": "efficientnet_edgetpu", "resolution": 64, "width": 0.5, "depth": 0.5},
         "proxy": {"resolution": 32, "width": 0.5, "depth": 0.5},
         "controller": {"name": "random"}, "reward": {"target_ms": 1.8},
         "data": {"source": f"folder:{tmp_path / 'imgs'}", "cache_dir": str(tmp_path / "cache")},
         "train": {"epochs": 1, "batch_size": 32}, "budget": {"trials": 3, "concurrency": 2}, **changes}
    p = tmp_path / f"{e['name']}.yaml"
    p.write_text(yaml.safe_dump(e))
    return p.name


def test_a_folder_through_a_standalone_search_and_export(tmp_path):
    good = make_folder(tmp_path / "imgs", counts=(120, 60, 30), size=40, corrupt=2)
    r = nas("search", _experiment(tmp_path), "--out", "run", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(tmp_path / "run" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(row["status"] == "ok" and float(row["accuracy"]) > 0 for row in rows), rows
    assert int(rows[0]["num_classes"]) == 3
    # one store on the node, built once for both workers (the other waited on its lock)
    stores = list((tmp_path / "cache").glob("*.json"))
    assert len(stores) == 1 and len(json.loads(stores[0].read_text())["bad"]) == 3
    assert json.loads(stores[0].read_text())["n"] == good + 3
    out = nas("export", "run", "--scale", "proxy", "--epochs", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "export" / "summary.json").read_text())
    assert summary["input"]["data"].startswith("folder:") and 0 <= summary["int8_accuracy"] <= 1


def test_a_folder_over_the_memory_budget_through_a_one_shot_search_of_parallel_targets(tmp_path):
    """Two latency targets: two supernets as parallel Ray tasks, each reading its batches from
    the node's store (the decoded folder is over ``data.memory_mb``), then their merged
    candidates retrained as trials on Ray Tune."""
    make_folder(tmp_path / "imgs", counts=(60, 40, 20), size=32, corrupt=1)
    exp = _experiment(tmp_path, name="os", space={"name": "efficientnet_edgetpu_bench"}, proxy={},
                      controller={"name": "logits", "params": {"learning_rate": 0.1}},
                      data={"source": f"folder:{tmp_path / 'imgs'}", "cache_dir": str(tmp_path / "cache"),
                            "memory_mb": 0.01},
                      budget={"trials": 2, "concurrency": 2},
                      search={"strategy": "oneshot", "oneshot": {"targets_ms": [1.2, 3.0], "epochs": 1,
                                                                 "batch_size": 16, "samples": 2, "candidates": 2,
                                                                 "top_k": 1, "calibration": 1}})
    r = nas("search", exp, "--out", "run", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(2 supernets, 1.2, 3 ms)" in r.stderr
    stores = list((tmp_path / "cache").glob("*.json"))  # one store, the bad files left out
    assert len(stores) == 1 and len(json.loads(stores[0].read_text())["bad"]) == 2
    run = tmp_path / "run"
    per = {t: json.loads((run / "oneshot" / f"target-{t}ms" / "candidates.json").read_text()) for t in ("1.2", "3")}
    assert all(d["candidates"] and d["candidates"][0]["target_ms"] == float(t) for t, d in per.items())
    assert all(0 <= c["accuracy"] <= 1 for d in per.values() for c in d["candidates"])
    merged = json.loads((run / "oneshot" / "candidates.json").read_text())["candidates"]
    assert len({c["arch"] for c in merged}) == len(merged) <= 2  # each arch once, at most budget.trials
    with open(run / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(merged) and all(row["status"] == "ok" for row in rows)
    assert (run / "ray").is_dir()  # the retraining ran on Ray Tune
