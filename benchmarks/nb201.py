"""NAS-Bench-201 cell networks as measured on an Edge TPU (the EAGLE/LatBench calibration slice).

``shared/data/edgetpu/eagle_nb201/calibration.csv`` holds Edge TPU latencies of 1,000
NAS-Bench-201 networks. To calibrate ``edgetpu-model`` on them the very networks that ran
must be rebuilt; that folder's README says how the dataset authors built them, and
:func:`build` follows it to the letter:

- input 1x32x32x3, stem Conv2D 3x3 16 filters stride 1 'same', no bias, fused ReLU;
- three stacks of 5 identical cells at 16, 32 and 64 channels;
- a cell has nodes 0..3, node j = sum of op(node i) over the edges i<j; convs (1x1, 3x3) are
  stride 1 'same', no bias, fused ReLU, no batch norm; avg pool is 3x3 stride 1 'same'; skip
  is a direct connection; none edges and ops not on a path from node 0 to node 3 are dropped;
- after stacks 1 and 2 a reduction block doubles the channels: Conv 3x3 s2 + Conv 3x3 s1 (no
  bias, no activation) added to AvgPool 2x2 s2 + Conv 1x1 (no bias);
- head: global average pooling, Dense(10) with bias.

Write some of them and a measurements CSV for ``nas latency fit edgetpu-model``::

    python benchmarks/nb201.py --rows 0:20 --out nb201_cal     # nb201_cal/<arch>.keras + measurements.csv
    python benchmarks/nb201.py --check 3                       # Keras vs int8 TFLite op table, timings
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The 1,000-row slice beside the repo (shared/), else the 17 of its rows the tests ship.
_SHARED_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "edgetpu" / "eagle_nb201" / "calibration.csv"
_SHIPPED_SLICE = Path(__file__).resolve().parents[1] / "tests" / "data" / "eagle_nb201_slice.csv"
CALIBRATION_CSV = _SHARED_CSV if _SHARED_CSV.is_file() else _SHIPPED_SLICE

# Edge order of the arch vector (NAS-Bench-201's arch string order): (to, from).
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
OPS = {"0": "none", "1": "skip", "2": "conv1x1", "3": "conv3x3", "4": "avgpool3x3"}
STACK_CHANNELS = (16, 32, 64)
CELLS_PER_STACK = 5
INPUT_SHAPE = (32, 32, 3)
CLASSES = 10


def parse(arch_vector: str) -> dict[tuple[int, int], str]:
    """``{(to, from): op}`` of the edges that lie on a path from the cell input to its output.

    Raises ``ValueError`` for a malformed vector or a cell with no such path (the dataset has
    none: such a cell would output zeros).
    """
    if not (isinstance(arch_vector, str) and len(arch_vector) == 6 and all(ch in OPS for ch in arch_vector)):
        raise ValueError(f"arch_vector: expected six digits 0-4 (one op per edge: "
                         f"{', '.join(f'{k} {v}' for k, v in OPS.items())}), got {arch_vector!r}")
    present = {e: OPS[ch] for e, ch in zip(EDGES, arch_vector) if ch != "0"}
    # Reachable from node 0 going forward, and reaching node 3 going backward.
    fwd = {0}
    for j in (1, 2, 3):
        if any(i in fwd for (t, i) in present if t == j):
            fwd.add(j)
    bwd = {3}
    for i in (2, 1, 0):
        if any(t in bwd for (t, f) in present if f == i):
            bwd.add(i)
    if 3 not in fwd:
        raise ValueError(f"arch_vector {arch_vector!r}: no path from the cell input to its output")
    return {(t, f): op for (t, f), op in present.items() if f in fwd and t in bwd}


def _init(seed: int, name: str):
    import keras

    # One seed per layer from the build seed and the layer's name (as search_spaces' builder
    # does): same arch and seed, same weights, and no two layers share initial weights.
    return keras.initializers.GlorotUniform(seed=(seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31 - 1))


def _conv(x, filters: int, kernel: int, name: str, seed: int, *, strides: int = 1, relu: bool = True):
    import keras

    return keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                               activation="relu" if relu else None, kernel_initializer=_init(seed, name),
                               name=name)(x)


def _cell(x, edges: dict[tuple[int, int], str], channels: int, prefix: str, seed: int):
    import keras

    nodes = {0: x}
    # Average pools of one node are one op: the int8 converter merges identical pools of the
    # same tensor (NB201 vector 442334 has pools 1<-0 and 2<-0: 47 pools in the Keras graph,
    # 32 in the .tflite), and the .tflite is what ran on the device.
    pools: dict[int, object] = {}
    for j in (1, 2, 3):
        terms = []
        for (t, i), op in sorted(edges.items(), key=lambda e: e[0][1]):
            if t != j:
                continue
            name = f"{prefix}_e{j}{i}_{op}"
            if op == "skip":
                terms.append(nodes[i])
            elif op == "conv1x1":
                terms.append(_conv(nodes[i], channels, 1, name, seed))
            elif op == "conv3x3":
                terms.append(_conv(nodes[i], channels, 3, name, seed))
            else:
                if i not in pools:
                    pools[i] = keras.layers.AveragePooling2D(3, strides=1, padding="same", name=name)(nodes[i])
                terms.append(pools[i])
        if terms:
            nodes[j] = terms[0] if len(terms) == 1 else keras.layers.Add(name=f"{prefix}_n{j}")(terms)
    return nodes[3]


def _reduction(x, channels: int, prefix: str, seed: int):
    import keras

    a = _conv(x, channels, 3, f"{prefix}_a", seed, strides=2, relu=False)
    a = _conv(a, channels, 3, f"{prefix}_b", seed, relu=False)
    b = keras.layers.AveragePooling2D(2, strides=2, name=f"{prefix}_pool")(x)
    b = _conv(b, channels, 1, f"{prefix}_proj", seed, relu=False)
    return keras.layers.Add(name=f"{prefix}_add")([a, b])


def build(arch_vector: str, seed: int = 0):
    """The NAS-Bench-201 network of ``arch_vector`` as measured (a functional Keras model, batch 1)."""
    import keras

    edges = parse(arch_vector)
    inp = keras.Input(INPUT_SHAPE, batch_size=1, name="image")
    x = _conv(inp, STACK_CHANNELS[0], 3, "stem", seed)
    for s, channels in enumerate(STACK_CHANNELS):
        if s:
            x = _reduction(x, channels, f"red{s}", seed)
        for c in range(CELLS_PER_STACK):
            x = _cell(x, edges, channels, f"s{s}c{c}", seed)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(CLASSES, kernel_initializer=_init(seed, "classifier"), name="classifier")(x)
    return keras.Model(inp, out, name=f"nb201_{arch_vector}")


def rows(path: str | Path = CALIBRATION_CSV) -> list[dict]:
    """The calibration CSV's rows: ``arch_vector``, ``arch_str``, ``latency_ms`` (a float)."""
    with open(path, newline="") as fh:
        return [{**r, "latency_ms": float(r["latency_ms"])} for r in csv.DictReader(fh)]


