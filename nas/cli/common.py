"""What every command group of the CLI shares: the one-line user error and ``KEY=VALUE`` parsing."""

from __future__ import annotations

import click

from nas.core.params import parse_params


class UserError(click.ClickException):
    """Bad input: one line, exit status 2."""

    exit_code = 2

    def show(self, file=None) -> None:  # noqa: D401 - click API
        click.echo(f"error: {self.format_message()}", err=True)


def get_space(name: str, params: tuple[str, ...]):
    """The space ``name`` (registered or ``module:Class``) built with the ``--param`` pairs."""
    import search_spaces

    return search_spaces.get(name, **parse_params(params))


def fmt_count(n: int) -> str:
    from nas.run.console import count_text  # one format for counts, in tables and progress lines

    return count_text(n)
