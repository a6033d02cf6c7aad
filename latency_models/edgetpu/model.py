"""``edgetpu-model``: an on-chip-memory-aware Edge TPU latency model, fitted to measurements.

It predicts what a Coral Edge TPU would measure, from the TFLite-level op table of
:mod:`latency_models.analysis` (so it works for archs without a TF graph, and for any Keras
model or ``.tflite``). Its structure follows how the hardware works
(shared/data/edgetpu/README.md); its constants are fitted to measurements.

Per op on the Edge TPU
    compute = effective MACs / peak rate. Regular convs and fully connected layers run on
    the systolic array, whose output channels come in tiles of ``channel_tile`` (a 32-channel
    conv pays for 64: the conv7x7 sweep, all 32 channels, runs at half the 4 TOPS peak);
    depthwise convs and fully connected layers reuse little and get their own efficiency;
    element-wise ops (ADD, MUL, LOGISTIC, MEAN, ...) move bytes at ``elementwise_bytes_per_s``;
    pools (AVERAGE/MAX_POOL_2D) read a window per output on the same unit: output elements
    x window size at the element-wise rate (NAS-Bench-201's 3x3 average pools cost 3-4 times
    an ADD on the device). Every op also costs ``op_overhead_s``; ``clock`` scales every on-chip rate.

Parameter cache planner
    The compiler caches parameters in on-chip SRAM (8 MiB) less what activations need
    (``activation_reserve`` times the largest input + output bytes of one op, between
    ``min_reserve`` and ``max_reserve``).
    Compiled parameters are larger than the int8 ones: output channels are padded to the
    tile (the conv7x7 sweep's 50-layer stack, 2.35 MiB of int8 weights, caches 4.71 MiB).
    Layers are placed in execution order until the cache is full; the rest are *streamed*
    from the host on every inference, at their int8 size (the sweep's streamed MiB match the
    int8 size of the layers that did not fit).

Streaming and the link
    Streamed bytes cross the host link (USB 3 by default; USB 2 or PCIe) while the array
    computes, so an op costs max(compute, stream) (the sweep's 250-layer stack streams
    9.45 MiB yet runs at the same per-layer pace as the cached 50-layer one: it is
    compute-bound; ResNet-50 is the opposite). Input and output tensors cross the link once
    per inference, plus a fixed ``inference_overhead_s``.

CPU fall-back
    From the first op the Edge TPU cannot run, everything runs on the host CPU (one Edge
    TPU partition): ``cpu_macs_per_s`` and ``cpu_bytes_per_s``, plus the activation crossing
    the link. No public measurement covers this, so these two are priors, refittable from a
    device profile.

Fitting (:mod:`latency_models.edgetpu.fit`): :func:`~latency_models.edgetpu.fit.fit` minimises
squared log errors of latency (and of on/off-chip bytes where known) by bounded least squares,
with weak priors that keep every constant physical; the activation reserve is searched on a
grid; rows measured on other set-ups share the chip constants and get their own host constants.
The shipped constants (``data/edgetpu_model.json``) are fitted by ``benchmarks/edgetpu_model.py``
to the public measurements in ``data/edgetpu_measurements.csv`` plus 100 of the NAS-Bench-201
networks measured on a real Edge TPU; :func:`~latency_models.edgetpu.fit.calibrate` (``nas
latency fit edgetpu-model --measurements FILE.csv``) refits a user's own set-up: the host
constants from a handful of rows, every constant from 30 or more. Many archs at once:
:func:`latency_models.edgetpu.batch.predict_batch`.

>>> from latency_models import get_source
>>> r = get_source("edgetpu-model")("efficientnet_edgetpu_s")       # doctest: +SKIP
>>> r.latency_ms, r.on_chip_bytes, r.off_chip_bytes                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from latency_models.base import LayerLatency

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# 2: pools have their own rate, the clock and set-ups exist, the reserve cap is fitted.
MODEL_VERSION = "edgetpu-model/2"
DATA = Path(__file__).parents[1] / "data"
# What `nas latency fit edgetpu-model` writes into a predictor directory; the shipped fit is one.
CONSTANTS_FILE = "edgetpu_model.json"
DEFAULT_CONSTANTS_FILE = DATA / CONSTANTS_FILE

# Nominal usable bandwidth of the links relative to USB 3, for links never measured:
# USB 2 (480 Mb/s) and PCIe Gen2 x1 (5 GT/s, 8b/10b).
LINK_RATIO = {"usb3": 1.0, "usb2": 0.1, "pcie": 1.25}

MATRIX_OPS = ("CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED")
POOL_OPS = ("AVERAGE_POOL_2D", "MAX_POOL_2D")
COMPUTE_OPS = MATRIX_OPS + ("DEPTHWISE_CONV_2D",)


@dataclass(frozen=True)
class Constants:
    """The model's constants; fitted ones first. Units are in the names."""

    peak_macs_per_s: float = 2.0e12
    depthwise_efficiency: float = 0.15
    fc_efficiency: float = 0.05
    op_overhead_s: float = 1.0e-5
    inference_overhead_s: float = 3.0e-4
    link_bytes_per_s: float = 3.2e8  # USB 3
    activation_reserve: float = 3.0
    elementwise_bytes_per_s: float = 2.0e9
    # Not fitted (structure, or no public data to fit them):
    sram_bytes: int = 8 * MIB
    min_reserve_bytes: int = 160 * 1024
    # Big activations are tiled through the SRAM, not held whole, so the reserve is capped. The
    # cap is the reserve of the newest real report we have: compiler 16 on a 224-px detector
    # (yolov5s, compiler_logs/v16_*) left 6.08 MiB for parameters, i.e. reserved 1.92 MiB.
    # (Compiler 1.0 reserved 3.0 MiB in the conv7x7 sweep; current compilers are the target.)
    max_reserve_bytes: int = 2 * MIB
    channel_tile: int = 64
    cpu_macs_per_s: float = 2.0e10
    cpu_bytes_per_s: float = 2.0e9
    # The Edge TPU's clock relative to the calibration set-up's: libedgetpu's "std" runtime
    # runs it at a reduced clock, "max" at the full one; a board may differ too. Scales every
    # on-chip rate (array, element-wise, per-op cost) together; a host-dependent constant.
    clock: float = 1.0

    @classmethod
    def fitted_names(cls) -> tuple[str, ...]:
        """The continuous constants :func:`~latency_models.edgetpu.fit.fit` adjusts (the reserve
        is searched on a grid)."""
        return ("peak_macs_per_s", "depthwise_efficiency", "fc_efficiency", "op_overhead_s",
                "inference_overhead_s", "link_bytes_per_s", "elementwise_bytes_per_s")