def write(selected: list[dict], out: Path) -> Path:
    """``out/<arch_vector>.keras`` per row and ``out/measurements.csv`` (model,latency_ms)."""
    out.mkdir(parents=True)
    with open(out / "measurements.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "latency_ms"])
        for r in selected:
            name = f"{r['arch_vector']}.keras"
            build(r["arch_vector"]).save(out / name)
            w.writerow([name, r["latency_ms"]])
    return out / "measurements.csv"


def _slice(text: str, n: int) -> slice:
    a, sep, b = text.partition(":")
    try:
        s = slice(int(a) if a else 0, int(b) if b else n) if sep else slice(int(a), int(a) + 1)
    except ValueError:
        raise SystemExit(f"error: --rows: expected START:STOP (e.g. 0:20), got {text!r}") from None
    if not 0 <= s.start < s.stop <= n:
        raise SystemExit(f"error: --rows: {text!r} is outside the CSV's rows 0:{n}")
    return s


def check(arch_vector: str) -> dict:
    """Keras analysis vs the int8 TFLite's (what the converter makes of the model): op counts and MACs."""
    from latency_models.analysis import analyze_keras, analyze_tflite
    from latency_models import to_int8_tflite

    t0 = time.perf_counter()
    model = build(arch_vector)
    t1 = time.perf_counter()
    ka = analyze_keras(model)
    t2 = time.perf_counter()
    ta = analyze_tflite(to_int8_tflite(model))
    t3 = time.perf_counter()
    return {"arch": arch_vector, "keras_ops": Counter(o.op_type for o in ka.ops),
            "tflite_ops": Counter(o.op_type for o in ta.ops), "keras_macs": ka.total_macs, "tflite_macs": ta.total_macs,
            "build_s": t1 - t0, "analyze_s": t2 - t1, "convert_s": t3 - t2}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default=str(CALIBRATION_CSV), help="the calibration CSV (default: %(default)s)")
    ap.add_argument("--rows", default=None, help="START:STOP, the CSV rows (0-based, header excluded) to build")
    ap.add_argument("--out", default=None, help="folder to write (must not exist)")
    ap.add_argument("--check", type=int, default=0, metavar="N",
                    help="compare the Keras and int8 TFLite analyses of the first N selected rows")
    args = ap.parse_args(argv)
    if not Path(args.csv).is_file():
        raise SystemExit(f"error: --csv: {args.csv!r} does not exist")
    all_rows = rows(args.csv)
    selected = all_rows[_slice(args.rows, len(all_rows))] if args.rows else all_rows
    if args.out:
        out = Path(args.out)
        if out.exists():
            raise SystemExit(f"error: --out: {args.out!r} already exists; choose a new folder")
        t0 = time.perf_counter()
        csv_path = write(selected, out)
        print(f"wrote {len(selected)} models and {csv_path} in {time.perf_counter() - t0:.1f} s")
    for r in selected[:args.check]:
        c = check(r["arch_vector"])
        same = c["keras_ops"] == c["tflite_ops"] and c["keras_macs"] == c["tflite_macs"]
        print(f"{c['arch']} {'agree' if same else 'DIFFER'}: MACs keras {c['keras_macs']:,} tflite {c['tflite_macs']:,}; "
              f"build {c['build_s']:.2f} s, analyze {c['analyze_s']:.2f} s, convert {c['convert_s']:.1f} s")
        print(f"  keras  {dict(sorted(c['keras_ops'].items()))}")
        if not same:
            print(f"  tflite {dict(sorted(c['tflite_ops'].items()))}")
    if not args.out and not args.check:
        ap.error("nothing to do: give --out (with --rows) and/or --check N")
    return 0


if __name__ == "__main__":
    sys.exit(main())
