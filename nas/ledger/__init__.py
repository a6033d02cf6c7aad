"""What a search has done: the ledger that asks and tells the controller, the run folder, the logs.

- :mod:`nas.ledger.ledger`: :class:`~nas.ledger.ledger.Ledger`, the factories of a run's
  space and controller, and the replay that rebuilds a controller from its history;
- :mod:`nas.ledger.folder`: :class:`~nas.ledger.folder.RunFolder`, the files of a run and
  their atomic writes;
- :mod:`nas.ledger.tblog`: TensorBoard logs and the event log.

May import: :mod:`nas.core`, :mod:`nas.config`, :mod:`nas.controllers`, :mod:`nas.trial`.
"""

from nas.core.lazy import lazy

__all__, __getattr__, __dir__ = lazy(__name__, {
    "Ledger": "nas.ledger.ledger",
    "make_base_space": "nas.ledger.ledger",
    "make_controller": "nas.ledger.ledger",
    "make_space": "nas.ledger.ledger",
    "RunFolder": "nas.ledger.folder",
    "atomic_write": "nas.ledger.folder",
    "EventLog": "nas.ledger.tblog",
})
