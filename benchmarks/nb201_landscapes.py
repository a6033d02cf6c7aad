"""Build the NAS-Bench-201 decision tables ``nas bench`` ships: real accuracy, Edge TPU latency.

Writes ``nas/bench/tables/nb201_cifar100.csv`` and ``nas/bench/tables/nb201_imagenet16.csv`` (the format:
``nas/bench/table.py``) and ``benchmarks/results/nb201_landscapes.json`` / ``.md``:

- accuracy: NATS-Bench's 200-epoch test accuracy of every cell on CIFAR-100 and on
  ImageNet16-120 (``shared/data/natsbench``), as a fraction;
- latency: the published Edge TPU latency of the 1,000 cells EAGLE measured
  (``shared/data/edgetpu/eagle_nb201``, ``latency_from=measured``); for every other cell the
  ``edgetpu-model`` prediction for the very network EAGLE's builder makes of it
  (``benchmarks/nb201.py``), mapped onto the measured rows' scale by a linear fit
  ``measured ~ a * predicted + b`` on the 1,000 measured rows (``latency_from=edgetpu-model``).
  The fit's error is reported out of sample: 10-fold cross-validation with all rows of one
  network in the same fold (cells whose pruned graphs are identical build the same network);
- cells with no path from the cell's input to its output (341) are not rows: their network's
  output is a constant, EAGLE has none, and NATS-Bench gives them chance accuracy.

Cells whose pruned graph is identical build the same network, so the model is built and
predicted once per distinct pruned graph (9,444 of the 15,284 cells with a path):

    python benchmarks/nb201_landscapes.py --limit 300 --jobs 2   # time 300 networks, project; write nothing
    python benchmarks/nb201_landscapes.py --jobs 2               # the two tables and the results

On this 2-core VM: 300 networks took 71 s with 2 jobs (0.24 s each, start-up included, a
projection of 37 min), and the whole build 16.2 min (0.10 s per network in steady state; one
job per core; clearing Keras' session once per 100 models rather than per model halves
the cost). Predictions are cached in ``--cache`` (keyed by the builder's source and the model
version, with the time they took), so an interrupted build resumes and a re-run only rewrites
the tables.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "data"
NATS_CSV = SHARED / "natsbench" / "nb201_cifar100_imagenet16.csv"
EAGLE_CSV = SHARED / "edgetpu" / "eagle_nb201" / "calibration.csv"
TABLES = ROOT / "nas" / "bench" / "tables"
RESULTS = HERE / "results"
#: NB201's op names -> EAGLE's digits and the tables' choice names (digit order = choice order).
OPS = {"none": ("0", "none"), "skip_connect": ("1", "skip"), "nor_conv_1x1": ("2", "conv1x1"),
       "nor_conv_3x3": ("3", "conv3x3"), "avg_pool_3x3": ("4", "avgpool3x3")}
CHOICES = [name for _, name in OPS.values()]
DECISIONS = ("e1_0", "e2_0", "e2_1", "e3_0", "e3_1", "e3_2")  # NB201 arch-string order: edge into i from j
DATASETS = {"cifar100": "cifar100_test_acc", "imagenet16": "imagenet16_120_test_acc"}
FOLDS = 10


def _nb201():
    spec = importlib.util.spec_from_file_location("nb201", HERE / "nb201.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def arch_vector(arch_str: str) -> str:
    """NB201's ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` -> EAGLE's six digits."""
    tokens = [t for t in arch_str.strip("|").replace("|+|", "|").split("|")]
    if len(tokens) != 6:
        raise ValueError(f"not a NAS-Bench-201 arch string: {arch_str!r}")
    return "".join(OPS[t.split("~")[0]][0] for t in tokens)


def network_key(nb, vector: str) -> str | None:
    """The pruned cell graph (what the network is built from); None: no input-output path."""
    try:
        return ";".join(f"{t}{f}{op}" for (t, f), op in sorted(nb.parse(vector).items()))
    except ValueError:
        return None


_WORKER: dict = {}


def predict_chunk(vectors: list[str]) -> dict[str, float]:
    """edgetpu-model latency (ms) of each vector's network, as ``benchmarks/nb201.py`` builds it.

    Keras' session is cleared once per chunk, not per model: clearing costs about as much as
    building a network.
    """
    import keras

    from latency_models import Target, get_source

    if not _WORKER:
        _WORKER.update(nb=_nb201(), src=get_source("edgetpu-model"))
    nb, src = _WORKER["nb"], _WORKER["src"]
    out = {v: src.measure(Target(nb.build(v), name=f"nb201 {v}")).latency_ms for v in vectors}
    keras.backend.clear_session()
    return out


def predict(vectors: list[str], cache: Path, jobs: int = 1, chunk: int = 100) -> tuple[dict[str, float], float]:
    """:func:`predict_chunk` of every vector, in ``jobs`` processes, cached in ``cache`` as it goes;
    and the wall time the predictions took (cached ones included, as recorded when made)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from latency_models.edgetpu import MODEL_VERSION

    tag = hashlib.sha256((HERE / "nb201.py").read_bytes()).hexdigest()[:16] + "|" + MODEL_VERSION
    stored = json.loads(cache.read_text()) if cache.is_file() else {}
    if stored.get("tag") != tag:
        stored = {}
    done: dict[str, float] = stored.get("pred", {})
    before = float(stored.get("seconds", 0.0))  # what the cached predictions cost when they were made
    todo = [v for v in vectors if v not in done]
    chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    t0 = time.perf_counter()

    def store(part: dict[str, float]) -> None:
        done.update(part)
        cache.write_text(json.dumps({"tag": tag, "pred": done, "seconds": before + time.perf_counter() - t0}))
        n = len(done) - (len(vectors) - len(todo))
        print(f"  predicted {n}/{len(todo)} networks ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    if jobs > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            for part in pool.map(predict_chunk, chunks):
                store(part)
    else:
        for c in chunks:
            store(predict_chunk(c))
    return {v: done[v] for v in vectors}, before + time.perf_counter() - t0


def errors(pred: np.ndarray, meas: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    err = pred / meas - 1
    return {"n": len(meas), "median_abs_error": round(float(np.median(np.abs(err))), 4),
            "mean_error": round(float(np.mean(err)), 4), "within_10pct": round(float(np.mean(np.abs(err) <= 0.10)), 4),
            "within_20pct": round(float(np.mean(np.abs(err) <= 0.20)), 4),
            "spearman": round(float(spearmanr(pred, meas)[0]), 4)}


def calibrate(x: np.ndarray, y: np.ndarray, groups: list[str], unseen: np.ndarray, seed: int = 0) -> dict:
    """Least squares ``y ~ a x + b`` on all rows, and its error out of sample (grouped K-fold),
    also on the ``unseen`` rows alone (those the shipped ``edgetpu-model`` constants were not fitted on)."""
    a, b = np.polyfit(x, y, 1)
    nets = sorted(set(groups))
    fold_of = dict(zip(nets, np.random.default_rng(seed).permutation(len(nets)) % FOLDS))
    fold = np.array([fold_of[g] for g in groups])
    cv = np.empty_like(y)
    for k in range(FOLDS):
        ak, bk = np.polyfit(x[fold != k], y[fold != k], 1)
        cv[fold == k] = ak * x[fold == k] + bk
    # What a perfect predictor could reach: measured rows of one network against their twins' mean.
    twins: dict[str, list[float]] = {}
    for g, m in zip(groups, y):
        twins.setdefault(g, []).append(m)
    tw = [abs(np.delete(v, i).mean() / v[i] - 1) for v in map(np.array, twins.values()) if len(v) > 1
          for i in range(len(v))]
    return {"scale": float(a), "offset_ms": float(b), "uncalibrated": errors(x, y), "in_sample": errors(a * x + b, y),
            f"out_of_sample_{FOLDS}_fold_by_network": errors(cv, y),
            f"out_of_sample_{FOLDS}_fold_by_network_rows_unseen_by_edgetpu_model": errors(cv[unseen], y[unseen]),
            "noise_ceiling": {"networks": len(twins), "rows_with_a_twin": len(tw),
                              "twin_mean_within_10pct": round(float(np.mean(np.array(tw) <= 0.10)), 4),
                              "twin_median_abs_error": round(float(np.median(tw)), 4)}}


def write_table(path: Path, dataset: str, cells: list[dict], latency: dict[str, tuple[str, str]]) -> None:
    declared = "|".join(CHOICES)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow([f"d:{d}[{declared}]" for d in DECISIONS] + ["accuracy", "latency_ms", "latency_from"])
        for c in cells:
            ms, source = latency[c["vector"]]
            w.writerow([CHOICES[int(ch)] for ch in c["vector"]] + [str(Decimal(c[DATASETS[dataset]]) / 100), ms,
                                                                   source])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, metavar="N",
                    help="predict only N distinct networks, report the time and the projection, write nothing")
    ap.add_argument("--cache", default="/tmp/nb201_landscape_predictions.json")
    ap.add_argument("--jobs", type=int, default=1, help="processes that build and predict (default: %(default)s)")
    ap.add_argument("--out", default=str(TABLES), help="folder of the two tables (default: %(default)s)")
    args = ap.parse_args(argv)
    nb = _nb201()
    for f in (NATS_CSV, EAGLE_CSV):
        if not Path(f).is_file():
            raise SystemExit(f"error: {f} does not exist (the shared data folder)")
    with open(NATS_CSV, newline="") as fh:
        cells = [{**r, "vector": arch_vector(r["arch_str"])} for r in csv.DictReader(fh)]
    cells.sort(key=lambda c: c["vector"])
    if len({c["vector"] for c in cells}) != len(cells) or len(cells) != 5 ** 6:
        raise SystemExit(f"error: {NATS_CSV.name}: expected each of the 15,625 cells once")
    measured = {r["arch_vector"]: r for r in nb.rows(EAGLE_CSV)}
    by_vector = {c["vector"]: c for c in cells}
    bad = [v for v, r in measured.items() if by_vector[v]["arch_str"] != r["arch_str"]]
    if bad:
        raise SystemExit(f"error: EAGLE and NATS-Bench disagree on the arch string of {bad[0]}")
    keys = {c["vector"]: network_key(nb, c["vector"]) for c in cells}
    kept = [c for c in cells if keys[c["vector"]] is not None]
    reps: dict[str, str] = {}  # network -> the first cell that builds it
    for c in kept:
        reps.setdefault(keys[c["vector"]], c["vector"])
    print(f"{len(cells)} cells, {len(cells) - len(kept)} without an input-output path (dropped), "
          f"{len(reps)} distinct networks among the {len(kept)} kept; {len(measured)} measured", flush=True)
    todo = list(reps.values())
    if args.limit:
        sample = todo[:: max(1, len(todo) // args.limit)][:args.limit]
        with tempfile.TemporaryDirectory() as tmp:  # timed afresh, never from the cache
            _, secs = predict(sample, Path(tmp) / "predictions.json", args.jobs)
        print(f"{len(sample)} networks in {secs:.1f} s ({secs / len(sample):.3f} s each): all {len(todo)} would take "
              f"about {secs / len(sample) * len(todo) / 60:.1f} min")
        return 0
    t0 = time.perf_counter()
    net_pred, secs = predict(todo, Path(args.cache), args.jobs)
    pred = {v: net_pred[reps[keys[v]]] for v in (c["vector"] for c in kept)}
    mv = sorted(measured)
    x = np.array([pred[v] for v in mv])
    y = np.array([measured[v]["latency_ms"] for v in mv])
    # The shipped edgetpu-model constants were fitted with 100 of these rows (benchmarks/edgetpu_model.py:
    # the first 100 of a seed-0 permutation of the CSV's rows, as their own set-up); the other 900 it never saw.
    in_model_fit = {list(measured)[i] for i in np.random.default_rng(0).permutation(len(measured))[:100]}
    cal = calibrate(x, y, [keys[v] for v in mv], np.array([v not in in_model_fit for v in mv]))
    latency = {v: (f"{measured[v]['latency_ms']:.6f}", "measured") if v in measured
               else (f"{cal['scale'] * pred[v] + cal['offset_ms']:.4f}", "edgetpu-model") for v in pred}
    out = Path(args.out)
    for dataset in DATASETS:
        write_table(out / f"nb201_{dataset}.csv", dataset, kept, latency)
    oos = cal[f"out_of_sample_{FOLDS}_fold_by_network"]
    res = {"command": "python benchmarks/nb201_landscapes.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "cells": len(cells), "rows": len(kept), "dropped_no_path": len(cells) - len(kept),
           "distinct_networks": len(reps), "measured_rows": len(measured), "predicted_rows": len(kept) - len(measured),
           "predict_seconds": round(secs, 1), "this_run_seconds": round(time.perf_counter() - t0, 1),
           "calibration": cal}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "nb201_landscapes.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [f"# NAS-Bench-201 landscapes with Edge TPU latency (`{res['command'].strip()}`)", "",
             f"{res['rows']:,} rows per table ({res['dropped_no_path']} cells without an input-output path dropped); "
             f"{res['measured_rows']:,} measured, {res['predicted_rows']:,} predicted from {len(reps):,} distinct "
             f"networks ({secs / 60:.1f} min to build and predict).", "",
             f"Calibration: measured ~ {cal['scale']:.4f} x edgetpu-model {'-' if cal['offset_ms'] < 0 else '+'} "
             f"{abs(cal['offset_ms']):.4f} ms, least squares on the {len(mv):,} measured rows; its error out of sample "
             f"is that of {FOLDS}-fold cross-validation with every row of one network in the same fold.", "",
             "| predictor on the measured rows | n | median abs error | mean error | within 10% | within 20% | "
             "Spearman |", "|---|---|---|---|---|---|---|"]
    for name in ("uncalibrated", "in_sample", f"out_of_sample_{FOLDS}_fold_by_network",
                 f"out_of_sample_{FOLDS}_fold_by_network_rows_unseen_by_edgetpu_model"):
        e = cal[name]
        lines.append(f"| {name} | {e['n']} | {e['median_abs_error']:.1%} | {e['mean_error']:+.1%} | "
                     f"{e['within_10pct']:.1%} | {e['within_20pct']:.1%} | {e['spearman']:.3f} |")
    nz = cal["noise_ceiling"]
    lines += ["", f"Noise ceiling: {nz['rows_with_a_twin']} measured rows share their network with another measured "
                  f"row; against their twins' mean, median |error| {nz['twin_median_abs_error']:.1%}, "
                  f"{nz['twin_mean_within_10pct']:.1%} within 10%."]
    (RESULTS / "nb201_landscapes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}/nb201_cifar100.csv, nb201_imagenet16.csv; out of sample median |error| "
          f"{oos['median_abs_error']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
