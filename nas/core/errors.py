"""The exceptions of ``nas/``, in one place, and what each one means to the caller.

Errors of the user's input (an experiment, a flag, a run folder) are ``ValueError``\\ s whose
message names the field, what was given and what is allowed; the command line prints that
line and exits with status 2. Errors of a latency source (conversion, the runtime, the
compiler, missing hardware) are :mod:`latency_models.errors`; a trial turns them into
:class:`TrialFailure`.

>>> issubclass(RunFolderError, ValueError) and issubclass(RecordError, ValueError)
True
"""

from __future__ import annotations

__all__ = ["Finished", "RecordError", "RunFolderError", "TrialFailure"]


class RecordError(ValueError):
    """A stored trial record that cannot be read (the message names the field and the value)."""


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (exists without --resume, or is not a run)."""


class Finished(Exception):
    """:meth:`nas.ledger.ledger.Ledger.suggest` has no more trials to give: the budget is spent
    (counting the trials still running) or the controller has converged. The message says which."""


class TrialFailure(Exception):
    """A reason to record this trial as failed (the search goes on)."""
