"""Kill a search again and again (SIGKILL), resume it each time, and check nothing is lost or repeated.

    python benchmarks/kill_resume.py [--kills 12] [--trials 30] [--seed 0] [--out benchmarks/results]

A tiny search (EfficientNet-EdgeTPU at 32 px, scikit-learn digits, 1 epoch, the ``mnas``
controller updating every 2 results, 2 trials at a time on the embedded Ray) is first
stopped with Ctrl-C (SIGINT to the driver: it must stop cleanly and print how to resume),
then killed ``--kills`` times with SIGKILL of its whole process group, each time resumed
with ``--resume``, and finally resumed to the end. Two kills in three come at a random
moment (Ray starting, trials running, results arriving); every third is aimed, through the
``NAS_TEST_KILL_AT`` test hook, at a moment a random kill rarely hits: a run-folder file
written but not yet renamed into place (``write:N``), or a result recorded but not yet fed
to the controller (``tell:N``).

After every stop: ``trials.csv`` parses with the full header, every trial id is there once,
and every trial recorded before is still there, unchanged; ``state.json`` replays into a
controller. At the end: exactly the budget of trials, each once; every controller update
replayed; no resume warned that the replayed controller diverged from the record.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXPERIMENT = {
    "version": 1, "name": "kill-resume", "seed": 0,
    "space": {"name": "efficientnet_edgetpu", "resolution": 32, "width": 0.25, "depth": 0.25},
    "controller": {"name": "mnas", "params": {"batch_size": 2}},
    "reward": {"target_ms": 1.8},
    "data": {"source": "digits", "limit": 300},
    "train": {"epochs": 1, "batch_size": 32},
    "budget": {"trials": 30, "concurrency": 2},
}


def descendants(pid: int) -> set[int]:
    import psutil

    try:
        return {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def kill_all(pids: set[int]) -> None:
    """Ray's agents can outlive their killed parent: kill every process last seen under the search."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def read_rows(run: Path) -> list[dict]:
    from nas.core import FIELDS

    p = run / "trials.csv"
    if not p.is_file():
        return []
    with open(p, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames or ()) == FIELDS, f"trials.csv header: {reader.fieldnames}"
    assert all(None not in r and all(v is not None for v in r.values()) for r in rows), "a truncated row"
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"a trial recorded twice: {ids}"
    return rows