@dataclass(frozen=True)
class Prediction:
    latency_ms: float
    on_chip_bytes: int
    off_chip_bytes: int
    compute_ms: float
    stream_ms: float
    cpu_ms: float
    io_ms: float
    layers: tuple[LayerLatency, ...]
    ops_on_tpu: int
    ops_on_cpu: int


def _pad(c: int, tile: int) -> int:
    return -(-c // tile) * tile


def _kind(op_type: str, has_kernel: bool) -> int:
    if op_type == "FULLY_CONNECTED":
        return 3
    if op_type in MATRIX_OPS:
        return 1
    if op_type == "DEPTHWISE_CONV_2D":
        return 2
    return 4 if op_type in POOL_OPS and has_kernel else 0


def ops_arrays(ops) -> dict[str, np.ndarray]:
    """Per-op numbers the model needs, as arrays: kind (0 element-wise, 1 matrix, 2 depthwise,
    3 fully connected, 4 pool), MACs, output channels, int8 parameter bytes, bytes moved
    (inputs + output), pool work (window x output elements) and whether the Edge TPU rejects it."""
    return columns_arrays({
        "op_type": [op.op_type for op in ops], "macs": [op.macs for op in ops],
        "cout": [op.output_shape[-1] if op.output_shape else 1 for op in ops],
        "param_bytes": [op.param_bytes for op in ops],
        "moved": [op.activation_bytes + sum(math.prod(s) for s in op.input_shapes) for op in ops],
        "window": [op.kernel[0] * op.kernel[1] * math.prod(op.output_shape) if op.kernel else 0 for op in ops],
        "supported": [op.edgetpu_supported for op in ops]})


def columns_arrays(cols: dict[str, list]) -> dict[str, np.ndarray]:
    """:func:`ops_arrays` from plain columns (:func:`latency_models.analysis.layers_block_columns`)."""
    kind = np.array([_kind(t, w > 0) for t, w in zip(cols["op_type"], cols["window"])], dtype=np.int8)
    window = np.asarray(cols["window"], dtype=float)
    return {"kind": kind, "macs": np.asarray(cols["macs"], dtype=float),
            "cout": np.maximum(1.0, np.asarray(cols["cout"], dtype=float)),
            "param": np.asarray(cols["param_bytes"], dtype=float), "moved": np.asarray(cols["moved"], dtype=float),
            "window": np.where(kind == 4, window, 0.0), "unsupported": ~np.asarray(cols["supported"], dtype=bool)}


def op_arrays(analysis) -> dict[str, np.ndarray]:
    """What :func:`predict_arrays` takes for one network: :func:`ops_arrays` of its ops plus
    the network's input and output bytes (the host link's share)."""
    a = ops_arrays(analysis.ops)
    a["in_bytes"] = np.array([float(math.prod(analysis.input_shape))])
    a["out_bytes"] = np.array([float(analysis.ops[-1].activation_bytes if analysis.ops else 0)])
    return a


def link_bytes_per_s(c: Constants, link: str) -> float:
    if link not in LINK_RATIO:
        raise ValueError(f"link: unknown {link!r}; allowed: {', '.join(LINK_RATIO)}")
    return c.link_bytes_per_s * LINK_RATIO[link]


def op_costs(a: dict[str, np.ndarray], c: Constants, link: str = "usb3") -> tuple[np.ndarray, ...]:
    """Per op, placement aside: its Edge TPU compute time (s), its compiled parameter bytes
    (padded to the tile) and the time to stream its parameters over the link (s).

    The one place the per-op model lives: :func:`evaluate_ops` (the exact path) and the batched
    segment tables of :mod:`latency_models.edgetpu.batch` both build on it.
    """
    kind, macs, cout, param, moved = a["kind"], a["macs"], a["cout"], a["param"], a["moved"]
    pad = np.ceil(cout / c.channel_tile) * c.channel_tile
    fill = cout / pad  # share of the array's output tile doing useful work
    eff = np.where(kind == 1, fill, np.where(kind == 2, c.depthwise_efficiency * fill,
                                             np.where(kind == 3, c.fc_efficiency * fill, 1.0)))
    compute = (np.where(kind == 4, a["window"] / c.elementwise_bytes_per_s,
                        np.where((kind > 0) & (kind < 4), macs / (c.peak_macs_per_s * np.maximum(eff, 1e-6)),
                                 moved / c.elementwise_bytes_per_s)) + c.op_overhead_s) / c.clock
    compiled = np.where(param > 0, param / fill, 0.0)
    return compute, compiled, param / link_bytes_per_s(c, link)


def evaluate_ops(a: dict[str, np.ndarray], n_ops: Sequence[int], io_bytes: np.ndarray, c: Constants,
                 link: str = "usb3") -> dict[str, np.ndarray]:
    """The model, vectorised over the concatenated ops of several networks.

    ``a`` holds :func:`ops_arrays` of all networks back to back, ``n_ops`` how many ops each
    has, ``io_bytes`` each one's input + output bytes. Returns per-op arrays (``tpu_s``,
    ``cpu_s``, ``compute_s``, ``stream_s``, ``compiled``, ``cached``, ``streamed``, ``cpu``)
    and per-network totals (``latency_s``, ``on_chip``, ``off_chip``, ``compute_total_s``,
    ``stream_total_s``, ``cpu_total_s``, ``io_s``, ``n_cpu``).
    """
    n_ops = np.asarray(n_ops, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(n_ops)[:-1]]).astype(np.int64)
    net = np.repeat(np.arange(len(n_ops)), n_ops)
    bw = link_bytes_per_s(c, link)
    kind, macs, param, moved = a["kind"], a["macs"], a["param"], a["moved"]

    def per_net(cum):  # a cumulative sum restarted at each network's first op
        return cum - np.repeat(np.concatenate([[0], cum])[starts], n_ops)

    # One Edge TPU partition per network: from its first unsupported op on, everything is CPU.
    cpu = per_net(np.cumsum(a["unsupported"].astype(np.int64))) > 0
    tpu = ~cpu
    compute, compiled_all, stream_all = op_costs(a, c, link)

    # Parameter cache planner: compiled size padded to the tile, placed in execution order
    # until the SRAM less the activation reserve (from the largest input + output of one op)
    # is full; the rest is streamed at its int8 size, overlapped with compute.
    compiled = np.where(tpu, compiled_all, 0.0)
    reserve = np.clip(c.activation_reserve * np.maximum.reduceat(moved, starts), c.min_reserve_bytes,
                      c.max_reserve_bytes)
    cached = tpu & (per_net(np.cumsum(compiled)) <= (c.sram_bytes - reserve)[net])
    streamed = tpu & ~cached & (param > 0)
    stream_s = np.where(streamed, stream_all, 0.0)
    tpu_s = np.where(tpu, np.maximum(compute, stream_s), 0.0)
    cpu_s = np.where(cpu, np.where(kind > 0, macs / c.cpu_macs_per_s, 0.0) + moved / c.cpu_bytes_per_s, 0.0)
    # The activation entering the CPU part crosses the link back to the host.
    first_cpu = cpu & ~np.concatenate([[False], cpu[:-1]]) | (cpu & np.isin(np.arange(len(cpu)), starts))
    cross_s = np.where(first_cpu, moved / 2 / bw, 0.0)
    io_s = np.asarray(io_bytes, dtype=float) / bw + c.inference_overhead_s

    def total(x):
        return np.add.reduceat(x, starts) if len(x) else np.zeros(len(n_ops))

    return {"tpu_s": tpu_s, "cpu_s": cpu_s, "compute_s": compute, "stream_s": stream_s, "compiled": compiled,
            "cached": cached, "streamed": streamed, "cpu": cpu,
            "latency_s": total(tpu_s + cpu_s + cross_s) + io_s, "on_chip": total(np.where(cached, compiled, 0.0)),
            "off_chip": total(np.where(streamed, param, 0.0)), "compute_total_s": total(np.where(tpu, compute, 0.0)),
            "stream_total_s": total(stream_s), "cpu_total_s": total(cpu_s), "io_s": io_s,
            "n_cpu": total(cpu.astype(float))}


