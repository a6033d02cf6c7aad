"""Prediction speed: archs per second of the edgetpu-model and the host predictor, batched,
against one real tflite-cpu measurement (conversion included), side by side in one run.

For each built-in space at proxy scale (64 px, width 0.5, depth 0.5) and at full size, it
samples N archs and predicts them in one batch in fresh worker processes ("cold": every
stage lowered for the first time), then N *other* archs in the same processes ("warm": the
stages met before are cached, as in a long search). Two worker processes share each batch,
one per core.

    python benchmarks/predictor_speed.py [--n 20000]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import search_spaces as s  # noqa: E402

SETTINGS = {"proxy (64 px, w0.5, d0.5)": {"resolution": 64, "width": 0.5, "depth": 0.5, "num_classes": 10},
            "full size (224 px)": {}}


def _work(args):
    space, kwargs, n, seed, which = args
    sp = s.get(space, **kwargs)
    rng = np.random.default_rng(seed)
    batches = [[sp.sample(rng) for _ in range(n)] for _ in range(2)]
    out = []
    for archs in batches:  # cold, then warm (new archs, cached stages)
        t = time.perf_counter()
        if which == "edgetpu-model":
            from latency_models.edgetpu import predict_batch

            predict_batch(archs)
        else:
            from latency_models import LearnedSource

            LearnedSource().predictor.predict(archs)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print(f"{'predictor':<16} {'space':<22} {'setting':<26} {'cold archs/s':>13} {'warm archs/s':>13}")
    rates = {}
    for which in ("edgetpu-model", "tflite-cpu-model"):
        for space in ("efficientnet_edgetpu", "mnasnet"):
            for label, kwargs in SETTINGS.items():
                per = args.n // args.workers
                with ProcessPoolExecutor(args.workers) as ex:
                    t = time.perf_counter()
                    res = list(ex.map(_work, [(space, kwargs, per, i, which) for i in range(args.workers)]))
                cold = args.n / max(r[0] for r in res)
                warm = args.n / max(r[1] for r in res)
                rates[(which, space, label)] = (cold, warm)
                print(f"{which:<16} {space:<22} {label:<26} {cold:>13,.0f} {warm:>13,.0f}", flush=True)

    from latency_models import Target, get_source

    arch = s.get("efficientnet_edgetpu", **SETTINGS["proxy (64 px, w0.5, d0.5)"]).sample(0)
    t = time.perf_counter()
    get_source("tflite-cpu", n_runs=30).measure(Target(arch, cache=False))
    one = time.perf_counter() - t
    cold = rates[("edgetpu-model", "efficientnet_edgetpu", "proxy (64 px, w0.5, d0.5)")][0]
    print(f"\none tflite-cpu measurement (conversion + 30 timed runs): {one:.2f} s; "
          f"edgetpu-model predicts {one * cold:,.0f} archs in that time (cold)")


if __name__ == "__main__":
    main()
