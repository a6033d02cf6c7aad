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

from latency_models.edgetpu import fit, model
from latency_models.edgetpu.batch import predict_batch
from latency_models.edgetpu.calibration import MEASUREMENTS, calibration_rows
from latency_models.edgetpu.model import MODEL_VERSION
from latency_models.edgetpu.model_source import EdgeTPUModelSource

__all__ = ["EdgeTPUModelSource", "MEASUREMENTS", "MODEL_VERSION", "calibration_rows", "fit", "model", "predict_batch"]
