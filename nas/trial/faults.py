"""Fault injection for testing the search's failure handling (the experiment's ``faults:``).

Real searches meet broken candidates, NaN losses, converters that give up, flaky latency
sources and workers killed by the OOM killer. ``faults:`` makes a chosen fraction of trials
fail in each of those ways, through the same code paths a real failure takes: an exception
raised in the trial, NaN training data (the loss watch must catch it), a
``ConversionError`` or ``LatencyError`` from the latency step, and SIGKILL of the worker
process (Ray's retry policy, ``ray.max_failures``, then applies). ::

    faults: {exception: 0.06, nan_loss: 0.06, conversion: 0.06, latency: 0.06, worker_killed: 0.06}
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal

from nas.config.experiment import FaultsConfig

log = logging.getLogger(__name__)

KINDS = ("exception", "nan_loss", "conversion", "latency", "worker_killed")


_passes: dict[str, int] = {}


def kill_point(name: str) -> None:
    """Test hook: SIGKILL this search's process group on the Nth pass of ``name`` when the
    environment has ``NAS_TEST_KILL_AT=name:N``.

    Points: ``write`` (a run-folder file written, not yet renamed into place) and ``tell``
    (a result recorded, the controller not yet updated with it): moments a kill at a random
    time rarely hits. ``benchmarks/kill_resume.py`` uses them; nothing else sets the variable.
    """
    spec = os.environ.get("NAS_TEST_KILL_AT")
    if not spec:
        return
    point, _, n = spec.partition(":")
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(n or 1):
        log.warning("NAS_TEST_KILL_AT=%s: killing the search", spec)
        os.killpg(os.getpgrp(), signal.SIGKILL)


def pick(faults: FaultsConfig, key: str) -> str | None:
    """The fault this trial meets (None for most): a deterministic draw from ``seed`` and ``key``."""
    if not faults.any():
        return None
    h = hashlib.sha256(f"{faults.seed}:{key}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    edge = 0.0
    for kind in KINDS:
        edge += getattr(faults, kind)
        if u < edge:
            return kind
    return None


def kill_worker(can_die: bool) -> None:
    """SIGKILL this process when it is a disposable worker; otherwise fail the trial instead."""
    if can_die:
        log.warning("injected fault: killing worker process %d", os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError("injected fault: worker_killed (simulated: this trial runs in the search's own "
                       "process, which must not die)")
