"""``nas bench``: controllers compared on tables and landscapes, with statistics.

- :mod:`nas.bench.bench`: a controller's run on a table, many seeds, their outputs;
- :mod:`nas.bench.table`: benchmark tables (the shipped ones are in ``tables/``);
- :mod:`nas.bench.stats`: intervals, trials-to-level, hypervolume;
- :mod:`nas.bench.landscape`, :mod:`nas.bench.landscape_fit`, :mod:`nas.bench.landscape_bench`:
  surrogate landscapes fitted to the tables, and their benchmark;
- :mod:`nas.bench.launch`: what ``nas bench`` calls.

May import: :mod:`nas.core`, :mod:`nas.controllers`, :mod:`nas.ledger`.
"""

from nas.core.lazy import lazy

__all__, __getattr__, __dir__ = lazy(__name__, {
    "BenchResult": "nas.bench.bench",
    "controller_label": "nas.bench.bench",
    "run_bench": "nas.bench.bench",
    "DEFAULT_SPACE": "nas.bench.table",
    "DEFAULT_TABLE": "nas.bench.table",
    "TABLES": "nas.bench.table",
    "Table": "nas.bench.table",
    "run_landscapes": "nas.bench.landscape_bench",
})
