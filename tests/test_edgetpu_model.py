"""The edgetpu-model predictor: calibration, monotonicity, the cache cliff, constants files."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace

import pytest

import search_spaces as s
from latency_models import get_source
from latency_models.edgetpu import fit as ef
from latency_models.edgetpu import model as em
from latency_models.analysis import analyze_arch


@pytest.fixture(scope="module")
def src():
    return get_source("edgetpu-model")


def predict(src, arch, link="usb3"):
    return em.predict_arrays(em.op_arrays(analyze_arch(arch)), src.model.constants, link)


def test_shipped_constants_are_fitted_and_versioned(src):
    assert src.model.fitted_on.startswith("public measurements")
    assert src.model.fit["median_abs_error"] <= 0.20
    assert src.describe().startswith(em.MODEL_VERSION)


@pytest.mark.slow
def test_shipped_constants_reproduce_the_calibration_rows(src):
    from latency_models.edgetpu.calibration import calibration_rows

    rows, skipped = calibration_rows()
    assert len(rows) >= 10 and all("inception" in name for name in skipped)
    errors = []
    for r in rows:
        p = src.predict_analysis(r.analysis, with_layers=False)
        errors.append(abs(p.latency_ms / r.latency_ms - 1))
        if r.off_chip_bytes is not None and r.off_chip_bytes > 0:
            assert p.off_chip_bytes > 0, r.name  # streaming where the compiler said so
    assert statistics.median(errors) <= 0.10 and max(errors) <= 0.20


def test_monotone_in_macs_and_parameter_bytes(src):
    by_res = [predict(src, s.reference("efficientnet_edgetpu_s", resolution=r)).latency_ms for r in range(32, 321, 16)]
    assert by_res == sorted(by_res)
    by_width = [predict(src, s.reference("efficientnet_edgetpu_s", width=w)) for w in (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)]
    assert [p.latency_ms for p in by_width] == sorted(p.latency_ms for p in by_width)
    assert [p.off_chip_bytes for p in by_width] == sorted(p.off_chip_bytes for p in by_width)


def test_the_cache_cliff(src):
    fits = predict(src, s.reference("efficientnet_edgetpu_s", width=0.75))
    assert fits.off_chip_bytes == 0 and fits.stream_ms == 0
    # EfficientNet-EdgeTPU-S itself sits at the edge: its 1.3 MB classifier is the part that
    # no longer fits beside the activations of its 112-px fused stages (why it measures 5.1 ms).
    edge = predict(src, s.reference("efficientnet_edgetpu_s"))
    assert 0 < edge.off_chip_bytes < 2 * em.MIB
    big = predict(src, s.reference("efficientnet_edgetpu_s", width=3.0))
    assert big.off_chip_bytes > 10 * em.MIB and big.stream_ms > big.compute_ms  # streaming-dominated
    # Past the cache, each extra parameter byte costs several times more than below it.
    def slope(w0, w1):
        a0, a1 = (s.reference("efficientnet_edgetpu_s", width=w) for w in (w0, w1))
        p0, p1 = predict(src, a0), predict(src, a1)
        dbytes = analyze_arch(a1).total_param_bytes - analyze_arch(a0).total_param_bytes
        return (p1.latency_ms - p0.latency_ms) / dbytes, p0, p1

    below, q0, q1 = slope(0.5, 0.75)
    above, r0, r1 = slope(1.5, 1.75)
    assert q1.off_chip_bytes == 0 and r0.off_chip_bytes > 0
    assert above > 3 * below


def test_links_and_cpu_fallback(src):
    big = s.reference("efficientnet_edgetpu_s", width=2.0)
    lat = {link: predict(src, big, link).latency_ms for link in ("usb2", "usb3", "pcie")}
    assert lat["usb2"] > lat["usb3"] > lat["pcie"]
    hs = s.Arch.from_string("v1-res96:stem-k3-s2-o16-relu:mbconv-r2-k3-s2-e4-o24-relu,"
                            "mbconv-r2-k3-s2-e4-o32-hard_swish:head-o128-relu")
    p = predict(src, hs)
    assert p.ops_on_cpu > 0 and p.cpu_ms > 0
    relu = predict(src, hs.replace(stages=(hs.stages[0], hs.stages[1].__class__(**{**hs.stages[1].__dict__,
                                                                                   "activation": "relu"}))))
    assert relu.ops_on_cpu == 0 and p.latency_ms > relu.latency_ms


def test_source_result_and_breakdown(src):
    r = src(s.reference("mobilenet_v2", resolution=96))
    assert r.source == "edgetpu-model" and r.n_runs == 0 and r.p90_ms is None
    assert r.off_chip_bytes == 0 and r.on_chip_bytes > 0 and r.ops_on_cpu == 0
    assert len(r.layers) == r.ops_on_tpu and sum(ly.on_chip_bytes for ly in r.layers) == r.on_chip_bytes
    assert sum(ly.latency_ms for ly in r.layers) < r.latency_ms  # the rest is per-inference io
    with pytest.raises(ValueError, match="link: unknown 'usb4'"):
        get_source("edgetpu-model", link="usb4")


def test_predicting_an_arch_builds_no_graph():
    from conftest import heavy_modules_loaded_by

    code = ("from latency_models import get_source; import search_spaces as s\n"
            "assert get_source('edgetpu-model')(s.reference('efficientnet_edgetpu_s')).latency_ms > 0")
    assert heavy_modules_loaded_by(code) == []


def test_fit_recovers_known_constants():
    truth = replace(em.Constants(), peak_macs_per_s=1.5e12, depthwise_efficiency=0.25, link_bytes_per_s=3.0e8,
                    inference_overhead_s=8e-4)
    archs = [s.reference(n, width=w, resolution=r) for n in ("efficientnet_edgetpu_s", "mobilenet_v2", "mnasnet_a1")
             for w in (0.5, 1.0, 1.6) for r in (96, 224)]
    rows = [ef.CalibrationRow(a.to_string()[:30], analyze_arch(a),
                              em.predict_arrays(em.op_arrays(analyze_arch(a)), truth).latency_ms) for a in archs]
    fitted, report = ef.fit(rows, names=("peak_macs_per_s", "depthwise_efficiency", "link_bytes_per_s",
                                         "inference_overhead_s"), prior_weight=0.0)
    assert report["max_abs_error"] < 0.01
    assert fitted.peak_macs_per_s == pytest.approx(1.5e12, rel=0.05)
    assert fitted.link_bytes_per_s == pytest.approx(3.0e8, rel=0.05)


def test_constants_files_round_trip_and_are_strict(tmp_path):
    model = em.FittedModel(em.Constants(), fitted_on="test")
    again = em.FittedModel.from_json(model.to_json())
    assert again.constants == model.constants and again.fitted_on == "test"
    bad_version = json.loads(model.to_json()) | {"version": "edgetpu-model/99"}
    with pytest.raises(ValueError, match="version 'edgetpu-model/99' is not supported; this toolkit reads"):
        em.FittedModel.from_json(json.dumps(bad_version))
    with pytest.raises(ValueError, match="not valid JSON"):
        em.FittedModel.from_json("{nope")
    unknown = json.loads(model.to_json())
    unknown["constants"]["warp_factor"] = 9
    with pytest.raises(ValueError, match="unknown constants warp_factor"):
        em.FittedModel.from_json(json.dumps(unknown))
    negative = json.loads(model.to_json())
    negative["constants"]["peak_macs_per_s"] = -1
    with pytest.raises(ValueError, match="constant peak_macs_per_s must be a positive number"):
        em.FittedModel.from_json(json.dumps(negative))
    with pytest.raises(ValueError, match="does not exist"):
        get_source("edgetpu-model", constants=str(tmp_path / "none.json"))
    p = tmp_path / "mine.json"
    p.write_text(replace(model, constants=replace(model.constants, link_bytes_per_s=1e8)).to_json())
    slow = get_source("edgetpu-model", constants=str(p))(s.reference("efficientnet_edgetpu_s", width=2.0))
    assert slow.latency_ms > get_source("edgetpu-model")(s.reference("efficientnet_edgetpu_s", width=2.0)).latency_ms


def test_cli_predict(capsys):
    from nas.cli import main

    assert main(["latency", "predict", "efficientnet_edgetpu_s", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert 0 < d["off_chip_bytes"] < 2 * em.MIB and 4 < d["latency_ms"] < 7  # published: 5.1 ms
    assert main(["latency", "predict", "mobilenet_v2", "--link", "usb2", "--breakdown"]) == 0
    out = capsys.readouterr().out
    assert "block16a_project_conv" in out or "block7a_project_conv" in out
    assert main(["latency", "predict", "mobilenet_v2", "--source", "tflite-cpu"]) == 2
    assert "measures on hardware" in capsys.readouterr().err


def test_batched_predictions_equal_the_exact_path(src):
    from latency_models.edgetpu.batch import predict_batch

    archs = [s.get(n, **kw).sample(i) for n, kw in [("efficientnet_edgetpu", {"resolution": 64, "width": 0.5}),
                                                     ("mnasnet", {"resolution": 96, "width": 0.35}),
                                                     ("efficientnet_edgetpu", {}), ("mnasnet", {})] for i in range(6)]
    archs += [s.reference(n) for n in s.reference_names()]
    archs.append(s.Arch.from_string("v1-res96:stem-k3-s2-o16-relu:mbconv-r2-k3-s2-e4-o24-relu,"
                                    "mbconv-r2-k3-s2-e4-o32-hard_swish:head-o128-relu"))  # CPU fall-back
    fast = predict_batch([a.to_string() for a in archs], link="usb2")
    usb2 = get_source("edgetpu-model", link="usb2")
    for i, a in enumerate(archs):
        r = usb2(a)
        assert fast["latency_ms"][i] == pytest.approx(r.latency_ms, rel=1e-9)
        assert (fast["on_chip_bytes"][i], fast["off_chip_bytes"][i]) == (r.on_chip_bytes, r.off_chip_bytes)
    with pytest.raises(ValueError, match="link: unknown 'wifi'"):
        predict_batch(archs[:1], link="wifi")


def test_batched_predictions_equal_the_exact_path_where_the_cache_overflows(src):
    from latency_models.edgetpu.batch import predict_batch

    # Wide, high-resolution members stream part of their parameters: the cut through the
    # cache lands inside a block, which the batched path evaluates op by op.
    sp = s.get("efficientnet_edgetpu")
    archs = [sp.sample(i) for i in range(40)] + [s.reference("efficientnet_edgetpu_s", width=w) for w in (1.5, 2.5)]
    fast = predict_batch(archs)
    exact = [src.predict_analysis(analyze_arch(a), with_layers=False) for a in archs]
    assert sum(p.off_chip_bytes > 0 for p in exact) >= 5
    for i, p in enumerate(exact):
        assert fast["latency_ms"][i] == pytest.approx(p.latency_ms, rel=1e-12)
        assert (fast["on_chip_bytes"][i], fast["off_chip_bytes"][i]) == (p.on_chip_bytes, p.off_chip_bytes)


def test_setups_share_the_chip_and_keep_their_own_host_constants():
    # Two set-ups measuring the same chip: the second has a smaller fixed cost and a slower
    # link. Fitting both at once recovers each one's host constants and the shared chip rate.
    truth = replace(em.Constants(), peak_macs_per_s=1.6e12, inference_overhead_s=1.2e-3)
    other = replace(truth, inference_overhead_s=3e-4, link_bytes_per_s=1.5e8)
    archs = [s.reference(n, width=w, resolution=r) for n in ("efficientnet_edgetpu_s", "mobilenet_v2")
             for w in (0.5, 1.0, 2.0) for r in (96, 224)]

    def row(a, c, setup):
        an = analyze_arch(a)
        return ef.CalibrationRow(a.to_string()[:30], an, em.predict_arrays(em.op_arrays(an), c).latency_ms,
                                 setup=setup)

    rows = [row(a, truth, "") for a in archs] + [row(a, other, "board") for a in archs]
    fitted, report = ef.fit(rows, names=("peak_macs_per_s", "inference_overhead_s"), prior_weight=0.0)
    assert report["max_abs_error"] < 0.01
    assert fitted.peak_macs_per_s == pytest.approx(1.6e12, rel=0.05)
    assert fitted.inference_overhead_s == pytest.approx(1.2e-3, rel=0.05)
    board = report["setups"]["board"]
    assert board["inference_overhead_s"] == pytest.approx(3e-4, rel=0.1)
    assert board["link_bytes_per_s"] == pytest.approx(1.5e8, rel=0.1)


def test_the_reserve_is_searched_on_its_grid():
    # The cache cut is a step function of the reserve: a gradient fit cannot find it, the grid can.
    truth = replace(em.Constants(), max_reserve_bytes=int(3.0 * em.MIB))
    archs = [s.reference("efficientnet_edgetpu_s", width=w) for w in (0.9, 1.0, 1.1, 1.2, 1.3)]
    rows = [ef.CalibrationRow(str(i), analyze_arch(a), em.predict_arrays(em.op_arrays(analyze_arch(a)), truth).latency_ms)
            for i, a in enumerate(archs)]
    fitted, report = ef.fit(rows, replace(truth, max_reserve_bytes=int(1.5 * em.MIB)), prior_weight=0.0)
    assert fitted.max_reserve_bytes == int(3.0 * em.MIB)
    assert report["max_abs_error"] < 0.02


def test_a_setup_with_one_or_two_rows_gets_only_its_link():
    # Two rows cannot tell a fixed cost from a clock: such a set-up keeps the primary's and
    # fits its link alone (a slower board link shows as streaming time).
    truth = em.Constants()
    board = replace(truth, link_bytes_per_s=1.5e8)
    archs = [s.reference("efficientnet_edgetpu_s", width=w) for w in (1.5, 2.0)]
    rows = [ef.CalibrationRow(str(w), analyze_arch(a), em.predict_arrays(em.op_arrays(analyze_arch(a)), c).latency_ms,
                              setup=setup)
            for c, setup in ((truth, ""), (board, "board")) for w, a in enumerate(archs)]
    _, report = ef.fit(rows, truth, names=("peak_macs_per_s",), prior_weight=0.0)
    got = report["setups"]["board"]
    assert got["inference_overhead_s"] == truth.inference_overhead_s and got["clock"] == truth.clock
    assert got["link_bytes_per_s"] == pytest.approx(1.5e8, rel=0.05)


def test_a_batch_of_archs_is_predicted_as_each_one_alone():
    from latency_models import LatencySource

    space = s.get("efficientnet_edgetpu", resolution=96)
    archs = [space.sample(i) for i in range(5)]
    src = get_source("edgetpu-model")
    batch = src.measure_archs(archs, num_classes=10)
    for a, r in zip(archs, batch):
        one = src(a, num_classes=10)
        assert r.latency_ms == pytest.approx(one.latency_ms, rel=1e-9)
        assert (r.on_chip_bytes, r.off_chip_bytes) == (one.on_chip_bytes, one.off_chip_bytes)

    class Counting(LatencySource):  # a source that cannot batch is measured one by one
        name = "counting-test"
        seen: list = []

        def measure(self, target):
            self.seen.append(target.input_shape)
            return self.result(latency_ms=1.0)

    assert [r.latency_ms for r in Counting().measure_archs(archs[:2], channels=1)] == [1.0, 1.0]
    assert Counting.seen == [(96, 96, 1), (96, 96, 1)]
