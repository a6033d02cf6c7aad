"""What a GPU machine runs to check the GPU paths in one go; on a CPU it measures the CPU rows.

    python benchmarks/gpu_check.py [--quick] [--out benchmarks/results/gpu_check.json]

Lists the devices TensorFlow sees, then measures training throughput (images/s) of the
toolkit's own training step (``nas.trial.training.Step``: the fused optimizer, the trials' and
``nas export``'s step) on synthetic batches:

- the quickstart's proxies (3 archs of its space at 32 px, width 0.25, depth 0.5; batch 64)
  and EfficientNet-EdgeTPU-S at 224 px (batch 32), each on one GPU in float32 and
  mixed_float16, with XLA off and on, and on the CPU in float32 (without a GPU, the CPU in
  all four);
- the one-shot quickstart's supernet (``nas.oneshot.train.SupernetTrainer``, random paths,
  batch 64) on one GPU and on every GPU (MirroredStrategy).

Each row is a fresh Python (TensorFlow fixes its devices when it starts; ``CUDA_VISIBLE_DEVICES``
chooses them), timed after two warm-up steps (tracing, XLA's compile) over at least 5 steps
and 3 s. A row that cannot run here says why (no GPU; one GPU only). Prints one table and
writes the JSON. Sized to finish in a few minutes on one GPU; ``--quick`` times fewer steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ one row, in a child

def _row(spec: dict) -> dict:
    """Measure one row (run in a fresh Python by :func:`measure`)."""
    import numpy as np
    import tensorflow as tf

    from nas.config import load_experiment, override
    from nas.trial import precision, scope, setup_gpus, strategy

    cfg = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    cfg = override(cfg, **{"train.precision": spec["precision"], "train.jit_compile": spec["xla"],
                           "train.devices": "all" if spec.get("all_gpus") else "one"})
    setup_gpus(cfg, share=1.0)
    gpus = tf.config.list_logical_devices("GPU")
    if spec["device"] == "gpu" and not gpus:
        return {"skipped": "no GPU found"}
    if spec.get("all_gpus") and len(gpus) < 2:
        return {"skipped": f"{len(gpus)} GPU: nothing to spread over"}
    rng = np.random.default_rng(0)
    steps, seconds = spec["steps"], spec["seconds"]

    def timed(step_fn, batch: int) -> dict:
        for _ in range(2):  # tracing, and XLA's compile
            step_fn()
        t0, n = time.perf_counter(), 0
        while n < steps or time.perf_counter() - t0 < seconds:
            loss = step_fn()
            n += 1
        dt = time.perf_counter() - t0
        return {"images_per_s": round(n * batch / dt, 1), "steps": n, "seconds": round(dt, 2),
                "loss_finite": bool(np.isfinite(loss))}

    if spec["model"] == "supernet":
        from nas.trial import proxy_of, space_of
        from nas.ledger import make_space
        from nas.oneshot import OneShotSearch  # noqa: F401 (the supernet's own module)
        from nas.oneshot import SupernetTrainer
        from search_spaces import Supernet

        oc = load_experiment(ROOT / "experiments" / "oneshot_quickstart.yaml")
        oc = override(oc, **{"train.precision": spec["precision"], "train.jit_compile": spec["xla"],
                             "train.devices": "all" if spec.get("all_gpus") else "one"})
        space = space_of(make_space(oc), oc)
        strat = strategy(oc, "the supernet")
        batch = 64
        with scope(strat), precision(oc):
            net = Supernet(space, num_classes=10, seed=0)
            trainer = SupernetTrainer(net, total_steps=1000, jit_compile=spec["xla"],
                                      loss_scale=spec["precision"] == "mixed_float16", strategy=strat)
        res = net.input_shape_
        x = rng.random((batch, *res)).astype("float32")
        y = rng.integers(0, 10, batch).astype("int32")
        paths = [net.path(space.sample(i)) for i in range(8)]
        it = iter(range(10 ** 9))
        out = timed(lambda: trainer.train(x, y, paths[next(it) % 8]), batch)
        out["replicas"] = strat.num_replicas_in_sync if strat is not None else 1
        return out

    from nas.trial import proxy_of, space_of
    from nas.ledger import make_space
    from nas.trial import Step
    from search_spaces import build_model, reference

    if spec["model"] == "efficientnet_edgetpu_s":
        archs, res, batch = [reference("efficientnet_edgetpu_s")], 224, 32
    else:  # what the quickstart's trials train: its space's members, compound-scaled to their proxies
        space = make_space(cfg)
        archs = [proxy_of(space.sample(i), cfg) for i in range(3)]
        res, batch = archs[0].resolution, 64
    rates = []
    for arch in archs:
        with precision(cfg):
            model = build_model(arch, (res, res, 3), 10 if spec["model"] != "efficientnet_edgetpu_s" else 1000, seed=0)
        classes = model.output_shape[-1]
        step = Step(model, "adam", 1e-3, total_steps=1000, jit_compile=spec["xla"],
                    loss_scale=spec["precision"] == "mixed_float16")
        x = tf.constant(rng.random((batch, res, res, 3)).astype("float32"))
        y = tf.constant(rng.integers(0, classes, batch).astype("int32"))
        rates.append(timed(lambda: step.train(x, y), batch))
    return {"images_per_s": round(sum(r["images_per_s"] for r in rates) / len(rates), 1),
            "loss_finite": all(r["loss_finite"] for r in rates), "archs": len(archs),
            "steps": sum(r["steps"] for r in rates), "seconds": round(sum(r["seconds"] for r in rates), 2)}


def measure(spec: dict) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if spec["device"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif not spec.get("all_gpus"):
        env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, __file__, "--row", json.dumps(spec)], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=1800)
    wall = round(time.perf_counter() - t0, 1)
    if r.returncode != 0:
        return {**spec, "error": (r.stderr.strip().splitlines() or ["?"])[-1][:300], "wall_s": wall}
    return {**spec, **json.loads(r.stdout.strip().splitlines()[-1]), "wall_s": wall}


def devices() -> dict:
    code = ("import json, tensorflow as tf; print(json.dumps({'tensorflow': tf.__version__, 'cuda_build': "
            "tf.test.is_built_with_cuda(), 'devices': [d.name for d in tf.config.list_physical_devices()], "
            "'gpus': [tf.config.experimental.get_device_details(g).get('device_name', g.name) for g in "
            "tf.config.list_physical_devices('GPU')]}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 steps / 1 s per row instead of 5 / 3")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    ap.add_argument("--row", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.row:
        print(json.dumps(_row(json.loads(args.row))))
        return

    t_start = time.perf_counter()
    found = devices()
    has_gpu = bool(found["gpus"])
    print(f"TensorFlow {found['tensorflow']} (CUDA build: {found['cuda_build']}); devices: "
          f"{', '.join(found['devices'])}", file=sys.stderr)
    if not has_gpu:
        print("no GPU found: measuring the CPU rows only", file=sys.stderr)
    steps, seconds = (3, 1.0) if args.quick else (5, 3.0)
    specs = []
    for model in ("quickstart_proxies", "efficientnet_edgetpu_s"):
        for device in ("cpu", "gpu"):
            for prec in ("float32", "mixed_float16"):
                for xla in (False, True):
                    # With a GPU the CPU is the baseline only (float32, no XLA): the table's time
                    # goes to the GPU rows. Without one, every CPU row is measured.
                    if device == "cpu" and has_gpu and (prec != "float32" or xla):
                        continue
                    specs.append({"model": model, "device": device, "precision": prec, "xla": xla})
    specs += [{"model": "supernet", "device": "gpu", "precision": "float32", "xla": False, "all_gpus": False},
              {"model": "supernet", "device": "gpu", "precision": "float32", "xla": False, "all_gpus": True},
              {"model": "supernet", "device": "cpu", "precision": "float32", "xla": False}]
    rows = []
    for spec in specs:
        spec = {**spec, "steps": steps, "seconds": seconds}
        if spec["device"] == "gpu" and not has_gpu:
            rows.append({**spec, "skipped": "no GPU found"})
            continue
        rows.append(measure(spec))
        r = rows[-1]
        print(f"{r['model']} {r['device']} {r['precision']} xla={r['xla']}: "
              f"{r.get('images_per_s', r.get('skipped') or r.get('error'))}", file=sys.stderr)
    total = round(time.perf_counter() - t_start, 1)
    result = {"command": "python benchmarks/gpu_check.py" + (" --quick" if args.quick else ""),
              "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
              **found, "total_s": total, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nTensorFlow {found['tensorflow']}; GPUs: {', '.join(found['gpus']) or 'none found'}; {total:.0f} s\n")
    print("| model | device | precision | XLA | images/s | loss finite | note |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        dev = r["device"].upper() + (" (all GPUs)" if r.get("all_gpus") else "")
        rate = f"{r['images_per_s']:.0f}" if "images_per_s" in r else "-"
        note = r.get("skipped") or r.get("error") or (f"{r['replicas']} replica(s)" if "replicas" in r else "")
        print(f"| {r['model']} | {dev} | {r['precision']} | {'on' if r['xla'] else 'off'} | {rate} | "
              f"{r.get('loss_finite', '-')} | {note} |")


if __name__ == "__main__":
    main()
