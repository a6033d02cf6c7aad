"""Cluster mode for real: a Ray head and a second Ray node started with ``ray start`` as separate
processes on loopback, and ``nas search --address`` spreading its trials over both."""

from __future__ import annotations

import csv
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EXPERIMENT = {
    "name": "cluster", "seed": 5,
    "space": {"name": "efficientnet_edgetpu", "resolution": 32, "width": 0.25, "depth": 0.25},
    "controller": {"name": "random"},
    "reward": {"target_ms": 1.8},
    "data": {"source": "digits", "limit": 200},
    "train": {"epochs": 1, "batch_size": 32},
    "budget": {"trials": 4, "concurrency": 2, "cpus_per_trial": 1},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_ray_under(temp_dir: str) -> None:
    """Stop this test's Ray processes only (``ray stop`` would stop every Ray on the machine)."""
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in p.info["cmdline"] or ()):
                p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def _start_head():
    """A Ray head of one CPU on loopback, as its own processes: (ray, temp dir, port, env, the
    ``ray start`` options every node shares). Stop it with :func:`_kill_ray_under` (temp dir)."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    # Ray's unix sockets live under the temp dir, and their paths must stay short.
    temp = tempfile.mkdtemp(prefix="nasray", dir="/tmp")
    port = _free_port()
    # Token authentication as a real cluster should run it: one token, given to every node and
    # to the driver (here through a file of this test's own, not ~/.ray/auth_token).
    token = Path(temp) / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONWARNINGS": "ignore", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token)}
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    head = subprocess.run([ray_bin, "start", "--head", "--port", str(port), "--include-dashboard", "false",
                           "--temp-dir", temp, *common], capture_output=True, text=True, env=env, timeout=180)
    if head.returncode != 0:
        _kill_ray_under(temp)
        pytest.fail(f"ray start --head failed: {head.stderr[-2000:]}")
    return ray_bin, temp, port, env, common


def test_a_search_spreads_its_trials_over_a_two_node_cluster(tmp_path):
    ray_bin, temp, port, env, common = _start_head()
    try:
        worker = subprocess.run([ray_bin, "start", "--address", f"127.0.0.1:{port}", *common],
                                capture_output=True, text=True, env=env, timeout=180)
        assert worker.returncode == 0, worker.stderr[-2000:]
        exp = tmp_path / "cluster.yaml"
        exp.write_text(yaml.safe_dump(EXPERIMENT))
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(exp), "--out", str(tmp_path / "run"),
                            "--address", f"127.0.0.1:{port}", "--no-progress"], capture_output=True, text=True,
                           env=env, timeout=600, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        with open(tmp_path / "run" / "trials.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == EXPERIMENT["budget"]["trials"] and all(row["status"] == "ok" for row in rows)
        nodes = {row["node"] for row in rows}
        # one CPU a node and two trials at a time: both nodes must have run trials
        assert len(nodes) == 2, nodes
        print(f"cluster search: {len(rows)} trials on nodes {sorted(nodes)} in {time.monotonic() - t0:.0f} s")
    finally:
        _kill_ray_under(temp)
        shutil.rmtree(temp, ignore_errors=True)


def test_an_edgetpu_on_a_worker_node_only_is_checked_on_the_cluster(monkeypatch):
    """The README's set-up: the device is on a worker node, not on the driver. The driver's own
    hardware check is skipped; once connected, the runner refuses a cluster without the
    "edgetpu" resource in one line, and accepts one that has it."""
    import ray

    from latency_models.errors import MissingHardware
    from nas.run import ray_runner
    from nas.config.experiment import parse_experiment
    from nas.run.launch import check

    data = {"space": {"name": "efficientnet_edgetpu", "resolution": 32, "width": 0.25}, "reward": {"target_ms": 2.0},
            "budget": {"trials": 2}, "latency": {"source": "edgetpu"}}
    with pytest.raises(MissingHardware):
        check(parse_experiment(data))  # no Edge TPU on this machine, and no cluster to run on
    cfg = parse_experiment({**data, "ray": {"address": "10.0.0.7:6379"}})
    check(cfg)  # the cluster is checked instead
    resources = {"CPU": 8.0}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: None)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray, "cluster_resources", lambda: resources)
    monkeypatch.setattr(ray_runner, "check_nodes", lambda source: None)  # (no nodes to run a task on)
    with pytest.raises(MissingHardware, match=r"^--address: no node of the Ray cluster at 10.0.0.7:6379 offers the "
                                              r"'edgetpu' resource"):
        ray_runner.init_ray(cfg)
    resources["edgetpu"] = 1.0
    assert ray_runner.init_ray(cfg) is True


def _can_hide_a_folder() -> bool:
    """Whether this machine lets a process mount over a folder in a mount namespace of its own
    (root, util-linux's unshare): how a test makes one Ray node unable to see a path."""
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs", "none", d],
                           capture_output=True, timeout=30)
        return r.returncode == 0


@pytest.mark.skipif(not _can_hide_a_folder(), reason="needs root and unshare to hide a folder from one Ray node")
def test_a_node_that_cannot_see_the_data_stops_the_search_before_any_trial(tmp_path):
    """A second node started in a mount namespace where the image folder is an empty tmpfs:
    the search stops with one line naming that node and the path, before any trial runs."""
    from test_data import make_folder

    make_folder(tmp_path / "imgs", counts=(6, 6), size=16)
    ray_bin, temp, port, env, common = _start_head()
    hidden = f"mount -t tmpfs none {tmp_path / 'imgs'} && exec {ray_bin} start --address 127.0.0.1:{port} " + \
        " ".join(common)
    try:
        worker = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", hidden],
                                capture_output=True, text=True, env=env, timeout=180)
        assert worker.returncode == 0, worker.stderr[-2000:]
        exp = tmp_path / "folder.yaml"
        exp.write_text(yaml.safe_dump({**EXPERIMENT, "data": {"source": f"folder:{tmp_path / 'imgs'}"}}))
        r = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(exp), "--out", str(tmp_path / "run"),
                            "--address", f"127.0.0.1:{port}", "--no-progress"], capture_output=True, text=True,
                           env=env, timeout=600, cwd=tmp_path)
        assert r.returncode == 2, r.stderr[-3000:]
        line = r.stderr.strip().splitlines()[-1]
        assert re.match(r"error: data\.source: node \S+ \([\d.]+, id [0-9a-f]{8}\) cannot read ", line), line
        assert f"cannot read 'folder:{tmp_path / 'imgs'}': folder" in line and "class sub-folder" in line, line
        assert not (tmp_path / "run" / "trials.csv").exists()
    finally:
        _kill_ray_under(temp)
        shutil.rmtree(temp, ignore_errors=True)
