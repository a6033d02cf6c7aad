"""Latency sources: measured (host TFLite, real Edge TPU) and predicted.

    from latency_models import get_source
    result = get_source("tflite-cpu", threads=1)(arch)      # or a Keras model, or a path
    result.latency_ms, result.p90_ms, result.source_version

This package never imports ``nas`` or Ray; optional runtimes are imported only when the
source that needs them is used.
"""

from latency_models.base import LatencyResult, LatencySource, LayerLatency
from latency_models.errors import LatencyError, MissingHardware
from latency_models.registry import get_source, register_loader, register_source, source_names
from latency_models.target import Target
from latency_models.convert import to_int8_tflite

# The predictors register the loaders of their fitted files (get_source(path)); learned first, so
# that a directory holding both kinds of file opens as a learned predictor.
from latency_models import learned  # noqa: E402, F401, I001 - imported for their registrations
from latency_models.edgetpu import model_source  # noqa: E402, F401, I001
from latency_models.learned import LearnedSource  # noqa: E402, I001

__all__ = ["LatencyError", "LatencyResult", "LatencySource", "LayerLatency", "LearnedSource", "MissingHardware",
           "Target", "get_source", "register_loader", "register_source", "source_names", "to_int8_tflite"]
