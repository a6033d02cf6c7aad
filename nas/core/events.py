"""The events of a search, typed: what a ledger's log records, and what a runner tells its listeners.

The ledger's log (``state.json``'s ``events``) is the order in which the controller was asked
and told; a resumed search replays it to rebuild the controller exactly. Each event is one of
:class:`Ask`, :class:`Tell`, :class:`Repeat`, :class:`TellRepeat`, :class:`Reissue`,
:class:`Orphan`, stored as a short list (``["ask", "t3"]``) and read back by :func:`parse`.

A runner tells its listener (the progress display, a user's hook) :class:`TrialStarted` and
:class:`TrialFinished` as trials start and end.

>>> parse(["tell-repeat", "v1-res32:...", "t4"])
TellRepeat(arch='v1-res32:...', trial_id='t4')
>>> Ask("t3").as_list()
['ask', 't3']
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from typing import TYPE_CHECKING, Callable, ClassVar, Union

if TYPE_CHECKING:
    from nas.core.record import TrialRecord

__all__ = ["Ask", "LedgerEvent", "Listener", "Orphan", "ProgressEvent", "Reissue", "Repeat", "Tell", "TellRepeat",
           "TrialFinished", "TrialStarted", "parse"]


class _Logged:
    kind: ClassVar[str]

    def as_list(self) -> list[str]:
        """The event as ``state.json`` stores it."""
        return [self.kind, *astuple(self)]


@dataclass(frozen=True)
class Ask(_Logged):
    """The controller proposed the arch that became trial ``trial_id``."""

    kind: ClassVar[str] = "ask"
    trial_id: str


@dataclass(frozen=True)
class Tell(_Logged):
    """Trial ``trial_id``'s result went back to the controller."""

    kind: ClassVar[str] = "tell"
    trial_id: str


@dataclass(frozen=True)
class Repeat(_Logged):
    """The controller proposed ``arch``, already recorded: answered from the record, not trained."""

    kind: ClassVar[str] = "repeat"
    arch: str


@dataclass(frozen=True)
class TellRepeat(_Logged):
    """That repeat answered with trial ``trial_id``'s result."""

    kind: ClassVar[str] = "tell-repeat"
    arch: str
    trial_id: str


@dataclass(frozen=True)
class Reissue(_Logged):
    """An orphan's arch (asked before a crash, never started) runs again as trial ``trial_id``."""

    kind: ClassVar[str] = "reissue"
    trial_id: str
    arch: str


@dataclass(frozen=True)
class Orphan(_Logged):
    """Trial ``trial_id`` was asked but the runner never heard of it (a crash): its arch is re-issued."""

    kind: ClassVar[str] = "orphan"
    trial_id: str


LedgerEvent = Union[Ask, Tell, Repeat, TellRepeat, Reissue, Orphan]
_KINDS: dict[str, type] = {c.kind: c for c in (Ask, Tell, Repeat, TellRepeat, Reissue, Orphan)}


def parse(item: list | tuple) -> LedgerEvent:
    """An event from its stored list; ``ValueError`` naming what is wrong."""
    if not isinstance(item, (list, tuple)) or not item or item[0] not in _KINDS:
        raise ValueError(f"event {item!r}: expected [kind, ...] with kind one of {', '.join(_KINDS)}")
    cls = _KINDS[item[0]]
    try:
        return cls(*item[1:])
    except TypeError:
        raise ValueError(f"event {item!r}: a {item[0]!r} event takes {', '.join(f.name for f in fields(cls))}") \
            from None


@dataclass(frozen=True)
class TrialStarted:
    """A runner started trial ``trial_id``."""

    trial_id: str


@dataclass(frozen=True)
class TrialFinished:
    """A trial ended (done, failed, infeasible or stopped) and was recorded."""

    record: TrialRecord


ProgressEvent = Union[TrialStarted, TrialFinished]
#: What a runner tells as a search goes (:class:`~nas.run.console.Progress` is one).
Listener = Callable[[ProgressEvent], None]