def predict_arrays(a: dict[str, np.ndarray], c: Constants, link: str = "usb3", *, with_layers: bool = False,
                   names: Sequence[str] = (), op_types: Sequence[str] = ()) -> Prediction:
    """The model on the per-op arrays of one network (:func:`op_arrays`)."""
    n = len(a["kind"])
    r = evaluate_ops(a, [n], a["in_bytes"] + a["out_bytes"], c, link)
    layers: tuple[LayerLatency, ...] = ()
    if with_layers:
        layers = tuple(
            LayerLatency(name=names[i] if i < len(names) else str(i), op=op_types[i] if i < len(op_types) else "",
                         latency_ms=float((r["tpu_s"][i] + r["cpu_s"][i]) * 1e3),
                         on_chip_bytes=int(r["compiled"][i]) if r["cached"][i] else 0,
                         off_chip_bytes=int(a["param"][i]) if r["streamed"][i] else 0,
                         device="cpu" if r["cpu"][i] else "tpu")
            for i in range(n))
    n_cpu = int(r["n_cpu"][0])
    return Prediction(latency_ms=float(r["latency_s"][0]) * 1e3, on_chip_bytes=int(r["on_chip"][0]),
                      off_chip_bytes=int(r["off_chip"][0]), compute_ms=float(r["compute_total_s"][0]) * 1e3,
                      stream_ms=float(r["stream_total_s"][0]) * 1e3, cpu_ms=float(r["cpu_total_s"][0]) * 1e3,
                      io_ms=float(r["io_s"][0]) * 1e3, layers=layers, ops_on_tpu=n - n_cpu, ops_on_cpu=n_cpu)


