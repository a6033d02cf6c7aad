"""Calibration rows for ``edgetpu-model``: public Edge TPU measurements of buildable networks.

``data/edgetpu_measurements.csv`` (a copy of shared/data/edgetpu/measurements.csv, sources in
its last column) lists latencies measured on Coral USB Accelerators. Rows whose network can
be built here in Keras are turned into :class:`~latency_models.edgetpu.fit.CalibrationRow` s
(the network's static analysis plus the measured figures); the Inception rows cannot
(GoogLeNet and Inception v4 are not in ``keras.applications``) and are skipped, by name.

A user's own measurements (a CSV of model files and latencies, :func:`read_measurements`)
refit the constants to their set-up (:func:`calibrate_measurements`, :func:`save_calibration`:
``nas latency fit edgetpu-model --measurements``) and score a fit on new rows
(:func:`evaluate_measurements`: ``nas latency eval``).
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

import search_spaces
from search_spaces import Arch

from latency_models.analysis import EDGETPU_CUSTOM_OP, analyze_arch, analyze_keras, analyze_tflite
from latency_models.edgetpu.fit import CalibrationRow, calibrate
from latency_models.edgetpu.model import CONSTANTS_FILE, DATA, MIB, FittedModel, load_constants
from latency_models.edgetpu.model_source import EdgeTPUModelSource
from latency_models.learned import accuracy

log = logging.getLogger(__name__)

MEASUREMENTS = DATA / "edgetpu_measurements.csv"


def _conv_stack(n: int, px: int):
    import keras

    layers = [keras.Input((px, px, 3))]
    layers += [keras.layers.Conv2D(32, 7, padding="same", activation="relu") for _ in range(n)]
    return keras.Sequential(layers, name=f"conv7x7_stack_{n}")


def build(model: str, px: int):
    """The Keras network a measurement row names, or None when it cannot be built here."""
    import keras

    apps = keras.applications
    if model == "mobilenet_v1_1.0":
        return apps.MobileNet(alpha=1.0, weights=None, input_shape=(px, px, 3))
    if model == "mobilenet_v2_1.0":
        return apps.MobileNetV2(alpha=1.0, weights=None, input_shape=(px, px, 3))
    if model == "resnet50_v1":
        return apps.ResNet50(weights=None, input_shape=(px, px, 3))
    if model.startswith("efficientnet_edgetpu_"):
        # The searched family: our reference of it, built by the toolkit's own builder.
        return search_spaces.build_model(search_spaces.reference(model, resolution=px), seed=0)
    m = re.fullmatch(r"conv7x7_stack_(\d+)", model)
    if m:
        return _conv_stack(int(m.group(1)), px)
    return None


def setup_of(described: str) -> str:
    """The set-up key of a measurement row: "" for the Coral USB Accelerator on USB 3 (every
    host in the file; their spread is the noise of public numbers), "devboard" for the Dev Board."""
    return "devboard" if "dev board" in described.lower() else ""


def calibration_rows(path: str | Path = MEASUREMENTS) -> tuple[list[CalibrationRow], list[str]]:
    """Rows to fit on, and the names of measurement rows skipped (with why)."""
    rows, skipped, cache = [], [], {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            key = (r["model"], int(r["input_px"]))
            if key not in cache:
                model = build(*key)
                cache[key] = analyze_keras(model) if model is not None else None
            if cache[key] is None:
                skipped.append(f"{r['model']} ({r['how_to_build']})")
                continue
            mib = lambda v: float(v) * MIB if v not in ("", None) else None  # noqa: E731
            rows.append(CalibrationRow(name=f"{r['model']}@{r['input_px']} [{r['setup'][:40]}]", analysis=cache[key],
                                       latency_ms=float(r["latency_ms"]), on_chip_bytes=mib(r["on_chip_mib"]),
                                       off_chip_bytes=mib(r["off_chip_mib"]), setup=setup_of(r["setup"])))
    return rows, sorted(set(skipped))


# ------------------------------------------------------------- a user's own measurements
#
# A measurements CSV lists networks the user ran on their own Edge TPU set-up: ``model`` (a
# ``.keras`` or int8 ``.tflite`` file, relative to the CSV's folder) and ``latency_ms``, with
# ``on_chip_mib``/``off_chip_mib`` from the compiler's report where known. ``nas latency fit
# edgetpu-model --measurements`` refits the constants to them; ``nas latency eval`` scores a
# fitted folder on another such CSV.

MEASUREMENT_COLUMNS = ("model", "latency_ms")
OPTIONAL_MEASUREMENT_COLUMNS = ("on_chip_mib", "off_chip_mib")
MODEL_SUFFIXES = (".keras", ".tflite")
# A few rows refit the set-up's host constants (fixed per-inference overhead, link, clock: three
# today). With fewer measured networks than those constants the priors decide them and the
# in-sample error is near zero whatever the device does, so neither the fit nor its report
# would mean anything.
MIN_MEASUREMENT_ROWS = 3


def _number(raw, where: str, field: str, allowed: str, *, positive: bool) -> float:
    try:
        v = float(raw)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{where}: {field} {raw!r} is not allowed; expected {allowed}")
    return v


def _analyze_model(path: Path, where: str, shown: str):
    """The static analysis of one measured model file (ValueError naming it when unusable)."""
    if path.suffix == ".keras":
        import keras

        try:
            # safe_mode: a measurements file may come from anywhere; no deserialised lambdas.
            model = keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as e:  # noqa: BLE001 - Keras raises many types; all mean "cannot load"
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ValueError(f"{where}: model {shown!r} cannot be loaded as a Keras model "
                             f"({type(e).__name__}: {first[:160]})") from None
        return analyze_keras(model)
    try:
        analysis = analyze_tflite(path)
    except ValueError as e:
        raise ValueError(f"{where}: model {shown!r}: {str(e).splitlines()[0]}") from None
    if any(o.op_type == "CUSTOM" and o.edgetpu_supported for o in analysis.ops):  # the only supported custom op
        raise ValueError(f"{where}: model {shown!r} is already compiled for the Edge TPU (its layers are hidden "
                         f"in one {EDGETPU_CUSTOM_OP}); give the int8 .tflite it was compiled from")
    if analysis.ops and not any(o.dtype in ("int8", "uint8") for o in analysis.ops):
        raise ValueError(f"{where}: model {shown!r} is not int8-quantized (it computes in "
                         f"{'/'.join(sorted({o.dtype for o in analysis.ops}))}); the Edge TPU runs only int8 "
                         "models: give the .keras model or the full-integer .tflite that was measured")
    return analysis


def read_measurements(path: str | Path, *, min_rows: int = 1) -> list[CalibrationRow]:
    """The rows of a measurements CSV as :class:`CalibrationRow` s, validated strictly.

    Every field is checked before any model is loaded, so a typo in the last row is reported
    at once; a model listed twice is analysed once. Errors are one-line ``ValueError`` s naming
    the file, the row, the field, the value and what is allowed.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"measurements {str(path)!r}: no such file")
    allowed = MEASUREMENT_COLUMNS + OPTIONAL_MEASUREMENT_COLUMNS
    with open(p, newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        missing = [c for c in MEASUREMENT_COLUMNS if c not in header]
        if missing:
            profile = (" (a profile from 'nas latency profile', which lists archs, not model files: fit it with "
                       "'nas latency fit PROFILE_CSV -o DIR')" if "arch" in header else "")
            raise ValueError(f"{p.name}: missing column {missing[0]!r} (columns: {', '.join(header) or 'none'}); "
                             f"required: {', '.join(MEASUREMENT_COLUMNS)}; optional: "
                             f"{', '.join(OPTIONAL_MEASUREMENT_COLUMNS)}{profile}")
        unknown = [c for c in header if c not in allowed]
        if unknown:
            hint = difflib.get_close_matches(unknown[0], allowed, n=1)
            raise ValueError(f"{p.name}: unknown column {unknown[0]!r}; allowed: {', '.join(allowed)}"
                             + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        dupes = sorted({c for c in header if header.count(c) > 1})
        if dupes:
            raise ValueError(f"{p.name}: column {dupes[0]!r} appears twice")
        raw = [(reader.line_num, r) for r in reader if any((v or "").strip() for k, v in r.items() if k)]

    parsed = []
    for i, (line, r) in enumerate(raw, start=1):
        where = f"{p.name} row {i} (line {line})"
        if r.get(None):
            raise ValueError(f"{where}: {len(header) + len(r[None])} values, but the header has {len(header)} "
                             f"columns ({', '.join(header)})")
        model = (r.get("model") or "").strip()
        if not model:
            raise ValueError(f"{where}: model is empty; expected a path to a {' or '.join(MODEL_SUFFIXES)} file "
                             "(relative to the CSV's folder)")
        mp = Path(model) if Path(model).is_absolute() else p.parent / model
        if mp.suffix not in MODEL_SUFFIXES:
            raise ValueError(f"{where}: model {model!r} has suffix {mp.suffix!r}; allowed: {', '.join(MODEL_SUFFIXES)}")
        if not mp.is_file():
            raise ValueError(f"{where}: model {model!r}: no such file {str(mp)!r} (paths are relative to the "
                             "CSV's folder)")
        latency = _number((r.get("latency_ms") or "").strip(), where, "latency_ms",
                          "a positive number of milliseconds", positive=True)
        mem = {}
        for col in OPTIONAL_MEASUREMENT_COLUMNS:
            v = (r.get(col) or "").strip()
            mem[col] = None if v == "" else _number(v, where, col, "a number of MiB >= 0, or empty for unknown",
                                                     positive=False) * MIB
        parsed.append((where, model, mp.resolve(), latency, mem))
    if len(parsed) < min_rows:
        raise ValueError(f"{p.name}: {len(parsed)} measured rows; at least {min_rows} needed"
                         + (" (a calibration refits the set-up's host constants: fewer measured networks than "
                            "constants leave them to the priors)" if min_rows == MIN_MEASUREMENT_ROWS else ""))

    analyses: dict[Path, object] = {}
    rows = []
    for where, model, mp, latency, mem in parsed:
        if mp not in analyses:
            analyses[mp] = _analyze_model(mp, where, model)
        rows.append(CalibrationRow(name=model, analysis=analyses[mp], latency_ms=latency,
                                   on_chip_bytes=mem["on_chip_mib"], off_chip_bytes=mem["off_chip_mib"]))
    log.info("%s: %d measured rows, %d distinct models", p, len(rows), len(analyses))
    return rows


def _digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def accuracy_of(source, rows: list[CalibrationRow]) -> dict:
    """How well ``source`` (an ``edgetpu-model`` source) predicts measured ``rows``: n, Spearman,
    median |error|, MAPE, the share within +-10% and +-5% (the metrics of learned predictors),
    and each row's prediction."""
    pred = np.array([source.predict_analysis(r.analysis, with_layers=False).latency_ms for r in rows])
    true = np.array([r.latency_ms for r in rows])
    err = pred / true - 1
    return {**accuracy(pred, true), "median_abs_error": float(np.median(np.abs(err))),
            "per_row": [{"model": r.name, "measured_ms": r.latency_ms, "predicted_ms": round(float(p), 4),
                         "error": round(float(e), 4)} for r, p, e in zip(rows, pred, err)]}


@dataclass(frozen=True)
class Calibration:
    """A fit to measurements: the constants (with provenance), the rows, how well they fit."""

    fitted: FittedModel
    rows: tuple[CalibrationRow, ...]
    in_sample: dict
    changed: dict[str, tuple[float, float]]  # constant -> (before, after), for those that moved


def calibrate_measurements(path: str | Path, base: str | None = None) -> Calibration:
    """Refit the constants (from ``base``, a constants file; default the shipped fit) to a
    measurements CSV. Writes nothing; see :func:`save_calibration`."""
    rows = read_measurements(path, min_rows=MIN_MEASUREMENT_ROWS)
    # The hash lets `nas latency eval` tell the rows a folder was fitted on from new ones.
    return calibrate_rows(rows, f"measurements {Path(path).resolve()} ({len(rows)} rows, sha256 {_digest(path)})",
                          base)


def profile_calibration_rows(profile_rows) -> list[CalibrationRow]:
    """The ok rows of a profile measured with ``--source edgetpu`` (``nas latency profile``),
    each arch analysed from its layer plan."""
    def num(v):
        return float(v) if v not in ("", None) else None

    return [CalibrationRow(name=r["arch"][:40], analysis=analyze_arch(Arch.from_string(r["arch"]), None,
                                                                      int(r["num_classes"])),
                           latency_ms=float(r["latency_ms"]), on_chip_bytes=num(r.get("on_chip_bytes")),
                           off_chip_bytes=num(r.get("off_chip_bytes")))
            for r in profile_rows if r.get("status") == "ok"]


def calibrate_rows(rows: list[CalibrationRow], fitted_on: str, base: str | None = None) -> Calibration:
    """Refit the constants to measured rows (:func:`~latency_models.edgetpu.fit.calibrate`:
    the host constants from a few rows, all from many) and score the fit in-sample."""

    if not rows:
        raise ValueError("edgetpu-model calibration: no measured rows")
    before = load_constants(base).constants
    consts, report = calibrate(rows, before)
    fitted = FittedModel(consts, fitted_on=fitted_on, fit=report)
    # The source reads its constants from a file (its only public way in), so the in-sample
    # figures are those of the very file that will be written.
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / CONSTANTS_FILE
        f.write_text(fitted.to_json() + "\n")
        in_sample = accuracy_of(EdgeTPUModelSource(constants=str(f)), rows)
    changed = {fl.name: (getattr(before, fl.name), getattr(consts, fl.name)) for fl in fields(consts)
               if getattr(before, fl.name) != getattr(consts, fl.name)}
    log.info("calibrated on %s; moved: %s", fitted_on, ", ".join(changed) or "nothing")
    return Calibration(fitted, tuple(rows), in_sample, changed)


def save_calibration(cal: Calibration, out: str | Path) -> Path:
    """Write ``out/edgetpu_model.json`` (a folder ``--source``/``latency.source`` accept);
    ``out`` must not exist. The folder appears whole or not at all."""
    out = Path(out)
    if out.exists():
        raise ValueError(f"{str(out)!r} already exists; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        staging.mkdir()
        (staging / CONSTANTS_FILE).write_text(cal.fitted.to_json() + "\n")
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out / CONSTANTS_FILE


def edgetpu_model_constants(predictor: str) -> tuple[bool, str | None]:
    """Whether ``predictor`` names an ``edgetpu-model`` (the name itself, a folder holding
    ``edgetpu_model.json`` or such a file), and its constants file (None: the shipped one)."""
    if predictor == "edgetpu-model":
        return True, None
    p = Path(predictor)
    if p.is_dir() and (p / CONSTANTS_FILE).is_file():
        return True, str(p / CONSTANTS_FILE)
    if p.is_file() and p.suffix == ".json":
        try:
            if json.loads(p.read_text()).get("format") == "edgetpu-model":
                return True, str(p)
        except (ValueError, AttributeError):
            pass
    return False, None


def evaluate_measurements(constants: str | None, paths) -> dict:
    """Score the ``edgetpu-model`` with ``constants`` (a file; None: the shipped fit) on one or
    more measurements CSVs: :func:`accuracy_of` plus ``rows``, saying whether they are the rows
    it was fitted on (in-sample) or new ones."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    rows = [r for p in paths for r in read_measurements(p)]
    fitted_on = load_constants(constants).fitted_on
    result = accuracy_of(EdgeTPUModelSource(constants=constants), rows)
    seen = [str(p) for p in paths if f"sha256 {_digest(p)}" in fitted_on]
    what = (f"in-sample: {', '.join(seen)} {'is' if len(seen) == 1 else 'are'} what it was fitted on" if seen
            else "all rows (measurements it was not fitted on)")
    return {**result, "rows": what}
