"""``nas spaces`` (list, show, sample, references) and ``nas arch show``."""

from __future__ import annotations

import json

import click

from nas.cli.common import fmt_count, get_space


@click.group()
def spaces() -> None:
    """Search spaces: list, show, sample; reference networks."""


PARAM_OPTION = click.option(
    "-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
    help="Space constructor argument, repeatable (e.g. -p resolution=32 -p width=0.25).")


@spaces.command("list")
def spaces_list() -> None:
    """Registered spaces with their default size."""
    import search_spaces

    for name, cls in search_spaces.registered().items():
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        click.echo(f"{name:<22} size {cls().size:.2e}  {doc}")


@spaces.command("show")
@click.argument("name")
@PARAM_OPTION
def spaces_show(name: str, params: tuple[str, ...]) -> None:
    """Decisions, choices and size of space NAME (a registered name or module:Class)."""
    click.echo(get_space(name, params).describe())


@spaces.command("sample")
@click.argument("name")
@PARAM_OPTION
@click.option("--n", "n", type=click.IntRange(1, 100_000), default=5, show_default=True,
              help="How many archs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--classes", type=click.IntRange(1), default=None,
              help="Classes for params/MACs (default: the space's, else 1000).")
@click.option("--format", "fmt", type=click.Choice(["table", "strings", "jsonl"]), default="table",
              show_default=True)
def spaces_sample(name: str, params: tuple[str, ...], n: int, seed: int, classes: int | None, fmt: str) -> None:
    """Sample N archs from space NAME: arch strings with parameters and MACs."""
    import numpy as np

    import search_spaces

    space = get_space(name, params)
    rng = np.random.default_rng(seed)
    if fmt == "table":
        click.echo(f"{'#':>3}  {'params':>8}  {'MACs':>8}  arch")
    for i in range(n):
        arch = space.sample(rng)
        p = search_spaces.count_params(arch, num_classes=classes)
        m = search_spaces.count_macs(arch, num_classes=classes)
        if fmt == "strings":
            click.echo(arch.to_string())
        elif fmt == "jsonl":
            click.echo(json.dumps({"arch": arch.to_string(), "params": p, "macs": m}))
        else:
            click.echo(f"{i:>3}  {fmt_count(p):>8}  {fmt_count(m):>8}  {arch.to_string()}")


@spaces.command("references")
@click.option("--classes", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--strings", is_flag=True, help="Print the arch strings too.")
def spaces_references(classes: int, strings: bool) -> None:
    """Reference networks (as archs of the grammar) with parameters and MACs."""
    import search_spaces
    from search_spaces.references import NOTES

    click.echo(f"{'name':<24} {'res':>4} {'params':>10} {'MACs':>9}  note")
    for name in search_spaces.reference_names():
        arch = search_spaces.reference(name)
        p = search_spaces.count_params(arch, num_classes=classes)
        m = search_spaces.count_macs(arch, num_classes=classes)
        click.echo(f"{name:<24} {arch.resolution:>4} {p:>10,} {fmt_count(m):>9}  {NOTES[name]}")
        if strings:
            click.echo(f"    {arch.to_string()}")



@click.group()
def arch() -> None:
    """Inspect arch strings."""


@arch.command("show")
@click.argument("arch_string")
@click.option("--classes", type=click.IntRange(1), default=None)
@click.option("--layers", is_flag=True, help="Print the per-layer plan.")
def arch_show(arch_string: str, classes: int | None, layers: bool) -> None:
    """Validate ARCH_STRING and print its stages, parameters and MACs."""
    import search_spaces

    a = search_spaces.Arch.from_string(arch_string)
    click.echo(a.to_string())
    click.echo(f"resolution {a.resolution}  stages {len(a.stages)}  layers {a.depth}  "
               f"params {search_spaces.count_params(a, num_classes=classes):,}  "
               f"MACs {search_spaces.count_macs(a, num_classes=classes):,}")
    if layers:
        for ly in search_spaces.plan(a, num_classes=classes):
            click.echo(f"  {ly.name:<28} {ly.op:<18} {str(ly.output_shape):<16} "
                       f"params {ly.params:>9,}  MACs {ly.macs:>12,}")

