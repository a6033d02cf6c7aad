"""Every docstring example in the toolkit runs (examples that need hardware or a long run say
``# doctest: +SKIP`` on the line)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "latency_models.edgetpu.model", "latency_models.edgetpu.model_source", "latency_models.edgetpu.replay",
    "latency_models.tflite_cpu", "nas.bench.bench", "nas.bench.landscape", "nas.bench.stats",
    "nas.cli.install", "nas.config.experiment", "nas.config.sections", "nas.controllers.base",
    "nas.controllers.logits", "nas.controllers.mnas", "nas.controllers.optuna", "nas.core.errors",
    "nas.core.events", "nas.core.lazy", "nas.core.params", "nas.core.record", "nas.core.reward",
    "nas.core.section", "nas.oneshot.train", "nas.trial.devices", "nas.trial.proxy", "nas.trial.recipe",
    "nas.trial.training", "nas.trial.updates", "nas.trial.worker", "search_spaces.arch",
    "search_spaces.builder", "search_spaces.categorical", "search_spaces.held", "search_spaces.references",
    "search_spaces.registry", "search_spaces.scaling", "search_spaces.supernet"]


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
