"""A measurement service: one measured latency source, on one device, serving many trials.

Why: a trial that measures on the Edge TPU itself must hold the device from its first
training step to its last invoke, so one USB stick lets a whole cluster run one trial at a
time. With a service the device does only what needs it. A trial trains wherever there is
compute, converts its deployment model to int8 TFLite where it runs (and compiles it there,
if asked), and sends the bytes to the service of a device, which compiles and times them and
answers. Training concurrency is then independent of the number of devices.

The pieces (no Ray here: :mod:`nas.run.ray_runner` puts each :class:`MeasurementService` in a
long-lived actor on the node that offers the device; an in-process search uses it directly):

- :class:`Request`: what a trial sends: the model's key (:attr:`Target.key`: arch string,
  input shape, classes), its int8 ``.tflite`` bytes, or, compiled where the trial ran, the
  ``_edgetpu.tflite`` bytes and the compiler's report.
- :class:`MeasurementService`: serves requests one at a time and caches each result by the
  model's fingerprint (sha256 of its bytes) for its device, in memory and appended to a
  JSON-lines file, so neither a re-proposed arch nor a request retried after the service
  was restarted is measured twice. A device that fails mid-measurement (unplugged, reset)
  fails that request with the reason and is looked for again on the next one.
- :class:`ServiceClient`: the trial's side, a :class:`~latency_models.LatencySource`:
  asks the service of the model's key first (a cached model is not even converted), then
  converts and sends it; :meth:`ServiceClient.submit` returns at once, so a trial can
  train while its model waits for the device.

In one process, with no Ray::

    from latency_models.service import LocalTransport, MeasurementService, ServiceClient
    service = MeasurementService("tflite-cpu", {"n_runs": 20}, cache_file="latency-cache.jsonl")
    client = ServiceClient("tflite-cpu", LocalTransport([service]))
    result = client(arch, input_shape=(96, 96, 3))     # converted here, timed by the service
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from latency_models.base import LatencyResult, LatencySource
from latency_models.errors import ConversionError, DeviceError, LatencyError, MissingHardware
from latency_models.registry import get_source
from latency_models.target import Target

log = logging.getLogger(__name__)

__all__ = ["LocalTransport", "MeasurementService", "Pending", "Request", "ServiceClient", "Transport",
           "claim_device", "fingerprint", "route"]


def fingerprint(model: bytes) -> str:
    """The cache key of a model file: the first 24 hex digits of its sha256."""
    return hashlib.sha256(model).hexdigest()[:24]


def route(key: str, services: int) -> int:
    """The service that measures the model with ``key``: the same model always goes to the
    same device, whose cache then knows it."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % max(1, services)


@dataclass(frozen=True)
class Request:
    """One model to measure. ``tflite``: the int8 model; or ``compiled`` (an Edge TPU model
    compiled where the trial ran) with the compiler's ``report``."""

    key: str
    label: str
    tflite: bytes | None = None
    compiled: bytes | None = None
    report: Any = None
    sent: float = 0.0  #: when the trial sent it (Unix time): the service reports the wait

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.compiled if self.compiled is not None else self.tflite or b"")


# ------------------------------------------------------------------------------ the device's side

