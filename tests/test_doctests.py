"""Every docstring example in the toolkit runs (examples that need hardware or a long run say
``# doctest: +SKIP`` on the line)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["nas.config", "nas.errors", "nas.recipe", "nas.worker", "nas.proxy", "nas.optuna_controller", "nas.record", "nas.bench", "nas.bench_stats", "nas.training", "nas.mnas_controller",
           "nas.landscape", "nas.reward", "latency_models.edgetpu_model", "latency_models.edgetpu_model_source", "latency_models.tflite_cpu",
           "search_spaces.arch", "search_spaces.references", "search_spaces.scaling", "search_spaces.builder",
           "search_spaces.supernet", "search_spaces.held", "search_spaces.categorical", "nas.supernet_train",
           "nas.logits_controller", "nas.devices", "nas.install", "latency_models.edgetpu_replay", "nas.config_recipe"]


def test_the_list_holds_every_module_with_examples():
    from conftest import ROOT

    found = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for pkg in ("nas", "latency_models",
                                                                                 "search_spaces")
                   for p in (ROOT / pkg).rglob("*.py") if ">>> " in p.read_text())
    assert found == sorted(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
