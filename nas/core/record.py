"""The trial record: one typed result per trial, and the only place that converts it.

A trial trains the *proxy* arch (a compound-scaled-down copy of the candidate) and scores
the *deployment* arch (the candidate itself, what the user ships). A :class:`TrialRecord`
holds both: ``arch``, ``latency_ms``, ``on_chip_bytes``, ``off_chip_bytes``, ``ops_on_tpu``,
``ops_on_cpu``, ``params`` and ``macs`` describe the deployment model; ``proxy_arch``,
``proxy_params`` and ``proxy_macs`` the model that was trained, whose validation accuracy is
``accuracy``. The reward is computed from that accuracy and the deployment latency.

Every conversion lives here: ``trials.csv`` rows (:meth:`TrialRecord.csv_row`,
:func:`read_csv`), ``state.json`` (:meth:`TrialRecord.as_dict`), Ray Tune's result dicts
(:meth:`TrialRecord.to_ray`, :meth:`TrialRecord.from_ray`) and what a controller is told
(:meth:`TrialRecord.controller_view`). So does the one definition of a result the search
can rank, :attr:`TrialRecord.usable`: a finished (``ok``) or early-stopped (``stopped``)
trial with a finite reward. Controllers, the Pareto front, the best result, ``nas report``
and TensorBoard all ask it.

>>> r = TrialRecord.from_dict({"status": "ok", "reward": 0.8, "accuracy": 0.8, "latency_ms": 3.1})
>>> r.usable, r.status is Status.OK
(True, True)
>>> TrialRecord.from_dict({"status": "stopped", "reward": float("nan")}).usable
False
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import io
import math
import types
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from nas.core.errors import RecordError


class Status(str, enum.Enum):
    """What became of a trial."""

    RUNNING = "running"        #: an intermediate (per-epoch) report; never stored as such
    OK = "ok"                  #: trained and scored
    STOPPED = "stopped"        #: stopped early by the scheduler (ASHA); scored on its last epoch
    INFEASIBLE = "infeasible"  #: broke a hard constraint; not trained
    FAILED = "failed"          #: could not be trained or measured; ``reason`` says why

    def __str__(self) -> str:
        return self.value


#: Statuses whose reward the search may rank and learn from.
RANKED = frozenset({Status.OK, Status.STOPPED})

#: Every field, in the column order of ``trials.csv``.
FIELDS = ("trial_id", "status", "reason", "reward", "accuracy", "int8_accuracy", "latency_ms", "params", "macs", "num_classes",
          "on_chip_bytes", "off_chip_bytes", "ops_on_tpu", "ops_on_cpu", "proxy_params", "proxy_macs", "epochs",
          "train_s", "build_s", "latency_s", "int8_s", "trial_s", "rss_mb", "peak_rss_mb", "latency_source", "node", "gpus",
          "started", "arch", "proxy_arch")

_INTS = frozenset({"params", "macs", "num_classes", "on_chip_bytes", "off_chip_bytes", "ops_on_tpu", "ops_on_cpu",
                   "proxy_params", "proxy_macs", "epochs"})
_FLOATS = frozenset({"reward", "accuracy", "int8_accuracy", "latency_ms", "train_s", "build_s", "latency_s", "int8_s",
                     "trial_s", "rss_mb",
                     "peak_rss_mb", "started"})
_TEXT = frozenset({"reason", "latency_source", "node", "gpus", "arch", "proxy_arch"})  # and trial_id: "" for none

#: Columns a ``trials.csv`` written before proxy and deployment were told apart lacks.
_PROXY_COLUMNS = ("proxy_arch", "proxy_params", "proxy_macs")


def _number(name: str, v: Any) -> int | float | None:
    """A field's value as int/float, or None for "no value" (None, "", NaN, inf)."""
    if v is None or (isinstance(v, str) and v == ""):
        return None
    if isinstance(v, bool):
        raise RecordError(f"{name}: expected a number, got {v!r}")
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # numpy scalars
        v = v.item()
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise RecordError(f"{name}: expected a number, got {v!r}") from None
    if not math.isfinite(x):
        return None
    if name in _INTS:
        if not x.is_integer():
            raise RecordError(f"{name}: expected an integer, got {v!r}")
        return int(x)
    return x