# --------------------------------------------------------------------------- constants file


@dataclass(frozen=True)
class FittedModel:
    """Constants plus provenance: what they were fitted on and how well they fit."""

    constants: Constants
    version: str = MODEL_VERSION
    fitted_on: str = "priors"
    fit: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps({"format": "edgetpu-model", "version": self.version,
                           "constants": asdict(self.constants), "fitted_on": self.fitted_on, "fit": self.fit},
                          indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "constants file") -> "FittedModel":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(d, dict) or d.get("format") != "edgetpu-model":
            raise ValueError(f"{where}: not an edgetpu-model constants file (format {d.get('format')!r})"
                             if isinstance(d, dict) else f"{where}: not an edgetpu-model constants file")
        if d.get("version") != MODEL_VERSION:
            raise ValueError(f"{where}: version {d.get('version')!r} is not supported; this toolkit reads "
                             f"{MODEL_VERSION!r}")
        known = {f.name for f in fields(Constants)}
        consts = d.get("constants") or {}
        unknown = sorted(set(consts) - known)
        if unknown:
            raise ValueError(f"{where}: unknown constants {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for k, v in consts.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{where}: constant {k} must be a positive number, got {v!r}")
        return cls(Constants(**consts), d["version"], str(d.get("fitted_on", "")), d.get("fit"))


@lru_cache(maxsize=8)
def load_constants(path: str | None = None) -> FittedModel:
    p = Path(path) if path else DEFAULT_CONSTANTS_FILE
    if not p.is_file():
        if path:
            raise ValueError(f"edgetpu-model constants: file {str(p)!r} does not exist")
        log.warning("no fitted constants shipped at %s; using priors", p)
        return FittedModel(Constants())
    return FittedModel.from_json(p.read_text(), where=str(p))
