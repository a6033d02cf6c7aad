"""Searched models vs EfficientNet-EdgeTPU-S and MnasNet-A1: deployment latency, proxy accuracy.

    nas search experiments/searched_vs_references.yaml --out runs/svr
    python benchmarks/searched_vs_references.py runs/svr

Takes the search's Pareto front (proxy accuracy vs deployment latency; at most ``--top``
archs, the highest-reward ones) and the two references at the search's deployment scale
(its resolution, width, depth and classes), and runs each through the search's own trial
on ``--seeds`` seeds: latency, memory and size of the deployment model from the run's source
(``edgetpu-model``), accuracy of its proxy trained with the run's exact recipe. One accuracy
from a search is one draw of a noisy number (the search keeps the lucky draws: the winner's
curse), so every model here is retrained on fresh seeds and reported as mean ± std. Writes
``searched_vs_references.md`` (the table), ``.json`` and ``.png`` (the plot, with the 512
archs of the tabular benchmark in grey: their deployment latency and the accuracy of their
proxies, trained with the same recipe) to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REFERENCES = {"efficientnet_edgetpu_s": "EfficientNet-EdgeTPU-S", "mnasnet_a1": "MnasNet-A1"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="run folder of experiments/searched_vs_references.yaml (or any search)")
    ap.add_argument("--top", type=int, default=4, help="Pareto archs to retrain (highest reward first; default 4)")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds per model (default 3)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the .md and .png")
    ap.add_argument("--plot-only", action="store_true",
                    help="redraw the plot from the .json of an earlier run (e.g. once the table exists)")
    args = ap.parse_args()

    from nas.bench import DEFAULT_TABLE
    from nas.core import pareto_front
    from nas.ledger import RunFolder
    from nas.trial import run_trial
    from search_spaces import reference

    run = RunFolder(args.run_dir)
    cfg = run.experiment()
    results = run.results()
    out = Path(args.out)
    if args.plot_only:
        rows = json.loads((out / "searched_vs_references.json").read_text())
        plot(rows, results, out / "searched_vs_references.png", DEFAULT_TABLE)
        print(f"wrote {out}/searched_vs_references.png")
        return
    front = sorted(pareto_front(results), key=lambda r: -r.reward)[: args.top]
    if not front:
        sys.exit(f"error: {args.run_dir}: no successful trial to compare")
    sp = cfg.space
    models = [(f"searched #{i + 1}", r.arch, r) for i, r in enumerate(front)]
    for key, label in REFERENCES.items():  # at the deployment scale; trained as their proxies, like every trial
        arch = reference(key, width=sp.width or 1.0, depth=sp.depth or 1.0, resolution=sp.resolution,
                         num_classes=sp.num_classes)
        models.append((label, arch.to_string(), None))

    rows = []
    t0 = time.time()
    for label, arch, found in models:
        runs = []
        for seed in range(args.seeds):
            r = run_trial(arch, cfg.model_copy(update={"seed": seed}))
            if not r.usable:
                print(f"{label} seed {seed}: {r.status.value} {r.reason}", file=sys.stderr)
                continue
            runs.append(r)
        accs = [r.accuracy for r in runs]
        first = runs[0] if runs else None
        rows.append({"model": label, "arch": arch, "proxy_arch": first.proxy_arch if first else None,
                     "accuracy_mean": statistics.fmean(accs) if accs else float("nan"),
                     "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "n": len(accs),
                     "search_accuracy": found.accuracy if found else None,
                     "latency_ms": first.latency_ms if first else float("nan"),
                     "params": first.params if first else None, "macs": first.macs if first else None,
                     "proxy_params": first.proxy_params if first else None,
                     "on_chip_bytes": first.on_chip_bytes if first else None,
                     "off_chip_bytes": first.off_chip_bytes if first else None})
        print(f"{label:24s} acc {rows[-1]['accuracy_mean']:.4f} ± {rows[-1]['accuracy_std']:.4f}  "
              f"lat {rows[-1]['latency_ms']:.3f} ms  ({time.time() - t0:.0f} s)", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    md = markdown(rows, cfg, args, len(results))
    (out / "searched_vs_references.json").write_text(json.dumps(rows, indent=1))
    (out / "searched_vs_references.md").write_text(md)
    plot(rows, results, out / "searched_vs_references.png", DEFAULT_TABLE)
    print(md)
    print(f"wrote {out}/searched_vs_references.md and .png in {time.time() - t0:.0f} s")


def markdown(rows, cfg, args, n_trials) -> str:
    refs = [r for r in rows if r["model"] in REFERENCES.values()]
    from nas.trial import describe

    lines = [f"Search: `{cfg.name}` ({n_trials} trials, {cfg.controller.name} controller; {describe(cfg)}; "
             f"{cfg.reward.preset} {cfg.reward.kind} reward at {cfg.reward.target_ms} ms; {cfg.data.source} "
             f"limit {cfg.data.limit}, {cfg.train.epochs} epochs). Every model retrained on {args.seeds} seeds "
             f"with the same recipe; latency, memory and params of the deployment model from "
             f"{cfg.latency.source}, accuracy of its proxy.", "",
             "| model | proxy accuracy (mean ± std) | in the search | deployment latency (ms) | params | "
             "off-chip MiB | MACs | proxy params | dominates |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        beats = [ref["model"] for ref in refs if ref is not r and r["accuracy_mean"] >= ref["accuracy_mean"]
                 and r["latency_ms"] <= ref["latency_ms"]]
        sa = f"{r['search_accuracy']:.4f}" if r["search_accuracy"] is not None else "-"
        off = f"{r['off_chip_bytes'] / 2**20:.2f}" if r.get("off_chip_bytes") is not None else "-"
        lines.append(f"| {r['model']} | {r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f} | {sa} | "
                     f"{r['latency_ms']:.3f} | {r['params']:,} | {off} | {r['macs']:,} | "
                     f"{r['proxy_params']:,} | {', '.join(beats) or '-'} |")
    lines.append("")
    lines.append("`dominates`: the reference(s) this model matches or beats on both mean accuracy and latency.")
    return "\n".join(lines) + "\n"


def plot(rows, results, path: Path, table_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    if table_path.is_file():
        with open(table_path) as f:
            t = [r for r in csv.DictReader(f) if r["seed"] == "0" and r["status"] == "ok"]
        ax.scatter([float(r["latency_ms"]) for r in t], [float(r["accuracy"]) for r in t], s=8, c="0.8",
                   label=f"tabular benchmark ({len(t)} archs, 1 seed)", zorder=1)
    ok = [r for r in results if r.usable]
    ax.scatter([r.latency_ms for r in ok], [r.accuracy for r in ok], s=14, c="tab:blue", alpha=0.5,
               label=f"search trials ({len(ok)}, 1 seed)", zorder=2)
    off = [r for r in ok if r.off_chip]
    ax.scatter([r.latency_ms for r in off], [r.accuracy for r in off], s=50, facecolors="none",
               edgecolors="tab:red", lw=0.8, label=f"parameters off-chip ({len(off)})", zorder=2)
    for i, r in enumerate(rows):
        ref = not r["model"].startswith("searched")
        ax.errorbar(r["latency_ms"], r["accuracy_mean"], yerr=r["accuracy_std"], fmt="s" if ref else "o", ms=8,
                    capsize=3, color="tab:red" if ref else "tab:green", zorder=3)
        # alternate label sides: Pareto archs sit close together
        ax.annotate(r["model"], (r["latency_ms"], r["accuracy_mean"]), textcoords="offset points",
                    xytext=(8, 4) if i % 2 == 0 else (8, -12), fontsize=8)
    ax.errorbar([], [], fmt="o", color="tab:green", label="searched, retrained (mean ± std)")
    ax.errorbar([], [], fmt="s", color="tab:red", label="references, same recipe (mean ± std)")
    from nas.results import latency_axis

    latency_axis(ax)
    ax.set(xlabel="deployment model's predicted Edge TPU latency (ms, edgetpu-model, log scale)",
           ylabel="validation accuracy of its proxy",
           title="Searched vs references: deployment latency, proxy accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