@dataclass
class TrialRecord:
    """One trial's result (see the module docstring for which model each field describes)."""

    trial_id: str = ""
    status: Status = Status.FAILED
    reason: str | None = None
    reward: float | None = None
    accuracy: float | None = None
    int8_accuracy: float | None = None  #: the proxy quantized to int8, on score.eval_images (score.accuracy: int8)
    latency_ms: float | None = None
    params: int | None = None
    macs: int | None = None
    num_classes: int | None = None
    on_chip_bytes: int | None = None
    off_chip_bytes: int | None = None
    ops_on_tpu: int | None = None
    ops_on_cpu: int | None = None
    proxy_params: int | None = None
    proxy_macs: int | None = None
    epochs: int | None = None
    train_s: float | None = None
    build_s: float | None = None
    latency_s: float | None = None
    int8_s: float | None = None  #: seconds converting the proxy to int8 and evaluating it
    trial_s: float | None = None
    rss_mb: float | None = None
    peak_rss_mb: float | None = None
    latency_source: str | None = None
    node: str | None = None
    gpus: str | None = None      #: the GPU ids the trial's process saw (CUDA_VISIBLE_DEVICES, as Ray set it)
    started: float | None = None  #: when the trial started (Unix time, s)
    arch: str | None = None
    proxy_arch: str | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        # Every assignment (the constructor's too) stores the field's own type: a Status, an
        # int/float or None for no value (NaN, inf, "" and numpy scalars included), text.
        if name == "status":
            try:
                value = Status(str(value.value if isinstance(value, Status) else value))
            except ValueError:
                raise RecordError(f"status: unknown {value!r}; allowed: "
                                  f"{', '.join(s.value for s in Status)}") from None
        elif name in _INTS or name in _FLOATS:
            value = _number(name, value)
        elif name in _TEXT:
            value = None if value is None or value == "" else str(value)
        elif name == "trial_id":
            value = "" if value is None else str(value)
        object.__setattr__(self, name, value)

    # -- what the search asks -----------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """The one definition: the search may rank this result and learn from it."""
        return self.status in RANKED and self.reward is not None

    @property
    def scored_accuracy(self) -> float | None:
        """The accuracy the reward took: the int8 model's when the trial measured it
        (``score.accuracy: int8``), else the float proxy's."""
        return self.int8_accuracy if self.int8_accuracy is not None else self.accuracy

    @property
    def off_chip(self) -> bool:
        """Whether the deployment model streams parameters from the host (the SRAM is too small)."""
        return bool(self.off_chip_bytes)

    def replace(self, **changes: Any) -> "TrialRecord":
        return dataclasses.replace(self, **changes)

    # -- conversions --------------------------------------------------------------------------

    def as_dict(self, *, drop_empty: bool = False) -> dict[str, Any]:
        """JSON-safe values (``status`` as text, None for "no value"), in :data:`FIELDS` order;
        ``drop_empty``: without the fields that have no value (:meth:`from_dict` reads either)."""
        d = {k: (getattr(self, k).value if k == "status" else getattr(self, k)) for k in FIELDS}
        return {k: v for k, v in d.items() if v is not None} if drop_empty else d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrialRecord":
        """From any mapping with (some of) the fields; other keys (Ray's own) are ignored."""
        return cls(**{k: d[k] for k in FIELDS if k in d})

    @classmethod
    def coerce(cls, result: "TrialRecord | Mapping[str, Any] | None") -> "TrialRecord":
        """A record from a record, a plain result mapping (a user's controller test, ``nas
        bench``) or None (no result: failed). A mapping without ``status`` counts as ``ok``."""
        if isinstance(result, TrialRecord):
            return result
        if not result:
            return cls(status=Status.FAILED, reason="no result")
        return cls.from_dict({"status": Status.OK, **result})

    def to_ray(self) -> dict[str, Any]:
        """The dict a trial reports to Ray Tune: numbers without a value are NaN (Ray keeps
        None poorly in its result tables), text stays text."""
        out = self.as_dict()
        for k in _INTS | _FLOATS:
            if out[k] is None:
                out[k] = float("nan")
        return out

    @classmethod
    def from_ray(cls, result: Mapping[str, Any] | None, *, error: bool = False, why: str = "") -> "TrialRecord":
        """From a Ray Tune result (NaN is "no value"; Ray's own keys are dropped). A trial
        whose worker failed has no result of its own: it becomes a failed record."""
        if error or not result:
            return cls(status=Status.FAILED, reason=f"the trial's worker failed{': ' + why if why else ''}")
        return cls.from_dict(result)

    def controller_view(self) -> Mapping[str, Any]:
        """What a controller is told: a read-only mapping of the fields (``status`` as text).
        ``Controller.tell`` learns only from a :attr:`usable` one."""
        return types.MappingProxyType(self.as_dict())

    def csv_row(self) -> dict[str, str]:
        return {k: "" if v is None else str(v) for k, v in self.as_dict().items()}

    @classmethod
    def from_csv_row(cls, row: Mapping[str, str], *, line: int | None = None) -> "TrialRecord":
        where = f"line {line}: " if line is not None else ""
        try:
            rec = cls.from_dict(row)
        except RecordError as e:
            raise RecordError(f"{where}{e}") from None
        if "proxy_arch" not in row:
            rec = _legacy(rec)
        return rec


