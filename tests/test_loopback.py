"""What the embedded Ray exposes: every listening socket on loopback, no dashboard, token authentication.

Without ``nas.run.runner._local_only_env`` Ray 2.60 advertises the host's IP and its gRPC
servers listen on every interface; this test fails then.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import urllib.request

import pytest

pytestmark = pytest.mark.slow

SERVER = textwrap.dedent("""
    import json, sys
    from nas.config.experiment import parse_experiment
    from nas.run.runner import _local_only_env, _quiet_env
    cfg = parse_experiment({"space": {"name": "mnasnet", "resolution": 32}, "reward": {"target_ms": 1.0},
                            "budget": {"trials": 1}})
    _quiet_env()
    _local_only_env(cfg)
    import ray  # after: the environment decides Ray's node address at import
    from nas.run.ray_runner import init_ray
    assert init_ray(cfg)
    ctx = ray.get_runtime_context()
    nodes = ray.nodes()
    print(json.dumps({"gcs": ctx.gcs_address, "node_ips": [n["NodeManagerAddress"] for n in nodes],
                      "auth": __import__("os").environ.get("RAY_AUTH_MODE")}), flush=True)
    sys.stdin.read()  # until the test closes it
    ray.shutdown()
""")

def _external_ipv4() -> str | None:
    import psutil

    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return None


def test_embedded_ray_listens_on_loopback_only():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("RAY_AUTH_MODE", None)
    env.pop("RAY_ADDRESS", None)
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = server.stdout.readline()
        assert line, server.stderr.read()[-3000:]
        info = json.loads(line)
        host, port = info["gcs"].rsplit(":", 1)
        assert host == "127.0.0.1" and info["node_ips"] == ["127.0.0.1"]
        assert info["auth"] == "token"
        with pytest.raises(OSError):  # no dashboard (HTTP, default port) unless ray.dashboard: true
            urllib.request.urlopen("http://127.0.0.1:8265", timeout=3)
        import psutil

        procs = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
        pids = {p.pid for p in procs}
        listening = [c for c in psutil.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.pid in pids]
        assert listening, "found none of Ray's listening sockets"
        loopback = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
        exposed = [(c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()) for c in listening
                   if c.laddr.ip not in loopback]
        assert not exposed, exposed
        ip = _external_ipv4()
        if ip is not None:  # and from outside, the GCS port is closed
            with pytest.raises(OSError), socket.create_connection((ip, int(port)), timeout=3):
                pass
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
