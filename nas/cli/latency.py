"""``nas latency``: measure, predict, analyze, devices, profile, fit, eval, sources."""

from __future__ import annotations

import json
from typing import Any

import click

from nas.cli.common import UserError, get_space


@click.group()
def latency() -> None:
    """Latency: measure, analyze, list Edge TPU devices."""


TARGET_HELP = ("PATH_OR_ARCH is a .keras or .tflite file, a reference name (nas spaces references), an arch "
               "string, or with --space 'sample' / 'sample:SEED' (a random member of the space).")


def target_options(f):
    """The options that say what PATH_OR_ARCH is built as (shared by measure/predict/analyze)."""
    f = click.option("-p", "--param", "space_params", multiple=True, metavar="KEY=VALUE",
                     help="Argument of --space, repeatable (e.g. -p resolution=64).")(f)
    f = click.option("--space", default=None,
                     help="Check the arch is a member of this space (name or module:Class); its classes apply.")(f)
    f = click.option("--classes", type=click.IntRange(1), default=None, help="Classes for archs (default 1000).")(f)
    f = click.option("--input-size", type=click.IntRange(8, 4096), default=None,
                     help="Square input resolution for archs and references.")(f)
    return f


def _target(path_or_arch: str, input_size: int | None, classes: int | None, space: str | None = None,
            space_params: tuple[str, ...] = ()):
    from latency_models import Target

    if space_params and not space:
        raise UserError("--param: applies to --space, which is not given")
    sp = get_space(space, space_params) if space else None
    if path_or_arch == "sample" or path_or_arch.startswith("sample:"):
        if sp is None:
            raise UserError(f"{path_or_arch!r}: sampling needs --space NAME")
        seed = path_or_arch.partition(":")[2] or "0"
        if not seed.isdigit():
            raise UserError(f"{path_or_arch!r}: expected sample or sample:SEED with an integer seed")
        path_or_arch = sp.sample(int(seed)).to_string()
    shape = (input_size, input_size, 3) if input_size else None
    if sp is not None and classes is None:
        classes = getattr(sp, "num_classes", None)
    t = Target(path_or_arch, input_shape=shape, num_classes=classes)
    if input_size and t.arch is None:
        raise UserError(f"--input-size: applies to archs and reference names, not to the file {path_or_arch!r} "
                        "(its input shape is fixed)")
    if sp is not None:
        if t.arch is None:
            raise UserError(f"--space: applies to archs, not to the file {path_or_arch!r}")
        # Membership is of the arch as given, at its space's sizes; --input-size then says only
        # at which input it is predicted (folding it in first made every member "not a member").
        given = Target(path_or_arch, num_classes=classes).arch if input_size else t.arch
        if not sp.contains(given):
            raise UserError(f"--space: the arch is not a member of {sp!r}")
    return t


def _source_options(source: str, threads, runs, warmup, stable, device, repeats=None) -> dict[str, Any]:
    given = {"--threads": threads, "--device": device, "--repeats": repeats}
    applies = {"--threads": ("tflite-cpu",), "--device": ("edgetpu",), "--repeats": ("tflite-cpu",)}
    opts: dict[str, Any] = {}
    for flag, value in given.items():
        if value is None:
            continue
        if source not in applies[flag]:
            raise UserError(f"{flag}: applies to source {' or '.join(applies[flag])}, not {source!r}")
        opts[flag.lstrip("-")] = value
    if runs is not None:
        opts["n_runs"] = runs
    if warmup is not None:
        opts["warmup"] = warmup
    if stable:
        opts["stable"] = True
    return opts


@latency.command("measure", epilog=TARGET_HELP)
@click.argument("path_or_arch")
@click.option("--source", default="tflite-cpu", show_default=True, help="Latency source (see --list-sources).")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads (tflite-cpu; default 1).")
@click.option("--device", default=None, help="Edge TPU device: '', usb, usb:N, pci, pci:N (edgetpu).")
@click.option("--runs", type=click.IntRange(1), default=None, help="Timed invokes (default: the source's).")
@click.option("--warmup", type=click.IntRange(0), default=None, help="Untimed warm-up invokes.")
@click.option("--stable", is_flag=True, help="Repeat rounds until the median is stable (noisy machines).")
@click.option("--repeats", type=click.IntRange(1, 100), default=None,
              help="Fresh processes to time, keeping the best (tflite-cpu; the shipped host predictor's "
                   "profile used 3).")
