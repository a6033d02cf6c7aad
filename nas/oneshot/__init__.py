"""One-shot search: a weight-sharing supernet trained while a controller samples from it.

- :mod:`nas.oneshot.search`: the supernet's search loop and its settings;
- :mod:`nas.oneshot.train`: the supernet's training step;
- :mod:`nas.oneshot.run`: a one-shot run folder, its phases and its hand-off to standalone trials.

May import: :mod:`nas.core`, :mod:`nas.config`, :mod:`nas.data`, :mod:`nas.controllers`,
:mod:`nas.trial`, :mod:`nas.ledger`.
"""

from nas.core.lazy import lazy

__all__, __getattr__, __dir__ = lazy(__name__, {
    "OneShotSearch": "nas.oneshot.search",
    "force_largest": "nas.oneshot.search",
    "largest_choices": "nas.oneshot.search",
    "largest_probability": "nas.oneshot.search",
    "SupernetTrainer": "nas.oneshot.train",
    "calibration_batches": "nas.oneshot.train",
})
