"""The tables ``nas bench`` looks archs up in: one row per trained arch.

A table is a CSV in the columns of ``trials.csv``: ``arch`` (the deployment arch string the
controller proposes), ``accuracy`` (of the model trained for it) and ``latency_ms`` (the
deployment model's), optionally ``seed`` (rows with other seeds than the first give the
noise of a re-run), ``params``, ``macs``, ``on_chip_bytes``, ``off_chip_bytes``,
``proxy_arch`` and ``proxy_latency_ms`` (the latency of the trained proxy, which ``--latency
proxy`` scores instead). So a search's own ``trials.csv`` is a table too. The shipped table
(``nas/tables/efficientnet_edgetpu_bench.csv``, made by ``benchmarks/make_bench_table.py``)
holds every member of ``efficientnet_edgetpu_bench`` at the deployment scale (128 px, width
1, depth 1, 10 classes), its predicted deployment latency and memory, and the accuracy of
the same member at proxy scale (32 px, width 0.25, depth 0.5: the same decisions) trained on
the MNIST digits.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .reward import RewardConfig, reward

TABLES = Path(__file__).with_name("tables")
DEFAULT_TABLE = TABLES / "efficientnet_edgetpu_bench.csv"
#: The shipped table's archs: the bench space at the deployment scale.
DEFAULT_SPACE = ("efficientnet_edgetpu_bench", {"resolution": 128, "width": 1.0, "depth": 1.0, "num_classes": 10})
REQUIRED = ("arch", "accuracy", "latency_ms")
#: Which latency the reward scores: the deployment model's (``latency_ms``) or the proxy's.
LATENCY_COLUMNS = {"deployment": "latency_ms", "proxy": "proxy_latency_ms"}
EXTRA = ("params", "macs", "on_chip_bytes", "off_chip_bytes", "proxy_params", "proxy_macs", "proxy_on_chip_bytes",
         "proxy_off_chip_bytes")


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

    @classmethod
    def load(cls, path: str | Path | None = None, latency: str = "deployment") -> "Table":
        """Read a table; ``latency`` picks the column the reward scores (``deployment``:
        ``latency_ms``; ``proxy``: ``proxy_latency_ms``)."""
        if latency not in LATENCY_COLUMNS:
            raise ValueError(f"--latency: unknown {latency!r}; allowed: {', '.join(LATENCY_COLUMNS)}")
        col = LATENCY_COLUMNS[latency]
        p = Path(path) if path is not None else DEFAULT_TABLE
        if not p.is_file():
            hint = " (the shipped table is made by benchmarks/make_bench_table.py)" if path is None else ""
            raise ValueError(f"table: file {str(p)!r} does not exist{hint}")
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            names = reader.fieldnames or []
            missing = [c for c in REQUIRED if c not in names]
            if missing:
                raise ValueError(f"table {p.name}: missing column(s) {', '.join(missing)}; a table needs "
                                 f"{', '.join(REQUIRED)} (optional: seed, {', '.join(EXTRA)}, proxy_latency_ms)")
            if col not in names:
                raise ValueError(f"--latency: {latency!r} needs a {col} column, which table {p.name} lacks; "
                                 f"allowed here: deployment")
            rows = [r for r in reader if r.get("status", "ok") in ("ok", "")]
        first: dict[str, dict] = {}
        others: dict[str, list[dict]] = {}
        for i, r in enumerate(rows, start=2):
            try:
                float(r["accuracy"]), float(r[col])
            except ValueError:
                raise ValueError(f"table {p.name}: line {i}: accuracy and {col} must be numbers, got "
                                 f"{r['accuracy']!r}, {r[col]!r}") from None
            if r["arch"] in first:
                others.setdefault(r["arch"], []).append(r)
            else:
                first[r["arch"]] = r
        if not first:
            raise ValueError(f"table {p.name}: no rows")
        archs = list(first)
        extra = {c: np.array([float(first[a][c] or "nan") for a in archs]) for c in EXTRA if c in names}
        reruns = [(float(first[a]["accuracy"]), float(o["accuracy"])) for a in others for o in others[a]]
        return cls(archs, np.array([float(first[a]["accuracy"]) for a in archs]),
                   np.array([float(first[a][col]) for a in archs]), extra, str(p), reruns, latency)

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