@target_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def latency_measure(path_or_arch, source, threads, device, runs, warmup, stable, repeats, input_size, classes, space,
                    space_params, as_json):
    """Measure the latency of PATH_OR_ARCH with a latency source."""
    from latency_models import get_source

    src = get_source(source, **_source_options(source, threads, runs, warmup, stable, device, repeats))
    if hasattr(src, "check"):
        src.check()  # missing hardware is reported before any conversion
    target = _target(path_or_arch, input_size, classes, space, space_params)
    result = src.measure(target)
    if as_json:
        click.echo(json.dumps({"target": target.label, **result.to_dict()}, default=str))
        return
    click.echo(f"{target.label}")
    click.echo(f"latency_ms {result.latency_ms:.3f}  p90_ms {result.p90_ms if result.p90_ms is None else round(result.p90_ms, 3)}"
               f"  n_runs {result.n_runs}  source {result.source_version}")
    if source == "tflite-cpu" and getattr(src, "repeats", 1) == 1:
        # On a loaded machine one process reads 20-35% slower than the best of three, the
        # protocol the shipped tflite-cpu-model was fitted to: say so, rather than let the two
        # numbers disagree without a reason.
        click.echo("protocol: one process; the shipped tflite-cpu-model predicts the best of 3 processes "
                   "(--repeats 3 to compare)")
    for k in ("on_chip_bytes", "off_chip_bytes", "ops_on_tpu", "ops_on_cpu"):
        if getattr(result, k) is not None:
            click.echo(f"{k} {getattr(result, k):,}")


@latency.command("predict", epilog=TARGET_HELP)
@click.argument("path_or_arch")
@click.option("--source", default="edgetpu-model", show_default=True,
              help="A predictor: edgetpu-model, tflite-cpu-model, or a predictor file from 'nas latency fit'.")
@click.option("--link", type=click.Choice(["usb3", "usb2", "pcie"]), default=None,
              help="Host link of the Edge TPU (edgetpu-model; default usb3).")
@target_options
@click.option("--breakdown", is_flag=True, help="Per-layer table (latency, on/off-chip bytes, device).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def latency_predict(path_or_arch, source, link, input_size, classes, space, space_params, breakdown, as_json):
    """Predict the latency (ms) of PATH_OR_ARCH without hardware."""
    from latency_models import get_source
    from latency_models.base import LatencySource

    options = {}
    if link is not None:
        if source != "edgetpu-model":
            raise UserError(f"--link: applies to source edgetpu-model, not {source!r}")
        options["link"] = link
    src = get_source(source, **options)
    if getattr(src, "measured", False):
        raise UserError(f"--source: {source!r} measures on hardware; use 'nas latency measure' for it, "
                        "or a predictor (edgetpu-model, tflite-cpu-model, a fitted predictor file)")
    assert isinstance(src, LatencySource)
    target = _target(path_or_arch, input_size, classes, space, space_params)
    result = src.measure(target)
    # Layers with no TFLite lowering were assumed to run on the CPU: the figure rests on that
    # guess. On stderr, so --json output stays one parseable object.
    assumed = result.details.get("assumed_cpu_layers") or []
    for layer in assumed:
        click.echo(f"warning: assumed to run on the CPU (no TFLite lowering): {layer}", err=True)
    if as_json:
        click.echo(json.dumps({"target": target.label, **result.to_dict(with_layers=breakdown)}, default=str))
        return
    click.echo(target.label)
    click.echo(f"latency_ms {result.latency_ms:.3f}  source {result.source_version}")
    for k in ("on_chip_bytes", "off_chip_bytes", "ops_on_tpu", "ops_on_cpu"):
        if getattr(result, k) is not None:
            click.echo(f"{k} {getattr(result, k):,}")

    def text(v) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, (list, tuple)):
            return ", ".join(map(text, v)) if v else "none"
        return str(v)

    for k, v in result.details.items():
        if k == "assumed_cpu_layers":  # each one is a warning line above
            click.echo(f"{k} {len(v)}" + (" (see the warnings)" if v else ""))
        else:
            click.echo(f"{k} {text(v)}")
    if breakdown and result.layers:
        click.echo(f"\n{'#':>4}  {'layer':<40} {'op':<18} {'ms':>8} {'on-chip B':>11} {'off-chip B':>11} device")
        for i, ly in enumerate(result.layers):
            click.echo(f"{i:>4}  {ly.name[:40]:<40} {ly.op:<18} {ly.latency_ms:>8.4f} {ly.on_chip_bytes:>11,} "
                       f"{ly.off_chip_bytes:>11,} {ly.device}")


@latency.command("analyze", epilog=TARGET_HELP)
@click.argument("path_or_arch")
@target_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with the op table).")
def latency_analyze(path_or_arch, input_size, classes, space, space_params, as_json):
    """Static analysis: op table, MACs, parameters, activation peak, Edge TPU compatibility."""
    analysis = _target(path_or_arch, input_size, classes, space, space_params).analysis()
    if as_json:
        click.echo(json.dumps(analysis.to_dict(), default=str))
    else:
        click.echo(analysis.format_table())


