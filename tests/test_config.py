"""Experiment YAML: strict, frozen, one-line errors naming the key path and the value."""

from __future__ import annotations

import pytest

from nas.config import load_experiment, parse_experiment

GOOD = {"space": {"name": "efficientnet_edgetpu", "resolution": 32, "width": 0.25}, "reward": {"target_ms": 2.0},
        "budget": {"trials": 12}}


def test_a_minimal_experiment_gets_defaults_and_is_frozen():
    cfg = parse_experiment(GOOD)
    assert cfg.controller.name == "mnas" and cfg.latency.source == "edgetpu-model" and cfg.data.source == "mnist5k"
    assert cfg.space.kwargs() == {"resolution": 32, "width": 0.25}
    with pytest.raises(Exception):
        cfg.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize("change,message", [
    ({"budget": {"trials": 12, "parallel": 2}}, r"budget.parallel: unknown key \(given 2\)"),
    ({"reward": {"target_ms": "fast"}}, r"reward.target_ms: Input should be a valid number \(given 'fast'\)"),
    ({"reward": {"target_ms": -1}}, r"reward.target_ms: Input should be greater than 0 \(given -1\)"),
    ({"budget": {}}, r"budget.trials: missing \(required\)"),
    ({"train": {"optimizer": "lion"}}, r"train.optimizer: Input should be 'adam', 'sgd' or 'rmsprop'"),
    ({"space": {"name": "mnasnet", "resolution": 4}}, r"space.resolution: Input should be greater than or equal to 8"),
    ({"reward": {"target_ms": 2, "preset": None, "alpha": -0.1}}, "with preset null give alpha and beta"),
    ({"version": 2}, r"version: Input should be 1"),
    ({"colour": "red"}, r"colour: unknown key"),
])
def test_bad_experiments_name_the_key_and_value(change, message):
    with pytest.raises(ValueError, match=message):
        parse_experiment({**GOOD, **change})


def test_yaml_files(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("space: {name: mnasnet}\nreward: {target_ms: 1}\nbudget: {trials: 3}\n")
    assert load_experiment(p).budget.trials == 3
    p.write_text("space: {name: mnasnet\n")
    with pytest.raises(ValueError, match=r"x.yaml: not valid YAML at line 2"):
        load_experiment(p)
    p.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="expected a mapping of sections"):
        load_experiment(p)
    with pytest.raises(ValueError, match="no such file"):
        load_experiment(tmp_path / "none.yaml")


def test_the_shipped_experiments_and_the_documented_schema_parse():
    import re

    import yaml

    from conftest import ROOT
    from nas.launch import check

    quick = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    assert (quick.space.resolution, quick.latency.source, quick.controller.name, quick.data.source) == \
        (32, "edgetpu-model", "mnas", "mnist5k")
    check(quick)  # every name resolves on this machine
    svr = load_experiment(ROOT / "experiments" / "searched_vs_references.yaml")
    check(svr)
    # Its recipe must stay the tabular benchmark's, so the table can share its plot.
    import importlib.util

    spec = importlib.util.spec_from_file_location("mbt", ROOT / "benchmarks" / "make_bench_table.py")
    mbt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mbt)
    assert {k: getattr(svr.train, k) for k in mbt.RECIPE["train"]} == mbt.RECIPE["train"]
    assert {k: getattr(svr.data, k) for k in mbt.RECIPE["data"]} == mbt.RECIPE["data"]
    imagenet = load_experiment(ROOT / "experiments" / "edgetpu_imagenet.yaml")
    assert imagenet.latency.source == "edgetpu" and imagenet.reward.constraints.max_off_chip_bytes == 0
    # The annotated example in experiments/README.md lists every key: it must stay valid.
    block = re.search(r"```yaml\n(.*?)```", (ROOT / "experiments" / "README.md").read_text(), re.S).group(1)
    documented = parse_experiment(yaml.safe_load(block))
    assert documented.ray.scheduler == "fifo" and documented.train.bn_momentum == 0.9
