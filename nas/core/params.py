"""``KEY=VALUE`` pairs, as the command line and controller specs give parameters.

>>> parse_params(("a=1", "b=[2, 3]", "c=x"))
{'a': 1, 'b': [2, 3], 'c': 'x'}
"""

from __future__ import annotations

from typing import Any

import yaml


def parse_params(pairs: tuple[str, ...] | list[str], what: str = "--param",
                 example: str = "KEY=VALUE (e.g. resolution=32)") -> dict[str, Any]:
    """``("a=1", "b=[2, 3]")`` -> ``{"a": 1, "b": [2, 3]}`` (values read as YAML, else kept as
    text); a ``ValueError`` naming ``what`` for a pair without ``=`` or a key given twice."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{what}: expected {example}, got {pair!r}")
        if key in out:
            raise ValueError(f"{what}: {key!r} given twice")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key] = raw
    return out
