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
from typing import Any, TextIO

import yaml

from . import proxy
from .config import ExperimentConfig, load_experiment, parse_experiment
from .record import Status, TrialRecord
from .search import RunFolder, RunFolderError, SearchState, best_result, make_controller, make_space, pareto_front

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Launch:
    cfg: ExperimentConfig
    run: RunFolder
    budget: int
    experiment_text: str
    resume: bool


def override(cfg: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    """``cfg`` with dotted keys replaced (``override(cfg, **{"budget.trials": 5})``), validated
    again; a None value leaves its key as it is. Used for command-line flags and a run's
    recorded overrides (``run.json``)."""
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
                return override(cfg, **{"data.source": f"{kind}:{(root / arg).resolve()}"})
    return cfg


# The latency-result field each constraint reads; a source that never fills it would make the
# constraint pass every candidate, silently.
CONSTRAINT_METRICS = {"max_off_chip_bytes": "off_chip_bytes", "all_ops_on_tpu": "ops_on_cpu"}


def check_constraints(cfg: ExperimentConfig, src) -> None:
    """Refuse a constraint whose metric the latency source does not give (warn when the
    source does not say what it gives)."""
    c = cfg.reward.constraints
    # 0 is a real bound (nothing off-chip), so "set" means not None and not the flag's False.
    wanted = [k for k in CONSTRAINT_METRICS if getattr(c, k) is not None and getattr(c, k) is not False]
    gives = getattr(src, "metrics", None)
    for key in wanted:
        metric = CONSTRAINT_METRICS[key]
        if gives is None:
            log.warning("reward.constraints.%s: latency source %r does not declare whether it gives %s; if it "
                        "leaves it empty, the constraint passes every candidate", key, cfg.latency.source, metric)
        elif metric not in gives:
            raise ValueError(f"reward.constraints.{key}: latency source {cfg.latency.source!r} gives no {metric} "
                             f"(it gives {', '.join(sorted(gives))}); allowed with an Edge TPU source "
                             "(edgetpu, edgetpu-model, a fitted edgetpu-model folder), or drop the constraint")


def check(cfg: ExperimentConfig) -> None:
    """Every name in the experiment resolves, the proxy scales the space's archs down and the
    hardware it asks for exists (else ValueError)."""
    from latency_models import get_source

    from .data import check_source

    space = make_space(cfg)
    make_controller(cfg, space)
    src = get_source(cfg.latency.source, **cfg.latency.options)
    check_constraints(cfg, src)
    hw = getattr(src, "check", None)
    if callable(hw) and cfg.ray.address and src.measured:
        # On a cluster the device may sit on a worker node only (the README's set-up): the
        # runner checks that some node offers the "edgetpu" resource once it has connected.
        log.info("latency source %r: hardware is checked on the cluster at %s, not on this driver",
                 cfg.latency.source, cfg.ray.address)
    elif callable(hw):
        hw()  # MissingHardware: no device, runtime or compiler
    check_source(cfg.data.source)
    if cfg.space.resolution is None and not hasattr(space, "resolution"):
        raise ValueError("space.resolution: missing (the proxy task needs an input resolution)")
    proxy.check(space, cfg)


def with_classes(cfg: ExperimentConfig) -> ExperimentConfig:
    """The deployment model has the data's classes: a space that takes ``num_classes`` gets
    them (counted from the data when the experiment does not say), so every arch string
    carries its head and ``nas latency predict ARCH`` scores the very model a trial did. A
    class count, given or the space's own, that differs from the data's is an error."""
    import inspect

    from .data import check_source, class_count

    check_source(cfg.data.source)  # its one-line errors first: counting would meet them less clearly
    space = make_space(cfg)
    fixed = getattr(space, "num_classes", None)
    # A space given as an instance (module:object) is what it is: get() returns that very
    # object and takes no arguments, so its classes cannot be filled in.
    takes = "num_classes" in inspect.signature(type(space)).parameters and make_space(cfg) is not space
    if not takes and cfg.space.num_classes is not None:
        raise ValueError(f"space.num_classes: space {cfg.space.name!r} takes no num_classes argument "
                         f"(given {cfg.space.num_classes})")
    if not takes and fixed is None:
        return cfg  # a space without classes of its own: the trial's head has the data's
    n = class_count(cfg.data.source, limit=cfg.data.limit, seed=cfg.seed)
    if n is None:
        return cfg  # not countable before loading (tfds): trials use the data's, strings lack it
    if fixed is not None and fixed != n:
        key = "space.num_classes" if cfg.space.num_classes is not None else f"space {cfg.space.name!r}"
        raise ValueError(f"{key}: {fixed} classes, but data.source {cfg.data.source!r} has {n}; allowed: {n}"
                         + (" (or leave it out)" if cfg.space.num_classes is not None else ""))
    if not takes or fixed == n:
        return cfg
    return override(cfg, **{"space.num_classes": n})


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
        cfg = override(cfg, **saved.get("overrides", {}))
        if seed is not None and seed != cfg.seed:
            raise ValueError(f"--seed: the run was made with seed {cfg.seed}; a resumed run keeps it (given {seed})")
    else:
        cfg = load_experiment(exp_path)
        text = exp_path.read_text()
        if run.exists():
            raise RunFolderError(f"--out: run folder {str(run.path)!r} already exists; pass --resume to continue "
                                 "it, or choose another --out")
        run.check_creatable()
        cfg = override(cfg, seed=seed)
    cfg = override(cfg, **{"ray.address": address, "budget.trials": max_trials})
    cfg = _absolute_data(cfg, exp_path.parent)
    if not resume:  # a resumed run keeps the classes it was made with (a run made before, none)
        cfg = with_classes(cfg)
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
    overrides = {"seed": cfg.seed, "ray.address": cfg.ray.address, "budget.trials": launch.budget,
                 "space.num_classes": cfg.space.num_classes}
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

        self.results: list[TrialRecord] = list(prior.ordered_results()) if prior else []
        self.running: set[str] = set()
        self.stream = stream
        self.front_key: tuple = tuple(r.trial_id for r in pareto_front(self.results))
        self.bar = tqdm(total=total, initial=min(total, len(self.results)), file=stream, disable=None if enabled else True,
                        unit="trial", dynamic_ncols=True, leave=True)
        self._postfix()

    def __call__(self, event: str, payload: Any) -> None:
        if event == "start":
            self.running.add(payload)
        elif event == "result":
            self.running.discard(payload.trial_id)
            self.results.append(payload)
            self.bar.write(trial_line(payload), file=self.stream)
            self.bar.update(1)
            front = pareto_front(self.results)
            key = tuple(r.trial_id for r in front)
            if key != self.front_key and front:
                self.front_key = key
                self.bar.write("  pareto: " + ", ".join(f"{r.accuracy:.3f}@{r.latency_ms:.2f}ms" for r in front),
                               file=self.stream)
        self._postfix()

    def _postfix(self) -> None:
        failed = sum(r.status in (Status.FAILED, Status.INFEASIBLE) for r in self.results)
        best = best_result(self.results)
        self.bar.set_postfix_str(f"running {len(self.running)}, failed {failed}, best "
                                 f"{best.reward:.4f}" if best else f"running {len(self.running)}, failed {failed}")

    def close(self) -> None:
        self.bar.close()


def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else "-"


def _mib(n: Any) -> str:
    """Bytes as MiB with two decimals ("-" for no value)."""
    return _num(n / 2**20 if isinstance(n, (int, float)) else None, ".2f")


def count_text(n: Any) -> str:
    """A parameter or MAC count in brief: 4.46M, 230.0K ("-" for no value)."""
    if not isinstance(n, (int, float)):
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def trial_line(r: TrialRecord) -> str:
    """One line per finished trial: proxy accuracy, deployment latency and memory, both sizes."""
    head = f"{r.status.value:<10} {r.trial_id}"
    sizes = f"params {count_text(r.params)} (proxy {count_text(r.proxy_params)})"
    memory = f"off-chip {_mib(r.off_chip_bytes)} MiB" if r.off_chip else "on-chip"
    if r.status in (Status.OK, Status.STOPPED):
        return (f"{head}  acc {_num(r.accuracy, '.4f')}  latency {_num(r.latency_ms, '.3f')} ms  {memory}  {sizes}  "
                f"reward {_num(r.reward, '.4f')}  ({_num(r.trial_s, '.1f')} s)")
    if r.status is Status.INFEASIBLE:
        return f"{head}  latency {_num(r.latency_ms, '.3f')} ms  {memory}  {sizes}  {r.reason}"
    return f"{head}  {r.reason}"


def pareto_table(results: list[TrialRecord]) -> str:
    """The Pareto front (proxy accuracy vs deployment latency) and the best arch, as text."""
    front = pareto_front(results)
    buf = io.StringIO()
    n_ok = sum(r.usable for r in results)
    n_off = sum(r.off_chip for r in results if r.latency_ms is not None)
    buf.write(f"{len(results)} trials, {n_ok} usable, {n_off} with parameters off-chip; Pareto front "
              f"(proxy accuracy vs deployment latency), {len(front)} archs:\n")
    buf.write(f"{'accuracy':>9} {'latency_ms':>10} {'reward':>8} {'params':>10} {'MACs':>13} {'off_chip':>10} "
              f"{'proxy_params':>12}  trial\n")
    for r in front:
        buf.write(f"{_num(r.accuracy, '.4f'):>9} {_num(r.latency_ms, '.3f'):>10} {_num(r.reward, '.4f'):>8} "
                  f"{_num(r.params, ','):>10} {_num(r.macs, ','):>13} {_num(r.off_chip_bytes, ','):>10} "
                  f"{_num(r.proxy_params, ','):>12}  {r.trial_id}\n")
    best = best_result(results)
    if best is not None:
        buf.write(f"best reward {best.reward:.4f} (proxy accuracy {best.accuracy:.4f}, deployment "
                  f"{best.latency_ms:.3f} ms), trial {best.trial_id}:\n  {best.arch}\n"
                  f"  trained as {best.proxy_arch}\n")
    else:
        buf.write("no trial succeeded\n")
    return buf.getvalue()
