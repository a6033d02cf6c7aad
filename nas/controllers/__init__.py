"""Controllers: what proposes the next arch and learns from results (ask/tell).

- :mod:`nas.controllers.base`: the :class:`~nas.controllers.base.Controller` base class, the
  built-in random, evolution and list controllers, and the registry;
- :mod:`nas.controllers.mnas`: MnasNet's LSTM policy trained by PPO (the default);
- :mod:`nas.controllers.logits`: independent logits per decision (REINFORCE);
- :mod:`nas.controllers.optuna`: Optuna's samplers through ask/tell.

Adding a controller: subclass :class:`~nas.controllers.base.Controller` and register it; the
example is in :mod:`nas.controllers.base`.

May import: :mod:`nas.core` (and :mod:`search_spaces`).
"""

from nas.core.lazy import lazy

__all__, __getattr__, __dir__ = lazy(__name__, {
    "ArchList": "nas.controllers.base",
    "Controller": "nas.controllers.base",
    "Proposal": "nas.controllers.base",
    "RandomSearch": "nas.controllers.base",
    "RegularizedEvolution": "nas.controllers.base",
    "controller_names": "nas.controllers.base",
    "controller_spec": "nas.controllers.base",
    "get_controller": "nas.controllers.base",
    "register_controller": "nas.controllers.base",
    "MNASController": "nas.controllers.mnas",
    "IndependentLogits": "nas.controllers.logits",
    "OptunaController": "nas.controllers.optuna",
})
