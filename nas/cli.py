"""The ``nas`` command line.

Every command parses its input fully before doing work. Bad input (an unknown space, a
malformed arch string, a bad ``--param``) prints one line ``error: ...`` naming the field,
what was given and what is allowed, and exits with status 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

import click
import yaml

log = logging.getLogger(__name__)

# TensorFlow's C++ start-up chatter would bury the one-line results and errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class UserError(click.ClickException):
    """Bad input: one line, exit status 2."""

    exit_code = 2

    def show(self, file=None) -> None:  # noqa: D401 - click API
        click.echo(f"error: {self.format_message()}", err=True)


def _parse_params(pairs: tuple[str, ...], what: str = "--param",
                  example: str = "KEY=VALUE (e.g. resolution=32)") -> dict[str, Any]:
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


def _space(name: str, params: tuple[str, ...]):
    import search_spaces

    return search_spaces.get(name, **_parse_params(params))


def _fmt_count(n: int) -> str:
    from .console import count_text  # one format for counts, in tables and progress lines

    return count_text(n)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="edgetpu-nas", prog_name="nas")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int) -> None:
    """Hardware-aware neural architecture search for Keras and the Coral Edge TPU."""
    ctx.obj = {"debug": debug}
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")


# ------------------------------------------------------------------------------- spaces


@cli.group()
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
    click.echo(_space(name, params).describe())


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

    space = _space(name, params)
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
            click.echo(f"{i:>3}  {_fmt_count(p):>8}  {_fmt_count(m):>8}  {arch.to_string()}")


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
        click.echo(f"{name:<24} {arch.resolution:>4} {p:>10,} {_fmt_count(m):>9}  {NOTES[name]}")
        if strings:
            click.echo(f"    {arch.to_string()}")


@cli.group()
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


# ------------------------------------------------------------------------------ latency


@cli.group()
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
    sp = _space(space, space_params) if space else None
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
    from latency_models import edgetpu

    devices, reason = edgetpu.list_devices()
    env = edgetpu.environment_report()
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


FIT_KINDS = ("edgetpu-model",)  # what `nas latency fit KIND --measurements` fits


def _looks_like_kind(arg: str) -> bool:
    # A first argument that cannot be a profile CSV (no such file, no CSV suffix, no folder part)
    # is a KIND: `nas latency fit edgetpu-model --measurements ...` vs `nas latency fit a.csv`.
    from pathlib import Path

    p = Path(arg)
    return not p.exists() and len(p.parts) == 1 and not arg.endswith((".csv", ".csv.gz", ".gz"))


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
    from pathlib import Path

    out = Path(output)
    kind = inputs[0] if inputs and _looks_like_kind(inputs[0]) else None
    if measurements is not None or kind is not None:
        _check_fit_kind(ctx, inputs, kind, measurements)
        if out.exists():
            raise UserError(f"--out: {output!r} already exists; choose a new directory")
        _fit_measurements(measurements, out)
        return
    if not inputs:
        raise UserError("expected PROFILE_CSV... (from 'nas latency profile'), or KIND --measurements FILE.csv "
                        f"(KIND: {', '.join(FIT_KINDS)})")
    profile_csv = inputs
    from latency_models.profile import read_profiles

    if out.exists():
        raise UserError(f"--output: {output!r} already exists; choose a new directory")
    rows = read_profiles(profile_csv)
    sources = {r.get("source", "") for r in rows if r.get("status") == "ok"}
    if sources == {"edgetpu"}:
        _fit_edgetpu(rows, out)
        return
    if len(sources) > 1:
        raise UserError(f"{', '.join(profile_csv)}: rows from several sources ({', '.join(sorted(sources))}); "
                        "fit one source at a time")
    from latency_models.learned import fit_predictor

    predictor, scores = fit_predictor(rows, kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()),
                                      holdout=holdout, seed=seed)
    predictor.save(out)
    click.echo(f"{'kind':<10} {'spearman':>9} {'MAPE':>7} {'within10%':>10}   (held-out rows: {predictor.meta['n_test']})")
    for k, sc in scores.items():
        mark = "  <- kept" if k == predictor.kind else ""
        click.echo(f"{k:<10} {sc['spearman']:>9.4f} {sc['mape']:>7.2%} {sc['within_10pct']:>10.1%}{mark}")
    click.echo(f"wrote {out}")


def _check_fit_kind(ctx, inputs, kind, measurements) -> None:
    """`nas latency fit KIND --measurements FILE.csv`: everything checkable before any work."""
    import difflib
    from pathlib import Path

    from click.core import ParameterSource

    if kind is None:
        if not inputs:
            raise UserError(f"KIND: missing (nas latency fit KIND --measurements FILE.csv --out DIR); allowed: "
                            f"{', '.join(FIT_KINDS)}")
        raise UserError(f"KIND: {inputs[0]!r} is a file, not a KIND; allowed with --measurements: "
                        f"{', '.join(FIT_KINDS)}")
    if kind not in FIT_KINDS:
        hint = difflib.get_close_matches(kind, FIT_KINDS, n=1)
        raise UserError(f"KIND: unknown {kind!r} (no such profile CSV either); allowed: {', '.join(FIT_KINDS)} "
                        "with --measurements, or PROFILE_CSV files" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    if len(inputs) > 1:
        raise UserError(f"{inputs[1]!r}: KIND {kind} fits --measurements only; fit profile CSVs in a separate "
                        "'nas latency fit PROFILE_CSV... -o DIR'")
    for opt in ("kinds", "holdout", "seed"):
        if ctx.get_parameter_source(opt) is not ParameterSource.DEFAULT:
            raise UserError(f"--{opt}: applies to learned predictors fitted from profile CSVs, not to KIND {kind}")
    if measurements is None:
        raise UserError(f"--measurements: missing; KIND {kind} is fitted to a CSV of your measurements "
                        "(columns model, latency_ms)")
    if not Path(measurements).is_file():
        raise UserError(f"--measurements: {measurements!r} does not exist")


def _fit_measurements(measurements: str, out) -> None:
    from latency_models.edgetpu_calibration import calibrate_measurements, save_calibration

    try:
        cal = calibrate_measurements(measurements)
    except ValueError as e:
        raise UserError(str(e).splitlines()[0]) from None
    path = save_calibration(cal, out)
    refitted = (cal.fitted.fit or {}).get("fitted") or list(cal.changed)
    click.echo(f"edgetpu-model refitted on {len(cal.rows)} measured models of {measurements} "
               f"(refitted: {', '.join(refitted)})")
    _echo_calibration(cal)
    click.echo(f"wrote {path} (use it as --source {out} or latency.source: {out}; score it on other "
               f"measurements with 'nas latency eval {out} OTHER.csv')")


def _echo_calibration(cal) -> None:
    click.echo(f"in-sample fit (the rows it was fitted on, not new ones): {_accuracy_text(cal.in_sample)}")
    for name, (before, after) in cal.changed.items():
        click.echo(f"  {name:<24} {before:.4g} -> {after:.4g}")


def _fit_edgetpu(rows, out) -> None:
    from latency_models.edgetpu_calibration import calibrate_rows, profile_calibration_rows, save_calibration

    measured = profile_calibration_rows(rows)
    cal = calibrate_rows(measured, f"edgetpu profile ({len(measured)} rows)")
    save_calibration(cal, out)
    worst = max(abs(r["error"]) for r in cal.in_sample["per_row"])
    click.echo(f"edgetpu-model refitted on {len(measured)} measured archs: median |error| "
               f"{cal.in_sample['median_abs_error']:.1%}, max {worst:.1%} (in-sample); wrote {out}")


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

    from latency_models.edgetpu_calibration import edgetpu_model_constants, evaluate_measurements

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


# ------------------------------------------------------------------------------- search


@cli.command("search")
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
    from .console import pareto_table
    from .launch import prepare, search

    launch = prepare(experiment, out=out, resume=resume, address=address, max_trials=max_trials, seed=seed)
    from .proxy import describe

    click.echo(f"{'resuming' if resume else 'search'} {launch.cfg.name}: {launch.budget} trials with "
               f"{launch.cfg.controller.name}; {describe(launch.cfg)}; latency from {launch.cfg.latency.source}; "
               f"run folder {launch.run.path}", err=True)
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
    if len(results) < launch.budget:
        # Ctrl-C (Ray Tune stops gracefully on it) or the time limit.
        click.echo(f"stopped after {len(results)} of {launch.budget} trials; continue with:\n"
                   f"  nas search {experiment} --out {launch.run.path} --resume", err=True)
        limit = launch.cfg.budget.time_limit_s
        if limit is None or time.monotonic() - t0 < limit:
            # Interrupted, not out of time: a script's `nas search ... && nas export ...`
            # must not go on with an unfinished search.
            raise SystemExit(130)


@cli.command("export")
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
    from .export import export

    summary = export(run_dir, arch=arch_text, epochs=epochs, out=out, scale=scale)
    m = summary["model"]
    click.echo(f"{scale} model at {m['resolution']} px, {m['params']:,} params: accuracy {summary['accuracy']:.4f}"
               f" (int8 {summary['int8_accuracy'] if summary['int8_accuracy'] is None else round(summary['int8_accuracy'], 4)})")
    click.echo(f"deployment model: {summary['params']:,} params, latency {summary['latency_ms']:.3f} ms "
               f"({summary['latency_source']}), off-chip {summary['off_chip_bytes'] or 0:,} B, "
               f"tflite-cpu {summary['tflite_cpu_ms']:.3f} ms")
    for name in summary["files"]:
        click.echo(f"wrote {summary['out']}/{name}")


@cli.command("report")
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
    from .console import pareto_table
    from .report import build, write

    rep = build(run_dir, top=top, window=window, train_references=train_references)
    folder = write(rep, out, tensorboard=not no_tensorboard)
    click.echo(pareto_table(rep.results))
    for ref in rep.references:
        acc = f", accuracy {ref.accuracy:.4f}" if ref.accuracy is not None else ""
        lat = f"{ref.latency_ms:.3f} ms" if ref.latency_ms is not None else "no latency"
        click.echo(f"reference {ref.label}: {lat}{acc}")
    click.echo(f"wrote {folder}/report.md and plots" + ("" if no_tensorboard else
               f"; tensorboard --logdir {folder}/tensorboard"))


# -------------------------------------------------------------------------------- bench


def controller_spec(text: str) -> tuple[str, dict[str, Any]]:
    """'mnas', 'mnas:batch_size=4,learning_rate=0.01', 'my_module:MyController' or
    'my_module:MyController:k=v,...' -> (name, params)."""
    from .controllers import controller_names

    name, _, rest = text.partition(":")
    if name not in controller_names():
        cls, _, after = rest.partition(":")
        # module:Class (as a search's 'controller: {name: module:Class}'), then its parameters
        if name and cls and "=" not in cls and "," not in cls:
            name, rest = f"{name}:{cls}", after
        else:
            import difflib

            close = difflib.get_close_matches(name, controller_names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"--controller: unknown name {name!r}; allowed: {', '.join(controller_names())} "
                            f"or module:Class{hint}")
    params = _parse_params(tuple(p for p in rest.split(",") if p), "--controller",
                           "NAME:KEY=VALUE,... (e.g. mnas:batch_size=4)") if rest else {}
    return name, params


_TABLE_ONLY = ("table", "space_name", "space_params", "latency")
_SURROGATE_ONLY = ("landscapes", "reference_archs")


@cli.command("bench")
@click.option("--mode", type=click.Choice(["table", "surrogate"]), default="table", show_default=True,
              help="table: look the archs up in a table of trained archs; surrogate: score them on landscapes "
                   "over the whole efficientnet_edgetpu space (model fitted to the shipped table, see "
                   "nas/landscape.py).")
@click.option("--table", default=None, type=click.Path(dir_okay=False),
              help="[table] CSV with arch, accuracy, latency_ms (default: the shipped efficientnet_edgetpu_bench "
                   "table).")
@click.option("--space", "space_name", default=None,
              help="[table] Space the table's archs come from (default: efficientnet_edgetpu_bench at the "
                   "deployment scale, 128 px, width 1, depth 1, 10 classes).")
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
    from pathlib import Path

    import numpy as np
    from click.core import ParameterSource

    from .reward import RewardConfig
    from .runfolder import atomic_write

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
    specs = [controller_spec(c) for c in controllers] or [("random", {}), ("evolution", {}), ("mnas", {})]
    labels = [n if not p else f"{n}({', '.join(f'{k}={v}' for k, v in p.items())})" for n, p in specs]
    dup = next((x for x in labels if labels.count(x) > 1), None)
    if dup:
        raise UserError(f"--controller: {dup!r} given twice; give each controller once")
    if out is not None and Path(out).exists() and any(Path(out).iterdir()):
        raise UserError(f"--out: folder {out!r} exists and is not empty; give a new folder")
    preset = preset or ("soft" if mode == "table" else "hard")
    RewardConfig(kind=kind, target_ms=target_ms or 1.0, preset=preset, alpha=alpha,
                 beta=beta).exponents  # noqa: B018 - validates the combination before any work
    import search_spaces

    from .controllers import get_controller

    if mode == "table":
        from .bench import DEFAULT_SPACE, Table, run_bench

        params = _parse_params(space_params)
        if space_name is None:  # the shipped table's space; --param adjusts it (e.g. searched=[2,3])
            space_name, params = DEFAULT_SPACE[0], {**DEFAULT_SPACE[1], **params}
        space = search_spaces.get(space_name, **params)
    else:
        from .bench import run_landscapes
        from .landscape import DEPLOYMENT, FULL_SPACE

        space = search_spaces.get(FULL_SPACE, **DEPLOYMENT)
    # Every controller is built once up front, so a bad parameter fails before the runs.
    for name, p in specs:
        get_controller(name, space, seed=0, **p)
    if mode == "table":
        tab = Table.load(table, latency=latency)
        rcfg = RewardConfig(kind=kind, target_ms=target_ms or float(np.median(tab.latency_ms)), preset=preset,
                            alpha=alpha, beta=beta)
        res = run_bench(tab, specs, seeds=seeds, trials=trials or 100, rcfg=rcfg, space=space,
                        seed_offset=seed_offset, batch=batch, repeats=repeats)
    else:
        reward_args = {"kind": kind, "preset": preset, "alpha": alpha, "beta": beta}
        res = run_landscapes(specs, landscapes=landscapes, seeds=seeds, seed_offset=seed_offset,
                             trials=trials or 200, batch=batch, repeats=repeats,
                             rcfg=RewardConfig(target_ms=target_ms, **reward_args) if target_ms else None,
                             reward_args=reward_args, reference_archs=reference_archs, progress=log.info)
    md = res.markdown()
    click.echo(md)
    if out is not None:
        dest = Path(out)
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write(dest / "bench.json", res.to_json())
        atomic_write(dest / "bench.md", md + "\n")
        tmp = dest / ".bench.tmp.png"
        res.plot(tmp)
        os.replace(tmp, dest / "bench.png")
        click.echo(f"wrote {dest}/bench.json, bench.md, bench.png")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nas`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="nas", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.UsageError as e:
        # One line instead of click's usage block; the hint says where the full help is.
        cmd = e.ctx.command_path if e.ctx else "nas"
        click.echo(f"error: {e.format_message()} (see '{cmd} --help')", err=True)
        return 2
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except ValueError as e:
        # Library validation errors are user input errors by convention (see design.md).
        if debug:
            raise
        click.echo(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True)
        return 2
    except Exception as e:  # noqa: BLE001 - the one place that turns errors into exit codes
        if debug:
            raise
        from latency_models.base import LatencyError, MissingHardware
        from latency_models.convert import ConversionError

        if isinstance(e, MissingHardware):
            click.echo(f"error: {e}", err=True)
            return 2
        if isinstance(e, (LatencyError, ConversionError)):
            click.echo(f"failed: {str(e).splitlines()[0]}", err=True)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