def claim_device(device: str, lock_dir: str | Path | None = None) -> tuple[str, Any]:
    """One Edge TPU of this host for one service: ``device`` as it is when it names one
    (``usb:0``, ``:1``), else (``""``, ``usb``, ``pci``) the first listed device of that type
    that no other service of this host holds, claimed with a lock file held as long as the
    returned handle is open. (device string, handle or None)."""
    import fcntl

    from latency_models.edgetpu.devices import list_devices

    if device not in ("", "usb", "pci"):
        return device, None
    devices, reason = list_devices()
    pool = [d for d in devices if device in ("", d.get("type")) and d.get("device")]
    root = Path(lock_dir or Path(tempfile.gettempdir()) / "edgetpu-nas-devices")
    root.mkdir(parents=True, exist_ok=True)
    for d in pool:
        handle = open(root / f"{d['device'].replace(':', '-')}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return d["device"], handle
    have = ", ".join(d["device"] for d in pool) or (reason or "none listed")
    raise MissingHardware(f"no free Edge TPU of type {device or 'any'!r} on this host for another measurement "
                          f"service ({have}; each device serves one): give latency.service.devices at most the "
                          "number of devices")


class MeasurementService:
    """One measured latency source serving requests in order, with a result cache (see the
    module doc). ``source``/``options`` name it as ``latency.source``/``latency.options``;
    ``device`` overrides the device option (a service per device); ``cache_file`` is the
    JSON-lines file that outlives the service (None: memory only).

    A result is a dict: ``{"result": LatencyResult.to_dict(), "cached": bool, "device": ...,
    "service": name, "wait_s": s, "measure_s": s}``, or ``{"error": text, "kind": "device" |
    "latency" | "missing"}`` (errors travel as values: a Ray actor's exception would carry
    its traceback, and a trial needs only the reason).
    """

    def __init__(self, source: str, options: dict[str, Any] | None = None, *, device: str | None = None,
                 cache_file: str | Path | None = None, name: str = "service-0"):
        opts = dict(options or {})
        if device is not None:
            opts["device"] = device
        self.source: LatencySource = get_source(source, **opts)
        if not self.source.measured:
            raise ValueError(f"latency.service: source {source!r} predicts; only a measured source (edgetpu, "
                             "tflite-cpu) is served")
        self.name = name
        # the device string ("" is libedgetpu's "any device"); a host's CPU for tflite-cpu
        self.device = (getattr(self.source, "device", "") or "any") if hasattr(self.source, "device") else "host-cpu"
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self._results: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, str] = {}
        self._lock = threading.Lock()  # lookups may run beside a measurement (a Ray concurrency group)
        self.counts = {"requests": 0, "measured": 0, "cached": 0, "failed": 0, "device_errors": 0}
        self._load()

    # -- the cache ----------------------------------------------------------------------------

    def _load(self) -> None:
        if self.cache_file is None or not self.cache_file.is_file():
            return
        for line in self.cache_file.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the last line of a service killed while writing it
            if entry.get("device") != self.device:
                continue
            if "result" in entry:
                self._results[entry["fingerprint"]] = entry["result"]
            if entry.get("key"):
                self._keys[entry["key"]] = entry["fingerprint"]
        log.info("%s: %d cached results for device %s", self.name, len(self._results), self.device)

    def _remember(self, key: str, fp: str, result: dict[str, Any] | None) -> None:
        with self._lock:
            if result is not None:
                self._results[fp] = result
            known = self._keys.get(key) == fp
            self._keys[key] = fp
            if self.cache_file is None or (result is None and known):
                return
            entry: dict[str, Any] = {"fingerprint": fp, "key": key, "device": self.device}
            if result is not None:
                entry["result"] = result
            try:
                self.cache_file.parent.mkdir(parents=True, exist_ok=True)
                with open(self.cache_file, "a") as f:
                    f.write(json.dumps(entry) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                # (the device's host may not see the run folder: the cache then lives as long as the service)
                log.warning("%s: cannot write its cache file %s (%s); results are cached in memory only",
                            self.name, self.cache_file, e)
                self.cache_file = None

    # -- requests -----------------------------------------------------------------------------

    def check(self) -> None:
        """The source's hardware check (``MissingHardware`` when the device is not there)."""
        check = getattr(self.source, "check", None)
        if callable(check):
            check()

    def describe(self) -> dict[str, Any]:
        return {"service": self.name, "device": self.device, "source": self.source.describe(),
                "pid": os.getpid(), "cached": len(self._results), **self.counts}

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The cached result of the model with ``key`` (:attr:`Target.key`), or None."""
        with self._lock:
            fp = self._keys.get(key)
            result = self._results.get(fp) if fp is not None else None
        if result is None:
            return None
        self.counts["cached"] += 1
        return {"result": result, "cached": True, "device": self.device, "service": self.name, "wait_s": 0.0,
                "measure_s": 0.0}

    def measure(self, req: Request) -> dict[str, Any]:
        """Compile (unless compiled already) and time one model; from the cache if it was."""
        started = time.time()
        wait = round(max(0.0, started - req.sent), 3) if req.sent else None
        self.counts["requests"] += 1
        fp = req.fingerprint
        with self._lock:
            hit = self._results.get(fp)
        if hit is not None:
            self._remember(req.key, fp, None)
            self.counts["cached"] += 1
            return {"result": hit, "cached": True, "device": self.device, "service": self.name, "wait_s": wait,
                    "measure_s": 0.0}
        try:
            if req.compiled is not None:
                r = self.source.measure_compiled(req.compiled, req.report, req.label)
            else:
                r = self.source.measure(Target(req.tflite, name=req.label))
        except (DeviceError, MissingHardware) as e:
            # The device dropped out (or is gone): this request fails with the reason; the
            # device is looked for again on the next one, so a re-plugged stick serves again.
            self.counts["device_errors"] += 1
            self.counts["failed"] += 1
            reopen = getattr(self.source, "reopen", None)
            if callable(reopen):
                reopen()
            log.warning("%s: device %s failed while measuring %s: %s", self.name, self.device, req.label, e)
            return {"error": f"measurement service {self.name}: device {self.device} failed while measuring "
                             f"{req.label}: {e} (the device is re-opened for the next request)", "kind": "device"}
        except LatencyError as e:
            self.counts["failed"] += 1
            return {"error": str(e), "kind": "latency"}
        self.counts["measured"] += 1
        result = r.to_dict()
        self._remember(req.key, fp, result)
        return {"result": result, "cached": False, "device": self.device, "service": self.name, "wait_s": wait,
                "measure_s": round(time.time() - started, 3)}


# ------------------------------------------------------------------------------ the trial's side

class Transport(Protocol):
    """How a client reaches its services: ``call`` starts ``method(*args)`` on service
    ``index`` and returns a handle at once; ``wait`` returns its result (``LatencyError``
    when the service cannot answer within ``timeout_s``)."""

    services: int

    def call(self, index: int, method: str, *args: Any) -> Any: ...

    def wait(self, handle: Any, timeout_s: float) -> Any: ...


class LocalTransport:
    """Services in this process: a call runs when its result is asked for."""

    def __init__(self, services: Sequence[MeasurementService]):
        self._services = list(services)
        self.services = len(self._services)

    def call(self, index: int, method: str, *args: Any) -> Callable[[], Any]:
        service = self._services[index]
        return lambda: getattr(service, method)(*args)

    def wait(self, handle: Callable[[], Any], timeout_s: float) -> Any:
        return handle()


class Pending:
    """A measurement asked for: :meth:`result` waits for it."""

    def __init__(self, transport: Transport | None, handle: Any, timeout_s: float, answer: dict | None = None):
        self._transport, self._handle, self._timeout, self._answer = transport, handle, timeout_s, answer

    def result(self) -> LatencyResult:
        """The latency (``LatencyError`` for a failed measurement, ``DeviceError`` when the
        device dropped out)."""
        if self._answer is None:
            self._answer = self._transport.wait(self._handle, self._timeout)
        return answer_result(self._answer)


def answer_result(answer: dict[str, Any]) -> LatencyResult:
    """A service's answer as a :class:`LatencyResult` (its details say which service and
    device, whether it was cached and how long it waited), or the error it carries."""
    if "error" in answer:
        raise (DeviceError if answer.get("kind") == "device" else LatencyError)(answer["error"])
    r = LatencyResult.from_dict(answer["result"])
    details = {**r.details, **{k: answer[k] for k in ("service", "device", "cached", "wait_s", "measure_s")
                              if k in answer}}
    return LatencyResult.from_dict({**r.to_dict(), "details": details})


class ServiceClient(LatencySource):
    """The trial's side of a measurement service (see the module doc): a latency source
    whose models are converted (and, with ``compile_here``, compiled) in this process and
    timed by the services behind ``transport``.

    ``options`` are the source's (``latency.options``): the compiler's name and timeout
    for ``compile_here``.
    """

    measured = True

    def __init__(self, source: str, transport: Transport, *, compile_here: bool = False,
                 options: dict[str, Any] | None = None, timeout_s: float = 3600.0):
        # The source as configured: its name, the metrics it gives, and the compile step when
        # it runs here (constructing one only validates options: no hardware is touched).
        local = get_source(source, **(options or {}))
        self.name, self.metrics = local.name or source, local.metrics
        self.transport, self.timeout_s = transport, timeout_s
        self._compiler = local if compile_here else None

    def describe(self) -> str:
        return f"{self.name} via {self.transport.services} measurement service(s)"

    def submit(self, target: Target) -> Pending:
        """Ask for ``target``'s latency; returns at once (the conversion, done here, and a
        cache lookup aside). ``ConversionError`` (a ``LatencyError``) when it cannot be converted."""
        index = route(target.key, self.transport.services)
        hit = self.transport.wait(self.transport.call(index, "lookup", target.key), self.timeout_s)
        if hit is not None:
            return Pending(None, None, self.timeout_s, answer=hit)
        if self._compiler is not None:
            compiled, report = self._compiler.compile(target)
            req = Request(target.key, target.label, compiled=compiled, report=report, sent=time.time())
        else:
            try:
                tflite = target.tflite()
            except ConversionError as e:
                raise LatencyError(f"{target.label}: {e}") from e
            req = Request(target.key, target.label, tflite=tflite, sent=time.time())
        return Pending(self.transport, self.transport.call(index, "measure", req), self.timeout_s)

    def measure(self, target: Target) -> LatencyResult:
        return self.submit(target).result()

    def measure_archs(self, archs: Sequence[Any], *, num_classes: int | None = None,
                      channels: int = 3) -> list[LatencyResult]:
        """All of ``archs`` sent before the first answer is awaited (a one-shot search's batch
        of samples): the device measures one while the next is converted here."""
        pending = [self.submit(Target(a, input_shape=(a.resolution, a.resolution, channels), num_classes=num_classes))
                   for a in archs]
        return [p.result() for p in pending]
