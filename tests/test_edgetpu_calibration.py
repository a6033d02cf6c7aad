"""Calibrating ``edgetpu-model`` from a user's own measurements (issue 15).

A real slice: NAS-Bench-201 networks measured on an Edge TPU (shared/data/edgetpu/eagle_nb201),
rebuilt by ``benchmarks/nb201.py``; ``nas latency fit edgetpu-model --measurements`` on some
of them, ``nas latency eval`` on the others.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from nas.cli import main

ROOT = Path(__file__).resolve().parents[1]
# Every 61st row of shared/data/edgetpu/eagle_nb201/calibration.csv (EAGLE's real Edge TPU
# latencies), shipped with the tests so that a clean clone runs them.
NB201_CSV = ROOT / "tests" / "data" / "eagle_nb201_slice.csv"
needs_nb201 = pytest.mark.skipif(not NB201_CSV.is_file(), reason=f"{NB201_CSV} is missing")
N_FIT, N_HELD = 10, 6


def _nb201():
    # benchmarks/ is not a package: load the builder by path, as tests/test_config.py does.
    spec = importlib.util.spec_from_file_location("nb201", ROOT / "benchmarks" / "nb201.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _write_csv(path: Path, header, rows) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """16 measured networks spread over the slice (every 61st row): models/<arch>.keras,
    models/fit.csv (10 rows) and models/held.csv (the other 6)."""
    nb = _nb201()
    rows = nb.rows(NB201_CSV)[:N_FIT + N_HELD]
    d = tmp_path_factory.mktemp("nb201") / "models"
    with (nb.write(rows, d)).open() as fh:
        measured = list(csv.reader(fh))
    header, body = measured[0], measured[1:]
    assert header == ["model", "latency_ms"] and len(body) == N_FIT + N_HELD
    assert all((d / m).is_file() for m, _ in body)
    _write_csv(d / "fit.csv", header, body[:N_FIT])
    _write_csv(d / "held.csv", header, body[N_FIT:])
    return d


def test_the_builder_keeps_only_edges_on_an_input_output_path():
    nb = _nb201()
    # 000203: conv1x1 3<-0, conv3x3 3<-2; node 2 has no input, so only the 1x1 conv remains.
    assert nb.parse("000203") == {(3, 0): "conv1x1"}
    # 130000: edges into node 1 only; node 1 reaches no output.
    with pytest.raises(ValueError, match="no path from the cell input to its output"):
        nb.parse("130000")
    with pytest.raises(ValueError, match="expected six digits 0-4"):
        nb.parse("12345")
    m = nb.build("000203")
    assert m.input_shape == (1, 32, 32, 3) and m.output_shape == (1, 10)
    convs = [ly for ly in m.layers if ly.__class__.__name__ == "Conv2D"]
    assert len(convs) == 1 + 15 + 2 * 3  # stem, one per cell, three per reduction block
    assert not any(c.use_bias for c in convs)
    assert all(c.activation.__name__ == "relu" for c in convs if c.name.startswith(("stem", "s")))
    assert all(c.activation.__name__ == "linear" for c in convs if c.name.startswith("red"))
    again = nb.build("000203")
    assert all((a == b).all() for a, b in zip(m.get_weights(), again.get_weights()))  # seeded


@needs_nb201
@pytest.mark.slow
def test_the_built_networks_are_what_the_int8_converter_makes_of_them():
    """The Keras analysis (what calibration reads) matches the int8 .tflite (what ran)."""
    from latency_models.analysis import analyze_keras, analyze_tflite
    from latency_models.convert import to_int8_tflite

    nb = _nb201()
    for vector in ("442334", "111223"):  # two pools of node 0 (merged by the converter); x + x adds
        model = nb.build(vector)
        k, t = analyze_keras(model), analyze_tflite(to_int8_tflite(model))
        assert Counter(o.op_type for o in k.ops) == Counter(o.op_type for o in t.ops)
        assert k.total_macs == t.total_macs and k.total_param_bytes == t.total_param_bytes
    assert Counter(o.op_type for o in k.ops) == {"CONV_2D": 52, "ADD": 47, "AVERAGE_POOL_2D": 2,
                                                  "MEAN": 1, "FULLY_CONNECTED": 1}


@needs_nb201
def test_fit_on_measurements_then_eval_on_held_out_rows(built, tmp_path, capsys):
    from dataclasses import fields

    from latency_models import get_source
    from latency_models.edgetpu.model import load_constants

    out = tmp_path / "my_tpu"
    code, stdout, err = run(capsys, "latency", "fit", "edgetpu-model", "--measurements", built / "fit.csv",
                            "--out", out)
    assert code == 0, err
    assert f"refitted on {N_FIT} measured models" in stdout and "in-sample" in stdout
    assert f"wrote {out / 'edgetpu_model.json'}" in stdout
    assert [p.name for p in out.iterdir()] == ["edgetpu_model.json"]

    fitted, shipped = load_constants(str(out / "edgetpu_model.json")), load_constants()
    assert "fit.csv" in fitted.fitted_on and f"({N_FIT} rows" in fitted.fitted_on
    moved = {f.name for f in fields(shipped.constants)
             if getattr(shipped.constants, f.name) != getattr(fitted.constants, f.name)}
    # A few rows refit the set-up's host constants only, the fixed per-inference cost first
    # (these networks take 0.5-2.2 ms: most of it is that overhead).
    assert "inference_overhead_s" in moved and moved <= set(fitted.fit["fitted"])

    src = get_source(str(out))
    assert src.name == "edgetpu-model"
    first = next(csv.DictReader((built / "fit.csv").open()))
    assert 0.3 < src(str(built / first["model"])).latency_ms < 3.0

    code, stdout, err = run(capsys, "latency", "eval", out, built / "held.csv", "--json")
    assert code == 0, err
    held = json.loads(stdout)
    assert held["n"] == N_HELD and "not fitted on" in held["rows"]
    assert held["median_abs_error"] < 0.30, held  # a real slice: measured on a device we never saw
    assert set(held) >= {"spearman", "mape", "within_10pct", "within_5pct", "per_row"}

    code, stdout, _ = run(capsys, "latency", "eval", "edgetpu-model", built / "held.csv", "--json")
    assert code == 0 and json.loads(stdout)["median_abs_error"] > 2 * held["median_abs_error"]  # the calibration mattered
    code, stdout, _ = run(capsys, "latency", "eval", out, built / "fit.csv")
    assert code == 0 and stdout.startswith("in-sample") and "median |error|" in stdout and "within 5%" in stdout


@needs_nb201
def test_a_fitted_folder_is_a_latency_source_in_an_experiment(built, tmp_path, capsys):
    from nas.config.experiment import parse_experiment
    from nas.run.launch import check

    out = tmp_path / "cal"
    assert run(capsys, "latency", "fit", "edgetpu-model", "--measurements", built / "fit.csv", "-o", out)[0] == 0
    cfg = parse_experiment({"space": {"name": "efficientnet_edgetpu", "resolution": 32, "width": 0.25},
                            "reward": {"target_ms": 2.0}, "budget": {"trials": 4}, "latency": {"source": str(out)}})
    check(cfg)  # resolves the folder as a source, as `nas search` does before any work
    code, stdout, err = run(capsys, "latency", "predict", "efficientnet_edgetpu_s", "--source", out, "--json")
    assert code == 0, err
    assert json.loads(stdout)["latency_ms"] > 0


BAD_CASES = ["missing-file", "missing-column", "unknown-column", "non-numeric-latency", "zero-latency",
             "negative-latency", "bad-memory", "missing-model", "bad-suffix", "corrupt-keras", "corrupt-tflite",
             "too-few-rows", "unknown-kind", "no-measurements", "learned-option", "out-exists"]


def _bad_cases(models: Path):
    a, b, c = (str((models / m).resolve()) for m in sorted(p.name for p in models.glob("*.keras"))[:3])
    ok = [[a, "0.6"], [b, "0.7"], [c, "0.8"]]
    return {
        "missing-file": (None, None, ["NOFILE"], "--measurements: 'NOFILE' does not exist"),
        "missing-column": (["model", "latency"], ok, [], "missing column 'latency_ms'"),
        "unknown-column": (["model", "latency_ms", "on_chip_MiB"], [r + [""] for r in ok], [],
                           "unknown column 'on_chip_MiB'; allowed: model, latency_ms, on_chip_mib, off_chip_mib "
                           "(did you mean 'on_chip_mib'?)"),
        "non-numeric-latency": (None, [ok[0], [b, "fast"], ok[2]], [],
                                "m.csv row 2 (line 3): latency_ms 'fast' is not allowed; expected a positive number"),
        "zero-latency": (None, [ok[0], ok[1], [c, "0"]], [], "row 3 (line 4): latency_ms '0' is not allowed"),
        "negative-latency": (None, [[a, "-1"], ok[1], ok[2]], [], "row 1 (line 2): latency_ms '-1' is not allowed"),
        "bad-memory": (["model", "latency_ms", "on_chip_mib"], [r + ["lots"] for r in ok], [],
                       "row 1 (line 2): on_chip_mib 'lots' is not allowed; expected a number of MiB >= 0"),
        "missing-model": (None, [ok[0], ["nope.keras", "0.7"], ok[2]], [],
                          "row 2 (line 3): model 'nope.keras': no such file"),
        "bad-suffix": (None, [ok[0], ["net.h5", "0.7"], ok[2]], [], "model 'net.h5' has suffix '.h5'; allowed: .keras, .tflite"),
        "corrupt-keras": (None, [ok[0], ok[1], ["junk.keras", "0.8"]], [], "model 'junk.keras' cannot be loaded"),
        "corrupt-tflite": (None, [ok[0], ok[1], ["junk.tflite", "0.8"]], [], "model 'junk.tflite'"),
        "too-few-rows": (None, ok[:2], [], "m.csv: 2 measured rows; at least 3 needed (a calibration refits"),
        "unknown-kind": (None, ok, ["KIND=edgetpu_modle"],
                         "KIND: unknown 'edgetpu_modle' (no such profile CSV either); allowed: edgetpu-model "
                         "with --measurements, or PROFILE_CSV files (did you mean 'edgetpu-model'?)"),
        "no-measurements": (None, ok, ["NO-MEASUREMENTS"], "--measurements: missing; KIND edgetpu-model"),
        "learned-option": (None, ok, ["--kinds", "gbt"], "--kinds: applies to learned predictors"),
        "out-exists": (None, ok, ["OUT-EXISTS"], "--out: "),
    }


@needs_nb201
@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_measurements_are_one_line_exit_2_and_write_nothing(built, tmp_path, capsys, case):
    header, rows, extra, message = _bad_cases(built)[case]
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer")
    csv_path = _write_csv(tmp_path / "m.csv", header or ["model", "latency_ms"], rows or [])
    out = tmp_path / "out"
    kind, args = "edgetpu-model", ["--measurements", csv_path]
    for e in extra:
        if e.startswith("KIND="):
            kind = e[5:]
        elif e == "NO-MEASUREMENTS":
            args = []
        elif e == "OUT-EXISTS":
            out.mkdir()
            (out / "keep.txt").write_text("mine")
        elif e == "NOFILE":
            args = ["--measurements", "NOFILE"]
        else:
            args.append(e)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, stdout, err = run(capsys, "latency", "fit", kind, *args, "--out", out)
    assert code == 2, (stdout, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output folder, no partial one
    if case == "out-exists":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]


@needs_nb201
def test_eval_of_bad_measurements_is_one_line_exit_2(built, tmp_path, capsys):
    model = next(built.glob("*.keras")).resolve()
    bad = _write_csv(tmp_path / "bad.csv", ["model", "latency_ms"], [[model, "x"]])
    code, _, err = run(capsys, "latency", "eval", "edgetpu-model", bad)
    assert code == 2 and "bad.csv row 1 (line 2): latency_ms 'x' is not allowed" in err
    code, _, err = run(capsys, "latency", "eval", "edgetpu-model", tmp_path / "none.csv")
    assert code == 2 and "does not exist" in err
