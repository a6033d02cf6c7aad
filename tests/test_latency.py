"""Latency interface, registry, targets, int8 conversion and its cache, timing, tflite-cpu."""

from __future__ import annotations

import json

import numpy as np
import pytest

import search_spaces as s
from latency_models import LatencyResult, LatencySource, Target, get_source, register_source, source_names
from latency_models import convert as conv
from latency_models.timing import summarize, time_invokes, time_stable

TINY = s.get("efficientnet_edgetpu", resolution=32, width=0.25, depth=0.5, num_classes=10).sample(0)


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory) -> bytes:
    return conv.to_int8_tflite(s.build_model(TINY))


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    conv._MEMORY.clear()
    return tmp_path / "cache" / "tflite"


# ----------------------------------------------------------------------------- interface


def test_registry_is_strict_and_lazy():
    assert {"tflite-cpu", "edgetpu"} <= set(source_names())
    with pytest.raises(ValueError, match="unknown name 'tflite-gpu'.*did you mean 'tflite-cpu'"):
        get_source("tflite-gpu")
    with pytest.raises(ValueError, match="already registered"):
        register_source(type("Else", (LatencySource,), {"name": "tflite-cpu"}))
    with pytest.raises(ValueError, match="bad options.*colour"):
        get_source("tflite-cpu", colour=1)
    with pytest.raises(ValueError, match="tflite-cpu threads: expected an integer"):
        get_source("tflite-cpu", threads=0)
    # Importing the package pulls in no runtime, no TF and no Ray.
    from conftest import heavy_modules_loaded_by

    assert heavy_modules_loaded_by("import latency_models; from latency_models import get_source, Target") == []


def test_a_user_source_by_import_path():
    class Flops(LatencySource):
        name, version = "flops-test", "1"

        def measure(self, target):
            return self.result(latency_ms=s.count_macs(target.arch) / 1e8)

    register_source(Flops)
    r = get_source("flops-test")(TINY)
    assert r.source == "flops-test" and r.latency_ms == pytest.approx(s.count_macs(TINY) / 1e8)
    with pytest.raises(ValueError, match="is not a LatencySource subclass"):
        get_source("search_spaces:Arch")


def test_latency_result_validates_and_serialises():
    with pytest.raises(ValueError, match="latency_ms: expected a finite non-negative number"):
        LatencyResult(latency_ms=float("nan"), source="x", source_version="1")
    r = LatencyResult(latency_ms=1.5, source="x", source_version="1", n_runs=3, p90_ms=2.0)
    d = json.loads(r.to_json())
    assert d["latency_ms"] == 1.5 and d["p90_ms"] == 2.0 and "layers" not in d


# -------------------------------------------------------------------------------- targets


def test_target_forms(tmp_path, tiny_tflite):
    ref = Target("mobilenet_v2", input_shape=(64, 64, 3))
    assert ref.arch.resolution == 64 and ref.input_shape is None and ref.label.startswith("v1-res64:")
    assert Target(TINY.to_string()).arch == TINY
    p = tmp_path / "m.tflite"
    p.write_bytes(tiny_tflite)
    assert Target(p).tflite() == tiny_tflite and Target(str(p)).kind == "tflite"
    assert Target(tiny_tflite).key == Target(p).key
    km = tmp_path / "m.keras"
    s.build_model(TINY).save(km)
    assert Target(km).keras_model().count_params() == s.build_model(TINY).count_params()


@pytest.mark.parametrize("obj,match", [
    ("missing.tflite", "file 'missing.tflite' does not exist"),
    ("resnet_9000", "not a .keras/.tflite path, an arch string or a reference name"),
    ("v1-res32:stem-k3-s2-o8-relu:conv-r1-k3-s1-o8-gelu:head-o8-relu", "unknown token 'gelu'"),
    (42, "expected an Arch, arch string"),
])
def test_target_errors(obj, match):
    with pytest.raises(ValueError, match=match):
        Target(obj)


# ----------------------------------------------------------------------------- conversion


@pytest.mark.slow
def test_int8_conversion_is_full_integer(tiny_tflite):
    from latency_models.isolated import invoke_isolated

    out, info = invoke_isolated(tiny_tflite, np.zeros((1, 32, 32, 3), np.int8))
    # int8 activations and weights, int32 biases (and shape constants); no float tensor at all.
    assert set(info["tensor_dtypes"]) <= {"int8", "int32"}
    assert info["input"]["dtype"] == info["output"]["dtype"] == "int8" and out.shape == (1, 10)


