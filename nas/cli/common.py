"""What every command group of the CLI shares: the one-line user error and ``KEY=VALUE`` parsing."""

from __future__ import annotations

from typing import Any

import click
import yaml


class UserError(click.ClickException):
    """Bad input: one line, exit status 2."""

    exit_code = 2

    def show(self, file=None) -> None:  # noqa: D401 - click API
        click.echo(f"error: {self.format_message()}", err=True)


def parse_params(pairs: tuple[str, ...], what: str = "--param",
                 example: str = "KEY=VALUE (e.g. resolution=32)") -> dict[str, Any]:
    """``("a=1", "b=[2, 3]")`` -> ``{"a": 1, "b": [2, 3]}`` (values read as YAML, else kept as text)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{what}: expected {example}, got {pair!r}")
        if key in out:
            raise UserError(f"{what}: {key!r} given twice")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key] = raw
    return out


def get_space(name: str, params: tuple[str, ...]):
    """The space ``name`` (registered or ``module:Class``) built with the ``--param`` pairs."""
    import search_spaces

    return search_spaces.get(name, **parse_params(params))


def fmt_count(n: int) -> str:
    from ..console import count_text  # one format for counts, in tables and progress lines

    return count_text(n)
