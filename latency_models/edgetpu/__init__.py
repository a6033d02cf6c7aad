"""The Coral Edge TPU: measured on a device, compiled, and predicted.

- :mod:`latency_models.edgetpu.source`: ``edgetpu``, latency measured on a real Edge TPU;
- :mod:`latency_models.edgetpu.devices`: finding and sharing the host's Edge TPUs;
- :mod:`latency_models.edgetpu.compiler`: ``edgetpu_compiler``; :mod:`latency_models.edgetpu.report`
  parses its output into :mod:`latency_models.edgetpu.compiled`'s data;
- :mod:`latency_models.edgetpu.replay`: replayed measurements for tests and calibration;
- :mod:`latency_models.edgetpu.model`, :mod:`latency_models.edgetpu.batch`,
  :mod:`latency_models.edgetpu.model_source`: ``edgetpu-model``, the on-chip-memory-aware
  predictor, exact and batched;
- :mod:`latency_models.edgetpu.fit`, :mod:`latency_models.edgetpu.calibration`: its constants
  fitted to measurements, and calibration against published figures;

May import: the rest of :mod:`latency_models` (never :mod:`nas`).
"""

import importlib

#: name -> its module: loaded on first use, so ``import latency_models`` (every Ray worker, the
#: CLI) does not also load the calibration and fitting code.
_EXPORTS = {"EdgeTPUModelSource": "model_source", "MEASUREMENTS": "calibration", "MODEL_VERSION": "model",
            "calibration_rows": "calibration", "predict_batch": "batch"}

__all__ = sorted([*_EXPORTS, "fit", "model"])


def __getattr__(name: str):
    if name in ("fit", "model"):
        return importlib.import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
