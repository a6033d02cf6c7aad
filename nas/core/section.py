"""The base of every config section, and its one-line error.

A section is the one definition of its settings: the experiment file parses into it, and the
runtime takes it as it is (:class:`~nas.core.reward.RewardConfig` is both ``reward:`` and what
:func:`~nas.core.reward.reward` takes). Unknown keys, wrong types and out-of-range values are
errors, and an error is one line naming the key path, the value given and what is allowed,
whether the section comes from YAML or is built in Python:

>>> class Demo(Section):
...     at = "demo"
...     size: int = 1
>>> Demo(size="big")
Traceback (most recent call last):
ValueError: demo.size: Input should be a valid integer (given 'big')
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["Section", "one_line"]


class Section(BaseModel):
    """A config section: strict, frozen, unknown keys refused; errors are one line."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    #: The section's key path in an experiment (``reward``, ``search.oneshot``): errors of a
    #: section built alone name their keys from it.
    at: ClassVar[str] = ""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ValueError(one_line(e, at=type(self).at)) from None

    @classmethod
    def parse(cls, data: Any, where: str = "") -> Any:
        """Validate a parsed mapping (YAML, flags); a one-line ``ValueError`` prefixed with
        ``where`` (a file name, a command) on the first problem."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            line = one_line(e, at=cls.at)
            raise ValueError(f"{where}: {line}" if where else line) from None


def one_line(e: ValidationError, at: str = "") -> str:
    """The first problem of a validation error, as one line (and how many more there are)."""
    errors = e.errors(include_url=False)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return _describe(errors[0], at) + more


def _describe(err: dict, at: str) -> str:
    loc = ".".join([at] * bool(at) + [str(p) for p in err["loc"]]) or "(top level)"
    given = err.get("input")
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key (given {given!r})"
    if err["type"] == "missing":
        return f"{loc}: missing (required)"
    text = err["msg"].removeprefix("Value error, ")
    if _KEYED.match(text):
        # A check across keys (a model validator) names its own key and value: the input
        # here is the whole section, which says nothing more.
        return text
    return f"{loc}: {text} (given {given!r})"


_KEYED = re.compile(r"^[a-z_]+(\.[a-z_0-9]+)*: ")
