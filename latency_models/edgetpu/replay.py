"""``backend: replay`` of the ``edgetpu`` source: a stand-in device that replays recorded timings.

For rehearsing what surrounds an Edge TPU without one: a cluster's measurement service
(:mod:`latency_models.service`), its queue, its cache, a device that drops out and comes back.
Everything before the device is real (the int8 conversion, ``edgetpu_compiler`` and the
parse of its report: a fake compiler on PATH printing a recorded log will do); the device
is not. Each model is given one latency recorded on a real Coral USB Accelerator (by default
the shipped ``edgetpu_measurements.csv``, chosen by the compiled model's fingerprint, so the
same model always gets the same figure), each measurement takes ``seconds`` of wall time as
a device would, and the records say ``backend=replay``. A search scored this way learns
nothing about latency: it is for the plumbing.

Options (``latency.options.replay``):

- ``timings_ms``: the recorded latencies to replay (default: the shipped measurements);
- ``seconds``: wall time of one measurement (default 0);
- ``unplug_file``: while this file exists the device is "unplugged": a measurement fails as
  the runtime fails when a USB stick drops out (and a measurement in progress fails when the
  file appears during its ``seconds``);
- ``trace_dir``: each measurement writes ``<pid>-<n>.json`` there when it starts and
  completes it when it ends (tests find the measuring process and what it did).

>>> from latency_models.edgetpu.replay import ReplayDevice
>>> dev = ReplayDevice(timings_ms=[2.5], seconds=0)
>>> dev.time(Path(__file__), n_runs=10, warmup=1).median_ms
2.5
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Sequence

from latency_models.errors import MissingHardware
from latency_models.timing import TimingStats

__all__ = ["ReplayDevice", "recorded_timings"]

_MEASUREMENTS = Path(__file__).parents[1] / "data" / "edgetpu_measurements.csv"


def recorded_timings() -> list[float]:
    """The latencies (ms) of the shipped Edge TPU measurements (real devices, public sources)."""
    with open(_MEASUREMENTS, newline="") as f:
        return [float(r["latency_ms"]) for r in csv.DictReader(f) if r.get("latency_ms")]


class ReplayDevice:
    """A stand-in Edge TPU (see the module doc): real timings, replayed; no device."""

    def __init__(self, timings_ms: Sequence[float] | None = None, seconds: float = 0.0,
                 unplug_file: str | None = None, trace_dir: str | None = None):
        timings = list(timings_ms) if timings_ms is not None else recorded_timings()
        if not timings or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in timings):
            raise ValueError(f"edgetpu option replay.timings_ms: got {timings_ms!r}; allowed: a non-empty list of "
                             "latencies > 0 (ms)")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError(f"edgetpu option replay.seconds: got {seconds!r}; allowed: a number >= 0")
        self.timings_ms = [float(t) for t in timings]
        self.seconds = float(seconds)
        self.unplug_file = Path(unplug_file) if unplug_file else None
        self.trace_dir = Path(trace_dir) if trace_dir else None
        self._count = 0

    def _unplugged(self) -> bool:
        return self.unplug_file is not None and self.unplug_file.exists()

    def check(self) -> None:
        """As the real device check: no device while unplugged."""
        if self._unplugged():
            raise MissingHardware(f"no Edge TPU device found (replay device unplugged: {self.unplug_file} exists)")

    def time(self, compiled: Path, n_runs: int, warmup: int = 1) -> TimingStats:
        """``seconds`` of wall time, then the recorded latency of this model as ``n_runs``
        equal timings. A ``RuntimeError`` as the runtime's when the device drops out."""
        digest = hashlib.sha256(Path(compiled).read_bytes()).hexdigest()
        latency = self.timings_ms[int(digest[:8], 16) % len(self.timings_ms)]
        self._count += 1
        trace = None
        if self.trace_dir is not None:
            self.trace_dir.mkdir(parents=True, exist_ok=True)
            trace = self.trace_dir / f"{os.getpid()}-{self._count}.json"
            trace.write_text(json.dumps({"pid": os.getpid(), "model": digest[:16], "started": time.time()}))
        end = time.monotonic() + self.seconds
        while True:
            if self._unplugged():
                raise RuntimeError("Edge TPU: USB transfer failed (replay device unplugged)")
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.05))
        if trace is not None:
            trace.write_text(json.dumps({"pid": os.getpid(), "model": digest[:16], "latency_ms": latency,
                                         "ended": time.time()}))
        return TimingStats(latency, latency, latency, n_runs, 1)
