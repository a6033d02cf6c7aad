"""Conversion and measurement throughput of the tflite-cpu source.

For EfficientNet-EdgeTPU-S at full width and scaled to proxy size (width 0.25, depth 0.5),
at 32, 96 and 224 px: seconds to build the Keras model, seconds to convert it to int8 by
the fast frozen-graph path and by TensorFlow's own SavedModel path (side by side, same
run), seconds to measure (50 timed invokes, 1 thread) and the measured latency; then
models measured per minute end to end (build + convert + measure, no cache).

    python benchmarks/latency_throughput.py [--repeats 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import search_spaces as s  # noqa: E402
from latency_models import Target, get_source  # noqa: E402
from latency_models import to_int8_tflite  # noqa: E402


def models():
    for res in (32, 96, 224):
        yield "edgetpu_s_w0.25_d0.5", s.reference("efficientnet_edgetpu_s", width=0.25, depth=0.5, resolution=res)
        yield "edgetpu_s", s.reference("efficientnet_edgetpu_s", resolution=res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="timings per model (median reported)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    src = get_source("tflite-cpu", threads=1, n_runs=50, warmup=2)
    rows = []
    print(f"{'model':<22} {'px':>4} {'params':>9} {'build_s':>8} {'frozen_s':>9} {'savedmodel_s':>12} "
          f"{'speedup':>7} {'measure_s':>9} {'latency_ms':>10}")
    for name, arch in models():
        b, f, sm, m, lat = [], [], [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model = s.build_model(arch, num_classes=10)
            t1 = time.perf_counter()
            blob = to_int8_tflite(model, method="frozen")
            t2 = time.perf_counter()
            to_int8_tflite(model, method="saved_model")
            t3 = time.perf_counter()
            r = src.measure(Target(blob))
            t4 = time.perf_counter()
            b.append(t1 - t0), f.append(t2 - t1), sm.append(t3 - t2), m.append(t4 - t3), lat.append(r.latency_ms)
        row = {"model": name, "px": arch.resolution, "params": s.count_params(arch, num_classes=10),
               "build_s": statistics.median(b), "convert_frozen_s": statistics.median(f),
               "convert_saved_model_s": statistics.median(sm), "measure_s": statistics.median(m),
               "latency_ms": statistics.median(lat)}
        rows.append(row)
        print(f"{name:<22} {row['px']:>4} {row['params']:>9,} {row['build_s']:>8.2f} {row['convert_frozen_s']:>9.2f} "
              f"{row['convert_saved_model_s']:>12.2f} {row['convert_saved_model_s'] / row['convert_frozen_s']:>6.1f}x "
              f"{row['measure_s']:>9.2f} {row['latency_ms']:>10.3f}", flush=True)
    for row in rows:
        row["models_per_minute"] = 60 / (row["build_s"] + row["convert_frozen_s"] + row["measure_s"])
    print("\nmodels measured per minute (build + frozen conversion + 50 timed runs, no cache):")
    for row in rows:
        print(f"  {row['model']:<22} {row['px']:>4} px  {row['models_per_minute']:.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
