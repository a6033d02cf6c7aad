"""``nas latency fit``: what to fit from the inputs, the fit, and the predictor folder it writes.

:func:`fit` picks one of three fits from its inputs:

- ``KIND --measurements FILE.csv`` (KIND ``edgetpu-model``): the ``edgetpu-model`` constants
  refitted to the user's own Edge TPU measurements;
- profile CSVs whose rows were measured with ``--source edgetpu``: the same constants,
  refitted to the profile's rows;
- other profile CSVs (of one source): a learned predictor of each kind asked for, the best
  on held-out rows kept.

Every input is checked before any work, and the output folder must not exist yet. Bad input
raises a ``ValueError`` whose one line names the argument, what was given and what is allowed
(:mod:`nas.core.errors`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Sequence

#: What ``nas latency fit KIND --measurements`` fits.
FIT_KINDS = ("edgetpu-model",)
#: Options of the learned predictors only; a KIND fit refuses them when given.
LEARNED_OPTIONS = ("kinds", "holdout", "seed")
LEARNED_KINDS = ("additive", "gbt", "mlp")


@dataclass(frozen=True)
class Fitted:
    """What :func:`fit` wrote into the predictor folder ``out``."""

    out: Path
    what: str                           #: "measurements", "edgetpu-profile" or "learned"
    rows: int                           #: measured rows fitted (models for "measurements")
    calibration: Any = None             #: the edgetpu-model fits: the refitted constants and in-sample accuracy
    path: Path | None = None            #: "measurements": the constants file written
    predictor: Any = None               #: "learned": the kept predictor
    scores: dict[str, dict] | None = None   #: "learned": held-out scores of every kind tried


def looks_like_kind(arg: str) -> bool:
    """A first argument that cannot be a profile CSV (no such file, no CSV suffix, no folder
    part) is a KIND: ``nas latency fit edgetpu-model --measurements ...`` vs ``nas latency fit a.csv``."""
    p = Path(arg)
    return not p.exists() and len(p.parts) == 1 and not arg.endswith((".csv", ".csv.gz", ".gz"))


def check_kind(inputs: Sequence[str], kind: str | None, measurements: str | None,
               given: Collection[str] = ()) -> None:
    """``KIND --measurements FILE.csv``: everything checkable before any work.

    ``given`` names the options set explicitly (of :data:`LEARNED_OPTIONS`, which a KIND fit
    refuses).
    """
    if kind is None:
        if not inputs:
            raise ValueError(f"KIND: missing (nas latency fit KIND --measurements FILE.csv --out DIR); allowed: "
                             f"{', '.join(FIT_KINDS)}")
        raise ValueError(f"KIND: {inputs[0]!r} is a file, not a KIND; allowed with --measurements: "
                         f"{', '.join(FIT_KINDS)}")
    if kind not in FIT_KINDS:
        hint = difflib.get_close_matches(kind, FIT_KINDS, n=1)
        raise ValueError(f"KIND: unknown {kind!r} (no such profile CSV either); allowed: {', '.join(FIT_KINDS)} "
                         "with --measurements, or PROFILE_CSV files" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    if len(inputs) > 1:
        raise ValueError(f"{inputs[1]!r}: KIND {kind} fits --measurements only; fit profile CSVs in a separate "
                         "'nas latency fit PROFILE_CSV... -o DIR'")
    for opt in LEARNED_OPTIONS:
        if opt in given:
            raise ValueError(f"--{opt}: applies to learned predictors fitted from profile CSVs, not to KIND {kind}")
    if measurements is None:
        raise ValueError(f"--measurements: missing; KIND {kind} is fitted to a CSV of your measurements "
                         "(columns model, latency_ms)")
    if not Path(measurements).is_file():
        raise ValueError(f"--measurements: {measurements!r} does not exist")


def fit(inputs: Sequence[str], output: str | Path, *, measurements: str | None = None,
        kinds: Sequence[str] = LEARNED_KINDS, holdout: float = 0.2, seed: int = 0,
        given: Collection[str] = ()) -> Fitted:
    """Fit what ``inputs`` (``[KIND]`` or profile CSVs) and ``measurements`` ask for into the
    new folder ``output``; ``kinds``, ``holdout`` and ``seed`` are the learned predictors'.
    ``given`` names the options set explicitly (see :func:`check_kind`)."""
    out = Path(output)
    kind = inputs[0] if inputs and looks_like_kind(inputs[0]) else None
    if measurements is not None or kind is not None:
        check_kind(inputs, kind, measurements, given)
        if out.exists():
            raise ValueError(f"--out: {str(output)!r} already exists; choose a new directory")
        return fit_measurements(measurements, out)
    if not inputs:
        raise ValueError("expected PROFILE_CSV... (from 'nas latency profile'), or KIND --measurements FILE.csv "
                         f"(KIND: {', '.join(FIT_KINDS)})")
    from latency_models.profile import read_profiles

    if out.exists():
        raise ValueError(f"--output: {str(output)!r} already exists; choose a new directory")
    rows = read_profiles(inputs)
    sources = {r.get("source", "") for r in rows if r.get("status") == "ok"}
    if sources == {"edgetpu"}:
        return fit_edgetpu_profile(rows, out)
    if len(sources) > 1:
        raise ValueError(f"{', '.join(inputs)}: rows from several sources ({', '.join(sorted(sources))}); "
                         "fit one source at a time")
    return fit_learned(rows, out, kinds=kinds, holdout=holdout, seed=seed)


def fit_measurements(measurements: str, out: Path) -> Fitted:
    """The edgetpu-model constants refitted to a CSV of measured models (model, latency_ms)."""
    from latency_models.edgetpu.calibration import calibrate_measurements, save_calibration

    cal = calibrate_measurements(measurements)
    path = save_calibration(cal, out)
    return Fitted(out, "measurements", len(cal.rows), calibration=cal, path=path)


def fit_edgetpu_profile(rows: list[dict], out: Path) -> Fitted:
    """The edgetpu-model constants refitted to the rows of a profile measured on an Edge TPU."""
    from latency_models.edgetpu.calibration import calibrate_rows, profile_calibration_rows, save_calibration

    measured = profile_calibration_rows(rows)
    cal = calibrate_rows(measured, f"edgetpu profile ({len(measured)} rows)")
    save_calibration(cal, out)
    return Fitted(out, "edgetpu-profile", len(measured), calibration=cal)


def fit_learned(rows: list[dict], out: Path, *, kinds: Sequence[str] = LEARNED_KINDS, holdout: float = 0.2,
                seed: int = 0) -> Fitted:
    """A learned predictor of each of ``kinds``; the best on the held-out rows is saved."""
    from latency_models.learned import fit_predictor

    predictor, scores = fit_predictor(rows, kinds=tuple(kinds), holdout=holdout, seed=seed)
    predictor.save(out)
    return Fitted(out, "learned", len(rows), predictor=predictor, scores=scores)
