"""The ``edgetpu-model`` latency source: the fitted model of :mod:`latency_models.edgetpu.model`
on one target at a time (with a per-layer breakdown) or on many archs at once
(:mod:`latency_models.edgetpu.batch`).

>>> from latency_models import get_source
>>> src = get_source("edgetpu-model")
>>> [round(r.latency_ms, 6) == round(src("efficientnet_edgetpu_s").latency_ms, 6)
...  for r in src.measure_archs([__import__("search_spaces").reference("efficientnet_edgetpu_s")])]
[True]
"""

from __future__ import annotations

import logging
from pathlib import Path

from latency_models.base import EDGETPU_METRICS, LatencyResult, LatencySource
from latency_models.edgetpu.batch import predict_batch
from latency_models.edgetpu.model import CONSTANTS_FILE, LINK_RATIO, MODEL_VERSION, Prediction, load_constants, op_arrays, predict_arrays
from latency_models.registry import register_loader

log = logging.getLogger(__name__)


class EdgeTPUModelSource(LatencySource):
    """Predicted Edge TPU latency (ms), on/off-chip bytes and a per-layer breakdown.

    Options: ``link`` (``usb3``, ``usb2``, ``pcie``) and ``constants`` (a JSON file from
    ``nas latency fit``; default: the shipped fit to public measurements).
    """

    name = "edgetpu-model"
    metrics = EDGETPU_METRICS
    version = MODEL_VERSION

    def __init__(self, link: str = "usb3", constants: str | None = None):
        if link not in LINK_RATIO:
            raise ValueError(f"edgetpu-model link: unknown {link!r}; allowed: {', '.join(LINK_RATIO)}")
        self.link = link
        self.model = load_constants(constants)

    def describe(self) -> str:
        return f"{self.model.version} link={self.link} fitted_on={self.model.fitted_on}"

    def predict_analysis(self, analysis, *, with_layers: bool = True) -> Prediction:
        return predict_arrays(op_arrays(analysis), self.model.constants, self.link, with_layers=with_layers,
                              names=[o.name for o in analysis.ops], op_types=[o.op_type for o in analysis.ops])

    def measure(self, target) -> LatencyResult:
        analysis = target.analysis()
        if getattr(target, "kind", None) == "tflite" and analysis.ops and \
                not any(o.dtype in ("int8", "uint8") for o in analysis.ops):
            # edgetpu_compiler refuses such a file ("Model not quantized"); predicting "all on
            # the CPU" would be a number for a model that cannot be deployed at all.
            raise ValueError(f"{target.label}: not an int8-quantized model (its ops compute in "
                             f"{'/'.join(sorted({o.dtype for o in analysis.ops}))}); the Edge TPU runs only int8 models. Give the .keras "
                             "model or the arch string (converted to int8 for you), or convert with full-integer "
                             "quantization")
        p = self.predict_analysis(analysis)
        # Layers with neither a rule nor a converter lowering were costed as CPU ops from there
        # on: the number rests on that guess, so say which layers it concerns.
        assumed = [f"{name} ({cls}): {reason}" for name, cls, reason in getattr(analysis, "assumed_cpu", ())]
        if assumed:
            log.warning("%s: %d layer(s) with no TFLite lowering are assumed to run on the CPU (the Edge TPU "
                        "partition ends at the first): %s", analysis.model_name or target.label, len(assumed),
                        "; ".join(assumed))
        return self.result(latency_ms=p.latency_ms, on_chip_bytes=p.on_chip_bytes, off_chip_bytes=p.off_chip_bytes,
                           ops_on_tpu=p.ops_on_tpu, ops_on_cpu=p.ops_on_cpu, layers=p.layers,
                           details={"compute_ms": p.compute_ms, "stream_ms": p.stream_ms, "cpu_ms": p.cpu_ms,
                                    "io_ms": p.io_ms, "link": self.link, "assumed_cpu_layers": assumed})


    def measure_archs(self, archs, *, num_classes: int | None = None, channels: int = 3) -> list[LatencyResult]:
        """Latency and on/off-chip bytes of many archs in one batched pass (no per-layer
        breakdown or op counts; equal to :meth:`measure` to rounding)."""
        if channels != 3:  # the batched tables are built for RGB inputs
            return super().measure_archs(archs, num_classes=num_classes, channels=channels)
        p = predict_batch(list(archs), num_classes, link=self.link, constants=self.model.constants)
        return [self.result(latency_ms=float(lat), on_chip_bytes=int(on), off_chip_bytes=int(off),
                            details={"link": self.link, "batched": True})
                for lat, on, off in zip(p["latency_ms"], p["on_chip_bytes"], p["off_chip_bytes"])]


def _load_predictor(path: Path) -> EdgeTPUModelSource:
    """The source of a constants file, or of a directory holding one (``get_source(path)``)."""
    return EdgeTPUModelSource(constants=str(path / CONSTANTS_FILE if path.is_dir() else path))


register_loader(CONSTANTS_FILE, _load_predictor, marker='"edgetpu-model"')
