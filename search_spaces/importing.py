"""Import a user's object by ``module:attr`` path (spaces, controllers, latency sources)."""

from __future__ import annotations

import importlib
from typing import Any


def import_object(path: str, what: str) -> Any:
    """The object named by ``module:attr``; a ``ValueError`` naming ``what`` and the path if not."""
    module, _, attr = str(path).partition(":")
    if not module or not attr:
        raise ValueError(f"{what} {path!r}: an import path must look like 'module:Name'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{what} {path!r}: cannot import it ({e})") from None
