"""Timing a ``.tflite`` in a fresh process that has never loaded TensorFlow.

TensorFlow's converter carries its own copy of the TFLite runtime; with LiteRT loaded into
the same process, ``allocate_tensors`` aborts the whole process now and then (seen here in
about one run in five of a test file that converts and then measures). A fresh interpreter
process also times more cleanly: no TF thread pools, no converter garbage. Starting one
costs about 0.2 s, small beside a conversion.

It also contains a LiteRT crash: the XNNPACK CPU delegate refuses some int8 models
(TensorFlow's interpreter says "failed to create XNNPACK runtime"), and LiteRT 2.3 then dies
with "double free or corruption". A worker that dies that way is retried once with the
builtin kernels (no XNNPACK), which is also what a deployment would fall back to, and the
result says so (``xnnpack: False``).

The parent writes the model to a temporary file and sends a JSON request on stdin; the
worker (``python -m latency_models.isolated``) answers with the timings as JSON on stdout.
A worker killed by a signal is retried before the measurement is declared failed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np

from latency_models.errors import LatencyError
from latency_models.runtime import interpreter_module, make_interpreter
from latency_models.timing import TimingStats, summarize, time_invokes, time_stable

log = logging.getLogger(__name__)


def _run_worker(request: dict, timeout_s: float, what: str) -> dict:
    """One worker run: its JSON answer, or None when the process died (by a signal or crash)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "latency_models.isolated"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=timeout_s,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    except subprocess.TimeoutExpired:
        raise LatencyError(f"{what} did not finish within {timeout_s:.0f} s") from None
    if proc.returncode == 0:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        if "error" in out:
            raise LatencyError(out["error"])
        return out
    last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    log.warning("%s worker died (status %d): %s", what, proc.returncode, last)
    return {"died": last}


def _with_fallback(request: dict, timeout_s: float, what: str, retries: int) -> dict:
    # First with XNNPACK (the runtime's default, what users deploy); after a crash once more
    # with it (a crash can be the machine), then with the builtin kernels.
    plan = [True] * max(1, retries) + [False]
    last = ""
    for xnnpack in plan:
        out = _run_worker({**request, "xnnpack": xnnpack}, timeout_s, what)
        if "died" not in out:
            return {"xnnpack": xnnpack, **out}
        last = out["died"]
    raise LatencyError(f"the {what} process failed {len(plan)} times; last error: {last}")


def time_isolated(model: bytes, *, threads: int = 1, n_runs: int = 50, warmup: int = 2, stable: bool = False,
                  tolerance: float = 0.02, max_rounds: int = 10, delegate: dict[str, Any] | None = None,
                  retries: int = 1, timeout_s: float = 900) -> tuple[TimingStats, dict]:
    """Time ``model`` in a child process; returns the statistics and ``{"xnnpack": bool}``.

    ``delegate`` is ``{"library": ..., "options": {...}}`` (e.g. the Edge TPU's).
    """
    with tempfile.TemporaryDirectory(prefix="nas-time-") as tmp:
        path = os.path.join(tmp, "model.tflite")
        with open(path, "wb") as f:
            f.write(model)
        request = {"model_path": path, "threads": threads, "n_runs": n_runs, "warmup": warmup, "stable": stable,
                   "tolerance": tolerance, "max_rounds": max_rounds, "delegate": delegate}
        out = _with_fallback(request, timeout_s, "timing", retries)
        xnnpack = out.pop("xnnpack")
        return TimingStats(**out), {"xnnpack": xnnpack}


def invoke_isolated(model: bytes, inputs: np.ndarray, *, retries: int = 1, timeout_s: float = 600):
    """Run ``model`` on a batch of already-quantized ``inputs`` (one invoke per row) in a child
    process; returns ``(outputs, info)`` where ``info`` has the input/output details and the
    dtype of every tensor. Used to check what a converted model computes without loading
    LiteRT next to TensorFlow."""
    with tempfile.TemporaryDirectory(prefix="nas-invoke-") as tmp:
        mpath, ipath, opath = (os.path.join(tmp, n) for n in ("model.tflite", "in.npy", "out.npz"))
        with open(mpath, "wb") as f:
            f.write(model)
        np.save(ipath, np.asarray(inputs))
        request = {"mode": "invoke", "model_path": mpath, "inputs_path": ipath, "outputs_path": opath}
        info = _with_fallback(request, timeout_s, "inference", retries)
        with np.load(opath, allow_pickle=False) as z:
            return z["outputs"], info


def _load(req: dict, **kw):
    """The interpreter, and whether XNNPACK runs it: a model XNNPACK refuses with an error
    (rather than a crash) is loaded again with the builtin kernels."""
    if req["xnnpack"]:
        try:
            return make_interpreter(req["model_path"], **kw), True
        except RuntimeError as e:
            if "XNNPACK" not in str(e):
                raise
    return make_interpreter(req["model_path"], default_delegates=False, **kw), False


def _invoke(req: dict) -> None:
    it, xnnpack = _load(req)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    xs = np.load(req["inputs_path"], allow_pickle=False)
    ys = []
    for x in xs:
        it.set_tensor(inp["index"], x[None].astype(inp["dtype"]))
        it.invoke()
        ys.append(it.get_tensor(out["index"])[0].copy())
    np.savez(req["outputs_path"], outputs=np.stack(ys))

    def detail(d):
        return {"dtype": np.dtype(d["dtype"]).name, "shape": [int(v) for v in d["shape"]],
                "quantization": [float(d["quantization"][0]), int(d["quantization"][1])]}

    print(json.dumps({"xnnpack": xnnpack, "input": detail(inp), "output": detail(out),
                      "tensor_dtypes": sorted({np.dtype(t["dtype"]).name for t in it.get_tensor_details()})}))


def _serve() -> None:
    req = json.loads(sys.stdin.read())
    if req.get("mode") == "invoke":
        return _invoke(req)
    try:
        delegates = None
        if req.get("delegate"):
            mod, _ = interpreter_module()
            d = req["delegate"]
            delegates = [mod.load_delegate(d["library"], d.get("options") or {})]
        it, xnnpack = _load(req, num_threads=req["threads"], delegates=delegates)
    except (ValueError, OSError, RuntimeError) as e:
        print(json.dumps({"error": f"cannot load the model: {str(e).splitlines()[0] if str(e) else e!r}"}))
        return
    if req["stable"]:
        st = time_stable(it, req["n_runs"], req["warmup"], tolerance=req["tolerance"], max_rounds=req["max_rounds"])
    else:
        st = summarize(np.asarray(time_invokes(it, req["n_runs"], req["warmup"])))
    print(json.dumps({"xnnpack": xnnpack, "median_ms": st.median_ms, "p90_ms": st.p90_ms, "p10_ms": st.p10_ms,
                      "n_runs": st.n_runs, "rounds": st.rounds}))


if __name__ == "__main__":
    _serve()