@latency.command("devices")
@click.option("--json", "as_json", is_flag=True)
def latency_devices(as_json: bool) -> None:
    """Edge TPUs on this host (or none, and why), and the compiler and runtime found."""
    from latency_models.edgetpu import devices as edgetpu_devices

    devices, reason = edgetpu_devices.list_devices()
    env = edgetpu_devices.environment_report()
    if as_json:
        click.echo(json.dumps({"devices": devices, "reason": reason, "environment": env}, default=str))
        return
    if devices:
        for d in devices:
            click.echo(f"{d.get('device', '?'):<8} {d.get('type', '?'):<4} {d.get('path', '')}")
    else:
        click.echo(f"no Edge TPU found: {reason}")
    for k, v in env.items():
        click.echo(f"{k}: {v}")


def _floats(text: str, what: str, kind=float) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise UserError(f"{what}: expected at least one value, got {text!r}")
    return values


@latency.command("profile")
@click.option("--space", "spaces", multiple=True, required=True,
              help="Space to sample (name or module:Class); repeat for several.")
@click.option("--source", default="tflite-cpu", show_default=True)
@click.option("--n", "n", type=click.IntRange(1), required=True, help="How many archs in the profile.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="Profile CSV (resumed if it exists).")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads (tflite-cpu; default 1).")
@click.option("--device", default=None, help="Edge TPU device (edgetpu).")
@click.option("--runs", type=click.IntRange(1), default=None, help="Timed invokes per arch.")
@click.option("--stable", is_flag=True, help="Repeat rounds until each median is stable.")
@click.option("--repeats", type=click.IntRange(1, 100), default=None,
              help="Independent timing processes per arch, fastest kept (tflite-cpu).")
@click.option("--resolutions", default="32,48,64,80,96", show_default=True)
@click.option("--widths", default="0.25,0.35,0.5,0.75", show_default=True)
@click.option("--depths", default="0.5,0.75,1.0", show_default=True)
@click.option("--classes", type=click.IntRange(1), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--shard", default="0/1", show_default=True,
              help="K/M: measure only rows i with i %% M == K (M processes or machines, one file each).")
@click.option("--no-progress", is_flag=True)
def latency_profile(spaces, source, n, output, threads, device, runs, stable, repeats, resolutions, widths, depths,
                    classes, seed, shard, no_progress):
    """Sample archs (stratified) and measure them into a profile CSV, resumably."""
    from latency_models import get_source
    from latency_models.profile import ProfilePlan, profile

    plan = ProfilePlan(tuple(spaces), _floats(resolutions, "--resolutions", int), _floats(widths, "--widths"),
                       _floats(depths, "--depths"), classes, seed)
    src = get_source(source, **_source_options(source, threads, runs, None, stable, device, repeats))
    if hasattr(src, "check"):
        src.check()
    try:
        k, m = (int(v) for v in shard.split("/"))
    except ValueError:
        raise UserError(f"--shard: expected K/M such as 0/2, got {shard!r}") from None
    rows = profile(plan, src, n, output, progress=not no_progress, shard=(k, m))
    failed = sum(r["status"] != "ok" for r in rows)
    click.echo(f"measured {len(rows)} archs into {output} ({failed} failed)")


def _accuracy_text(m: dict) -> str:
    rho = m["spearman"]
    rho = "n/a" if rho != rho else f"{rho:.4f}"  # NaN: fewer than 3 rows
    return (f"n={m['n']}  spearman {rho}  median |error| {m['median_abs_error']:.1%}  MAPE {m['mape']:.2%}  "
            f"within 10% {m['within_10pct']:.1%}  within 5% {m['within_5pct']:.1%}")


def _nan_to_none(m: dict) -> dict:
    # json.dumps writes NaN, which is not JSON; a Spearman of fewer than 3 rows is undefined.
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in m.items()}


@latency.command("fit")
@click.argument("inputs", nargs=-1, metavar="[KIND] [PROFILE_CSV]...")
@click.option("--measurements", default=None, metavar="FILE.csv",
              help="KIND edgetpu-model: your own Edge TPU measurements (columns model, latency_ms; optional "
                   "on_chip_mib, off_chip_mib).")
@click.option("-o", "--output", "--out", "output", required=True, type=click.Path(file_okay=False),
              help="Predictor directory to write (must not exist).")
@click.option("--kinds", default="additive,gbt,mlp", show_default=True,
              help="Model kinds to try (learned predictors); the best on held-out rows is kept.")
