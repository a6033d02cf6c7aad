"""Latency profiles: many archs sampled from search spaces, each measured by a source.

A profile is a CSV, one row per measured arch, that learned predictors are fitted on
(``nas latency fit``). Sampling is stratified: every decision's values are drawn from
shuffled balanced rounds (each value used equally often), and the proxy scale (resolution,
width, depth) cycles through a grid, so small and large models, every block type and
every kernel are all represented. Row ``i`` of a profile is a pure function of
(spaces, grid, seed, i), so a profile killed at any point resumes where it stopped, and
the CSV is appended one flushed line at a time (a torn last line is dropped on resume).
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

import search_spaces
from search_spaces import Arch

from latency_models.base import LatencySource
from latency_models.errors import LatencyError
from latency_models.target import Target

log = logging.getLogger(__name__)

COLUMNS = ("row", "space", "space_config", "arch", "num_classes", "source", "source_version", "latency_ms",
           "p90_ms", "spread", "n_runs", "xnnpack", "params", "macs", "on_chip_bytes", "off_chip_bytes",
           "ops_on_tpu", "ops_on_cpu", "convert_s", "measure_s", "status", "error")

# Proxy scales cycled through by default: 32-96 px, narrow to base width.
DEFAULT_RESOLUTIONS = (32, 48, 64, 80, 96)
DEFAULT_WIDTHS = (0.25, 0.35, 0.5, 0.75)
DEFAULT_DEPTHS = (0.5, 0.75, 1.0)


@dataclass(frozen=True)
class ProfilePlan:
    """What to sample: spaces (names or import paths), a scale grid, classes and a seed."""

    spaces: tuple[str, ...]
    resolutions: tuple[int, ...] = DEFAULT_RESOLUTIONS
    widths: tuple[float, ...] = DEFAULT_WIDTHS
    depths: tuple[float, ...] = DEFAULT_DEPTHS
    num_classes: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.spaces:
            raise ValueError("profile spaces: give at least one space")
        for name in self.spaces:
            search_spaces.get(name)  # unknown names fail here, before any work

    def rows(self) -> Iterator[tuple[int, str, dict[str, Any], Arch]]:
        """Row index, space name, space config and arch, forever (callers take n)."""
        rng = np.random.default_rng(self.seed)
        scales = list(itertools.product(self.resolutions, self.widths, self.depths))
        order = rng.permutation(len(scales))
        pools: dict[str, dict[str, list]] = {}
        for i in itertools.count():
            name = self.spaces[i % len(self.spaces)]
            res, width, depth = scales[order[(i // len(self.spaces)) % len(scales)]]
            space, config = self._space(name, res, width, depth)
            pool = pools.setdefault(f"{name}|{res}|{width}|{depth}", {})
            choices = {}
            for d in space.decision_list:
                # Balanced rounds per decision: every value once per round, in shuffled order.
                if not pool.get(d.name):
                    pool[d.name] = list(rng.permutation(len(d.choices)))
                choices[d.name] = d.choices[pool[d.name].pop()]
            yield i, name, config, space.decode(choices)

    def _space(self, name: str, res: int, width: float, depth: float):
        kwargs: dict[str, Any] = {"resolution": res, "width": width, "depth": depth, "num_classes": self.num_classes}
        try:
            return search_spaces.get(name, **kwargs), kwargs
        except ValueError:
            # A user space may not take the scale arguments: profile it as it is.
            return search_spaces.get(name), {}


def read_profiles(paths) -> list[dict[str, str]]:
    """Rows of several profile CSVs (shards), one row per row index (later files win)."""
    by_row: dict[tuple, dict] = {}
    for p in paths:
        for r in read_profile(p):
            by_row[(r.get("row"), r["arch"])] = r
    return [by_row[k] for k in sorted(by_row, key=lambda k: (int(k[0]) if str(k[0]).isdigit() else 0, k[1]))]


def read_profile(path: str | Path) -> list[dict[str, str]]:
    """Rows of a profile CSV; a torn last line (killed mid-write) is dropped with a warning."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"profile {str(path)!r}: no such file")
    try:
        # A shipped profile is gzipped (latency_models/data/host_cpu_profile.csv.gz).
        text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise ValueError(f"profile {str(path)!r}: cannot read it as {'gzip ' if path.suffix == '.gz' else ''}"
                         f"CSV text ({e})") from None
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        log.warning("profile %s: dropping an unfinished last line", path)
        lines = lines[:-1]
    reader = csv.DictReader(io.StringIO("".join(lines)))
    missing = [c for c in ("arch", "latency_ms", "status") if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"profile {str(path)!r}: not a latency profile, missing columns {', '.join(missing)}; "
                         f"expected the columns of 'nas latency profile': {', '.join(COLUMNS)}")
    return list(reader)


