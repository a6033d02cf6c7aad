"""The measurement service on Ray: one long-lived actor per Edge TPU (or other measured
source) that times the models trials send it, found by name in the job's namespace.

A trial trains wherever the cluster has compute and asks :class:`MeasurementActor` (through
:class:`RayTransport` and :mod:`latency_models.service`'s client) for its model's latency;
:func:`start_services` starts the actors on the nodes that have the device and checks them
before any trial. Split from :mod:`nas.run.ray_runner`, the only other module of ``nas`` that
imports Ray.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import ray

from latency_models import MissingHardware

from nas.config.experiment import ExperimentConfig
from nas.ledger.folder import RunFolder

log = logging.getLogger(__name__)

__all__ = ["SERVICE_NAMESPACE", "MeasurementActor", "RayTransport", "log_services", "run_key", "service_client",
           "start_services", "stop_services"]


def run_key(run_dir: str | Path) -> str:
    """A run folder as the key of this process's registries: its resolved path."""
    return str(Path(run_dir).resolve())


#: The Ray namespace of the measurement actors, so a trial (another actor of the job) finds them by name.
SERVICE_NAMESPACE = "edgetpu-nas"


@ray.remote(max_restarts=-1, max_task_retries=-1, concurrency_groups={"lookup": 1, "measure": 1})
class MeasurementActor:
    """One device's :class:`~latency_models.service.MeasurementService` as a long-lived actor:
    requests in order (one at a time in the ``measure`` group; cache lookups beside them).
    Restarted by Ray when its process dies, a request in flight is retried on the restarted
    actor (``max_task_retries``); its cache file then answers whatever it had finished."""

    def __init__(self, source: str, options: dict, cache_file: str, name: str, claim: bool):
        from latency_models.service import MeasurementService, claim_device

        device, self._claim = None, None
        if claim:  # one of this node's devices, the others held by the other services here
            device, self._claim = claim_device(str(options.get("device", "")))
        self.service = MeasurementService(source, options, device=device, cache_file=cache_file, name=name)

    @ray.method(concurrency_group="measure")
    def check(self) -> None:
        self.service.check()

    @ray.method(concurrency_group="measure")
    def measure(self, request):
        return self.service.measure(request)

    @ray.method(concurrency_group="lookup")
    def lookup(self, key: str):
        return self.service.lookup(key)

    @ray.method(concurrency_group="lookup")
    def describe(self) -> dict:
        return self.service.describe()


class RayTransport:
    """The measurement actors as seen by a trial (:class:`latency_models.service.Transport`)."""

    def __init__(self, names: tuple[str, ...]):
        self.names = tuple(names)
        self.services = len(self.names)
        self._actors: dict[int, object] = {}

    def _actor(self, index: int):
        if index not in self._actors:
            self._actors[index] = ray.get_actor(self.names[index], namespace=SERVICE_NAMESPACE)
        return self._actors[index]

    def call(self, index: int, method: str, *args):
        return getattr(self._actor(index), method).remote(*args)

    def wait(self, ref, timeout_s: float):
        from latency_models import LatencyError

        try:
            return ray.get(ref, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            try:
                ray.cancel(ref)  # (a request still queued is dropped; one being measured finishes)
            except Exception:  # noqa: BLE001 - cancelling is a courtesy
                pass
            raise LatencyError(f"no answer from the measurement service within {timeout_s:.0f} s "
                               "(latency.service.timeout_s)") from None
        except ray.exceptions.RayActorError as e:
            raise LatencyError(f"the measurement service is gone: {str(e).splitlines()[0]}") from None


def service_client(cfg: ExperimentConfig, names: tuple[str, ...]):
    """The trial's latency source when measurement actors serve it (else None: it measures itself)."""
    if not names:
        return None
    from latency_models.service import ServiceClient

    s = cfg.latency.service
    return ServiceClient(cfg.latency.source, RayTransport(names), compile_here=s.compile == "trial",
                         options=cfg.latency.options, timeout_s=s.timeout_s)


def start_services(cfg: ExperimentConfig, run: RunFolder) -> tuple[tuple[str, ...], list]:
    """The measurement actors of this run, one per device, started and checked (their
    hardware check's ``MissingHardware`` stops the search before any trial); (names, handles)."""
    if not cfg.latency.uses_service:
        return (), []
    s = cfg.latency.service
    resource = cfg.latency.service_resource
    have = int(ray.cluster_resources().get(resource, 0)) if resource else 1
    if resource and have < 1:
        raise MissingHardware(f"latency.service.resource: no node of the Ray cluster offers {resource!r}; start "
                              f"the measuring node with ray start --address=HEAD:PORT --resources='{{\"{resource}\": "
                              f"1}}'" + (" (one unit per Edge TPU)" if resource == "edgetpu" else ""))
    n = s.devices or max(1, have)
    if resource and n > have:
        raise ValueError(f"latency.service.devices: {n} measurement services, but the cluster offers {have} "
                         f"{resource!r}; allowed: 1..{have}")
    device = str(cfg.latency.options.get("device", ""))
    claim = (n > 1 and cfg.latency.source == "edgetpu" and cfg.latency.options.get("backend", "litert") == "litert")
    if claim and device not in ("", "usb", "pci"):
        raise ValueError(f"latency.options.device: {device!r} names one Edge TPU, but latency.service.devices is "
                         f"{n}; allowed: '', 'usb' or 'pci' (each service claims one device of that type)")
    tag = hashlib.sha256(run_key(run.path).encode()).hexdigest()[:8]
    names, actors = [], []
    for i in range(n):
        name = f"nas-measure-{tag}-{i}"
        try:  # a service left by a killed driver of this run folder: replaced
            ray.kill(ray.get_actor(name, namespace=SERVICE_NAMESPACE), no_restart=True)
        except ValueError:
            pass
        opts = {"name": name, "namespace": SERVICE_NAMESPACE, "num_cpus": s.cpus}
        if resource:
            opts["resources"] = {resource: 1}
        cache = str((run.path / "latency" / f"service-{i}.jsonl").resolve())
        actors.append(MeasurementActor.options(**opts).remote(cfg.latency.source, dict(cfg.latency.options), cache,
                                                              f"service-{i}", claim))
        names.append(name)
    try:
        ray.get([a.check.remote() for a in actors])
    except ray.exceptions.RayTaskError as e:
        stop_services(actors)
        cause = getattr(e, "cause", None)
        if isinstance(cause, MissingHardware):
            raise MissingHardware(str(cause)) from None
        raise
    log.info("measurement services: %s", ", ".join(names))
    return tuple(names), actors


def stop_services(actors: list) -> None:
    for a in actors:
        ray.kill(a, no_restart=True)


def log_services(actors: list) -> None:
    for d in ray.get([a.describe.remote() for a in actors]):
        log.info("measurement %s (device %s): %d requests, %d measured, %d from its cache, %d failed", d["service"],
                 d["device"], d["requests"], d["measured"], d["cached"], d["failed"])
