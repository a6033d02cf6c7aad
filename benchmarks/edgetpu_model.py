"""Fit ``edgetpu-model`` to the public Edge TPU measurements and check it.

Writes the shipped constants (latency_models/data/edgetpu_model.json) and prints:
- every calibration row: measured vs predicted latency and on/off-chip MiB (target: median
  absolute error <= 20%);
- monotonicity: predicted latency never falls as MACs grow (resolution sweep) or as
  parameter bytes grow (width sweep);
- the cache cliff: networks whose compiled parameters exceed the SRAM (ResNet-50 at 299 px,
  VGG16) are predicted streaming-dominated;
- the published EfficientNet-EdgeTPU claim: EdgeTPU-S several times (Google: ~10x) faster
  than ResNet-50.

    python benchmarks/edgetpu_model.py [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import search_spaces as s  # noqa: E402
from latency_models import edgetpu_model as em  # noqa: E402
from latency_models.analysis import analyze_arch, analyze_keras  # noqa: E402
from latency_models.edgetpu_calibration import MEASUREMENTS, calibration_rows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true", help="do not overwrite the shipped constants")
    args = ap.parse_args()

    rows, skipped = calibration_rows()
    consts, report = em.fit(rows)
    model = em.FittedModel(consts, fitted_on=f"public measurements ({MEASUREMENTS.name}, {len(rows)} rows)",
                           fit={k: v for k, v in report.items()})
    if not args.no_write:
        em.DEFAULT_CONSTANTS_FILE.write_text(model.to_json() + "\n")
        em.load_constants.cache_clear()
    print(f"fitted on {len(rows)} rows; skipped (not buildable in Keras): {'; '.join(skipped)}\n")
    print(f"{'row':<58} {'meas ms':>8} {'pred ms':>8} {'error':>7} {'on MiB':>7} {'off MiB':>8}")
    for r in report["rows"]:
        meas = "" if r["measured_on_chip_mib"] is None else f" (meas {r['measured_on_chip_mib']}/{r['measured_off_chip_mib']})"
        print(f"{r['name'][:58]:<58} {r['measured_ms']:>8.2f} {r['predicted_ms']:>8.2f} {r['error']:>+7.1%} "
              f"{r['on_chip_mib']:>7.2f} {r['off_chip_mib']:>8.2f}{meas}")
    print(f"\nmedian |error| {report['median_abs_error']:.1%}  max |error| {report['max_abs_error']:.1%}  "
          f"(target: median <= 20%)")
    print("constants: " + ", ".join(f"{n}={getattr(consts, n):.4g}" for n in em.Constants.fitted_names()))

    src = em.EdgeTPUModelSource()

    def pred(analysis):
        return src.predict_analysis(analysis, with_layers=False)

    print("\nmonotone in MACs (EfficientNet-EdgeTPU-S, 64..320 px):")
    lat = [pred(analyze_arch(s.reference("efficientnet_edgetpu_s", resolution=r))).latency_ms for r in range(64, 321, 32)]
    print("  " + " ".join(f"{v:.2f}" for v in lat), "->", "monotone" if lat == sorted(lat) else "NOT MONOTONE")
    print("monotone in parameter bytes (EfficientNet-EdgeTPU-S width 0.5..2.0 at 224 px):")
    ws = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    preds = [pred(analyze_arch(s.reference("efficientnet_edgetpu_s", width=w))) for w in ws]
    for w, p in zip(ws, preds):
        print(f"  width {w:<5} latency {p.latency_ms:7.2f} ms  on-chip {p.on_chip_bytes / em.MIB:5.2f} MiB  "
              f"off-chip {p.off_chip_bytes / em.MIB:6.2f} MiB")
    lat = [p.latency_ms for p in preds]
    print("  ->", "monotone" if lat == sorted(lat) else "NOT MONOTONE")

    print("\ncache cliff (streaming share of the predicted time):")
    nets = {"resnet50@299": keras.applications.ResNet50(weights=None, input_shape=(299, 299, 3)),
            "resnet50@224": keras.applications.ResNet50(weights=None),
            "vgg16@224": keras.applications.VGG16(weights=None)}
    results = {}
    for name, net in nets.items():
        p = pred(analyze_keras(net))
        results[name] = p
        print(f"  {name:<14} {p.latency_ms:8.2f} ms  stream {p.stream_ms:7.2f} ms  compute {p.compute_ms:6.2f} ms  "
              f"on-chip {p.on_chip_bytes / em.MIB:5.2f} MiB  off-chip {p.off_chip_bytes / em.MIB:6.2f} MiB  "
              f"{'streaming-dominated' if p.stream_ms > p.compute_ms else 'compute-dominated'}")
    edge_s = pred(analyze_arch(s.reference("efficientnet_edgetpu_s")))
    for name in ("resnet50@224", "resnet50@299"):
        print(f"\nEfficientNet-EdgeTPU-S {edge_s.latency_ms:.2f} ms (off-chip {edge_s.off_chip_bytes} B) vs {name} "
              f"{results[name].latency_ms:.2f} ms: {results[name].latency_ms / edge_s.latency_ms:.1f}x faster")
    mb = [pred(analyze_arch(s.reference(n))) for n in ("mobilenet_v2", "mnasnet_a1", "efficientnet_edgetpu_m",
                                                         "efficientnet_edgetpu_l")]
    print("other references:", ", ".join(f"{n} {p.latency_ms:.2f} ms" for n, p in
                                          zip(("mobilenet_v2", "mnasnet_a1", "edgetpu_m", "edgetpu_l"), mb)))
    assert statistics.median(abs(r["error"]) for r in report["rows"]) <= 0.20


if __name__ == "__main__":
    main()
