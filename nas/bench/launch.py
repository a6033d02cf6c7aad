"""``nas bench``: everything between the command line and a controller benchmark.

:func:`prepare` checks every option (the controllers, the output folder, the reward, the
space, the table) and builds each controller once, *before* any run, so that a bad parameter
fails at once; :func:`run` runs the mode's benchmark, by lookup in a table of trained archs
(:func:`nas.bench.bench.run_bench`) or on surrogate landscapes over the whole
``efficientnet_edgetpu`` space (:func:`nas.bench.landscape_bench.run_landscapes`); :func:`write`
puts its results in the output folder. Bad input raises a ``ValueError`` naming the option
(:mod:`nas.core.errors`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import search_spaces

from nas.bench.bench import BenchResult, controller_label, run_bench
from nas.bench.table import DEFAULT_SPACE, Table
from nas.controllers.base import get_controller
from nas.bench.landscape_bench import LandscapeResult, run_landscapes
from nas.bench.landscape_fit import DEPLOYMENT, FULL_SPACE
from nas.core.reward import RewardConfig
from nas.ledger.folder import atomic_write

MODES = ("table", "surrogate")
#: The controllers benchmarked when none is given.
DEFAULT_CONTROLLERS = (("random", {}), ("evolution", {}), ("mnas", {}))
#: Trials per run when not given.
DEFAULT_TRIALS = {"table": 100, "surrogate": 200}
#: Reward exponents when no preset is given.
DEFAULT_PRESET = {"table": "soft", "surrogate": "hard"}


@dataclass(frozen=True)
class BenchLaunch:
    """A checked benchmark, ready to :func:`run`."""

    mode: str
    specs: tuple[tuple[str, dict[str, Any]], ...]   #: (controller name, parameters)
    space: Any
    table: Table | None                             #: table mode: the table looked up
    rcfg: RewardConfig | None                       #: None: the surrogate's default target
    reward_args: dict[str, Any]                     #: the reward but its target (surrogate mode)
    seeds: int
    seed_offset: int
    trials: int
    batch: int
    repeats: str
    landscapes: int
    reference_archs: int


def prepare(mode: str = "table", controllers: Sequence[tuple[str, dict[str, Any]]] = (), *,
            table: str | Path | None = None, space_name: str | None = None, space_params: dict[str, Any] | None = None,
            landscapes: int = 3, reference_archs: int = 10_000, seeds: int = 20, seed_offset: int = 0,
            trials: int | None = None, batch: int = 8, repeats: str = "record", latency: str = "deployment",
            kind: str = "mnas", target_ms: float | None = None, preset: str | None = None,
            alpha: float | None = None, beta: float | None = None, out: str | Path | None = None) -> BenchLaunch:
    """Check a ``nas bench`` and build each controller once, before any work.

    ``controllers`` are (name, parameters) pairs (default :data:`DEFAULT_CONTROLLERS`).
    Table mode: ``table`` (a path or a shipped table's name; default the efficientnet one) is
    read with the ``latency`` the reward scores; a decision table is its own space, an arch
    table's archs come from ``space_name`` with ``space_params`` (default the shipped
    table's space, which ``space_params`` adjusts); ``target_ms`` defaults to the table's
    median latency. Surrogate mode: ``landscapes`` landscapes over the whole space, with a
    target (default) from ``reference_archs`` random archs. ``out``, if given, must be a new
    or an empty folder.
    """
    if mode not in MODES:
        raise ValueError(f"--mode: unknown {mode!r}; allowed: {', '.join(MODES)}")
    specs = tuple(controllers) or DEFAULT_CONTROLLERS
    labels = [controller_label(n, p) for n, p in specs]
    dup = next((x for x in labels if labels.count(x) > 1), None)
    if dup:
        raise ValueError(f"--controller: {dup!r} given twice; give each controller once")
    if out is not None and Path(out).exists() and any(Path(out).iterdir()):
        raise ValueError(f"--out: folder {str(out)!r} exists and is not empty; give a new folder")
    # (the reward's own rules, checked before any work; --target-ms may come from the table later)
    reward_args = {k: v for k, v in {"kind": kind, "preset": preset, "alpha": alpha, "beta": beta}.items()
                   if v is not None}
    if kind == "mnas" and preset is None:
        reward_args["preset"] = DEFAULT_PRESET[mode]
    try:
        RewardConfig(target_ms=target_ms or 1.0, **reward_args)
    except ValueError as e:
        raise ValueError(f"--reward/--preset/--alpha/--beta: {str(e).removeprefix('reward: ')}") from None
    tab = None
    if mode == "table":
        tab = Table.load(table, latency=latency)
        if tab.space is not None:  # a decision table: its columns are the space
            if space_name is not None or space_params:
                raise ValueError(f"--space/--param: table {Path(tab.source).name} declares its own space (decision "
                                 f"columns {', '.join(d.name for d in tab.space.decision_list)}); they apply to "
                                 "tables of arch strings only")
            space = tab.space
        else:
            params = dict(space_params or {})
            if space_name is None:  # the shipped table's space; --param adjusts it (e.g. searched=[2,3])
                space_name, params = DEFAULT_SPACE[0], {**DEFAULT_SPACE[1], **params}
            space = search_spaces.get(space_name, **params)
    else:
        space = search_spaces.get(FULL_SPACE, **DEPLOYMENT)
    # Every controller is built once up front, so a bad parameter fails before the runs; and
    # the space encodes one member, so a space that cannot (too large for the generic encode,
    # which the learning controllers use) fails here too, not mid-run.
    for name, p in specs:
        get_controller(name, space, seed=0, **p)
    space.encode(space.decode_indices([0] * len(space.decision_list)))
    if mode == "table":
        rcfg = RewardConfig(target_ms=target_ms or float(np.median(tab.latency_ms)), **reward_args)
    else:
        rcfg = RewardConfig(target_ms=target_ms, **reward_args) if target_ms else None
    return BenchLaunch(mode, specs, space, tab, rcfg, reward_args, seeds, seed_offset,
                       trials or DEFAULT_TRIALS[mode], batch, repeats, landscapes, reference_archs)


def run(launch: BenchLaunch, progress: Callable[[str], None] | None = None) -> BenchResult | LandscapeResult:
    """Run every controller of ``launch`` (``progress`` gets a line per landscape and controller)."""
    b = launch
    if b.mode == "table":
        return run_bench(b.table, b.specs, seeds=b.seeds, trials=b.trials, rcfg=b.rcfg, space=b.space,
                         seed_offset=b.seed_offset, batch=b.batch, repeats=b.repeats)
    return run_landscapes(b.specs, landscapes=b.landscapes, seeds=b.seeds, seed_offset=b.seed_offset,
                          trials=b.trials, batch=b.batch, repeats=b.repeats, rcfg=b.rcfg,
                          reward_args=b.reward_args, reference_archs=b.reference_archs, progress=progress)


def write(result: BenchResult | LandscapeResult, out: str | Path, markdown: str | None = None) -> Path:
    """bench.json, bench.md (``markdown``, default the result's) and bench.png into ``out``."""
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write(dest / "bench.json", result.to_json())
    atomic_write(dest / "bench.md", (result.markdown() if markdown is None else markdown) + "\n")
    tmp = dest / ".bench.tmp.png"
    result.plot(tmp)
    os.replace(tmp, dest / "bench.png")
    return dest
