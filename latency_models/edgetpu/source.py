"""The ``edgetpu`` latency source: time a model on a real Coral Edge TPU.

How it works
------------
:meth:`EdgeTPUSource.measure` runs four steps, each of which can fail on its own terms:

1. **Convert**: the target's full-integer ``.tflite`` (:meth:`Target.tflite`) is written to
   the work directory as ``<key>.tflite``.
2. **Compile**: ``edgetpu_compiler -s -o WORK_DIR -t TIMEOUT <key>.tflite`` (see
   :func:`latency_models.edgetpu.compiler.run_compiler`) writes ``<key>_edgetpu.tflite`` and
   prints the memory report: parameters cached in on-chip SRAM, parameters streamed from host
   memory on every inference, and how many ops run on the Edge TPU versus the CPU. A failed
   compile (e.g. "large activation tensors") is a :class:`LatencyError`, i.e. a failed trial.
3. **Load**: the Edge TPU delegate is loaded from the runtime library ``libedgetpu`` --
   through Google's ``pycoral`` when it is installed (Coral's own images), else through the
   TFLite interpreter's ``load_delegate(library, {"device": device})`` (LiteRT or
   ``tflite_runtime``, see :mod:`latency_models.runtime`).
4. **Time**: Coral's benchmark convention. The interpreter is created once; ``warmup``
   untimed invokes come first (the first invoke copies the cached parameters into SRAM and
   is several times slower); then ``n_runs`` timed invokes, reported as median and p90
   (:mod:`latency_models.timing`). ``stable=True`` repeats rounds until the median settles.

Missing pieces (compiler, interpreter, runtime library, device) are :class:`MissingHardware`:
one line naming what is missing and how to get it. :meth:`EdgeTPUSource.check` finds them
before any work, so a CLI can fail fast; :meth:`measure` calls it first. Nothing here is
imported or probed at module import time.

Installing on a host (x86-64 Debian/Ubuntu for the compiler; the runtime also on ARM64,
macOS and Windows), from Coral's own repositories -- not from Debian or PyPI::

    echo "deb https://packages.cloud.google.com/apt coral-edgetpu-stable main" \\
        | sudo tee /etc/apt/sources.list.d/coral-edgetpu.list
    curl https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -
    sudo apt-get update
    sudo apt-get install edgetpu-compiler libedgetpu1-std   # or libedgetpu1-max (faster, hotter)
    # PCIe/M.2 cards also need the driver: sudo apt-get install gasket-dkms
    # pycoral is optional; the package called "pycoral" on PyPI is an unrelated project.

On macOS and Windows the runtime comes from the ``edgetpu_runtime`` archive at
https://coral.ai/software/#edgetpu-runtime (``install.sh`` / ``install.bat``); the compiler
exists only for Linux x86-64, so compile there (or in a Linux container) and copy the
``_edgetpu.tflite`` files if needed.

Device strings (libedgetpu's ``device`` option): ``""`` any Edge TPU, ``":N"`` the N-th of
any type, ``"usb"``/``"usb:N"`` USB Accelerators, ``"pci"``/``"pci:N"`` PCIe/M.2 cards.
:func:`~latency_models.edgetpu.devices.list_devices` and
:func:`~latency_models.edgetpu.devices.environment_report` say what this host has.

Without any of this, the ``edgetpu-model`` latency predictor estimates Edge TPU latency
from the arch alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from latency_models.edgetpu import devices as host
from latency_models.base import EDGETPU_METRICS, LatencyResult, LatencySource
from latency_models.edgetpu.compiler import run_compiler
from latency_models.edgetpu.devices import (WITHOUT_HARDWARE, compiler_missing, default_library, device_listing, interpreter_missing,
                              library_missing, no_device, one_line, validate_device)
from latency_models.edgetpu.replay import ReplayDevice
from latency_models.errors import ConversionError, DeviceError, EdgeTPUCompilerNotFound, LatencyError, MissingHardware, RuntimeNotFound
from latency_models.runtime import interpreter_module, make_interpreter
from latency_models.timing import summarize, time_invokes, time_stable

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "EdgeTPUSource"]

#: How a measurement reaches a device: ``litert`` loads libedgetpu as a delegate (the real
#: device); ``replay`` is :class:`~latency_models.edgetpu.replay.ReplayDevice`, a stand-in.
BACKENDS = ("litert", "replay")


# -------------------------------------------------------------------------------- source


class EdgeTPUSource(LatencySource):
    """Latency measured on a Coral Edge TPU (compiler report included). See the module doc.

    Options: ``device`` (Coral device string), ``n_runs`` timed invokes, ``warmup`` untimed
    invokes before them, ``stable`` (repeat rounds until the median settles),
    ``compiler`` (name or path of ``edgetpu_compiler``), ``library`` (runtime library;
    default by platform), ``compile_timeout_s`` (None omits ``-t``, for compilers before 16),
    ``work_dir`` (keep the ``.tflite``/``_edgetpu.tflite`` files there; default: a temporary
    directory removed after each measurement), ``backend`` (``litert``: the device through
    libedgetpu; ``replay``: :class:`~latency_models.edgetpu.replay.ReplayDevice`, a stand-in
    that replays recorded timings, with its options in ``replay``).

    Construction only validates options, so a source can be built (and shipped to a Ray node
    with the device) on a host without hardware; call :meth:`check` to fail fast.
    """

    name = "edgetpu"
    metrics = EDGETPU_METRICS
    version = "1"
    measured = True

    def __init__(self, device: str = "", n_runs: int = 100, warmup: int = 1, stable: bool = False,
                 compiler: str = "edgetpu_compiler", library: str | None = None,
                 compile_timeout_s: int | None = 180, work_dir: str | os.PathLike[str] | None = None,
                 backend: str = "litert", replay: dict[str, Any] | None = None):
        self.device = validate_device(device)
        if backend not in BACKENDS:
            raise ValueError(f"edgetpu option backend: got {backend!r}; allowed: {', '.join(BACKENDS)}")
        if replay is not None and backend != "replay":
            raise ValueError("edgetpu option replay: only with backend: replay (a stand-in device that replays "
                             "recorded timings)")
        self.backend = backend
        self._replay = ReplayDevice(**(replay or {})) if backend == "replay" else None
        self.n_runs = self._int_option("n_runs", n_runs, 1)
        self.warmup = self._int_option("warmup", warmup, 0)
        if not isinstance(stable, bool):
            raise ValueError(f"edgetpu option stable: got {stable!r}; allowed: true or false")
        self.stable = stable
        if not isinstance(compiler, str) or not compiler.strip():
            raise ValueError(f"edgetpu option compiler: got {compiler!r}; "
                             "allowed: the name or path of edgetpu_compiler")
        self.compiler = compiler
        if library is not None and (not isinstance(library, str) or not library.strip()):
            raise ValueError(f"edgetpu option library: got {library!r}; allowed: a library file name or path, "
                             f"or null for the platform default ({default_library()})")
        self.library = library or default_library()
        self.compile_timeout_s = (None if compile_timeout_s is None
                                  else self._int_option("compile_timeout_s", compile_timeout_s, 1))
        if work_dir is not None and not isinstance(work_dir, (str, os.PathLike)):
            raise ValueError(f"edgetpu option work_dir: got {work_dir!r}; allowed: a directory path or null")
        self.work_dir = Path(work_dir) if work_dir is not None else None
        # Learned along the way and reported by describe(); plain strings so the source pickles.
        self._compiler_version: str | None = None
        self._library_version: str | None = None
        self._checked = False

    def __getstate__(self) -> dict[str, Any]:
        # A source pickled to another host (a Ray node with the device) must check that host.
        return {**self.__dict__, "_checked": False}

    def reopen(self) -> None:
        """Forget that the device was found: the next measurement looks for it again (after a
        device dropped out: a USB stick unplugged or reset)."""
        self._checked = False

    @staticmethod
    def _int_option(what: str, value: Any, lo: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"edgetpu option {what}: got {value!r}; allowed: an integer >= {lo}")
        return value

    def describe(self) -> str:
        parts = [f"edgetpu/{self.version}"]
        if self._compiler_version:
            parts.append(f"compiler={self._compiler_version}")
        parts.append(f"runtime={host.runtime_description()}")
        if self._library_version:
            parts.append(f"libedgetpu={self._library_version}")
        parts.append(f"device={self.device or 'any'}")
        if self._replay is not None:
            parts.append("backend=replay (recorded timings, no device)")
        return " ".join(parts)

    # ---------------------------------------------------------------------- checks

    def check(self) -> None:
        """Raise :class:`MissingHardware` (one line) if the compiler, a TFLite interpreter, the
        runtime library or a matching device is missing; does no conversion or compile.

        The device is only ruled out when the listing can be trusted (pycoral, or Linux with
        USB sysfs); elsewhere the delegate load decides. A passing check is remembered.
        """
        if self._checked:
            return
        if shutil.which(self.compiler) is None:
            raise MissingHardware(compiler_missing(self.compiler))
        if self._replay is not None:
            self._replay.check()
            self._checked = True
            return
        if host.pycoral_edgetpu() is None:
            try:
                interpreter_module()
            except RuntimeNotFound:
                raise MissingHardware(interpreter_missing()) from None
        found, detail = host.probe_library(self.library)
        if not found:
            raise MissingHardware(library_missing(self.library, detail))
        self._library_version = detail or None
        devices, reason, authoritative = host.find_devices()
        if authoritative and not host.device_available(devices, self.device):
            raise MissingHardware(no_device(self.device, device_listing(devices, reason)))
        logger.debug("edgetpu check passed: library %s (%s), devices %s", self.library, detail, devices)
        self._checked = True

    # ---------------------------------------------------------------------- measure

    def measure(self, target) -> LatencyResult:
        self.check()
        with self._work_dir() as work:
            model_path = work / f"{target.key}.tflite"
            model_path.write_bytes(self._tflite_bytes(target))
            report = self._compile(model_path, work, target.label)
            compiled = self._compiled_path(report, model_path, work)
            return self._timed(compiled, report, target.label)

    def compile(self, target) -> tuple[bytes, Any]:
        """Only the compile step, where the compiler is (a trial's node, with
        ``latency.service.compile: trial``): the ``_edgetpu.tflite`` bytes and the compiler's
        report, for :meth:`measure_compiled` on the device's host."""
        if shutil.which(self.compiler) is None:
            raise MissingHardware(compiler_missing(self.compiler))
        with tempfile.TemporaryDirectory(prefix="edgetpu-") as tmp:
            work = Path(tmp)
            model_path = work / f"{target.key}.tflite"
            model_path.write_bytes(self._tflite_bytes(target))
            report = self._compile(model_path, work, target.label)
            return self._compiled_path(report, model_path, work).read_bytes(), report

    def measure_compiled(self, compiled: bytes, report, label: str = "<compiled model>") -> LatencyResult:
        """Time a model compiled elsewhere (:meth:`compile`) on this host's device."""
        self.check()
        self._compiler_version = report.compiler_version or self._compiler_version
        with self._work_dir() as work:
            path = work / (Path(report.model.output_model).name or "model_edgetpu.tflite")
            path.write_bytes(compiled)
            return self._timed(path, report, label)

    def _timed(self, compiled: Path, report, label: str) -> LatencyResult:
        stats, runtime = self._time(compiled, label)
        model = report.model
        unmapped = [{"operator": r.operator, "count": r.count, "status": r.status} for r in model.unmapped_ops]
        details = {
            "compiler_version": report.compiler_version,
            "compile_ms": report.compile_ms,
            "n_subgraphs": model.n_subgraphs,
            "unmapped_ops": unmapped,
            "on_chip_remaining_bytes": model.on_chip_remaining_bytes,
            "device": self.device,
            "runtime": runtime,
            "warmup": self.warmup,
            "timing_rounds": stats.rounds,
        }
        if self.work_dir is not None:
            details["compiled_model"] = str(compiled)
        logger.info("%s: %.3f ms median (p90 %.3f ms, %d runs) on Edge TPU %s", label, stats.median_ms,
                    stats.p90_ms, stats.n_runs, self.device or "any")
        return self.result(latency_ms=stats.median_ms, p90_ms=stats.p90_ms, spread=stats.spread,
                           n_runs=stats.n_runs, on_chip_bytes=model.on_chip_bytes,
                           off_chip_bytes=model.off_chip_bytes, ops_on_tpu=model.n_ops_on_tpu,
                           ops_on_cpu=model.n_ops_on_cpu, details=details)

    def _work_dir(self):
        if self.work_dir is not None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            return contextlib.nullcontext(self.work_dir)
        # ignore_cleanup_errors: on Windows a just-closed model file can still be locked.
        tmp = tempfile.TemporaryDirectory(prefix="edgetpu-", ignore_cleanup_errors=True)
        return _TempPath(tmp)

    @staticmethod
    def _tflite_bytes(target) -> bytes:
        try:
            return target.tflite()
        except ConversionError as e:
            # A model the converter rejects is a failed trial, like a failed compile.
            raise LatencyError(f"{target.label}: {e}") from e

    def _compile(self, model_path: Path, work: Path, label: str):
        try:
            report = run_compiler(model_path, work, timeout_s=self.compile_timeout_s, compiler=self.compiler)
        except EdgeTPUCompilerNotFound as e:
            raise MissingHardware(compiler_missing(self.compiler)) from e
        except ValueError as e:  # exit 0 but no report: not the compiler we expect
            raise LatencyError(f"{self.compiler} output not understood for {label}: {e}") from e
        if not report.success:
            raise LatencyError(f"{self.compiler} could not compile {label}: {report.failure_reason}")
        self._compiler_version = report.compiler_version or self._compiler_version
        for warning in report.warnings:
            logger.info("%s: %s", label, warning)
        return report

    @staticmethod
    def _compiled_path(report, model_path: Path, work: Path) -> Path:
        # The report names the output file; the compiler's fixed rule is the fall-back.
        candidates = [work / Path(report.model.output_model).name, work / f"{model_path.stem}_edgetpu.tflite"]
        for path in candidates:
            if path.is_file():
                return path
        raise LatencyError(f"compiler reported success but wrote no {candidates[0].name} in {work}")

    def _interpreter(self, compiled: Path):
        """(allocated interpreter, delegate, runtime name); the delegate must outlive the interpreter."""
        coral = host.pycoral_edgetpu()
        if coral is not None and self.library == default_library():
            # pycoral's tflite_runtime is the one built for the installed libedgetpu: prefer it.
            try:
                it = coral.make_interpreter(str(compiled), device=self.device or None)
            except (OSError, ValueError) as e:
                raise self._delegate_failure(e) from e
            try:
                it.allocate_tensors()  # pycoral returns it unallocated; this is where the TPU prepares
            except (ValueError, RuntimeError) as e:
                raise self._interpreter_failure(e) from e
            return it, None, "pycoral"
        try:
            mod, name = interpreter_module()
        except RuntimeNotFound:
            raise MissingHardware(interpreter_missing()) from None
        try:
            delegate = mod.load_delegate(self.library, {"device": self.device})
        except (OSError, ValueError) as e:
            raise self._delegate_failure(e) from e
        try:
            # A None delegate only comes from test doubles: the same steps then run on the CPU.
            it = make_interpreter(compiled, delegates=[delegate] if delegate is not None else None)
        except (ValueError, RuntimeError) as e:
            raise self._interpreter_failure(e) from e
        return it, delegate, name

    def _delegate_failure(self, error: Exception) -> MissingHardware:
        """The delegate did not load: is the library missing, or the device?

        The runtime raises the same ``ValueError("Failed to load delegate from
        libedgetpu.so.1")`` for both (LiteRT raises the dlopen OSError for a missing library,
        older runtimes wrap it), so the message cannot tell them apart; whether the library
        itself loads (:func:`probe_library`) does.
        """
        found, detail = host.probe_library(self.library)
        if not found:
            return MissingHardware(library_missing(self.library, detail))
        logger.debug("delegate load failed with the library present: %s", one_line(str(error)))
        devices, reason, _ = host.find_devices()
        return MissingHardware(no_device(self.device, device_listing(devices, reason)))

    @staticmethod
    def _interpreter_failure(error: Exception) -> Exception:
        text = one_line(str(error))
        if "newer than this runtime version" in text:
            # Fatal for every model this compiler makes, not just this one.
            return MissingHardware(
                f"the Edge TPU runtime library is older than the compiler ({text}): upgrade libedgetpu1-std "
                f"(or libedgetpu1-max) from Coral's apt repository; {WITHOUT_HARDWARE}")
        return LatencyError(f"Edge TPU interpreter failed: {text}")

    def _time(self, compiled: Path, label: str):
        if self._replay is not None:
            try:
                return self._replay.time(compiled, self.n_runs, self.warmup), "replay"
            except RuntimeError as e:
                raise DeviceError(f"Edge TPU invoke failed for {label}: {one_line(str(e))}") from e
        interpreter, delegate, runtime = self._interpreter(compiled)
        try:
            if self.stable:
                stats = time_stable(interpreter, self.n_runs, self.warmup)
            else:
                stats = summarize(time_invokes(interpreter, self.n_runs, self.warmup))
        except RuntimeError as e:  # e.g. the USB link dropped mid-run: this trial fails
            raise DeviceError(f"Edge TPU invoke failed for {label}: {one_line(str(e))}") from e
        finally:
            # Release the model file and the device before the work directory goes away.
            del interpreter, delegate
        return stats, runtime


class _TempPath:
    """A TemporaryDirectory context that yields a Path (it yields a str by itself)."""

    def __init__(self, tmp: tempfile.TemporaryDirectory):
        self._tmp = tmp

    def __enter__(self) -> Path:
        return Path(self._tmp.__enter__())

    def __exit__(self, *exc) -> None:
        self._tmp.__exit__(*exc)
