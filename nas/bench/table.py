"""The tables ``nas bench`` looks archs up in: one row per trained arch, or per point of any categorical space.

**Arch tables.** A CSV in the columns of ``trials.csv``: ``arch`` (the deployment arch string
the controller proposes), ``accuracy`` (of the model trained for it) and ``latency_ms`` (the
deployment model's), optionally ``seed`` (rows with other seeds than the first give the
noise of a re-run), ``params``, ``macs``, ``on_chip_bytes``, ``off_chip_bytes``,
``proxy_arch`` and ``proxy_latency_ms`` (the latency of the trained proxy, which ``--latency
proxy`` scores instead). So a search's own ``trials.csv`` is a table too. Its archs come
from a registered space (``nas bench --space``). The shipped table
(``nas/bench/tables/efficientnet_edgetpu_bench.csv``, made by ``benchmarks/make_bench_table.py``)
holds every member of ``efficientnet_edgetpu_bench`` at the deployment scale (128 px, width
1, depth 1, 10 classes), its predicted deployment latency and memory, and the accuracy of
the same member at proxy scale (32 px, width 0.25, depth 0.5: the same decisions) trained on
the MNIST digits.

**Decision tables** need no arch and no registered space: the table is the space and the
landscape at once. Instead of ``arch`` it has one *decision column* per decision, named
``d:<name>`` (e.g. ``d:kernel``) or ``d:<name>[<choice>|<choice>|...]``, which declares the
choices and their order (values outside them are an error; declared choices that no row
uses are points missing from the table). Beside them: ``accuracy``, ``latency_ms`` and any
of the optional columns above (other columns are ignored). The space
(:class:`search_spaces.CategoricalSpace`, :attr:`Table.space`) has the decision columns, in
column order, each with its choices: as declared, else the column's distinct values in
numeric order when every value reads as a number (integers stay integers), else in order of
first appearance. Its members are points written ``name=value,...`` (decision order), which
is what the ledger, ``trials.csv`` and ``bench.json`` record. A point of the cross product
that no row holds is a failed trial when proposed (as an arch missing from an arch table).
Rejected with one line naming the column or line: an empty decision cell, a value with
``,`` or ``=`` (a point's delimiters), a value outside the declared choices, two rows with
the same decisions, both ``arch`` and decision columns. Re-runs are not read from decision
tables (each point once).

**Shipped decision tables: NAS-Bench-201 on the Edge TPU.** ``nb201_cifar100.csv`` and
``nb201_imagenet16.csv`` (``--table nb201-cifar100`` / ``nb201-imagenet16``; made by
``benchmarks/nb201_landscapes.py``) hold the NAS-Bench-201 cells: decisions ``e1_0, e2_0,
e2_1, e3_0, e3_1, e3_2`` (the op on the edge into node i from node j, in NB201's arch-string
order), each with choices ``none, skip, conv1x1, conv3x3, avgpool3x3`` (NB201's ``none,
skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3``, EAGLE's digits 0-4: a point's
choice indices are EAGLE's ``arch_vector``). ``accuracy`` is NATS-Bench's 200-epoch test
accuracy (mean over seeds) on CIFAR-100 or ImageNet16-120, as a fraction. ``latency_ms`` is
the Edge TPU latency (int8, batch 1, 32 px) of the network EAGLE/LatBench measured
(``benchmarks/nb201.py`` rebuilds it); ``latency_from`` says where it comes from:

- ``measured`` (1,000 rows): EAGLE's published figure for the cell;
- ``edgetpu-model`` (14,284 rows): the ``edgetpu-model`` source's prediction for the same
  network, calibrated onto the measured rows' scale. Uncalibrated it is +116% off on the
  measured rows (the shipped constants' fixed cost per inference, 1.6 ms, is that of the
  public Coral USB figures they were fitted to; EAGLE's host and link are another set-up)
  while ranking them well (Spearman 0.957), so the predictions are
  mapped by ``measured ~ 0.9207 * predicted - 0.9959 ms`` (least squares on the 1,000 measured
  rows). Out of sample (10-fold cross-validation, every row of one network in the same fold)
  that is off by a median 5.7% (mean +0.9%, 75.5% of rows within 10%, 97.2% within 20%); on
  the 900 measured rows the shipped constants were never fitted on, 5.6%. Two measured cells
  that build the same network differ from their twins' mean by a median 3.2%: the floor.

The 341 cells with no path from the cell's input to its output are not rows: their network's
output does not depend on its input, no device measured one (EAGLE has none) and NATS-Bench
gives them chance accuracy. So a table has 15,284 rows of the 15,625-point space, and a
proposal of one of the 341 is a failed trial. Cells whose pruned graphs are identical build
the same network and share one prediction (9,444 distinct networks); their accuracies are
NATS-Bench's own, per cell.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from search_spaces import CategoricalSpace
from search_spaces.categorical import RESERVED

from nas.core.reward import RewardConfig, reward

TABLES = Path(__file__).with_name("tables")
DEFAULT_TABLE = TABLES / "efficientnet_edgetpu_bench.csv"
#: The shipped tables by name (``nas bench --table nb201-cifar100``).
SHIPPED = {"efficientnet-edgetpu-bench": DEFAULT_TABLE, "nb201-cifar100": TABLES / "nb201_cifar100.csv",
           "nb201-imagenet16": TABLES / "nb201_imagenet16.csv"}
#: The shipped table's archs: the bench space at the deployment scale.
DEFAULT_SPACE = ("efficientnet_edgetpu_bench", {"resolution": 128, "width": 1.0, "depth": 1.0, "num_classes": 10})
REQUIRED = ("arch", "accuracy", "latency_ms")
#: A decision column: ``d:<name>`` or ``d:<name>[<choice>|<choice>|...]``.
DECISION_PREFIX = "d:"
_DECISION_COLUMN = re.compile(r"d:([^\[\]]+)(?:\[([^\[\]]*)\])?")
_INT = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
#: Which latency the reward scores: the deployment model's (``latency_ms``) or the proxy's.
LATENCY_COLUMNS = {"deployment": "latency_ms", "proxy": "proxy_latency_ms"}
EXTRA = ("params", "macs", "on_chip_bytes", "off_chip_bytes", "proxy_params", "proxy_macs", "proxy_on_chip_bytes",
         "proxy_off_chip_bytes")


def resolve(path: str | Path | None) -> Path:
    """The file of a ``--table``: a path, or a shipped table's name (:data:`SHIPPED`); None: the default."""
    if path is None:
        return DEFAULT_TABLE
    p = Path(path)
    return SHIPPED[str(path)] if not p.is_file() and str(path) in SHIPPED else p