def check_state(run: Path, cfg) -> dict:
    from nas.ledger import Ledger

    p = run / "state.json"
    if not p.is_file():
        return {}
    text = p.read_text()
    Ledger.from_json(cfg, text)  # replays every ask/tell into a fresh controller
    return json.loads(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=12)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times and points")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    import numpy as np

    from nas.config import parse_experiment

    rng = np.random.default_rng(args.seed)
    exp_dict = {**EXPERIMENT, "budget": {**EXPERIMENT["budget"], "trials": args.trials}}
    cfg = parse_experiment(exp_dict)
    log_rows, diverged = [], 0
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        exp = Path(tmp) / "kill_resume.yaml"
        exp.write_text(yaml.safe_dump(exp_dict))
        run = Path(tmp) / "run"
        before: dict[str, dict] = {}
        finished = False
        cycle = 0
        while not finished:
            kind = "sigint" if cycle == 0 else ("final" if cycle > args.kills else
                                                ("aimed" if cycle % 3 == 0 else "random"))
            env = {**os.environ, "PYTHONWARNINGS": "ignore"}
            point = ""
            if kind == "aimed":
                point = (f"write:{int(rng.integers(4, 30))}" if rng.random() < 0.5
                         else f"tell:{int(rng.integers(1, 4))}")
                env["NAS_TEST_KILL_AT"] = point
            cmd = [sys.executable, "-m", "nas.cli", "search", str(exp), "--out", str(run), "--no-progress"]
            if cycle > 0:
                cmd.append("--resume")
            t0 = time.time()
            # Output to files, not pipes: nobody reads a pipe while waiting, and a full one blocks the search.
            errf = open(Path(tmp) / f"stderr{cycle}.txt", "w+")
            p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=errf, start_new_session=True)
            seen: set[int] = set()
            if kind == "sigint":  # Ctrl-C once the first trial is recorded: mid-search
                while p.poll() is None and not read_rows(run):
                    seen |= descendants(p.pid)
                    time.sleep(0.3)
                point = f"after {time.time() - t0:.1f} s, 1st trial recorded"
            if kind == "random":
                # Ray takes 5-15 s to start here: most kills then land while trials run.
                delay = float(rng.uniform(10, 60))
                point = f"after {delay:.1f} s"
                while time.time() - t0 < delay and p.poll() is None:
                    seen |= descendants(p.pid)
                    time.sleep(0.3)
            if kind in ("random", "sigint") and p.poll() is None:
                if kind == "sigint":
                    os.kill(p.pid, signal.SIGINT)
                else:
                    seen |= descendants(p.pid)
                    os.killpg(p.pid, signal.SIGKILL)
            while p.poll() is None:  # aimed kills, the SIGINT's clean stop, the final run
                seen |= descendants(p.pid)
                time.sleep(0.3)
                if time.time() - t0 > 900:
                    os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            errf.seek(0)
            err = errf.read()
            errf.close()
            kill_all(seen)
            rc = p.returncode
            # killed (-9), stopped by Ctrl-C (130) or finished (0): anything else is a crash
            assert rc in (0, 130, -signal.SIGKILL), f"cycle {cycle}: exit {rc}:\n{err[-3000:]}"
            assert kind != "sigint" or rc == 130, f"Ctrl-C exit status {rc}, expected 130"
            rows = read_rows(run)
            now = {r["trial_id"]: r for r in rows}
            lost = [t for t, r in before.items() if now.get(t) != r]
            assert not lost, f"cycle {cycle}: trials lost or changed: {lost}"
            state = check_state(run, cfg)
            diverged += err.count("the controller now proposes")
            if kind == "sigint" and rc != -signal.SIGKILL:
                assert "--resume" in err, f"Ctrl-C did not say how to resume:\n{err[-2000:]}"
            stale = sorted(p.name for p in run.glob(".*.tmp")) if run.exists() else []
            log_rows.append({"cycle": cycle, "kind": kind, "point": point, "rc": rc, "trials": len(rows),
                             "new": len(rows) - len(before), "s": round(time.time() - t0, 1),
                             "reissued": sum(e[0] == "reissue" for e in state.get("events", [])),
                             "stale_tmp": len(stale)})
            print(log_rows[-1], flush=True)
            before = now
            finished = rc == 0 and len(rows) >= args.trials
            cycle += 1
            if cycle > args.kills + 3 and not finished:
                raise SystemExit(f"the search did not finish after {cycle} runs: {log_rows[-1]}")
        rows = read_rows(run)
        state = json.loads((run / "state.json").read_text())
    assert len(rows) == args.trials, f"{len(rows)} trials recorded, budget {args.trials}"
    tells = sum(e[0] == "tell" for e in state["events"])
    assert tells == args.trials and state["untold"] == [] and not state["orphans"]
    killed = [r for r in log_rows if r["kind"] in ("random", "aimed") and r["rc"] != 0]
    summary = (f"{len(killed)} SIGKILLs ({sum(r['kind'] == 'aimed' for r in killed)} aimed at a write or a "
               f"controller update) and 1 Ctrl-C over {len(log_rows)} runs of a {args.trials}-trial search, "
               f"{time.time() - t_start:.0f} s: {len(rows)} trials recorded, each once; 0 lost or changed after "
               f"any stop; {tells} controller updates replayed; {diverged} replay divergences; "
               f"{sum(r['reissued'] for r in log_rows[-1:])} archs re-issued after Ray's checkpoint lagged; "
               f"every trials.csv parsed whole.")
    lines = [summary, "", "| run | how it stopped | at | exit | trials recorded | new | s | stale temp files |",
             "|---|---|---|---|---|---|---|---|"]
    for r in log_rows:
        lines.append(f"| {r['cycle']} | {r['kind']} | {r['point'] or '-'} | {r['rc']} | {r['trials']} | {r['new']} | "
                     f"{r['s']} | {r['stale_tmp']} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kill_resume.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
