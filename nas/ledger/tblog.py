"""TensorBoard logs of a search: written live while it runs, and again by ``nas report``.

The search appends one step per finished trial (step = completion order) to
``RUN/tensorboard/`` as the trial is recorded, so ``tensorboard --logdir RUN/tensorboard``
follows a running search::

    trial/failed            1 for a failed, infeasible or unusable trial, else 0
    trial/<metric>          accuracy (the proxy's), latency_ms, params, macs, off_chip_bytes (the
                            deployment model's), proxy_params, proxy_macs, reward, train_s
    search/best_reward      the best reward so far

Event files are written and read with TensorBoard's record writer and protos, never
through TensorFlow (see :class:`EventLog`): the search driver does not import it.
A resumed search reads the steps already logged back from the event files and goes on after
them, so no trial is logged twice.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from nas.core.record import TrialRecord

log = logging.getLogger(__name__)

#: The per-trial metrics logged as ``trial/<name>``.
TRIAL_SCALARS = ("accuracy", "latency_ms", "reward", "params", "macs", "off_chip_bytes", "proxy_params",
                 "proxy_macs", "train_s")
_STEP_TAG = "trial/failed"  # written once per trial, usable or not: marks the steps logged


class EventLog:
    """One TensorBoard event file in ``folder`` (created on first use), written synchronously.

    TensorBoard's own ``EventFileWriter`` would import TensorFlow whenever it is installed
    (``tensorboard.compat.tf`` prefers it to its stub, for ``tf.io.gfile``): seconds of CPU
    and hundreds of MB in every search driver. The file format is a TFRecord of ``Event``
    protos, which TensorBoard's record writer and protos write without it.
    """

    _count = itertools.count()

    def __init__(self, folder: str | Path):
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.record_writer import RecordWriter

        Path(folder).mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(self._count)}"
        self.path = Path(folder) / name
        self._writer = RecordWriter(open(self.path, "wb"))
        self._writer.write(Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
        self._writer.flush()

    def scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._add(Summary(value=[Summary.Value(tag=tag, simple_value=float(value))]), step)

    def text(self, tag: str, text: str, step: int) -> None:
        from tensorboard.plugins.text.summary_v2 import text_pb

        self._add(text_pb(tag, text), step)

    def _add(self, summary, step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        self._writer.write(Event(wall_time=time.time(), step=int(step), summary=summary).SerializeToString())

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        if not self._writer.closed:
            self._writer.close()


def read_events(path: str | Path):
    """The ``Event`` protos of one event file, in order, up to a torn last record (a killed
    writer's); read without TensorFlow, as :class:`EventLog` writes them."""
    from tensorboard.compat.proto.event_pb2 import Event

    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if len(header) < 12:
                return
            (n,) = struct.unpack("<Q", header[:8])
            data = f.read(n)
            if len(data) < n or len(f.read(4)) < 4:
                return
            yield Event.FromString(data)


def log_trials(events: EventLog, results: Sequence[TrialRecord], start: int = 0) -> None:
    """Log ``results[start:]`` at steps ``start + 1, ...`` (the best so far counts all of them)."""
    best = max((r.reward for r in results[:start] if r.usable), default=-math.inf)
    for step, r in enumerate(results[start:], start=start + 1):
        events.scalar(_STEP_TAG, 0.0 if r.usable else 1.0, step)
        if not r.usable:
            continue
        best = max(best, r.reward)
        for k in TRIAL_SCALARS:
            v = getattr(r, k)
            if v is not None:  # records hold finite numbers or None
                events.scalar(f"trial/{k}", v, step)
        events.scalar("search/best_reward", best, step)


def logged_steps(folder: str | Path) -> int:
    """The last trial step already in the event files of ``folder`` (0 if none)."""
    last = 0
    for f in sorted(Path(folder).glob("events.out.tfevents.*")):
        try:
            for event in read_events(f):
                if any(v.tag == _STEP_TAG for v in event.summary.value):
                    last = max(last, event.step)
        except Exception as e:  # noqa: BLE001 - a corrupt record: what came before it counts
            log.debug("stopped reading %s: %s", f, e)
    return last


class LiveLog:
    """Appends the trials a search records to ``folder`` as they come (see the module doc).

    Logging never stops a search: after an error it warns once and logs nothing more.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._events: EventLog | None = None
        self._done: int | None = None
        self._broken = False

    def update(self, results: Sequence[TrialRecord]) -> None:
        """Log the results not logged yet (``results`` in completion order, as recorded)."""
        if self._broken:
            return
        try:
            if self._done is None:
                self._done = logged_steps(self.folder)
            if len(results) <= self._done:
                return
            if self._events is None:
                self._events = EventLog(self.folder)
            log_trials(self._events, results, start=self._done)
            self._events.flush()
            self._done = len(results)
        except Exception as e:  # noqa: BLE001 - see the class docstring
            self._broken = True
            log.warning("TensorBoard logging stopped (the search goes on): %s: %s", type(e).__name__, e)

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
