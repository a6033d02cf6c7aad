"""The exceptions of latency sources, in one place: a caller catches :class:`LatencyError` for
"this target has no latency" (a failed trial) and :class:`MissingHardware` for "this host cannot
run the source at all" (fatal, exit status 2).

Each class is also importable from the module that raises it (``latency_models.base``,
``latency_models.convert``, ``latency_models.runtime``, ``latency_models.edgetpu.compiler``).
"""

from __future__ import annotations

__all__ = ["ConversionError", "DeviceError", "EdgeTPUCompilerNotFound", "LatencyError", "MissingHardware",
           "RuntimeNotFound"]


class LatencyError(RuntimeError):
    """A latency could not be obtained for this target (a failed trial, not bad user input)."""


class ConversionError(LatencyError):
    """The TFLite converter rejected a model (recorded as a failed trial, not a crash)."""


class DeviceError(LatencyError):
    """The device failed during a measurement (a USB stick unplugged or reset mid-run): this
    measurement fails; the device may come back (a measurement service re-opens it)."""


class MissingHardware(RuntimeError):
    """A source needs a runtime, compiler or device that this machine lacks (fatal, exit 2)."""


class RuntimeNotFound(RuntimeError):
    """No TFLite interpreter package is installed."""


class EdgeTPUCompilerNotFound(RuntimeError):
    """The ``edgetpu_compiler`` executable is not installed (or not on PATH)."""
