"""Running a search: experiment to run folder, the local and Ray runners, the console.

- :mod:`nas.run.launch`: :func:`~nas.run.launch.prepare` and :func:`~nas.run.launch.search`,
  what ``nas search`` calls;
- :mod:`nas.run.runner`: the local runner and the entry to the Ray one;
- :mod:`nas.run.ray_runner`: Ray Tune, and :mod:`nas.run.ray_services` the measurement actors (the
  only modules of ``nas`` that import Ray);
- :mod:`nas.run.console`: progress bars, trial lines and the Pareto table.

May import: every room below it (:mod:`nas.core`, :mod:`nas.config`, :mod:`nas.data`,
:mod:`nas.controllers`, :mod:`nas.trial`, :mod:`nas.ledger`, :mod:`nas.oneshot`).
"""

from nas.core.lazy import lazy

__all__, __getattr__, __dir__ = lazy(__name__, {
    "prepare": "nas.run.launch",
    "search": "nas.run.launch",
    "run_local": "nas.run.runner",
    "run_ray": "nas.run.runner",
    "Progress": "nas.run.console",
    "pareto_table": "nas.run.console",
})
