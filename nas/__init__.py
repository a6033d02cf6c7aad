"""edgetpu-nas: hardware-aware neural architecture search for Keras and the Coral Edge TPU.

What a user scripts with is here; the command line (``nas search``, ``nas export``,
``nas report``) calls the same functions::

    import nas

    exp = nas.Experiment.load("experiments/quickstart.yaml")
    exp = exp.replace(**{"budget.trials": 4})            # dotted keys, validated again
    ledger = nas.search(exp, out="runs/qs")             # runs the trials (Ray by default)
    best = ledger.best()                                # the best TrialRecord so far
    nas.report("runs/qs")                               # report.md, plots, TensorBoard logs
    summary = nas.export("runs/qs", scale="proxy")      # model.keras, int8 TFLite, summary

Extending it: a search space subclasses :class:`SearchSpace` and is registered with
:func:`register_space`; a controller subclasses :class:`Controller` and is registered with
:func:`register_controller`; a latency source subclasses :class:`LatencySource` and is
registered with :func:`register_source`. Each base class's docstring has a runnable example.

The names are loaded on first use, so ``import nas`` stays light (no TensorFlow, no Ray).
The rooms of the package (``nas.controllers``, ``nas.trial``, ``nas.run``, ...) each say in
their docstring what they own; ``docs/design.md`` draws the whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.config.experiment import ExperimentConfig
    from nas.ledger.ledger import Ledger
    from nas.results.report import Report

from nas.core.lazy import lazy

__version__ = "0.1.0"

__all__, __getattr__, __dir__ = lazy(__name__, {
    "Experiment": "nas.config.experiment:ExperimentConfig",
    "load_experiment": "nas.config.experiment",
    "Controller": "nas.controllers.base",
    "Proposal": "nas.controllers.base",
    "register_controller": "nas.controllers.base",
    "get_controller": "nas.controllers.base",
    "controller_names": "nas.controllers.base",
    "LatencySource": "latency_models.base",
    "LatencyResult": "latency_models.base",
    "register_source": "latency_models.registry",
    "get_source": "latency_models.registry",
    "SearchSpace": "search_spaces.space",
    "register_space": "search_spaces.space:register",
    "get_space": "search_spaces.space:get",
    "Arch": "search_spaces.arch",
    "TrialRecord": "nas.core.record",
    "Status": "nas.core.record",
    "Ledger": "nas.ledger.ledger",
    "RunFolder": "nas.ledger.folder",
})
__all__ = sorted([*__all__, "export", "report", "search"])


def search(experiment: str | Path | ExperimentConfig, *, out: str | Path | None = None, resume: bool = False,
           address: str | None = None, max_trials: int | None = None, seed: int | None = None,
           runner: str = "ray", progress: bool = False) -> Ledger:
    """Run (or with ``resume``, continue) a search; its final :class:`Ledger`.

    ``experiment`` is a YAML file or an :class:`Experiment`. The run folder is ``out``
    (default ``OUTPUT/NAME`` from the experiment); it must not exist unless ``resume``.
    ``runner="local"`` runs the trials one by one in this process, without Ray; ``address``
    is a running Ray cluster's ``HOST:PORT``. Bad input raises ``ValueError`` with one line
    naming the field, what was given and what is allowed, before anything is written.
    """
    from nas.run.launch import prepare, search as run_search

    launch = prepare(experiment, out=None if out is None else str(out), resume=resume, address=address,
                     max_trials=max_trials, seed=seed)
    return run_search(launch, runner=runner, progress=progress)


def export(run_dir: str | Path, *, arch: str | None = None, epochs: int | None = None,
           out: str | Path | None = None, scale: str = "deployment") -> dict[str, Any]:
    """Train the run's best arch (or ``arch``) and write ``model.keras``, ``model_int8.tflite``
    (and ``model_edgetpu.tflite`` where ``edgetpu_compiler`` is installed), ``arch.txt`` and
    ``summary.json`` into ``out`` (default ``RUN/export``); the summary.

    ``scale="proxy"`` trains the model a trial trained instead of the deployment model
    (much faster); latencies in the summary are the deployment model's either way.
    """
    from nas.results.export import export as run_export

    return run_export(run_dir, arch=arch, epochs=epochs, out=None if out is None else str(out), scale=scale)


def report(run_dir: str | Path, *, out: str | Path | None = None, top: int = 3, window: int = 20,
           train_references: bool = False, tensorboard: bool = True) -> Report:
    """Write a run's report (``report.md``, plots, TensorBoard logs) into ``out`` (default
    ``RUN/report``, replaced) and return it; works during a search as well as after it."""
    from nas.results.report import build, write

    rep = build(run_dir, top=top, window=window, train_references=train_references)
    write(rep, out, tensorboard=tensorboard)
    return rep