def _legacy(rec: TrialRecord) -> TrialRecord:
    """A record written before proxy and deployment were told apart: the trial trained the
    arch itself, so the proxy is the arch (and its size the arch's)."""
    return rec.replace(proxy_arch=rec.proxy_arch or rec.arch,
                       proxy_params=rec.proxy_params if rec.proxy_params is not None else rec.params,
                       proxy_macs=rec.proxy_macs if rec.proxy_macs is not None else rec.macs)


def legacy_dict(d: Mapping[str, Any]) -> TrialRecord:
    """A ``state.json`` result of a run made before this record had proxy fields."""
    return _legacy(TrialRecord.from_dict(d))


def csv_text(records: Iterable[TrialRecord]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow(r.csv_row())
    return buf.getvalue()


def read_csv(text: str, where: str = "trials.csv") -> list[TrialRecord]:
    """The records of a ``trials.csv`` (this version's or an earlier one without proxy columns)."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("trial_id", "status", "arch") if c not in (reader.fieldnames or [])]
    if missing:
        raise RecordError(f"{where}: not a trials table (no {', '.join(missing)} column)")
    try:
        return [TrialRecord.from_csv_row(row, line=i) for i, row in enumerate(reader, start=2)]
    except RecordError as e:
        raise RecordError(f"{where}: {e}") from None


# ------------------------------------------------------------------------------ over many records

def pareto_front(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Usable records not dominated in (higher :attr:`~TrialRecord.scored_accuracy`, lower
    deployment latency), by latency."""
    ok = [r for r in records if r.usable and r.scored_accuracy is not None and r.latency_ms is not None]
    ok.sort(key=lambda r: (r.latency_ms, -r.scored_accuracy))
    front, best_acc = [], -math.inf
    for r in ok:
        if r.scored_accuracy > best_acc:
            front.append(r)
            best_acc = r.scored_accuracy
    return front


def best_result(records: Sequence[TrialRecord]) -> TrialRecord | None:
    """The usable record with the highest reward (the first of equals)."""
    usable = [r for r in records if r.usable]
    return max(usable, key=lambda r: r.reward) if usable else None


def usable_reward(result: Any) -> float | None:
    """The reward of a result if it may be learned from, else None.

    ``result`` is a :class:`TrialRecord`, what a search tells a controller (its
    :meth:`~TrialRecord.controller_view`), or any mapping with ``reward`` and optionally
    ``status``; the test is :attr:`TrialRecord.usable`.

    >>> usable_reward({"reward": 0.7}), usable_reward({"status": "failed", "reward": 0.7}), usable_reward(None)
    (0.7, None, None)
    """
    try:
        rec = TrialRecord.coerce(result)
    except RecordError:
        return None
    return rec.reward if rec.usable else None
