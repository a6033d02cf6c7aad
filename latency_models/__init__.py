"""Latency sources: measured (host TFLite, real Edge TPU) and predicted.

    from latency_models import get_source
    result = get_source("tflite-cpu", threads=1)(arch)      # or a Keras model, or a path
    result.latency_ms, result.p90_ms, result.source_version

This package never imports ``nas`` or Ray; optional runtimes are imported only when the
source that needs them is used.
"""

from .base import LatencyResult, LatencySource, LayerLatency
from .errors import LatencyError, MissingHardware
from .registry import get_source, register_loader, register_source, source_names
from .target import Target

# The predictors register the loaders of their fitted files (get_source(path)); learned first, so
# that a directory holding both kinds of file opens as a learned predictor.
from . import learned, edgetpu_model_source  # noqa: E402, F401, I001 - imported for their registrations

__all__ = ["LatencyError", "LatencyResult", "LatencySource", "LayerLatency", "MissingHardware", "Target",
           "get_source", "register_loader", "register_source", "source_names"]
