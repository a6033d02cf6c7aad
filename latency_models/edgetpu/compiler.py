"""Run Google's ``edgetpu_compiler`` when it is installed; its report is parsed by
:mod:`latency_models.edgetpu.report` (pure Python, every host)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from latency_models.edgetpu.report import CompilerReport, parse_compiler_output
from latency_models.errors import EdgeTPUCompilerNotFound

logger = logging.getLogger(__name__)

__all__ = ["run_compiler"]

_NOT_FOUND_MESSAGE = (
    "{compiler!r} not found on PATH: the Edge TPU compiler is installed from Coral's apt "
    "repository (package edgetpu-compiler, x86-64 Debian/Ubuntu only, "
    "see https://coral.ai/docs/edgetpu/compiler/); without it, use the 'edgetpu-model' "
    "latency predictor, which needs no compiler or hardware"
)
# Extra wall-clock time granted beyond the compiler's own timeout before we kill it.
_KILL_GRACE_S = 60


def run_compiler(
    tflite_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    timeout_s: int | None = 180,
    extra_args: Iterable[str] = (),
    compiler: str = "edgetpu_compiler",
) -> CompilerReport:
    """Compile ``tflite_path`` into ``out_dir`` with the real compiler and parse its report.

    Runs ``compiler -s -o OUT_DIR [-t TIMEOUT_S] [EXTRA_ARGS...] MODEL``. ``timeout_s=None``
    omits ``-t`` (compilers before 16.0 do not know it). A compile the compiler reports as
    failed, a non-zero exit status or a hang past the timeout all give ``success=False``.

    Raises :class:`EdgeTPUCompilerNotFound` when ``compiler`` is not installed (nothing is
    run), ``FileNotFoundError`` when the model does not exist.
    """
    executable = shutil.which(compiler)
    if executable is None:
        raise EdgeTPUCompilerNotFound(_NOT_FOUND_MESSAGE.format(compiler=compiler))
    model = Path(tflite_path)
    if not model.is_file():
        raise FileNotFoundError(f"TFLite model to compile not found: {model}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)  # the compiler refuses a missing output dir

    cmd = [executable, "-s", "-o", str(out)]
    if timeout_s is not None:
        cmd += ["-t", str(int(timeout_s))]
    cmd += [*extra_args, str(model)]
    logger.info("running %s", " ".join(cmd))
    wall_timeout = None if timeout_s is None else timeout_s + _KILL_GRACE_S
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=wall_timeout, check=False
        )
    except subprocess.TimeoutExpired:
        logger.warning("%s still running after %s s; killed", compiler, wall_timeout)
        return CompilerReport(
            compiler_version=None, success=False, compile_ms=None, models=(),
            failure_reason=f"{compiler} did not finish within {wall_timeout} s",
        )

    # Errors may go to stderr; appending it lets the parser see them after the report.
    text = proc.stdout + ("\n" + proc.stderr if proc.stderr else "")
    try:
        report = parse_compiler_output(text)
    except ValueError:
        if proc.returncode == 0:
            raise  # a "successful" run that printed no report: a different program, say so
        last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
        reason = f"{compiler} exited with status {proc.returncode}"
        return CompilerReport(
            compiler_version=None, success=False, compile_ms=None, models=(),
            failure_reason=f"{reason}: {last}" if last else reason,
        )
    if proc.returncode != 0 and report.success:
        # Trust the exit status over a success line printed before a later crash.
        report = CompilerReport(
            compiler_version=report.compiler_version, success=False,
            compile_ms=report.compile_ms, models=report.models,
            failure_reason=f"{compiler} exited with status {proc.returncode}",
            warnings=report.warnings,
        )
    logger.info(
        "%s: %s", model.name,
        "compiled" if report.success else f"compile failed: {report.failure_reason}",
    )
    return report
