"""``nas search``: everything between the command line and a runner.

:func:`prepare` reads the experiment, applies the command-line overrides and checks every
name (space, controller, latency source and its hardware, data) *before* any work or any
file is written; :func:`search` then creates or resumes the run folder and runs the search
with a live progress display (:mod:`nas.run.console`).
"""

from __future__ import annotations

import inspect
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from latency_models import get_source

from nas.trial import proxy
from nas.config.experiment import ExperimentConfig, load_experiment, override
from nas.run.console import Progress
from nas.data.sources import check_source, class_count
from nas.trial.devices import check_gpus
from nas.core.errors import RunFolderError
from nas.ledger.ledger import Ledger, make_base_space, make_controller, make_space
from nas.ledger.folder import RunFolder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Launch:
    cfg: ExperimentConfig
    run: RunFolder
    budget: int
    experiment_text: str
    resume: bool


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
    space = make_space(cfg)
    make_controller(cfg, space)
    for i, arch in enumerate(cfg.search.queue):
        try:
            space.parse(arch)
        except ValueError as e:
            raise ValueError(f"search.queue[{i}]: {arch[:60]!r} is not a member of space {cfg.space.name!r} ({e})") \
                from None
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
    check_gpus(cfg)
    check_source(cfg.data.source)
    if cfg.space.resolution is None and not hasattr(space, "resolution"):
        raise ValueError("space.resolution: missing (the proxy task needs an input resolution)")
    proxy.check(space, cfg)


def with_classes(cfg: ExperimentConfig) -> ExperimentConfig:
    """The deployment model has the data's classes: a space that takes ``num_classes`` gets
    them (counted from the data when the experiment does not say), so every arch string
    carries its head and ``nas latency predict ARCH`` scores the very model a trial did. A
    class count, given or the space's own, that differs from the data's is an error."""
    check_source(cfg.data.source)  # its one-line errors first: counting would meet them less clearly
    space = make_base_space(cfg)  # space.hold narrows its decisions, not its head
    fixed = getattr(space, "num_classes", None)
    # A space given as an instance (module:object) is what it is: get() returns that very
    # object and takes no arguments, so its classes cannot be filled in.
    takes = "num_classes" in inspect.signature(type(space)).parameters and make_base_space(cfg) is not space
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


def prepare(experiment: str | Path | ExperimentConfig, *, out: str | None = None, resume: bool = False, address: str | None = None,
            max_trials: int | None = None, seed: int | None = None) -> Launch:
    """Parse, override, check, and pick the run folder; writes nothing. ``experiment`` is a
    YAML file or an :class:`~nas.config.experiment.ExperimentConfig` (its relative paths are
    then the working directory's)."""
    given = experiment if isinstance(experiment, ExperimentConfig) else None
    exp_path = Path("experiment.yaml") if given is not None else Path(experiment)
    if out is None:
        base = given or load_experiment(exp_path)
        out = str(Path(base.output) / base.name)
    run = RunFolder(out)
    if resume:
        # The run's own copy is the experiment being resumed, whatever the file says now.
        text = run.experiment_text()
        if given is None and exp_path.is_file() and exp_path.read_text() != text:
            log.warning("%s differs from the run's copy; resuming with the run's copy", exp_path)
        cfg = run.experiment()
        if seed is not None and seed != cfg.seed:
            raise ValueError(f"--seed: the run was made with seed {cfg.seed}; a resumed run keeps it (given {seed})")
    else:
        cfg = given or load_experiment(exp_path)
        text = given.to_yaml() if given is not None else exp_path.read_text()
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
    if cfg.search.strategy == "oneshot":
        from nas.oneshot import run as oneshot_run

        if not oneshot_run.merged_file(run).is_file():  # (once retraining, the candidates are the search's queue)
            oneshot_run.check(cfg)
    return Launch(cfg, run, cfg.budget.trials, text, resume)


def _oneshot_phase(launch: Launch, runner: str, stream: TextIO) -> tuple[ExperimentConfig, Launch]:
    """The supernets of a one-shot search (resumed where they were), then their candidates
    recorded as the run's retraining (``run.json``); the experiment and launch that retrain them."""
    from nas.oneshot import run as oneshot_run
    from nas.run.runner import run_supernets_ray

    cfg, run = launch.cfg, launch.run
    # (a line per tenth of each supernet's steps, like a line per trial: shown with --no-progress too)
    display = oneshot_run.SupernetProgress(run, oneshot_run.targets(cfg), stream)
    t0 = time.monotonic()
    if runner == "ray":
        per_target = run_supernets_ray(cfg, run, display)
    else:
        per_target = oneshot_run.run_supernets_local(cfg, run, display)
    cands = oneshot_run.finish_supernets(cfg, run, per_target)
    log.info("one-shot phase finished in %.1f s: %d candidates to retrain", time.monotonic() - t0, len(cands))
    stream.write(f"one-shot phase done in {time.monotonic() - t0:.0f} s: {len(cands)} candidates to retrain "
                 "standalone\n")
    overrides = {**run.overrides(), **oneshot_run.retrain_overrides(cands)}
    run.write_meta(len(cands), overrides)
    cfg = run.experiment()
    return cfg, Launch(cfg, run, len(cands), launch.experiment_text, launch.resume)


def search(launch: Launch, *, runner: str = "ray", stream: TextIO | None = None,
           progress: bool = True) -> Ledger:
    """Create or resume the run folder and run the search; the final ledger."""
    from nas.run.runner import run_local, run_ray  # run_ray imports Ray: only when a search runs

    cfg, run = launch.cfg, launch.run
    overrides = {"seed": cfg.seed, "ray.address": cfg.ray.address, "budget.trials": launch.budget,
                 "space.num_classes": cfg.space.num_classes}
    if launch.resume:
        run.remove_stale_temp_files()
        # (a one-shot run's retraining is recorded there too: its candidates as search.queue)
        run.write_meta(launch.budget, {**run.overrides(), **overrides})
    else:
        run.create(launch.experiment_text, launch.budget, overrides)
    t0 = time.monotonic()
    if cfg.search.strategy == "oneshot":
        from nas.oneshot.run import merged_file

        if not merged_file(run).is_file():
            cfg, launch = _oneshot_phase(launch, runner, stream or sys.stderr)
    prior = run.read_state(cfg, launch.budget) if launch.resume else None
    display = Progress(launch.budget, prior, stream=stream or sys.stderr, enabled=progress)
    try:
        go = run_ray if runner == "ray" else run_local
        state = go(cfg, run, launch.budget, resume=launch.resume, listener=display)
    except KeyboardInterrupt:
        display.close()
        raise
    display.close()
    log.info("search finished in %.1f s", time.monotonic() - t0)
    return state
