"""The Edge TPU as a shared measurement service (latency_models.service, nas.run.ray_runner).

No Edge TPU and no edgetpu_compiler here: the compile step is a fake ``edgetpu_compiler`` on
PATH that copies the model and prints a real compiler log (tests/data/compiler_logs), and the
device is the ``replay`` backend, which takes a set time per measurement and replays recorded
timings. Everything else is the real code: the int8 conversion, the compiler's parser, the
service's queue and cache, and (at the end) real Ray actors serving a real search, one of
them killed mid-request.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import COMPILER_LOGS
from latency_models import LatencyError, MissingHardware
from latency_models.errors import DeviceError
from latency_models.service import (LocalTransport, MeasurementService, Request, ServiceClient, claim_device,
                                    fingerprint, route)
from latency_models.target import Target

V15 = COMPILER_LOGS / "v15_all_mapped_small_spill.txt"
ARCH = "v1-res32-cls10:stem-k3-s2-o8-relu:ds-r1-k3-s1-o8-relu:head-o64-relu"
ARCH2 = "v1-res32-cls10:stem-k3-s2-o8-relu:ds-r1-k3-s1-o16-relu:head-o64-relu"


@pytest.fixture
def compiler(tmp_path, monkeypatch):
    """A fake edgetpu_compiler on PATH (copies the model, prints a real v15 log)."""
    from test_edgetpu_source import make_fake_compiler

    if not V15.is_file():
        pytest.skip("recorded compiler logs not found")
    args = make_fake_compiler(tmp_path / "bin", V15)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return args


@pytest.fixture(scope="module")
def models():
    """Two tiny int8 models, converted once for the file."""
    return {a: Target(a).tflite() for a in (ARCH, ARCH2)}


def replay(tmp_path, **kw):
    return {"backend": "replay", "n_runs": 5, "replay": {"timings_ms": [2.5, 4.0], **kw}}


def request(arch, models, **kw):
    return Request(Target(arch).key, arch, tflite=models[arch], **kw)


def test_the_service_measures_each_model_once_and_remembers_it_across_restarts(tmp_path, compiler, models):
    cache = tmp_path / "cache.jsonl"
    svc = MeasurementService("edgetpu", replay(tmp_path), cache_file=cache)
    svc.check()
    first = svc.measure(request(ARCH, models, sent=time.time()))
    assert first["cached"] is False and first["result"]["latency_ms"] in (2.5, 4.0)
    # the compiler's real report reached the result: the memory split and op placement
    assert first["result"]["on_chip_bytes"] > 0 and first["result"]["ops_on_cpu"] == 0
    assert first["result"]["details"]["runtime"] == "replay" and first["wait_s"] >= 0
    again = svc.measure(request(ARCH, models))
    assert again["cached"] is True and again["result"] == first["result"]
    assert svc.lookup(Target(ARCH).key)["result"] == first["result"]  # by the arch's key, nothing converted
    assert svc.lookup(Target(ARCH2).key) is None
    assert svc.counts["measured"] == 1 and compiler.read_text()  # compiled once
    # A restarted service (a Ray actor after its process died) reads its cache back.
    svc2 = MeasurementService("edgetpu", replay(tmp_path), cache_file=cache)
    assert svc2.measure(request(ARCH, models))["cached"] is True and svc2.counts["measured"] == 0
    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    assert [e["fingerprint"] for e in lines if "result" in e] == [fingerprint(models[ARCH])]
    # a cache line cut short by a kill is skipped, not fatal
    cache.write_text(cache.read_text() + '{"fingerprint": "abc", "res')
    assert MeasurementService("edgetpu", replay(tmp_path), cache_file=cache).lookup(Target(ARCH).key) is not None


def test_an_unplugged_device_fails_the_request_in_flight_and_is_reopened(tmp_path, compiler, models):
    plug = tmp_path / "unplugged"
    svc = MeasurementService("edgetpu", replay(tmp_path, seconds=1.0, unplug_file=str(plug)))
    svc.check()
    threading.Timer(0.3, plug.touch).start()  # the stick drops out during the measurement
    out = svc.measure(request(ARCH, models))
    assert out["kind"] == "device"
    assert out["error"].startswith("measurement service service-0: device any failed while measuring " + ARCH)
    assert "USB transfer failed" in out["error"] and "re-opened for the next request" in out["error"]
    assert svc.measure(request(ARCH, models))["kind"] == "device"  # still unplugged: the check says so
    plug.unlink()
    back = svc.measure(request(ARCH, models))
    assert back["cached"] is False and back["result"]["latency_ms"] > 0
    assert svc.counts == {"requests": 3, "measured": 1, "cached": 0, "failed": 2, "device_errors": 2}


def test_the_client_converts_here_and_is_answered_by_the_service(tmp_path, compiler):
    svc = MeasurementService("edgetpu", replay(tmp_path))
    client = ServiceClient("edgetpu", LocalTransport([svc]), options=replay(tmp_path))
    assert client.name == "edgetpu" and "off_chip_bytes" in client.metrics
    pending = client.submit(Target(ARCH))
    assert svc.counts["requests"] == 0  # in process, the service answers when asked
    r = pending.result()
    assert r.source == "edgetpu" and r.latency_ms > 0 and r.details["cached"] is False
    assert r.details["service"] == "service-0"
    assert client.measure(Target(ARCH)).details["cached"] is True  # a re-proposed arch: not converted again
    # compile where the trial runs: the service only times what it is sent
    here = ServiceClient("edgetpu", LocalTransport([svc]), compile_here=True, options=replay(tmp_path))
    r2 = here.measure(Target(ARCH2))
    assert r2.on_chip_bytes > 0 and svc.counts["measured"] == 2
    # a device error travels as DeviceError (a LatencyError: a failed trial), with its reason
    bad = ServiceClient("edgetpu", LocalTransport([svc]))
    (tmp_path / "gone").touch()
    svc.source._replay.unplug_file = tmp_path / "gone"
    svc.source.reopen()
    with pytest.raises(DeviceError, match="device any failed while measuring"):
        bad.measure(Target(ARCH.replace("o64", "o32")))
    assert issubclass(DeviceError, LatencyError)


def test_requests_are_routed_by_the_models_key():
    keys = [f"k{i}" for i in range(200)]
    spread = [route(k, 3) for k in keys]
    assert set(spread) == {0, 1, 2} and route("k7", 3) == route("k7", 3) and route("k7", 1) == 0


def test_each_service_of_a_host_claims_its_own_device(tmp_path, monkeypatch):
    from latency_models.edgetpu import devices as edgetpu_devices

    listed = [{"type": "usb", "device": "usb:0"}, {"type": "usb", "device": "usb:1"},
              {"type": "pci", "device": "pci:0"}]
    monkeypatch.setattr(edgetpu_devices, "list_devices", lambda: (listed, ""))
    a, ha = claim_device("usb", tmp_path)
    b, hb = claim_device("usb", tmp_path)
    assert (a, b) == ("usb:0", "usb:1")
    with pytest.raises(MissingHardware, match=r"no free Edge TPU of type 'usb' on this host .*usb:0, usb:1"):
        claim_device("usb", tmp_path)
    assert claim_device("", tmp_path)[0] == "pci:0"
    hb.close()  # a service that ends frees its device
    assert claim_device("usb", tmp_path)[0] == "usb:1"
    assert claim_device("usb:0", tmp_path) == ("usb:0", None)  # named by the user: taken as given


def test_a_predictor_cannot_be_served_and_a_served_source_must_measure():
    from nas.config.experiment import parse_experiment

    base = {"space": {"name": "efficientnet_edgetpu"}, "reward": {"target_ms": 2}, "budget": {"trials": 1}}
    with pytest.raises(ValueError, match=r"latency.service.mode: service times the models of a measured source "
                                         r"\(edgetpu, tflite-cpu\); latency.source 'edgetpu-model' predicts"):
        parse_experiment({**base, "latency": {"service": {"mode": "service"}}})
    with pytest.raises(ValueError, match="latency.service.compile: trial compiles for the Edge TPU; latency.source "
                                         "'tflite-cpu' has no compiler"):
        parse_experiment({**base, "latency": {"source": "tflite-cpu", "service": {"compile": "trial"}}})
    auto = parse_experiment({**base, "latency": {"source": "edgetpu"}}).latency
    assert auto.uses_service and auto.service_resource == "edgetpu"
    cpu = parse_experiment({**base, "latency": {"source": "tflite-cpu"}}).latency
    assert not cpu.uses_service
    dedicated = parse_experiment({**base, "latency": {"source": "tflite-cpu",
                                                      "service": {"mode": "service", "resource": "timer"}}}).latency
    assert dedicated.uses_service and dedicated.service_resource == "timer"
    with pytest.raises(ValueError, match="only a measured source"):
        MeasurementService("edgetpu-model")


def test_the_replay_backend_is_validated():
    from latency_models import get_source

    with pytest.raises(ValueError, match=r"edgetpu option replay.timings_ms: got \[\]; allowed: a non-empty list"):
        get_source("edgetpu", backend="replay", replay={"timings_ms": []})
    with pytest.raises(ValueError, match="edgetpu option backend: got 'usb'; allowed: litert, replay"):
        get_source("edgetpu", backend="usb")
    with pytest.raises(ValueError, match="edgetpu option replay: only with backend: replay"):
        get_source("edgetpu", replay={"seconds": 1})


# ------------------------------------------------------------------------------ through Ray

def _experiment(tmp_path: Path, *, gpus: float, trials: int, seconds: float, cards: int = 2, **budget) -> Path:
    from test_search import TINY_EXPERIMENT

    e = {**TINY_EXPERIMENT, "name": "served",
         "controller": {"name": "random"},
         "latency": {"source": "edgetpu",
                     "options": {"backend": "replay", "n_runs": 5,
                                 "replay": {"seconds": seconds, "trace_dir": str(tmp_path / "trace")}}},
         "budget": {"trials": trials, "concurrency": 4, "cpus_per_trial": 0.5, "gpus_per_trial": gpus, **budget},
         "ray": {"num_cpus": 2, "num_gpus": cards}}
    p = tmp_path / "served.yaml"
    p.write_text(yaml.safe_dump(e))
    return p


def _rows(run: Path) -> list[dict]:
    with open(run / "trials.csv") as f:
        return list(csv.DictReader(f))


def _most_at_once(rows) -> int:
    """The most trials whose recorded [start, start + trial_s] intervals overlapped."""
    events = sorted([(float(r["started"]), 1) for r in rows]
                    + [(float(r["started"]) + float(r["trial_s"]), -1) for r in rows])
    now = most = 0
    for _, d in events:
        now += d
        most = max(most, now)
    return most


def _search_env(tmp_path):
    from test_edgetpu_source import make_fake_compiler

    if not V15.is_file():
        pytest.skip("recorded compiler logs not found")
    make_fake_compiler(tmp_path / "bin", V15)
    return {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}


def test_trainings_share_one_device_each_on_half_a_logical_gpu(tmp_path):
    """One (replayed) Edge TPU serves a search of concurrent trials on one of Ray's logical
    GPUs, half of it each: trainings overlap on the card, every trial gets its latency, the
    device serves one request at a time, and each trial's process saw the GPU id Ray gave it."""
    from test_search import nas

    exp = _experiment(tmp_path, gpus=0.5, trials=3, seconds=0.5, cards=1)
    r = nas("search", exp, "--out", tmp_path / "run", "--no-progress", cwd=tmp_path, env=_search_env(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _rows(tmp_path / "run")
    assert len(rows) == 3 and all(row["status"] == "ok" and float(row["latency_ms"]) > 0 for row in rows), rows
    assert all(row["latency_source"] == "edgetpu" for row in rows)
    # Ray's logical GPU: two trials on the card; CUDA_VISIBLE_DEVICES as Ray assigned (the trial
    # entry point fails a trial whose process sees other ids than Ray gave it).
    assert {row["gpus"] for row in rows} == {"0"}
    assert _most_at_once(rows) == 2, "two trials at a time on the card, no more"
    # the device measured one model at a time, each once
    traces = [json.loads(p.read_text()) for p in (tmp_path / "trace").glob("*.json")]
    assert len(traces) == 3 and all("ended" in t for t in traces)
    cache = [json.loads(line) for line in (tmp_path / "run" / "latency" / "service-0.jsonl").read_text().splitlines()]
    assert len([e for e in cache if "result" in e]) == 3


def test_killing_the_measurement_actor_mid_request_loses_nothing(tmp_path):
    """Whole logical GPUs this time (two trials at a time on two cards); the measuring actor
    is SIGKILLed while it times a model: Ray restarts it and retries the request, and every
    trial is recorded once, with its latency."""
    import subprocess
    import sys

    exp = _experiment(tmp_path, gpus=1, trials=3, seconds=2.0)
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "search", str(exp), "--out", str(tmp_path / "run"),
                             "--no-progress"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONWARNINGS": "ignore", **_search_env(tmp_path)})
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        for p in (tmp_path / "trace").glob("*.json"):
            try:
                t = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if "ended" not in t:  # a measurement in flight
                os.kill(t["pid"], signal.SIGKILL)
                killed = t
                break
        time.sleep(0.1)
    out, err = proc.communicate(timeout=400)
    assert killed is not None, "no measurement was caught in flight"
    assert proc.returncode == 0, err[-3000:]
    rows = _rows(tmp_path / "run")
    assert len(rows) == 3 and len({r["arch"] for r in rows}) == 3
    assert all(r["status"] == "ok" and float(r["latency_ms"]) > 0 for r in rows), rows
    assert {r["gpus"] for r in rows} <= {"0", "1"}
    for card in ("0", "1"):  # one trial per whole card at a time
        assert _most_at_once([r for r in rows if r["gpus"] == card]) <= 1
    traces = [json.loads(p.read_text()) for p in (tmp_path / "trace").glob("*.json")]
    # the killed request was measured again by the restarted actor (another process)
    again = [t for t in traces if t["model"] == killed["model"] and "ended" in t]
    assert again and all(t["pid"] != killed["pid"] for t in again)
    cache = [json.loads(line) for line in (tmp_path / "run" / "latency" / "service-0.jsonl").read_text().splitlines()]
    done = [e["fingerprint"] for e in cache if "result" in e]
    assert len(done) == len(set(done)) == 3


def test_a_trial_that_measures_itself_takes_nested_options_and_loads_its_source_once(tmp_path):
    """latency.service.mode: trial (the design before the service) with the replay backend's
    nested options: the per-process source cache is keyed by them (a dict is not hashable)."""
    from nas.config.experiment import parse_experiment
    from nas.trial.recipe import latency_source

    c = parse_experiment({"space": {"name": "efficientnet_edgetpu"}, "reward": {"target_ms": 2}, "budget": {"trials": 1},
                          "latency": {"source": "edgetpu", "service": {"mode": "trial"}, **{
                              "options": {"backend": "replay", "replay": {"timings_ms": [3.0]}}}}})
    assert not c.latency.uses_service
    src = latency_source(c)
    assert src.backend == "replay" and latency_source(c) is src


def test_an_in_process_search_asks_the_same_service_object(tmp_path, compiler):
    """--runner local: no Ray, the measurement service is the same object a Ray actor holds,
    asked directly; its cache sits in the run folder as on a cluster."""
    from nas.config.experiment import parse_experiment
    from nas.ledger.folder import RunFolder
    from nas.run.runner import run_local
    from test_search import TINY_EXPERIMENT

    c = parse_experiment({**TINY_EXPERIMENT, "controller": {"name": "random"}, "budget": {"trials": 2},
                          "latency": {"source": "edgetpu", "options": replay(tmp_path)}})
    run = RunFolder(tmp_path / "run")
    state = run_local(c, run, 2)
    recs = list(state.results.values())
    assert len(recs) == 2 and all(r.status.value == "ok" and r.latency_ms in (2.5, 4.0) for r in recs)
    lines = (tmp_path / "run" / "latency" / "service-0.jsonl").read_text().splitlines()
    assert len([json.loads(line) for line in lines if '"result"' in line]) == 2


def test_the_same_service_times_tflite_cpu_on_a_dedicated_host(tmp_path):
    """latency.service {mode: service, resource: timer}: tflite-cpu timed by a service (here in
    process) instead of in each trial; the model is converted on the trial's side."""
    svc = MeasurementService("tflite-cpu", {"n_runs": 5, "warmup": 1}, cache_file=tmp_path / "c.jsonl")
    client = ServiceClient("tflite-cpu", LocalTransport([svc]), options={"n_runs": 5})
    r = client.measure(Target(ARCH))
    assert r.source == "tflite-cpu" and r.latency_ms > 0 and r.details["device"] == "host-cpu"
    assert client.measure(Target(ARCH)).details["cached"] is True and svc.counts["measured"] == 1


def test_a_supernet_asks_the_service_for_its_samples_latency(tmp_path, compiler):
    """One-shot on a cluster: a supernet task's latency function goes through the service's
    client (every sample sent before the first answer is awaited)."""
    from nas.config.experiment import parse_experiment
    from nas.oneshot.run import _latency_fn
    from search_spaces import Arch

    c = parse_experiment({"space": {"name": "efficientnet_edgetpu"}, "reward": {"target_ms": 2}, "budget": {"trials": 1},
                          "latency": {"source": "edgetpu", "options": replay(tmp_path)}})
    svc = MeasurementService("edgetpu", replay(tmp_path))
    client = ServiceClient("edgetpu", LocalTransport([svc]), options=replay(tmp_path))
    archs = [Arch.from_string(a) for a in (ARCH, ARCH2)]
    out = _latency_fn(c, 10, client)(archs)
    assert [d["latency_ms"] in (2.5, 4.0) for d in out] == [True, True] and svc.counts["measured"] == 2
    assert all(d["on_chip_bytes"] > 0 and d["ops_on_cpu"] == 0 for d in out)
