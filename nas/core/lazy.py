"""Names of a package loaded on first use (PEP 562), so importing a room costs nothing.

A room's ``__init__`` publishes its API without importing its modules (some load Keras,
Optuna or Ray, and a Ray worker imports a room for one function)::

    from nas.core.lazy import lazy

    __all__, __getattr__, __dir__ = lazy(__name__, {"run_trial": "nas.trial.entry"})

>>> all_, getattr_, dir_ = lazy("demo", {"sqrt": "math"})
>>> all_, getattr_("sqrt")(4.0)
(['sqrt'], 2.0)
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy(package: str, exports: Mapping[str, str]) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package``: each name of ``exports`` is the
    attribute of the same name (or ``module:attribute``) of the module it maps to."""

    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = exports[name].partition(":")
        value = getattr(importlib.import_module(module), attr or name)
        if package in sys.modules:
            setattr(sys.modules[package], name, value)  # (looked up once)
        return value

    def dir_() -> list[str]:
        here = sys.modules.get(package)
        return sorted(set(vars(here) if here else ()) | set(exports))

    return sorted(exports), getattr_, dir_
