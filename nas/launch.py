"""``nas search``: everything between the command line and a runner.

:func:`prepare` reads the experiment, applies the command-line overrides and checks every
name (space, controller, latency source and its hardware, data) *before* any work or any
file is written; :func:`search` then creates or resumes the run folder and runs the search
with a live progress display; :func:`pareto_table` renders the result.
"""

from __future__ import annotations

import io
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, TextIO

import yaml

from .config import ExperimentConfig, load_experiment, parse_experiment
from .search import RunFolder, RunFolderError, SearchState, best_result, make_controller, make_space, pareto_front

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Launch:
    cfg: ExperimentConfig
    run: RunFolder
    budget: int
    experiment_text: str
    resume: bool


def _override(cfg: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    data = cfg.model_dump()
    for path, value in changes.items():
        if value is None:
            continue
        node = data
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return parse_experiment(data, "command line")


def _absolute_data(cfg: ExperimentConfig, base: Path) -> ExperimentConfig:
    """Data paths relative to the experiment file, made absolute (workers run elsewhere)."""
    kind, sep, arg = cfg.data.source.partition(":")
    if sep and kind in ("npz", "folder") and not Path(arg).is_absolute():
        for root in (Path.cwd(), base):
            if (root / arg).exists():
                return _override(cfg, **{"data.source": f"{kind}:{(root / arg).resolve()}"})
    return cfg


def check(cfg: ExperimentConfig) -> None:
    """Every name in the experiment resolves and the hardware it asks for exists (else ValueError)."""
    from latency_models import get_source

    from .data import check_source

    space = make_space(cfg)
    make_controller(cfg, space)
    src = get_source(cfg.latency.source, **cfg.latency.options)
    hw = getattr(src, "check", None)
    if callable(hw):
        hw()  # MissingHardware: no device, runtime or compiler
    check_source(cfg.data.source)
    if cfg.space.resolution is None and not hasattr(space, "resolution"):
        raise ValueError("space.resolution: missing (the proxy task needs an input resolution)")


def prepare(experiment: str | Path, *, out: str | None = None, resume: bool = False, address: str | None = None,
            max_trials: int | None = None, seed: int | None = None) -> Launch:
    """Parse, override, check, and pick the run folder; writes nothing."""
    exp_path = Path(experiment)
    if out is None:
        base = load_experiment(exp_path)
        out = str(Path(base.output) / base.name)
    run = RunFolder(out)
    if resume:
        run.check_resumable()
        # The run's own copy is the experiment being resumed, whatever the file says now.
        text = (run.path / "experiment.yaml").read_text()
        cfg = parse_experiment(yaml.safe_load(text), f"{run.path}/experiment.yaml")
        saved = json.loads((run.path / "run.json").read_text()) if (run.path / "run.json").is_file() else {}
        if exp_path.is_file() and exp_path.read_text() != text:
            log.warning("%s differs from the run's copy; resuming with the run's copy", exp_path)
        cfg = _override(cfg, **saved.get("overrides", {}))
        if seed is not None and seed != cfg.seed:
            raise ValueError(f"--seed: the run was made with seed {cfg.seed}; a resumed run keeps it (given {seed})")
    else:
        cfg = load_experiment(exp_path)
        text = exp_path.read_text()
        if run.exists():
            raise RunFolderError(f"--out: run folder {str(run.path)!r} already exists; pass --resume to continue "
                                 "it, or choose another --out")
        run.check_creatable()
        cfg = _override(cfg, seed=seed)
    cfg = _override(cfg, **{"ray.address": address, "budget.trials": max_trials})
    cfg = _absolute_data(cfg, exp_path.parent)
    check(cfg)
    return Launch(cfg, run, cfg.budget.trials, text, resume)


def search(launch: Launch, *, runner: str = "ray", stream: TextIO | None = None,
           progress: bool = True) -> SearchState:
    """Create or resume the run folder and run the search; the final state."""
    from .runner import run_local, run_ray

    cfg, run = launch.cfg, launch.run
    if launch.resume:
        run.remove_stale_temp_files()
        run.write_budget(launch.budget)
    else:
        run.create(launch.experiment_text, launch.budget)
    overrides = {"seed": cfg.seed, "ray.address": cfg.ray.address, "budget.trials": launch.budget}
    meta = json.loads((run.path / "run.json").read_text())
    meta["overrides"] = overrides
    from .search import atomic_write

    atomic_write(run.path / "run.json", json.dumps(meta, indent=1))
    prior = run.read_state(cfg, launch.budget) if launch.resume else None
    display = Progress(launch.budget, prior, stream=stream or sys.stderr, enabled=progress)
    t0 = time.monotonic()
    try:
        go = run_ray if runner == "ray" else run_local
        state = go(cfg, run, launch.budget, resume=launch.resume, listener=display)
    except KeyboardInterrupt:
        display.close()
        raise
    display.close()
    log.info("search finished in %.1f s", time.monotonic() - t0)
    return state


class Progress:
    """Live progress: a tqdm bar (done/total, running, failed, best reward) and one line per
    finished trial; the Pareto set is printed again whenever it changes."""

    def __init__(self, total: int, prior: SearchState | None = None, *, stream: TextIO = sys.stderr,
                 enabled: bool = True):
        from tqdm import tqdm

        self.results: list[Mapping[str, Any]] = list(prior.ordered_results()) if prior else []
        self.running: set[str] = set()
        self.stream = stream
        self.front_key: tuple = tuple(r["trial_id"] for r in pareto_front(self.results))
        self.bar = tqdm(total=total, initial=min(total, len(self.results)), file=stream, disable=None if enabled else True,
                        unit="trial", dynamic_ncols=True, leave=True)
        self._postfix()

    def __call__(self, event: str, payload: Any) -> None:
        if event == "start":
            self.running.add(payload)
        elif event == "result":
            self.running.discard(payload["trial_id"])
            self.results.append(payload)
            self.bar.write(_trial_line(payload), file=self.stream)
            self.bar.update(1)
            front = pareto_front(self.results)
            key = tuple(r["trial_id"] for r in front)
            if key != self.front_key and front:
                self.front_key = key
                self.bar.write("  pareto: " + ", ".join(f"{r['accuracy']:.3f}@{r['latency_ms']:.2f}ms" for r in front),
                               file=self.stream)
        self._postfix()

    def _postfix(self) -> None:
        failed = sum(r.get("status") in ("failed", "infeasible") for r in self.results)
        best = best_result(self.results)
        self.bar.set_postfix_str(f"running {len(self.running)}, failed {failed}, best "
                                 f"{best['reward']:.4f}" if best else f"running {len(self.running)}, failed {failed}")

    def close(self) -> None:
        self.bar.close()


def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else "-"


def _trial_line(r: Mapping[str, Any]) -> str:
    head = f"{r['status']:<10} {r['trial_id']}"
    if r["status"] in ("ok", "stopped"):
        return (f"{head}  acc {_num(r.get('accuracy'), '.4f')}  latency {_num(r.get('latency_ms'), '.3f')} ms  "
                f"reward {_num(r.get('reward'), '.4f')}  ({_num(r.get('trial_s'), '.1f')} s)")
    return f"{head}  {r.get('reason')}"


def pareto_table(results: list[Mapping[str, Any]]) -> str:
    """The Pareto front (accuracy vs latency) and the best arch, as text."""
    front = pareto_front(results)
    buf = io.StringIO()
    n_ok = sum(r.get("status") == "ok" for r in results)
    buf.write(f"{len(results)} trials, {n_ok} ok; Pareto front (accuracy vs latency), {len(front)} archs:\n")
    buf.write(f"{'accuracy':>9} {'latency_ms':>10} {'reward':>8} {'params':>9} {'MACs':>9} {'off_chip':>9}  trial\n")
    for r in front:
        buf.write(f"{_num(r['accuracy'], '.4f'):>9} {_num(r['latency_ms'], '.3f'):>10} {_num(r['reward'], '.4f'):>8} "
                  f"{_num(r['params'], ','):>9} {_num(r['macs'], ','):>9} {_num(r['off_chip_bytes'], ','):>9}  "
                  f"{r['trial_id']}\n")
    best = best_result(results)
    if best is not None:
        buf.write(f"best reward {best['reward']:.4f} (accuracy {best['accuracy']:.4f}, "
                  f"{best['latency_ms']:.3f} ms), trial {best['trial_id']}:\n  {best['arch']}\n")
    else:
        buf.write("no trial succeeded\n")
    return buf.getvalue()
