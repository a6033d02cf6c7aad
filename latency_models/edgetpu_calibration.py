"""Calibration rows for ``edgetpu-model``: public Edge TPU measurements of buildable networks.

``data/edgetpu_measurements.csv`` (a copy of shared/data/edgetpu/measurements.csv, sources in
its last column) lists latencies measured on Coral USB Accelerators. Rows whose network can
be built here in Keras are turned into :class:`~latency_models.edgetpu_model.CalibrationRow` s
(the network's static analysis plus the measured figures); the Inception rows cannot
(GoogLeNet and Inception v4 are not in ``keras.applications``) and are skipped, by name.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

from .edgetpu_model import DATA, MIB, CalibrationRow

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
    m = re.fullmatch(r"conv7x7_stack_(\d+)", model)
    if m:
        return _conv_stack(int(m.group(1)), px)
    return None


def calibration_rows(path: str | Path = MEASUREMENTS) -> tuple[list[CalibrationRow], list[str]]:
    """Rows to fit on, and the names of measurement rows skipped (with why)."""
    from .analysis import analyze_keras

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
                                       off_chip_bytes=mib(r["off_chip_mib"])))
    return rows, sorted(set(skipped))