@dataclass
class Table:
    """One row per arch (the first seed's), plus re-runs for the noise estimate."""

    archs: list[str]
    accuracy: np.ndarray
    latency_ms: np.ndarray  # the latency the reward scores (see ``latency``)
    extra: dict[str, np.ndarray]
    source: str
    reruns: list[tuple[float, float]] = field(default_factory=list)  # (accuracy, re-run accuracy)
    latency: str = "deployment"
    #: A decision table's space (its archs are the space's point strings); None: an arch table.
    space: CategoricalSpace | None = None

    @classmethod
    def load(cls, path: str | Path | None = None, latency: str = "deployment") -> "Table":
        """Read a table (a path or a name of :data:`SHIPPED`; default the efficientnet one);
        ``latency`` picks the column the reward scores (``deployment``: ``latency_ms``;
        ``proxy``: ``proxy_latency_ms``)."""
        if latency not in LATENCY_COLUMNS:
            raise ValueError(f"--latency: unknown {latency!r}; allowed: {', '.join(LATENCY_COLUMNS)}")
        col = LATENCY_COLUMNS[latency]
        p = resolve(path)
        if not p.is_file():
            hint = (" (the shipped table is made by benchmarks/make_bench_table.py)" if path is None
                    else f"; shipped tables: {', '.join(SHIPPED)}")
            raise ValueError(f"table: file {str(p)!r} does not exist{hint}")
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            names = reader.fieldnames or []
            decisions = [c for c in names if c.startswith(DECISION_PREFIX)]
            required = REQUIRED[1:] if decisions else REQUIRED
            missing = [c for c in required if c not in names]
            if missing:
                raise ValueError(f"table {p.name}: missing column(s) {', '.join(missing)}; a table needs "
                                 f"{', '.join(REQUIRED)} or decision columns d:<name> instead of arch (optional: "
                                 f"seed, {', '.join(EXTRA)}, proxy_latency_ms)")
            if decisions and "arch" in names:
                raise ValueError(f"table {p.name}: has both an arch column and decision columns "
                                 f"({', '.join(decisions)}); give one or the other")
            if col not in names:
                raise ValueError(f"--latency: {latency!r} needs a {col} column, which table {p.name} lacks; "
                                 f"allowed here: deployment")
            rows = []  # (line, row), the rows of finished trials
            for r in reader:
                if r.get("status", "ok") in ("ok", ""):
                    rows.append((reader.line_num, r))
        for line, r in rows:
            try:
                float(r["accuracy"]), float(r[col])
            except (TypeError, ValueError):
                raise ValueError(f"table {p.name}: line {line}: accuracy and {col} must be numbers, got "
                                 f"{r['accuracy']!r}, {r[col]!r}") from None
        if not rows:
            raise ValueError(f"table {p.name}: no rows")
        if decisions:
            space, keys = _decision_space(p, decisions, rows)
            first = dict(zip(keys, (r for _, r in rows)))
            archs, reruns = keys, []
        else:
            space, first, others = None, {}, {}
            for _, r in rows:
                if r["arch"] in first:
                    others.setdefault(r["arch"], []).append(r)
                else:
                    first[r["arch"]] = r
            archs = list(first)
            reruns = [(float(first[a]["accuracy"]), float(o["accuracy"])) for a in others for o in others[a]]
        extra = {c: np.array([float(first[a][c] or "nan") for a in archs]) for c in EXTRA if c in names}
        return cls(archs, np.array([float(first[a]["accuracy"]) for a in archs]),
                   np.array([float(first[a][col]) for a in archs]), extra, str(p), reruns, latency, space)

    def __len__(self) -> int:
        return len(self.archs)

    @property
    def index(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.archs)}

    def rewards(self, rcfg: RewardConfig) -> np.ndarray:
        return np.array([reward(a, lat, rcfg) for a, lat in zip(self.accuracy, self.latency_ms)])

    def noise(self) -> dict[str, float] | None:
        """Accuracy differences between re-runs of the same arch (seed 0 vs seed 1)."""
        if not self.reruns:
            return None
        d = np.array([b - a for a, b in self.reruns])
        return {"n": len(d), "mean_abs_diff": float(np.abs(d).mean()), "std_diff": float(d.std(ddof=1)) if len(d) > 1
                else 0.0, "rerun_std": float(d.std(ddof=1) / math.sqrt(2)) if len(d) > 1 else 0.0}


