"""``nas search``, ``nas export`` and ``nas report``: a run folder's commands."""

from __future__ import annotations

import time

import click


@click.command("search")
@click.argument("experiment", type=click.Path(dir_okay=False))
@click.option("--out", default=None, help="Run folder (default: OUTPUT/NAME from the experiment).")
@click.option("--resume", is_flag=True, help="Continue the run in --out (no finished trial is lost or repeated).")
@click.option("--address", default=None, help="HOST:PORT of a running Ray cluster (default: embedded local Ray).")
@click.option("--max-trials", type=click.IntRange(1), default=None, help="Override budget.trials.")
@click.option("--seed", type=int, default=None, help="Override the experiment's seed.")
@click.option("--runner", type=click.Choice(["ray", "local"]), default="ray", show_default=True,
              help="'local' runs the trials one by one in this process, without Ray (debugging).")
@click.option("--no-progress", is_flag=True, help="No live progress bar (one line per trial is still printed).")
def search_cmd(experiment, out, resume, address, max_trials, seed, runner, no_progress) -> None:
    """Search the experiment's space; write the run folder; print the Pareto front.

    \b
    The run folder holds trials.csv, pareto.csv, best_arch.txt, experiment.yaml, state.json
    and Ray's state (ray/). An existing folder is only continued with --resume.
    """
    from nas.run.console import pareto_table
    from nas.run.launch import prepare, search

    launch = prepare(experiment, out=out, resume=resume, address=address, max_trials=max_trials, seed=seed)
    from nas.oneshot.run import merged_file
    from nas.trial.proxy import describe

    cfg = launch.cfg
    if cfg.search.strategy == "oneshot" and not merged_file(launch.run).is_file():  # (the supernets still to run)
        targets = cfg.search.oneshot.targets_ms or [cfg.reward.target_ms]
        what = (f"one-shot search with {cfg.controller.name} ({len(targets)} supernet{'s' if len(targets) > 1 else ''}, "
                f"{', '.join(f'{t:g}' for t in targets)} ms), then up to {launch.budget} candidates retrained")
    else:
        what = f"{launch.budget} trials with {cfg.controller.name}"
    click.echo(f"{'resuming' if resume else 'search'} {cfg.name}: {what}; {describe(cfg)}; latency from "
               f"{cfg.latency.source}; run folder {launch.run.path}", err=True)
    t0 = time.monotonic()
    try:
        state = search(launch, runner=runner, progress=not no_progress)
    except KeyboardInterrupt:
        click.echo(f"interrupted; finished trials are in {launch.run.path}/trials.csv. Continue with:\n"
                   f"  nas search {experiment} --out {launch.run.path} --resume", err=True)
        raise SystemExit(130) from None
    results = state.ordered_results()
    click.echo(pareto_table(results))
    click.echo(f"run folder: {launch.run.path}  (export the best: nas export {launch.run.path})")
    if len(results) < state.budget:  # (a one-shot search's budget is its candidates' number)
        # Ctrl-C (Ray Tune stops gracefully on it) or the time limit.
        click.echo(f"stopped after {len(results)} of {state.budget} trials; continue with:\n"
                   f"  nas search {experiment} --out {launch.run.path} --resume", err=True)
        limit = launch.cfg.budget.time_limit_s
        if limit is None or time.monotonic() - t0 < limit:
            # Interrupted, not out of time: a script's `nas search ... && nas export ...`
            # must not go on with an unfinished search.
            raise SystemExit(130)


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--arch", "arch_text", default=None,
              help="Deployment arch string to export (default: the run's best_arch.txt).")
@click.option("--scale", type=click.Choice(["deployment", "proxy"]), default="deployment", show_default=True,
              help="Train and write the deployment model (what you ship, at the space's resolution) or its "
                   "proxy (the model a trial trained; much faster).")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Training epochs (default: the experiment's).")
@click.option("--out", default=None, help="Output folder (default: RUN_DIR/export).")
def export_cmd(run_dir, arch_text, scale, epochs, out) -> None:
    """Train the best (or given) arch and write model.keras, model_int8.tflite, arch.txt, summary.json.

    \b
    model_edgetpu.tflite is added when edgetpu_compiler is installed. Latencies in the
    summary are the deployment model's, whichever scale is trained.
    """
    from nas.results.export import export

    summary = export(run_dir, arch=arch_text, epochs=epochs, out=out, scale=scale)
    m = summary["model"]
    click.echo(f"{scale} model at {m['resolution']} px, {m['params']:,} params: accuracy {summary['accuracy']:.4f}"
               f" (int8 {summary['int8_accuracy'] if summary['int8_accuracy'] is None else round(summary['int8_accuracy'], 4)})")
    click.echo(f"deployment model: {summary['params']:,} params, latency {summary['latency_ms']:.3f} ms "
               f"({summary['latency_source']}), off-chip {summary['off_chip_bytes'] or 0:,} B, "
               f"tflite-cpu {summary['tflite_cpu_ms']:.3f} ms")
    for name in summary["files"]:
        click.echo(f"wrote {summary['out']}/{name}")


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", default=None, help="Output folder (default: RUN_DIR/report; a previous report is replaced).")
@click.option("--top", type=click.IntRange(1, 50), default=3, show_default=True,
              help="Best archs shown with their per-layer latency breakdown.")
@click.option("--window", type=click.IntRange(2, 10_000), default=20, show_default=True,
              help="Proposals per point of the decision-entropy curve.")
@click.option("--train-references", is_flag=True,
              help="Train the references with the run's recipe to place them by accuracy too (minutes).")
@click.option("--no-tensorboard", is_flag=True, help="Skip the TensorBoard logs.")
def report_cmd(run_dir, out, top, window, train_references, no_tensorboard) -> None:
    """Pareto table, best archs per layer, plots and TensorBoard logs of a run (during or after it).

    \b
    Writes report.md, pareto.png, reward.png, entropy.png and tensorboard/ into RUN_DIR/report.
    """
    from nas.run.console import pareto_table
    from nas.results.report import build, write

    rep = build(run_dir, top=top, window=window, train_references=train_references)
    folder = write(rep, out, tensorboard=not no_tensorboard)
    click.echo(pareto_table(rep.results))
    for ref in rep.references:
        acc = f", accuracy {ref.accuracy:.4f}" if ref.accuracy is not None else ""
        lat = f"{ref.latency_ms:.3f} ms" if ref.latency_ms is not None else "no latency"
        click.echo(f"reference {ref.label}: {lat}{acc}")
    click.echo(f"wrote {folder}/report.md and plots" + ("" if no_tensorboard else
               f"; tensorboard --logdir {folder}/tensorboard"))

