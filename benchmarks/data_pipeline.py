"""Real data at real size: a folder of 20,000 JPEGs through the one data pipeline, and the cost
and effect of scoring candidates on their int8 accuracy.

    python benchmarks/data_pipeline.py [--images 20000] [--size 96] [--resolution 64]
                                       [--epochs 2] [--steps 250] [--out benchmarks/results]

**The folder.** ``--images`` generated JPEGs of ``--size`` px in 10 class folders (each
class a colour and a shape at a random place and scale, with noise, so a model can learn
them; a few images of each class differ in size), in a temporary folder.

**Pipeline throughput.** Each measurement runs in a fresh process (so its peak RSS is its
own), reading the folder at ``--resolution`` px with ``data.cache_dir`` in a temporary
store, in three ways:

- *cold*: an empty store: the images are decoded into it first (timed apart), then read
  from it (``data.memory_mb: 0``, so every batch is read from disk);
- *warm*: the store built, read from disk batch by batch (``memory_mb: 0``);
- *memory*: the same store, held in memory (``memory_mb`` above its size): the in-memory
  reference.

For each: the pipeline alone (a pass over the training pipeline, no model), a standalone
proxy trial (the quickstart's proxy of EfficientNet-EdgeTPU-S at ``--resolution`` px,
width 0.25, depth 0.5, :func:`nas.trial.recipe.train_model`, ``--epochs`` epochs, batch 64,
intermediate validations on 500 images), and one-shot weight steps (``--steps`` steps of
the bench space's supernet, batch 64, each batch read with ``split.train_batch`` as the
one-shot search reads it). Images/s, peak RSS, and RSS after each epoch (steady or growing).
A fourth process reads a tenth of the images the warm way, for RSS against the set's size.

**Int8 scoring.** ``nas search experiments/quickstart.yaml`` with ``score.accuracy: int8``
(12 trials, 2 at a time): what scoring the int8 model costs a trial (``int8_s`` against
the rest of the trial) and how often float and int8 accuracy rank two trials the other way.

Writes ``data_pipeline.json`` and ``data_pipeline.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


def make_folder(root: Path, n: int, size: int, seed: int = 0) -> None:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 256, size=(10, 3))
    for c in range(10):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = i % 10
        s = size if i % 97 else int(size * 1.5)  # a few of another size, as real folders have
        bg = rng.integers(0, 90, size=3)
        img = Image.new("RGB", (s, s), tuple(int(v) for v in bg))
        d = ImageDraw.Draw(img)
        r = rng.uniform(0.15, 0.4) * s
        cx, cy = rng.uniform(r, s - r, size=2)
        box = (cx - r, cy - r, cx + r, cy + r)
        fill = tuple(int(v) for v in colours[c])
        (d.ellipse if c % 2 else d.rectangle)(box, fill=fill)
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-20, 21, size=(s, s, 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(root / f"class_{c}" / f"{i:06d}.jpg", quality=90)


# ------------------------------------------------------------------------------ one measurement (a process)

def worker(args) -> dict:
    import keras

    from nas.config import parse_experiment
    from nas.data import StoreSettings, load
    from nas.trial import peak_rss_mb, rss_mb

    memory = 64 * 1024 if args.mode == "memory" else 0
    settings = StoreSettings(cache_dir=args.cache, cache_bytes=100 * 2**30, memory_bytes=memory * 2**20)
    out: dict = {"mode": args.mode, "what": args.what}
    t0 = time.perf_counter()
    split = load(f"folder:{args.folder}", args.resolution, seed=0, limit=args.limit, settings=settings)
    _ = split.store  # built here when cold
    out["store_s"] = round(time.perf_counter() - t0, 2)
    out["n_train"] = split.n_train
    out["rss_after_load_mb"] = rss_mb()
    if args.what == "pipeline":
        train, _ = split.datasets(64, "none", 0)
        for epoch in range(2):
            t = time.perf_counter()
            n = sum(int(y.shape[0]) for _, y in train)
            out[f"epoch{epoch + 1}_images_per_s"] = round(n / (time.perf_counter() - t), 1)
        out["images_per_s"] = out["epoch2_images_per_s"]
    elif args.what == "trial":
        from nas.trial import proxy_of
        from nas.trial import train_model
        from search_spaces import build_model, reference

        cfg = parse_experiment({
            "space": {"name": "efficientnet_edgetpu", "resolution": args.resolution, "num_classes": 10},
            "proxy": {"width": 0.25, "depth": 0.5}, "reward": {"target_ms": 5.0}, "budget": {"trials": 1},
            "train": {"epochs": args.epochs, "batch_size": 64, "eval_images": 500}})
        small = proxy_of(reference("efficientnet_edgetpu_s", resolution=args.resolution), cfg)
        keras.utils.set_random_seed(0)
        model = build_model(small, (args.resolution,) * 2 + (3,), 10, seed=0)
        marks, rss = [time.perf_counter()], []

        def on_epoch(epoch, acc):
            marks.append(time.perf_counter())
            rss.append(rss_mb())

        acc, _ = train_model(model, split, cfg, on_epoch=on_epoch)
        per_epoch = np.diff(marks)
        out.update(epoch_s=[round(float(s), 2) for s in per_epoch], accuracy=round(acc, 4), rss_by_epoch_mb=rss,
                   images_per_s=round(split.n_train / float(per_epoch[-1]), 1),
                   first_epoch_images_per_s=round(split.n_train / float(per_epoch[0]), 1))
    else:
        import search_spaces
        from nas.oneshot import SupernetTrainer
        from search_spaces import Supernet

        space = search_spaces.get("efficientnet_edgetpu_bench", resolution=args.resolution, num_classes=10)
        rng = np.random.default_rng(0)
        net = Supernet(space, num_classes=10, seed=0)
        trainer = SupernetTrainer(net, total_steps=args.steps)
        order = rng.permutation(split.n_train)
        read_s, rss, t = 0.0, [], None
        for step in range(args.steps + 10):
            if step == 10:  # after the traces
                t, read_s = time.perf_counter(), 0.0
            pos = (step * 64) % (split.n_train - 64)
            r0 = time.perf_counter()
            x, y = split.train_batch(np.sort(order[pos:pos + 64]))
            read_s += time.perf_counter() - r0
            trainer.train(x, y, space.decode(space.sample_choices(rng)))
            if step % 50 == 49:
                rss.append(rss_mb())
        wall = time.perf_counter() - t
        out.update(images_per_s=round(64 * args.steps / wall, 1), read_share=round(read_s / wall, 3),
                   rss_by_50_steps_mb=rss)
    out["peak_rss_mb"] = peak_rss_mb()
    seen = {"pipeline": 2 * split.n_train, "trial": args.epochs * split.n_train, "oneshot": 64 * (args.steps + 10)}
    out["wall_images_per_s"] = round(seen[args.what] / (time.perf_counter() - t0), 1)  # store, tracing, all
    return out


def measure(folder: Path, cache: Path, mode: str, what: str, args, limit: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--what", what, "--folder", str(folder),
           "--cache", str(cache), "--resolution", str(args.resolution), "--epochs", str(args.epochs),
           "--steps", str(args.steps)] + (["--limit", str(limit)] if limit else [])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=7200)
    if r.returncode != 0:
        raise RuntimeError(f"{mode}/{what} failed:\n{r.stderr[-3000:]}")
    got = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"  {mode:>6} {what:>8}: {got['images_per_s']:>8.1f} img/s, peak RSS {got['peak_rss_mb']:.0f} MB"
          f"{', store built in %.1f s' % got['store_s'] if mode == 'cold' else ''}", flush=True)
    return got


# ------------------------------------------------------------------------------ int8 scoring

def int8_quickstart(out_dir: Path) -> dict:
    import yaml

    exp = yaml.safe_load(QUICKSTART.read_text())
    exp["score"] = {"accuracy": "int8"}
    path = out_dir / "quickstart_int8.yaml"
    path.write_text(yaml.safe_dump(exp))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(path), "--out", str(out_dir / "run"),
                        "--no-progress"], capture_output=True, text=True, cwd=ROOT, timeout=7200,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    wall = time.perf_counter() - t0
    import csv

    with open(out_dir / "run" / "trials.csv") as f:
        rows = [row for row in csv.DictReader(f) if row["status"] == "ok"]
    share = [float(r["int8_s"]) / (float(r["trial_s"]) - float(r["int8_s"])) for r in rows]
    acc = np.array([float(r["accuracy"]) for r in rows])
    q = np.array([float(r["int8_accuracy"]) for r in rows])
    pairs = [(i, j) for i in range(len(rows)) for j in range(i + 1, len(rows))
             if acc[i] != acc[j] and q[i] != q[j]]
    flipped = [(i, j) for i, j in pairs if (acc[i] > acc[j]) != (q[i] > q[j])]
    from scipy.stats import kendalltau, spearmanr

    best_float, best_int8 = int(np.argmax(acc)), int(np.argmax(q))
    return {
        "trials": len(rows), "wall_s": round(wall, 1),
        "int8_s": [round(float(r["int8_s"]), 2) for r in rows],
        "trial_s": [round(float(r["trial_s"]), 2) for r in rows],
        "int8_cost_share": {"mean": round(float(np.mean(share)), 3), "max": round(float(np.max(share)), 3),
                            "of": "int8_s / (trial_s - int8_s)"},
        "accuracy": acc.round(4).tolist(), "int8_accuracy": q.round(4).tolist(),
        "int8_minus_float": {"mean": round(float(np.mean(q - acc)), 4), "min": round(float(np.min(q - acc)), 4),
                             "max": round(float(np.max(q - acc)), 4)},
        "pairs": len(pairs), "pairs_ranked_other_way": len(flipped),
        "spearman": round(float(spearmanr(acc, q).statistic), 3),
        "kendall": round(float(kendalltau(acc, q).statistic), 3),
        "same_best_trial": best_float == best_int8,
    }


def table(res: dict) -> str:
    a = res["args"]
    lines = [f"# Real data at real size: {a['images']:,} JPEGs of {a['size']} px, read at {a['resolution']} px\n",
             f"`python benchmarks/data_pipeline.py --images {a['images']} --size {a['size']} --resolution "
             f"{a['resolution']} --epochs {a['epochs']} --steps {a['steps']}` ({res['cpus']} CPUs; "
             f"{res['total_s']:.0f} s)\n",
             f"Store of decoded images: built in {res['cold']['pipeline']['store_s']:.1f} s "
             f"({res['store_build_images_per_s']:.0f} images/s), {res['store_mb']:.0f} MB on disk.\n",
             "| what | read from | images/s (steady) | images/s (wall: store build, tracing, all) | peak RSS MB |",
             "|---|---|---|---|---|"]
    for what, label in (("pipeline", "pipeline alone"), ("trial", f"standalone proxy trial ({a['epochs']} epochs)"),
                        ("oneshot", f"one-shot weight steps ({a['steps']})")):
        for mode, src in (("cold", "empty store: built, then read from disk"), ("warm", "the store, from disk"),
                          ("memory", "the store, held in memory")):
            m = res[mode][what]
            lines.append(f"| {label} | {src} | {m['images_per_s']:.0f} | {m['wall_images_per_s']:.0f} | "
                         f"{m['peak_rss_mb']:.0f} |")
        ratio = res["warm"][what]["images_per_s"] / res["memory"][what]["images_per_s"]
        lines.append(f"| {label} | **warm store / in memory** | **{ratio:.2f}** | | |")
    w = res["warm"]
    lines += ["", f"RSS of the warm trial after each epoch: {w['trial']['rss_by_epoch_mb']} MB; of the warm one-shot "
              f"steps every 50 steps: {w['oneshot']['rss_by_50_steps_mb']} MB. A tenth of the images read the same "
              f"way: peak RSS {res['warm_tenth']['trial']['peak_rss_mb']:.0f} MB (trial) against "
              f"{w['trial']['peak_rss_mb']:.0f} MB for all of them."]
    q = res["int8"]
    lines += ["", "## Int8 scoring on the quickstart (`score.accuracy: int8`)\n",
              f"{q['trials']} trials, {q['wall_s']:.0f} s. Scoring the int8 model cost a trial "
              f"{100 * q['int8_cost_share']['mean']:.0f}% on average (at most "
              f"{100 * q['int8_cost_share']['max']:.0f}%) of the rest of the trial (target: at most 30%).",
              f"Int8 minus float accuracy: mean {q['int8_minus_float']['mean']:+.4f}, from "
              f"{q['int8_minus_float']['min']:+.4f} to {q['int8_minus_float']['max']:+.4f}. Of {q['pairs']} pairs "
              f"of trials, {q['pairs_ranked_other_way']} are ranked the other way by int8 accuracy "
              f"(Spearman {q['spearman']}, Kendall {q['kendall']}); the best trial by float accuracy is "
              f"{'the same' if q['same_best_trial'] else 'not the same'} as by int8."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--skip-int8", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for k in ("mode", "what", "folder", "cache"):
        p.add_argument(f"--{k}", help=argparse.SUPPRESS)
    p.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    t0 = time.perf_counter()
    res: dict = {"args": {k: getattr(args, k) for k in ("images", "size", "resolution", "epochs", "steps")},
                 "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="nas-datapipe-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "imgs"
        t = time.perf_counter()
        make_folder(folder, args.images, args.size)
        print(f"{args.images} JPEGs written in {time.perf_counter() - t:.0f} s", flush=True)
        for mode in ("cold", "warm", "memory"):
            res[mode] = {}
            for what in ("pipeline", "trial", "oneshot"):
                # cold: an empty store each time (the pipeline's becomes the warm runs' store)
                cache = tmp / ("cache" if mode != "cold" or what == "pipeline" else f"cold-{what}")
                res[mode][what] = measure(folder, cache, mode, what, args)
        res["warm_tenth"] = {"trial": measure(folder, tmp / "cache", "warm", "trial", args,
                                              limit=args.images // 10)}
        res["store_mb"] = sum(f.stat().st_size for f in (tmp / "cache").rglob("*") if f.is_file()) / 2**20
        cold = res["cold"]["pipeline"]
        res["store_build_images_per_s"] = round(args.images / cold["store_s"], 1)
        if not args.skip_int8:
            print("int8 scoring on the quickstart ...", flush=True)
            res["int8"] = int8_quickstart(tmp)
    res["total_s"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_pipeline.json").write_text(json.dumps(res, indent=1) + "\n")
    if "int8" in res:
        (out / "data_pipeline.md").write_text(table(res))
        print(table(res))


if __name__ == "__main__":
    main()
