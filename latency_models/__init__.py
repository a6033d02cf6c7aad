"""Latency sources: measured (host TFLite, real Edge TPU) and predicted.

    from latency_models import get_source
    result = get_source("tflite-cpu", threads=1)(arch)      # or a Keras model, or a path
    result.latency_ms, result.p90_ms, result.source_version

This package never imports ``nas`` or Ray; optional runtimes are imported only when the
source that needs them is used.
"""

from .base import LatencyResult, LatencySource, LayerLatency, get_source, register_source, source_names
from .errors import LatencyError, MissingHardware
from .target import Target

__all__ = ["LatencyError", "LatencyResult", "LatencySource", "LayerLatency", "MissingHardware", "Target",
           "get_source", "register_source", "source_names"]