def profile(plan: ProfilePlan, source: LatencySource, n: int, out: str | Path, *, progress: bool = True,
            resume: bool = True, shard: tuple[int, int] = (0, 1)) -> list[dict[str, Any]]:
    """Measure the first ``n`` archs of ``plan`` with ``source`` into the CSV ``out``.

    Rows already in ``out`` (same row index) are skipped, so a killed run continues.
    Failed measurements are recorded with status ``failed`` and their error.
    ``shard=(k, m)`` measures only rows ``i`` with ``i % m == k``: m processes (or machines)
    share one profile, each writing its own file; ``nas latency fit`` takes them all.
    """
    k, m = shard
    if not (isinstance(k, int) and isinstance(m, int) and m >= 1 and 0 <= k < m):
        raise ValueError(f"shard: expected K/M with 0 <= K < M, got {k}/{m}")
    out = Path(out)
    done: set[int] = set()
    if out.exists():
        if not resume:
            raise ValueError(f"profile output {str(out)!r} exists; use resume or choose another file")
        rows = read_profile(out)
        done = {int(r["row"]) for r in rows}
        # Rewrite without a torn tail so appends start on a fresh line.
        _rewrite(out, rows)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        _rewrite(out, [])
    mine = [(i, name, cfg, arch) for i, name, cfg, arch in itertools.islice(plan.rows(), n) if i % m == k]
    todo = [row for row in mine if row[0] not in done]
    bar = None
    if progress:
        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), unit="arch", desc=f"profile {source.name}")
    written = []
    with out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        for i, name, cfg, arch in todo:
            row = _measure_row(i, name, cfg, arch, plan.num_classes, source)
            writer.writerow(row)
            fh.flush()
            os.fsync(fh.fileno())
            written.append(row)
            if bar is not None:
                bar.set_postfix_str(f"{row['latency_ms'] or 'failed'} ms", refresh=False)
                bar.update(1)
    if bar is not None:
        bar.close()
    return written


def _rewrite(path: Path, rows: Sequence[dict[str, str]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _measure_row(i: int, name: str, cfg: dict, arch: Arch, num_classes: int, source: LatencySource) -> dict:
    row: dict[str, Any] = {
        "row": i, "space": name, "space_config": json.dumps(cfg, sort_keys=True), "arch": arch.to_string(),
        "num_classes": num_classes, "source": source.name, "source_version": source.describe(),
        "params": search_spaces.count_params(arch, num_classes=num_classes),
        "macs": search_spaces.count_macs(arch, num_classes=num_classes), "status": "ok", "error": "",
    }
    # No conversion cache: a profile converts each arch once, and would fill the disk with them.
    target = Target(arch, num_classes=num_classes, cache=False)
    t0 = time.perf_counter()
    try:
        if getattr(source, "measured", False):
            target.tflite()
        t1 = time.perf_counter()
        r = source.measure(target)
        t2 = time.perf_counter()
    except LatencyError as e:  # ConversionError included
        row.update(status="failed", error=str(e).splitlines()[0][:300], latency_ms="", p90_ms="", spread="",
                   n_runs="", xnnpack="", convert_s=round(time.perf_counter() - t0, 3), measure_s="")
        log.warning("row %d failed: %s", i, row["error"])
        return row
    row.update(latency_ms=round(r.latency_ms, 5), p90_ms="" if r.p90_ms is None else round(r.p90_ms, 5),
               spread="" if r.spread is None else round(r.spread, 5), n_runs=r.n_runs,
               xnnpack=r.details.get("xnnpack", ""), convert_s=round(t1 - t0, 3), measure_s=round(t2 - t1, 3),
               **{k: "" if getattr(r, k) is None else getattr(r, k)
                  for k in ("on_chip_bytes", "off_chip_bytes", "ops_on_tpu", "ops_on_cpu")})
    return row