@click.option("--holdout", type=click.FloatRange(0.05, 0.5), default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
def latency_fit(ctx, inputs, measurements, output, kinds, holdout, seed):
    """Fit a latency predictor and write it to a directory (usable as --source DIR).

    \b
    nas latency fit edgetpu-model --measurements FILE.csv --out DIR
      refits the edgetpu-model constants to your own Edge TPU set-up. FILE.csv has a column
      model (a .keras or int8 .tflite file, relative to FILE.csv's folder) and latency_ms, and
      optionally on_chip_mib and off_chip_mib (from the compiler's report); at least 3 rows.
    nas latency fit PROFILE_CSV... -o DIR
      learned models fitted to a profile (one or more CSV shards from 'nas latency profile'),
      or the edgetpu-model constants for a profile measured with --source edgetpu.
    """
    from click.core import ParameterSource

    from nas.cli.latency_fit import LEARNED_OPTIONS, fit

    given = {opt for opt in LEARNED_OPTIONS if ctx.get_parameter_source(opt) is not ParameterSource.DEFAULT}
    fitted = fit(inputs, output, measurements=measurements, given=given, holdout=holdout, seed=seed,
                 kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()))
    cal, out = fitted.calibration, fitted.out
    if fitted.what == "measurements":
        refitted = (cal.fitted.fit or {}).get("fitted") or list(cal.changed)
        click.echo(f"edgetpu-model refitted on {fitted.rows} measured models of {measurements} "
                   f"(refitted: {', '.join(refitted)})")
        click.echo(f"in-sample fit (the rows it was fitted on, not new ones): {_accuracy_text(cal.in_sample)}")
        for name, (before, after) in cal.changed.items():
            click.echo(f"  {name:<24} {before:.4g} -> {after:.4g}")
        click.echo(f"wrote {fitted.path} (use it as --source {out} or latency.source: {out}; score it on other "
                   f"measurements with 'nas latency eval {out} OTHER.csv')")
    elif fitted.what == "edgetpu-profile":
        worst = max(abs(r["error"]) for r in cal.in_sample["per_row"])
        click.echo(f"edgetpu-model refitted on {fitted.rows} measured archs: median |error| "
                   f"{cal.in_sample['median_abs_error']:.1%}, max {worst:.1%} (in-sample); wrote {out}")
    else:
        predictor = fitted.predictor
        click.echo(f"{'kind':<10} {'spearman':>9} {'MAPE':>7} {'within10%':>10}   "
                   f"(held-out rows: {predictor.meta['n_test']})")
        for k, sc in fitted.scores.items():
            mark = "  <- kept" if k == predictor.kind else ""
            click.echo(f"{k:<10} {sc['spearman']:>9.4f} {sc['mape']:>7.2%} {sc['within_10pct']:>10.1%}{mark}")
        click.echo(f"wrote {out}")


@latency.command("eval")
@click.argument("predictor")
@click.argument("profile_csv", nargs=-1, required=True, type=click.Path(dir_okay=False), metavar="CSV...")
@click.option("--json", "as_json", is_flag=True)
def latency_eval(predictor, profile_csv, as_json):
    """Score PREDICTOR on measured rows: Spearman, MAPE, share within +-10% and +-5%.

    \b
    PREDICTOR a learned predictor directory (or tflite-cpu-model): CSV is a profile, scored
      on its held-out rows when it is the predictor's own training profile.
    PREDICTOR an edgetpu-model directory from 'nas latency fit edgetpu-model' (or
      edgetpu-model, the shipped fit): CSV is a measurements CSV (model, latency_ms).
    """
    from pathlib import Path

    from latency_models.edgetpu.calibration import edgetpu_model_constants, evaluate_measurements

    is_edgetpu, constants = edgetpu_model_constants(predictor)
    if is_edgetpu:
        for f in profile_csv:
            if not Path(f).is_file():
                raise UserError(f"CSV: {f!r} does not exist")
        try:
            result = evaluate_measurements(constants, profile_csv)
        except ValueError as e:
            raise UserError(str(e).splitlines()[0]) from None
        if as_json:
            click.echo(json.dumps(_nan_to_none(result)))
            return
        click.echo(f"{result['rows']}: {_accuracy_text(result)}")
        return
    if Path(predictor).is_dir() and not (Path(predictor) / "predictor.json").is_file():
        raise UserError(f"PREDICTOR: {predictor!r} holds neither predictor.json (a learned predictor) nor "
                        "edgetpu_model.json (from 'nas latency fit edgetpu-model')")
    from latency_models.learned import SHIPPED, Predictor, evaluate
    from latency_models.profile import read_profiles

    path = SHIPPED if predictor == "tflite-cpu-model" else predictor
    result = evaluate(Predictor.load(path), read_profiles(profile_csv))
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['rows']}: n={result['n']}  spearman {result['spearman']:.4f}  MAPE {result['mape']:.2%}  "
               f"within 10% {result['within_10pct']:.1%}  within 5% {result['within_5pct']:.1%}")


@latency.command("sources")
def latency_sources() -> None:
    """Registered latency sources."""
    from latency_models import source_names

    for name in source_names():
        click.echo(name)
