"""``nas bench``: controllers benchmarked by lookup, on a table or on surrogate landscapes."""

from __future__ import annotations

import logging

import click

from nas.cli.common import UserError, parse_params
from nas.controllers.base import controller_spec

log = logging.getLogger(__package__)


_TABLE_ONLY = ("table", "space_name", "space_params", "latency")
_SURROGATE_ONLY = ("landscapes", "reference_archs")


@click.command("bench")
@click.option("--mode", type=click.Choice(["table", "surrogate"]), default="table", show_default=True,
              help="table: look the archs up in a table of trained archs; surrogate: score them on landscapes "
                   "over the whole efficientnet_edgetpu space (model fitted to the shipped table, see "
                   "nas/bench/landscape.py).")
@click.option("--table", default=None, type=click.Path(dir_okay=False),
              help="[table] CSV with arch (or decision columns d:NAME, which make the table its own space), "
                   "accuracy, latency_ms; or a shipped table: efficientnet-edgetpu-bench (the default), "
                   "nb201-cifar100, nb201-imagenet16 (NAS-Bench-201 with Edge TPU latency).")
@click.option("--space", "space_name", default=None,
              help="[table] Space an arch table's archs come from (default: efficientnet_edgetpu_bench at the "
                   "deployment scale, 128 px, width 1, depth 1, 10 classes); not for decision tables.")
@click.option("--param", "space_params", multiple=True, metavar="KEY=VALUE", help="[table] Space constructor "
                                                                                  "argument.")
@click.option("--landscapes", type=click.IntRange(1, 1000), default=3, show_default=True,
              help="[surrogate] Landscapes, drawn with seeds 0..N-1.")
@click.option("--reference-archs", type=click.IntRange(100), default=10_000, show_default=True,
              help="[surrogate] Random archs that set the default latency target (their median), the top-1% "
                   "threshold and the starts of the optimum search.")
@click.option("-c", "--controller", "controllers", multiple=True, metavar="NAME[:K=V,...]",
              help="Controller to run: a registered name or module:Class (as in an experiment), with optional "
                   "parameters, e.g. mnas:batch_size=4 or my_mod:Greedy:k=2 (repeatable; default: random, "
                   "evolution, mnas).")
@click.option("--seeds", type=click.IntRange(1), default=20, show_default=True, help="Runs per controller.")
@click.option("--seed-offset", type=click.IntRange(0), default=0, show_default=True,
              help="First seed (runs use seeds K..K+SEEDS-1): tune on other seeds than those you report.")
@click.option("--trials", type=click.IntRange(1), default=None,
              help="Trials per run (default: 100 table, 200 surrogate).")
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True,
              help="Archs asked per round before any is told, as a search with this concurrency does.")
@click.option("--repeats", type=click.Choice(["record", "train"]), default="record", show_default=True,
              help="record: a proposal of an arch already recorded is answered from the record (not a trial); "
                   "train: it is a trial with a fresh lookup.")
@click.option("--latency", type=click.Choice(["deployment", "proxy"]), default="deployment", show_default=True,
              help="[table] Which latency the reward scores: the deployment model's (latency_ms) or the trained "
                   "proxy's (proxy_latency_ms).")
@click.option("--reward", "kind", type=click.Choice(["mnas", "tunas"]), default="mnas", show_default=True)
@click.option("--target-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Latency target (default: the table's median latency; surrogate: the median of the "
                   "reference archs').")
@click.option("--preset", type=click.Choice(["soft", "hard"]), default=None,
              help="Reward exponents (default: soft for a table, hard for the surrogate).")
@click.option("--alpha", type=float, default=None, help="Exponent under the target (overrides the preset).")
@click.option("--beta", type=float, default=None, help="Exponent over the target (overrides the preset).")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Folder for bench.json, bench.md and bench.png (must not exist yet).")
@click.pass_context
def bench_cmd(ctx, mode, table, space_name, space_params, landscapes, reference_archs, controllers, seeds,
              seed_offset, trials, batch, repeats, latency, kind, target_ms, preset, alpha, beta, out) -> None:
    """Benchmark controllers by lookup instead of training: on a table of trained archs, or
    on surrogate landscapes over the whole efficientnet_edgetpu space.

    \b
    Both ask BATCH archs per round before telling any (a search's concurrency) and answer a
    repeated arch from the record unless --repeats train. Table: reports trials to reach the
    table's best reward (and 99% of it), regret and Pareto hypervolume over trials, and when
    each controller's mean best reaches random search's. Surrogate: per landscape, the regret
    of each run's pick (its best observed arch, scored by its true reward) at 25/50/100/200
    trials, trials to reach random's final best (paired by seed) and the top 1%, distinct
    archs per run, with bootstrap intervals. Same controllers and reward as 'nas search'.
    """
    from click.core import ParameterSource

    from nas.bench.launch import prepare, run, write

    def given(param: str) -> bool:
        return ctx.get_parameter_source(param) is ParameterSource.COMMANDLINE

    flags = {p.name: p.opts[0] for p in ctx.command.params}
    wrong = _SURROGATE_ONLY if mode == "table" else _TABLE_ONLY
    for p in wrong:
        if given(p):
            v = ctx.params[p]
            shown = " ".join(v) if isinstance(v, tuple) else v
            raise UserError(f"{flags[p]}: applies to --mode {'surrogate' if mode == 'table' else 'table'} only; "
                            f"given {shown!r} with --mode {mode}")
    launch = prepare(mode, [controller_spec(c) for c in controllers], table=table, space_name=space_name,
                     space_params=parse_params(space_params), landscapes=landscapes,
                     reference_archs=reference_archs, seeds=seeds, seed_offset=seed_offset, trials=trials,
                     batch=batch, repeats=repeats, latency=latency, kind=kind, target_ms=target_ms, preset=preset,
                     alpha=alpha, beta=beta, out=out)
    res = run(launch, progress=log.info)
    md = res.markdown()
    click.echo(md)
    if out is not None:
        dest = write(res, out, md)
        click.echo(f"wrote {dest}/bench.json, bench.md, bench.png")
