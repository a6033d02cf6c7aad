"""What a finished run gives: its report, and the exported deployment model.

- :mod:`nas.results.report`: ``nas report`` (tables, TensorBoard, re-checks), its plots in
  :mod:`nas.results.plots`;
- :mod:`nas.results.export`: ``nas export`` (Keras, int8 TFLite, Edge TPU build).

May import: :mod:`nas.core`, :mod:`nas.config`, :mod:`nas.data`, :mod:`nas.controllers`,
:mod:`nas.trial`, :mod:`nas.ledger`.
"""

from nas.core.lazy import lazy

__all__, __getattr__, __dir__ = lazy(__name__, {
    "Report": "nas.results.report",
    "build": "nas.results.report",
    "latency_axis": "nas.results.plots",
    "write": "nas.results.report",
    "export": "nas.results.export",
})
