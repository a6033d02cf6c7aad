"""The nouns every room shares: the trial record, the reward, the errors.

- :mod:`nas.core.record`: :class:`~nas.core.record.TrialRecord` and its
  :class:`~nas.core.record.Status`, the one row a trial leaves in a ledger, a CSV and a report;
- :mod:`nas.core.reward`: the MNAS reward (soft, hard, tunas) and its constraints;
- :mod:`nas.core.errors`: the exceptions of ``nas`` and what each means to the caller.

May import: nothing of ``nas`` (numpy and the standard library only).
"""

from nas.core.lazy import lazy  # (the room's own helper: core imports nothing else)

__all__, __getattr__, __dir__ = lazy(__name__, {
    "Finished": "nas.core.errors",
    "RecordError": "nas.core.errors",
    "RunFolderError": "nas.core.errors",
    "TrialFailure": "nas.core.errors",
    "FIELDS": "nas.core.record",
    "Status": "nas.core.record",
    "TrialRecord": "nas.core.record",
    "best_result": "nas.core.record",
    "csv_text": "nas.core.record",
    "pareto_front": "nas.core.record",
    "read_csv": "nas.core.record",
    "usable_reward": "nas.core.record",
    "Constraints": "nas.core.reward",
    "RewardConfig": "nas.core.reward",
    "reward": "nas.core.reward",
})
