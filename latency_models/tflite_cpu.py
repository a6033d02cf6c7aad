"""``tflite-cpu``: int8 model timed on this host's CPU with the LiteRT interpreter.

The target is converted to a full-integer ``.tflite`` (cached by arch string), loaded once
into the interpreter (LiteRT, or ``tflite_runtime`` where that is what is installed), run
``warmup`` times untimed, then ``n_runs`` times timed; the result is the median and p90.
With ``stable=True`` it repeats rounds until the round medians agree within ``tolerance``
(see :func:`latency_models.timing.time_stable`), for noisy shared machines.

>>> from latency_models import get_source
>>> src = get_source("tflite-cpu", threads=1, n_runs=20)               # doctest: +SKIP
>>> src("efficientnet_edgetpu_s", input_shape=(96, 96, 3)).latency_ms  # doctest: +SKIP
6.8
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from importlib import metadata

from latency_models.base import LATENCY_ONLY, LatencyResult, LatencySource
from latency_models.isolated import time_isolated
from latency_models.runtime import interpreter_module, make_interpreter
from latency_models.timing import summarize, time_invokes, time_stable

log = logging.getLogger(__name__)


@functools.cache
def cpu_name() -> str:
    """The host CPU's model name (a learned host predictor is only valid for its CPU type)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _int_option(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"tflite-cpu {name}: expected an integer in [{lo}, {hi}], got {value!r}")
    return value


class TFLiteCPUSource(LatencySource):
    """Median latency of the int8 model on this host's CPU (LiteRT, XNNPACK kernels)."""

    name = "tflite-cpu"
    metrics = LATENCY_ONLY
    version = "1"
    measured = True

    def __init__(self, threads: int = 1, n_runs: int = 50, warmup: int = 2, stable: bool = False,
                 tolerance: float = 0.02, max_rounds: int = 10, isolate: bool = True, repeats: int = 1):
        self.threads = _int_option("threads", threads, 1, os.cpu_count() or 1)
        self.n_runs = _int_option("n_runs", n_runs, 1, 100_000)
        self.warmup = _int_option("warmup", warmup, 0, 1000)
        self.stable = bool(stable)
        if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
            raise ValueError(f"tflite-cpu tolerance: expected a fraction in (0, 1), got {tolerance!r}")
        self.tolerance = float(tolerance)
        self.max_rounds = _int_option("max_rounds", max_rounds, 1, 1000)
        # Time in a fresh process by default (see latency_models.isolated for why).
        self.isolate = bool(isolate)
        # Independent timing processes; the fastest median is kept. Interference from other
        # work on a shared machine only ever slows a run down, and can outlast a whole stable
        # round (seen here: the same model 0.84 ms in one process, 0.66-0.68 ms in eight others).
        self.repeats = _int_option("repeats", repeats, 1, 100)
        if self.repeats > 1 and not self.isolate:
            raise ValueError("tflite-cpu repeats: needs isolate=True (each repeat is a fresh process)")

    def describe(self) -> str:
        _, module = interpreter_module()
        try:
            version = metadata.version("ai-edge-litert" if module == "ai_edge_litert" else "tflite-runtime")
        except metadata.PackageNotFoundError:
            version = "?"
        return f"{self.name}/{self.version} {module} {version}; threads={self.threads}; cpu={cpu_name()}" + (
            f"; best of {self.repeats} processes" if self.repeats > 1 else "")

    def measure(self, target) -> LatencyResult:
        if self.isolate:
            model = target.tflite()
            runs = [time_isolated(model, threads=self.threads, n_runs=self.n_runs, warmup=self.warmup,
                                  stable=self.stable, tolerance=self.tolerance, max_rounds=self.max_rounds)
                    for _ in range(self.repeats)]
            stats, info = min(runs, key=lambda r: r[0].median_ms)
            result = self._result(target, stats, **info)
            if self.repeats > 1:
                result.details["repeat_medians_ms"] = [round(r[0].median_ms, 5) for r in runs]
            return result
        interpreter = make_interpreter(target.tflite(), num_threads=self.threads)
        if self.stable:
            stats = time_stable(interpreter, self.n_runs, self.warmup, tolerance=self.tolerance,
                                max_rounds=self.max_rounds)
        else:
            stats = summarize(time_invokes(interpreter, self.n_runs, self.warmup))
        return self._result(target, stats, xnnpack=True)

    def _result(self, target, stats, xnnpack: bool) -> LatencyResult:
        log.debug("%s: %.3f ms median over %d runs (%d rounds)", target.label[:60], stats.median_ms,
                  stats.n_runs, stats.rounds)
        return self.result(latency_ms=stats.median_ms, p90_ms=stats.p90_ms, n_runs=stats.n_runs,
                           spread=stats.spread, details={"rounds": stats.rounds, "p10_ms": stats.p10_ms,
                                                         "threads": self.threads, "xnnpack": xnnpack})