# ------------------------------------------------------------------ decision tables


def _kind(texts: list[str]) -> type:
    """int when every text reads as an integer, float when as a number, else str."""
    if all(_INT.fullmatch(t) for t in texts):
        return int
    if all(_NUMBER.fullmatch(t) for t in texts):
        return float
    return str


def _decision_space(p: Path, columns: list[str], rows: list[tuple[int, dict]]) -> tuple[CategoricalSpace, list[str]]:
    """The space a decision table's columns declare, and each row's point string (in row order)."""
    where = f"table {p.name}"
    specs: list[tuple[str, str, list[str] | None]] = []  # (column, decision name, declared choices)
    for c in columns:
        m = _DECISION_COLUMN.fullmatch(c)
        name = m.group(1) if m else ""
        if not m or not name.strip() or any(ch in name for ch in RESERVED):
            raise ValueError(f"{where}: column {c!r}: expected d:<name> or d:<name>[<choice>|<choice>|...] (a "
                             f"name without ',', '=' or brackets)")
        if name in (s[1] for s in specs):
            raise ValueError(f"{where}: column {c!r}: decision {name!r} is declared twice")
        declared = m.group(2).split("|") if m.group(2) is not None else None
        if declared is not None and (not all(declared) or any(ch in t for t in declared for ch in RESERVED)):
            raise ValueError(f"{where}: column {c!r}: declared choices must be non-empty and hold no ',' or '='")
        specs.append((c, name, declared))
    for line, r in rows:
        for c, _, _ in specs:
            v = r.get(c)
            if v is None or v == "":
                raise ValueError(f"{where}: line {line}: column {c} is empty")
            if any(ch in v for ch in RESERVED):
                raise ValueError(f"{where}: line {line}: column {c}: {v!r} holds ',' or '=', which a point's string "
                                 "uses as delimiters")
    decisions: dict[str, tuple] = {}
    readers = []  # per column: text -> value
    for c, name, declared in specs:
        texts = declared if declared is not None else list(dict.fromkeys(r[c] for _, r in rows))
        kind = _kind(texts)
        values = [kind(t) for t in texts]
        if declared is not None:
            dup = next((t for t, v in zip(texts, values) if values.count(v) > 1), None)
            if dup is not None:
                raise ValueError(f"{where}: column {c!r}: declares {dup!r} twice")
            choices = tuple(values)
        else:
            uniq = list(dict.fromkeys(values))
            choices = tuple(sorted(uniq) if kind is not str else uniq)
        decisions[name] = choices
        readers.append((c, kind, set(choices)))
    try:
        space = CategoricalSpace(decisions, label=p.stem)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    keys: list[str] = []
    seen: dict[str, int] = {}
    for line, r in rows:
        choice = {}
        for (c, kind, allowed), d in zip(readers, space.decision_list):
            t = r[c]
            ok = kind is str or (_INT if kind is int else _NUMBER).fullmatch(t)
            value = kind(t) if ok else None
            if value is None or value not in allowed:
                raise ValueError(f"{where}: line {line}: column {c}: {t!r} is not one of its declared choices "
                                 f"{', '.join(map(str, d.choices))}")
            choice[d.name] = value
        key = space.make_arch(choice).to_string()
        if key in seen:
            raise ValueError(f"{where}: line {line}: the same decisions as line {seen[key]} ({key}); a decision "
                             "table holds each point once")
        seen[key] = line
        keys.append(key)
    return space, keys
