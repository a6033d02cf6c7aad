"""The experiment file: one strict, typed model of every section (``nas search EXP.yaml``).

- :mod:`nas.config.experiment`: :class:`~nas.config.experiment.ExperimentConfig`,
  :func:`~nas.config.experiment.load_experiment` and the sections of what is searched (space,
  proxy, controller, latency, data);
- :mod:`nas.config.search`: how the search runs: the budget, search (standalone or one-shot),
  ray and faults sections;
- :mod:`nas.config.sections`: the train, score and export sections of a trial's recipe.

May import: :mod:`nas.core`, :mod:`nas.data`.
"""

from nas.core.lazy import lazy

__all__, __getattr__, __dir__ = lazy(__name__, {
    "ExperimentConfig": "nas.config.experiment",
    "OneShotConfig": "nas.config.search",
    "RewardConfig": "nas.core.reward",
    "Constraints": "nas.core.reward",
    "load_experiment": "nas.config.experiment",
    "override": "nas.config.experiment",
    "parse_experiment": "nas.config.experiment",
    "ExportConfig": "nas.config.sections",
    "ScoreConfig": "nas.config.sections",
    "TrainConfig": "nas.config.sections",
})