@pytest.mark.slow
def test_uint8_io_and_calibration_with_real_data():
    model = s.build_model(TINY)
    data = np.random.default_rng(1).random((4, 32, 32, 3), dtype=np.float32)
    blob = conv.to_int8_tflite(model, data, n_samples=4, io_type="uint8")
    from latency_models.isolated import invoke_isolated

    _, info = invoke_isolated(blob, np.zeros((1, 32, 32, 3), np.uint8))
    assert info["input"]["dtype"] == "uint8" and info["output"]["dtype"] == "uint8"
    # The quantized model computes what the float model does (softmax outputs within a few %).
    scale, zero = info["input"]["quantization"]
    oscale, ozero = info["output"]["quantization"]
    xq = np.clip(np.round(data / scale + zero), 0, 255).astype(np.uint8)
    yq, _ = invoke_isolated(blob, xq)
    y_q = (yq.astype(np.float32) - ozero) * oscale
    y_f = model.predict(data, verbose=0)
    assert np.abs(y_q - y_f).max() < 0.1
    with pytest.raises(ValueError, match="representative data: expected samples of shape"):
        conv.to_int8_tflite(model, np.zeros((2, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="io_type: unknown 'float16'"):
        conv.to_int8_tflite(model, io_type="float16")


@pytest.mark.slow
def test_conversion_is_cached_by_arch_string(cache, monkeypatch, tiny_tflite):
    calls = []
    monkeypatch.setattr(conv, "to_int8_tflite", lambda *a, **k: calls.append(1) or tiny_tflite)
    first = Target(TINY).tflite()
    assert len(calls) == 1 and len(list(cache.glob("*.tflite"))) == 1
    assert Target(TINY.to_string()).tflite() == first and len(calls) == 1  # memory hit
    conv._MEMORY.clear()
    assert Target(TINY).tflite() == first and len(calls) == 1  # disk hit
    Target(TINY.replace(resolution=48)).tflite()
    Target(TINY, representative=np.zeros((1, 32, 32, 3), np.float32)).tflite()
    Target(TINY, cache=False).tflite()
    assert len(calls) == 4 and len(list(cache.glob("*.tflite"))) == 3


# ------------------------------------------------------------------------------- timing


class FakeInterpreter:
    """Counts invokes; the tests patch the clock instead of sleeping."""

    def __init__(self, durations_ms):
        self.invokes = 0

    def get_input_details(self):
        return [{"index": 0, "shape": np.array([1, 4]), "dtype": np.int8}]

    def set_tensor(self, index, value):
        assert value.dtype == np.int8

    def invoke(self):
        self.invokes += 1


def test_time_invokes_excludes_warmup(monkeypatch):
    import latency_models.timing as timing

    ticks = iter(np.arange(0, 100, 0.001))  # each clock read advances 1 ms
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))
    it = FakeInterpreter([])
    t = time_invokes(it, n_runs=7, warmup=3)
    assert it.invokes == 10 and t.shape == (7,) and np.allclose(t, 1.0)
    stats = summarize(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert stats.median_ms == 3.0 and stats.p90_ms > stats.median_ms and stats.n_runs == 5
    with pytest.raises(ValueError, match="n_runs: expected at least 1"):
        time_invokes(it, n_runs=0)


def test_stable_mode_repeats_until_medians_agree(monkeypatch):
    import latency_models.timing as timing

    medians = iter([10.0, 5.0, 5.02, 5.01, 5.0])
    monkeypatch.setattr(timing, "time_invokes", lambda it, n, warmup=0: np.full(n, next(medians)))
    st = time_stable(FakeInterpreter([]), n_runs=5, tolerance=0.01)
    assert st.rounds == 4 and st.median_ms == pytest.approx(5.01) and st.n_runs == 15
    noisy = iter([1.0, 2.0] * 10)
    monkeypatch.setattr(timing, "time_invokes", lambda it, n, warmup=0: np.full(n, next(noisy)))
    assert time_stable(FakeInterpreter([]), n_runs=5, max_rounds=6).rounds == 6


@pytest.mark.slow
def test_tflite_cpu_source_end_to_end(cache):
    src = get_source("tflite-cpu", threads=1, n_runs=10, warmup=1)
    r = src(TINY)
    assert r.source == "tflite-cpu" and r.n_runs == 10 and 0 < r.latency_ms <= r.p90_ms
    assert "ai_edge_litert" in r.source_version and "threads=1" in r.source_version
    r2 = get_source("tflite-cpu", n_runs=5, stable=True, tolerance=0.5)(TINY)
    assert r2.details["rounds"] >= 3


def test_isolated_timing_reports_a_broken_model():
    from latency_models import LatencyError
    from latency_models.isolated import time_isolated

    with pytest.raises(LatencyError, match="cannot load the model"):
        time_isolated(b"not a flatbuffer", n_runs=2)


# ---------------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_measure_json(capsys, cache):
    from nas.cli import main

    assert main(["latency", "measure", TINY.to_string(), "--runs", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["latency_ms"] > 0 and out["n_runs"] == 5 and out["target"] == TINY.to_string()


@pytest.mark.slow
def test_cli_measure_says_which_protocol_it_used(capsys, cache):
    """One process by default, with a line saying the host predictor stands for the best of
    three; --repeats 3 times that protocol and says so in the source line."""
    from nas.cli import main

    assert main(["latency", "measure", TINY.to_string(), "--runs", "3"]) == 0
    assert "protocol: one process; the shipped tflite-cpu-model predicts the best of 3 processes" in \
        capsys.readouterr().out
    assert main(["latency", "measure", TINY.to_string(), "--runs", "3", "--repeats", "3"]) == 0
    out = capsys.readouterr().out
    assert "best of 3 processes" in out and "protocol:" not in out
    assert main(["latency", "predict", TINY.to_string(), "--source", "tflite-cpu-model"]) == 0
    assert "best of 3 processes" in capsys.readouterr().out  # the prediction names its protocol


@pytest.mark.parametrize("argv,message", [
    (["latency", "measure", "mobilenet_v2", "--source", "edgetpu", "--threads", "2"],
     "--threads: applies to source tflite-cpu, not 'edgetpu'"),
    (["latency", "measure", "mobilenet_v2", "--source", "gpu"], "latency source: unknown name 'gpu'"),
    (["latency", "measure", "nothing.tflite"], "file 'nothing.tflite' does not exist"),
    (["latency", "measure", "mobilenet_v2", "--source", "edgetpu", "--repeats", "3"],
     "--repeats: applies to source tflite-cpu, not 'edgetpu'"),
])
def test_cli_latency_bad_input(capsys, argv, message):
    from nas.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_cli_input_size_on_a_file(capsys, tmp_path, tiny_tflite):
    from nas.cli import main

    p = tmp_path / "m.tflite"
    p.write_bytes(tiny_tflite)
    assert main(["latency", "measure", str(p), "--input-size", "64"]) == 2
    assert "--input-size: applies to archs" in capsys.readouterr().err


def test_isolated_falls_back_to_builtin_kernels_when_the_worker_dies(monkeypatch):
    from latency_models import isolated

    calls = []

    def fake(request, timeout_s, what):
        calls.append(request["xnnpack"])
        if request["xnnpack"]:
            return {"died": "double free or corruption (!prev)"}
        return {"median_ms": 1.0, "p90_ms": 1.2, "p10_ms": 0.9, "n_runs": 3, "rounds": 1}

    monkeypatch.setattr(isolated, "_run_worker", fake)
    stats, info = isolated.time_isolated(b"model", n_runs=3)
    assert calls == [True, False] and info == {"xnnpack": False} and stats.median_ms == 1.0
    monkeypatch.setattr(isolated, "_run_worker", lambda r, t, w: {"died": "Segmentation fault"})
    from latency_models import LatencyError

    with pytest.raises(LatencyError, match="failed 2 times; last error: Segmentation fault"):
        isolated.time_isolated(b"model")


@pytest.mark.slow
def test_a_model_that_crashes_xnnpack_still_gets_a_latency(cache):
    # With these weights LiteRT 2.3's XNNPACK delegate aborts in allocate_tensors ("double
    # free or corruption"); the measurement must survive it whatever the runtime version does.
    import keras

    keras.utils.set_random_seed(2)
    model = s.build_model(TINY)
    data = np.random.default_rng(1).random((4, 32, 32, 3), dtype=np.float32)
    blob = conv.to_int8_tflite(model, data, n_samples=4)
    r = get_source("tflite-cpu", n_runs=5)(blob)
    assert r.latency_ms > 0 and isinstance(r.details["xnnpack"], bool)


def test_cli_analyze_and_devices(capsys):
    from nas.cli import main

    assert main(["latency", "analyze", "mobilenet_v2", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["total_macs"] == s.count_macs(s.reference("mobilenet_v2")) and d["first_cpu_op"] is None
    hs = "v1-res64:stem-k3-s2-o16-relu:mbconv-r1-k3-s2-e4-o24-hard_swish:head-o64-relu"
    assert main(["latency", "analyze", hs]) == 0
    assert "HARD_SWISH" in capsys.readouterr().out
    assert main(["latency", "devices", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["devices"] == [] and d["reason"] and "compiler" in d["environment"]


def test_cli_space_option(capsys):
    from nas.cli import main

    args = ["latency", "predict", "sample:2", "--space", "mnasnet", "-p", "resolution=64", "-p", "num_classes=10",
            "--json"]
    assert main(args) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["target"] == s.get("mnasnet", resolution=64, num_classes=10).sample(2).to_string()
    assert main(["latency", "analyze", "mobilenet_v2", "--space", "mnasnet"]) == 0
    capsys.readouterr()
    for argv, message in [(["latency", "predict", "mobilenet_v2", "--space", "efficientnet_edgetpu"],
                           "--space: the arch is not a member of EfficientNetEdgeTPUSpace"),
                          (["latency", "predict", "sample"], "sampling needs --space NAME"),
                          (["latency", "predict", "mobilenet_v2", "-p", "width=2"], "--param: applies to --space"),
                          (["latency", "predict", "sample:x", "--space", "mnasnet"], "sample:SEED with an integer")]:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
