"""Experiment YAML: strict, frozen, one-line errors naming the key path and the value."""

from __future__ import annotations

import pytest

from nas.config.experiment import load_experiment, parse_experiment

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
    ({"reward": {"target_ms": 2, "kind": "tunas", "preset": "hard"}}, r"kind tunas .* takes only beta .* preset 'hard'"),
    ({"reward": {"target_ms": 2, "kind": "tunas", "alpha": -0.1}}, r"kind tunas .* alpha -0.1"),
    ({"version": 2}, r"version: Input should be 1"),
    ({"colour": "red"}, r"colour: unknown key"),
])
def test_bad_experiments_name_the_key_and_value(change, message):
    with pytest.raises(ValueError, match=message):
        parse_experiment({**GOOD, **change})


def test_the_absolute_reward_has_no_preset_and_survives_a_command_line_override():
    from nas.config.experiment import override

    cfg = parse_experiment({**GOOD, "reward": {"kind": "tunas", "target_ms": 3.0}})
    assert cfg.reward.preset is None and parse_experiment(GOOD).reward.preset == "soft"
    assert override(cfg, **{"budget.trials": 4}).reward == cfg.reward  # dumped and parsed again


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
    from nas.run.launch import check

    quick = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    assert (quick.space.resolution, quick.latency.source, quick.controller.name, quick.data.source) == \
        (128, "edgetpu-model", "mnas", "mnist5k")
    # the deployment model is searched, a 32 px proxy of it trained
    assert (quick.space.width, quick.space.num_classes) == (1.0, 10)
    assert (quick.proxy.resolution, quick.proxy.width, quick.proxy.depth) == (32, 0.25, 0.5)
    check(quick)  # every name resolves on this machine
    from nas.ledger.ledger import make_space

    oneshot = load_experiment(ROOT / "experiments" / "oneshot_quickstart.yaml")
    # the one-shot quickstart: quickstart's space with the block types held at EfficientNet-EdgeTPU-S's
    assert oneshot.space.model_dump(exclude={"hold"}) == quick.space.model_dump(exclude={"hold"})
    held = make_space(oneshot)
    assert [held.held[f"s{i}.block"] for i in range(1, 7)] == ["fused_mbconv"] * 3 + ["mbconv"] * 3
    assert len(held.decision_list) == len(make_space(quick).decision_list) - 6
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
    assert documented.proxy.resolution == 32 and documented.space.num_classes == 10
    from nas.ledger.ledger import make_space

    held = make_space(documented).held  # the documented hold builds: every block type and s6.se held
    assert held["s6.se"] == 0 and sum(k.endswith(".block") for k in held) == 6


def test_without_a_proxy_section_the_proxy_is_the_deployment_model():
    from nas.trial import proxy
    from search_spaces import reference

    cfg = parse_experiment(GOOD)
    assert cfg.proxy.identity
    s = reference("efficientnet_edgetpu_s", num_classes=10)
    assert proxy.of(s, cfg) is s


def test_a_proxy_that_cannot_scale_the_spaces_archs_is_one_line(monkeypatch):
    from nas.trial import proxy
    from nas.ledger.ledger import make_space

    cfg = parse_experiment({**GOOD, "proxy": {"width": 0.5}})

    def refuse(*a, **k):
        raise ValueError("block 2: filters 4 is out of range")

    monkeypatch.setattr(proxy, "scale", refuse)
    with pytest.raises(ValueError, match=r"^proxy: the archs of space efficientnet_edgetpu cannot be scaled by "
                                         r"\(width 0.5, depth 1, resolution unchanged\): block 2: filters 4 is out"):
        proxy.check(make_space(cfg), cfg)


def test_the_data_gives_the_deployment_model_its_classes():
    from nas.run.launch import with_classes

    cfg = with_classes(parse_experiment({**GOOD, "data": {"source": "digits", "limit": 300}}))
    assert cfg.space.num_classes == 10 and cfg.space.kwargs()["num_classes"] == 10
    assert with_classes(cfg) == cfg  # given and right: unchanged


def test_a_space_whose_own_classes_are_not_the_datas_is_refused(tmp_path):
    import numpy as np

    from nas.run.launch import with_classes

    np.savez(tmp_path / "three.npz", x=np.zeros((30, 8, 8), np.uint8), y=np.arange(30) % 3)
    cfg = parse_experiment({**GOOD, "space": {"name": "my_spaces:TinySpace"},
                            "data": {"source": f"npz:{tmp_path / 'three.npz'}"}})
    with pytest.raises(ValueError, match=r"^space 'my_spaces:TinySpace': 10 classes, but data.source 'npz:.*three.npz' "
                                         r"has 3; allowed: 3$"):
        with_classes(cfg)
    ten = parse_experiment({**GOOD, "space": {"name": "my_spaces:TinySpace"}, "data": {"source": "digits"}})
    assert with_classes(ten) == ten  # its own 10 are the digits'


@pytest.mark.parametrize("source,constraint,metric", [
    ("tflite-cpu", {"max_off_chip_bytes": 0}, "off_chip_bytes"),
    ("tflite-cpu-model", {"all_ops_on_tpu": True}, "ops_on_cpu"),
])
def test_a_constraint_the_latency_source_cannot_judge_is_refused(source, constraint, metric, tmp_path, capsys):
    import yaml

    from nas.cli import main
    from nas.run.launch import check

    data = {**GOOD, "latency": {"source": source}, "reward": {"target_ms": 2.0, "constraints": constraint}}
    key = next(iter(constraint))
    with pytest.raises(ValueError, match=rf"reward.constraints.{key}: latency source '{source}' gives no {metric} "
                                         r"\(it gives latency_ms\); allowed with an Edge TPU source"):
        check(parse_experiment(data))
    check(parse_experiment({**data, "latency": {"source": "edgetpu-model"}}))  # it gives both
    p = tmp_path / "x.yaml"
    p.write_text(yaml.safe_dump(data))
    assert main(["search", str(p), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"gives no {metric}" in err[0]
    assert not (tmp_path / "run").exists()


def test_a_constraint_on_an_undeclared_source_is_warned_about(caplog):
    from latency_models import LatencySource, register_source
    from nas.run.launch import check

    class Quiet(LatencySource):
        name, version = "quiet-test-source", "1"

    register_source(Quiet)
    data = {**GOOD, "latency": {"source": "quiet-test-source"},
            "reward": {"target_ms": 2.0, "constraints": {"max_off_chip_bytes": 0}}}
    with caplog.at_level("WARNING", logger="nas.run.launch"):
        check(parse_experiment(data))
    assert "does not declare whether it gives off_chip_bytes" in caplog.text
