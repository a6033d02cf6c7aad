"""One Edge TPU, four concurrent trials: today's design (each trial holds the device for its
whole life) against the measurement service (training never holds it), side by side.

    python benchmarks/device_service.py [--trials 12] [--seconds 2] [--rounds 1]

Both runs are the same ``nas search`` of the quickstart's experiment with concurrency 4 and
``latency.source: edgetpu``, on an embedded Ray with 2 CPUs (``cpus_per_trial`` 0.5, so four
trainings fit the two cores) and one device. There is no Edge TPU here, so the device is the
``replay`` backend, a fixed ``--seconds`` per measurement (default 2 s), and the compiler a
fake ``edgetpu_compiler`` on PATH that copies the model and prints a real compiler log
(``tests/data/compiler_logs``); the int8 conversion, the compiler-report parse, Ray, the
trials and the service are the real code. The ``random`` controller, so both designs train
the very same archs.

- ``trial``: ``latency.service.mode: trial``, the design before the service: a trial asks Ray
  for the ``edgetpu`` resource for its whole life (train, convert, compile, time), so one
  device runs one trial at a time whatever the concurrency;
- ``service``: the default: trials train four at a time and convert where they run; one
  measurement actor holds the device and times their models in order.

``--workload light`` shrinks each trial's own work (a 64 px deployment model, one epoch on
1,000 digits) to about the device's time.

What to expect on a small machine: with C CPU-seconds of work per trial (training and the
int8 conversion), D seconds of device per measurement, N trials and K cores, today's design
takes about N (C + D) and the service at least max(N C / K, N D). On 2 cores that bounds the
ratio at 0.44 for the quickstart's trials (C ~15 s) and 0.38 for the light ones (C ~6 s),
before the cost of running four trainings on two cores; with cores (or GPUs) for every
concurrent trial it is D / (C + D).

Rounds alternate the two (A B A B ...), each a fresh ``nas search`` process timed start to
exit, with an empty cache of converted models (``NAS_CACHE_DIR``) of its own. Writes ``benchmarks/results/device_service.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LOG = ROOT / "tests" / "data" / "compiler_logs" / "v15_all_mapped_small_spill.txt"


def fake_compiler(bin_dir: Path) -> None:
    """The tests' fake ``edgetpu_compiler`` (tests/fakes.py): copies its input as the compiled
    model and prints a real v15 compiler log."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fakes import make_fake_compiler

    make_fake_compiler(bin_dir, LOG)


#: ``light``: each trial's own work (training and converting) shrunk to about the device's 2 s,
#: as on a cluster whose GPUs train fast and whose trials convert on many nodes' CPUs at once:
#: a 64 px deployment model (conversion ~1-2 s, against ~5 s at 128 px), one epoch on 1,000 digits.
WORKLOADS = {"quickstart": {}, "light": {"space": {"resolution": 64, "width": 0.5}, "train": {"epochs": 1},
                                         "data": {"limit": 1000}}}


def experiment(mode: str, trials: int, seconds: float, workload: str = "quickstart") -> dict:
    base = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
    for section, changes in WORKLOADS[workload].items():
        base[section] = {**base[section], **changes}
    base["name"] = f"device_service_{mode}"
    base["controller"] = {"name": "random"}
    base["latency"] = {"source": "edgetpu", "options": {"backend": "replay", "n_runs": 20,
                                                        "replay": {"seconds": seconds}},
                       "service": {"mode": mode}}
    base["budget"] = {"trials": trials, "concurrency": 4, "cpus_per_trial": 0.5}
    base["ray"] = {"num_cpus": 2}
    return base


def run(mode: str, trials: int, seconds: float, tmp: Path, env: dict, tag: str, workload: str) -> dict:
    exp = tmp / f"{mode}-{tag}.yaml"
    exp.write_text(yaml.safe_dump(experiment(mode, trials, seconds, workload)))
    out = tmp / f"{mode}-{tag}"
    # A cache of converted models of its own: runs train the same archs, and a conversion
    # cached by an earlier run would spare a later one its work.
    env = {**env, "NAS_CACHE_DIR": str(tmp / f"cache-{mode}-{tag}")}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(exp), "--out", str(out), "--no-progress"],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"nas search ({mode}) failed:\n{r.stderr[-3000:]}")
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    starts = sorted(float(x["started"]) for x in rows)
    spans = [(float(x["started"]), float(x["started"]) + float(x["trial_s"])) for x in rows]
    # the most trials that ran at once
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    now = most = 0
    for _, d in events:
        now += d
        most = max(most, now)
    return {"mode": mode, "wall_s": round(wall, 1), "trials": len(rows),
            "ok": sum(x["status"] == "ok" for x in rows),
            "with_latency": sum(bool(x["latency_ms"]) for x in rows),
            "mean_trial_s": round(statistics.fmean(float(x["trial_s"]) for x in rows), 2),
            "mean_train_s": round(statistics.fmean(float(x["train_s"]) for x in rows if x["train_s"]), 2),
            "mean_latency_s": round(statistics.fmean(float(x["latency_s"]) for x in rows if x["latency_s"]), 2),
            "most_at_once": most, "first_to_last_start_s": round(starts[-1] - starts[0], 1),
            "device_busy": round(len(rows) * seconds / wall, 3),
            "archs": sorted(x["arch"] for x in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=2.0, help="wall time of one (fake) device measurement")
    ap.add_argument("--rounds", type=int, default=1, help="pairs of runs, alternating the two designs")
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="quickstart",
                    help="quickstart: its trials as they are; light: each trial's own work about the device's")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/device_service[_light].json")
    args = ap.parse_args()
    out_file = args.out or str(ROOT / "benchmarks" / "results" / (
        "device_service.json" if args.workload == "quickstart" else f"device_service_{args.workload}.json"))

    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="nas-device-service-") as tmp:
        tmp = Path(tmp)
        fake_compiler(tmp / "bin")
        env = {**os.environ, "PATH": f"{tmp / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONWARNINGS": "ignore"}
        for i in range(args.rounds):
            for mode in ("trial", "service"):
                runs.append(run(mode, args.trials, args.seconds, tmp, env, str(i), args.workload))
                print(f"{mode}: {runs[-1]['wall_s']} s", file=sys.stderr)
    trial = [r["wall_s"] for r in runs if r["mode"] == "trial"]
    service = [r["wall_s"] for r in runs if r["mode"] == "service"]
    same = all(r["archs"] == runs[0]["archs"] for r in runs)
    ratio = statistics.median(service) / statistics.median(trial)
    result = {"command": "python benchmarks/device_service.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
              "workload": args.workload, "workload_changes": WORKLOADS[args.workload],
              "trials": args.trials, "concurrency": 4, "device_seconds": args.seconds, "rounds": args.rounds,
              "same_archs": same, "wall_s": {"trial": trial, "service": service},
              "service_over_trial": round(ratio, 3), "target": "<= 0.4", "met": ratio <= 0.4,
              "runs": [{k: v for k, v in r.items() if k != "archs"} for r in runs]}
    Path(out_file).write_text(json.dumps(result, indent=1) + "\n")
    print("| design | wall time | most trials at once | mean trial | mean wait for latency | device busy |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['mode']} | {r['wall_s']:.0f} s | {r['most_at_once']} | {r['mean_trial_s']:.1f} s | "
              f"{r['mean_latency_s']:.1f} s | {r['device_busy']:.0%} |")
    print(f"\nservice / trial wall time: {ratio:.2f} (target <= 0.4; same archs: {same})")


if __name__ == "__main__":
    main()
