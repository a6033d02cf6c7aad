"""Tests of the ``edgetpu`` latency source (latency_models.edgetpu.source) on a host without one.

There is no Edge TPU, libedgetpu or edgetpu_compiler here, so the pipeline is exercised with
stand-ins that behave like the real pieces:
- a fake ``edgetpu_compiler`` shell script on PATH that copies its input to
  ``OUT_DIR/<name>_edgetpu.tflite`` and prints a real compiler output from shared/data;
- the interpreter module's ``load_delegate`` monkeypatched to raise what the real runtime
  raises, or to return no delegate so the plain CPU interpreter runs the copied model;
- the library probe and the device listing monkeypatched where a test needs them present.
One tiny int8 model is converted for the whole file (module fixture), only for the tests
that time invokes. The ``edgetpu``-marked test measures a real device and skips here.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from latency_models.edgetpu import source as edgetpu

from latency_models.edgetpu import devices as edgetpu_devices
from latency_models import LatencyError, MissingHardware, get_source
from latency_models.edgetpu.source import EdgeTPUSource
from latency_models.edgetpu.devices import DEVICE_FORMS, default_library, environment_report, list_devices
from latency_models.runtime import RuntimeNotFound, interpreter_module
from latency_models.target import Target

from conftest import COMPILER_LOGS as LOGS_DIR  # noqa: E402
from fakes import make_fake_compiler  # noqa: E402, F401 - (other test files import it from here)
V15 = "v15_all_mapped_small_spill.txt"
WITHOUT_HARDWARE = "the 'edgetpu-model' latency predictor works without hardware"
LARGE_ACTIVATIONS = "Compilation failed due to large activation tensors in model."
FAILED_OUTPUT = f"""Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.
Compilation failed: {LARGE_ACTIVATIONS}
Compilation child process completed within timeout period.
Compilation failed!
"""
# What the real runtime raises when dlopen finds no libedgetpu, and (the same text) when the
# library loads but finds no device.
FAILED_DELEGATE = "Failed to load delegate from libedgetpu.so.1"
NO_SUCH_FILE = "libedgetpu.so.1: cannot open shared object file: No such file or directory"
FAKE_DEVICE = {"type": "usb", "path": "/sys/bus/usb/devices/2-1", "device": "usb:0"}


def assert_one_line_missing(message: str) -> None:
    assert "\n" not in message
    assert message.endswith(WITHOUT_HARDWARE), message


# --------------------------------------------------------------------------- helpers


def v15_log() -> Path:
    path = LOGS_DIR / V15
    if not path.is_file():
        pytest.skip(f"real compiler outputs not found at {LOGS_DIR} (shared data folder absent)")
    return path


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install a fake compiler printing the given output; returns its args file."""

    def install(output: Path, **kw) -> Path:
        bin_dir = tmp_path / "bin"
        args_file = make_fake_compiler(bin_dir, output, **kw)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        return args_file

    return install


@pytest.fixture
def coral(monkeypatch: pytest.MonkeyPatch):
    """Library present, one USB device listed, no pycoral; load_delegate records its calls
    and returns no delegate (so the CPU interpreter runs the model)."""
    calls: list[tuple[str, dict]] = []

    def fake_load_delegate(library, options=None):
        calls.append((library, dict(options or {})))
        return None

    monkeypatch.setattr(edgetpu_devices, "probe_library", lambda library: (True, "RuntimeVersion(14)"))
    monkeypatch.setattr(edgetpu_devices, "find_devices", lambda: ([dict(FAKE_DEVICE)], "", True))
    monkeypatch.setattr(edgetpu_devices, "pycoral_edgetpu", lambda: None)
    monkeypatch.setattr(interpreter_module()[0], "load_delegate", fake_load_delegate)
    return calls


def raising_delegate(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def load_delegate(library, options=None):
        raise error

    monkeypatch.setattr(edgetpu_devices, "pycoral_edgetpu", lambda: None)
    monkeypatch.setattr(interpreter_module()[0], "load_delegate", load_delegate)


class NoWork:
    """A target that fails the test if anything asks for its model."""

    label, key = "no-work", "no-work"

    def tflite(self) -> bytes:
        raise AssertionError("the model was converted although a check should have failed first")


@pytest.fixture(scope="module")
def tiny_target() -> Target:
    """The one int8 conversion of this file: a 32 px EfficientNet-EdgeTPU proxy."""
    import search_spaces

    arch = search_spaces.get("efficientnet_edgetpu", resolution=32, width=0.25, depth=0.5,
                             num_classes=10).sample(0)
    # cache=False: convert afresh and leave the user's conversion cache (~/.cache) alone.
    return Target(Target(arch, cache=False).tflite())


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("device", ["", ":0", ":12", "usb", "usb:0", "usb:3", "pci", "pci:0", "pci:10"])
def test_device_strings_accepted(device: str) -> None:
    assert EdgeTPUSource(device=device).device == device


@pytest.mark.parametrize("device", ["usb0", "USB", "usb:", ":", "any", "tpu:0", "pci:-1", "usb:01", " usb",
                                    "usb:0 ", "usb:0:1", "pcie", None, 0])
def test_device_strings_rejected_with_exact_text(device) -> None:
    with pytest.raises(ValueError) as info:
        EdgeTPUSource(device=device)
    assert str(info.value) == (
        f"edgetpu option device: got {device!r}; allowed: '' (any Edge TPU), ':N' (the N-th of any type), "
        "'usb', 'usb:N', 'pci', 'pci:N' (N = 0, 1, 2, ...)")
    assert DEVICE_FORMS in str(info.value)


@pytest.mark.parametrize("option, value, allowed", [
    ("n_runs", 0, "an integer >= 1"),
    ("n_runs", 2.5, "an integer >= 1"),
    ("n_runs", True, "an integer >= 1"),
    ("warmup", -1, "an integer >= 0"),
    ("compile_timeout_s", 0, "an integer >= 1"),
    ("stable", "yes", "true or false"),
    ("compiler", "", "the name or path of edgetpu_compiler"),
    ("library", "", "a library file name or path"),
    ("work_dir", 3, "a directory path or null"),
])
def test_other_options_are_validated(option: str, value, allowed: str) -> None:
    with pytest.raises(ValueError) as info:
        EdgeTPUSource(**{option: value})
    assert str(info.value).startswith(f"edgetpu option {option}: got {value!r}; allowed: {allowed}")


def test_registry_defaults_and_platform_library() -> None:
    source = get_source("edgetpu")
    assert isinstance(source, EdgeTPUSource)
    assert (source.name, source.measured) == ("edgetpu", True)
    assert (source.device, source.n_runs, source.warmup, source.stable) == ("", 100, 1, False)
    assert (source.compiler, source.compile_timeout_s, source.work_dir) == ("edgetpu_compiler", 180, None)
    assert source.library == default_library()
    assert default_library("linux") == "libedgetpu.so.1"
    assert default_library("darwin") == "libedgetpu.1.dylib"
    assert default_library("win32") == "edgetpu.dll"
    assert EdgeTPUSource(library="/opt/lib/libedgetpu.so.1").library == "/opt/lib/libedgetpu.so.1"
    with pytest.raises(ValueError, match="edgetpu option device: got 'usb0'"):
        get_source("edgetpu", device="usb0")


def test_source_pickles_and_rechecks_on_the_other_side(on_path, coral) -> None:
    import pickle

    on_path(v15_log())
    source = EdgeTPUSource(device="usb")
    source.check()
    copy = pickle.loads(pickle.dumps(source))
    assert copy._checked is False and source._checked is True
    assert (copy.device, copy.library, copy.n_runs) == ("usb", source.library, 100)


def test_describe_names_runtime_and_device() -> None:
    text = EdgeTPUSource(device="pci:1").describe()
    assert text.startswith("edgetpu/1 ") and text.endswith(" device=pci:1")
    assert "runtime=" + interpreter_module()[1] in text or "runtime=pycoral" in text
    assert "compiler=" not in text  # unknown until something is compiled
    assert EdgeTPUSource().describe().endswith(" device=any")


# --------------------------------------------------------------------------- missing pieces


def test_missing_compiler_fails_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    source = EdgeTPUSource()
    match = (r"^Edge TPU compiler 'edgetpu_compiler' not found on PATH: install the package edgetpu-compiler "
             r"from Coral's apt repository .*'edgetpu-model' latency predictor works without hardware$")
    with pytest.raises(MissingHardware, match=match) as info:
        source.check()
    assert_one_line_missing(str(info.value))
    with pytest.raises(MissingHardware, match=match):
        source.measure(NoWork())
    with pytest.raises(MissingHardware, match="'/opt/coral/edgetpu_compiler' not found"):
        EdgeTPUSource(compiler="/opt/coral/edgetpu_compiler").check()


def test_compiler_vanishing_after_check_is_still_missing_hardware(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(EdgeTPUSource, "check", lambda self: None)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(MissingHardware, match="edgetpu_compiler' not found on PATH.*edgetpu-model") as info:
        EdgeTPUSource(work_dir=tmp_path / "work").measure(Target(b"TFL3 not really a model"))
    assert_one_line_missing(str(info.value))


def test_missing_library_found_by_check(on_path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path(v15_log())
    monkeypatch.setattr(edgetpu_devices, "pycoral_edgetpu", lambda: None)
    # A name no host has: this goes through the real dlopen probe.
    source = EdgeTPUSource(library="libedgetpu-absent-for-tests.so.1")
    with pytest.raises(MissingHardware) as info:
        source.check()
    message = str(info.value)
    assert message.startswith("Edge TPU runtime library 'libedgetpu-absent-for-tests.so.1' is missing (")
    assert "libedgetpu1-std" in message and "libedgetpu1-max" in message
    assert_one_line_missing(message)
    with pytest.raises(MissingHardware, match="runtime library .* is missing"):
        source.measure(NoWork())


def test_missing_interpreter_found_by_check(on_path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path(v15_log())
    monkeypatch.setattr(edgetpu_devices, "pycoral_edgetpu", lambda: None)

    def no_runtime():
        raise RuntimeNotFound("no TFLite interpreter: install it with 'pip install ai-edge-litert'")

    monkeypatch.setattr(edgetpu, "interpreter_module", no_runtime)
    with pytest.raises(MissingHardware, match=r"^no TFLite interpreter to load the Edge TPU delegate: "
                                              r"install it with 'pip install ai-edge-litert'; ") as info:
        EdgeTPUSource().measure(NoWork())
    assert_one_line_missing(str(info.value))


@pytest.mark.parametrize("error", [ValueError(FAILED_DELEGATE), OSError(NO_SUCH_FILE)],
                         ids=["ValueError", "OSError"])
def test_delegate_load_without_library_is_missing_library(
    error: Exception, on_path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    on_path(v15_log())
    raising_delegate(monkeypatch, error)
    # The check is bypassed (as when the library went away after it) so the delegate load
    # itself meets the missing library.
    monkeypatch.setattr(EdgeTPUSource, "check", lambda self: None)
    monkeypatch.setattr(edgetpu_devices, "probe_library", lambda library: (False, NO_SUCH_FILE))
    with pytest.raises(MissingHardware) as info:
        EdgeTPUSource(work_dir=tmp_path / "work").measure(Target(b"TFL3 not really a model"))
    message = str(info.value)
    assert message.startswith(f"Edge TPU runtime library 'libedgetpu.so.1' is missing ({NO_SUCH_FILE}): ")
    assert "libedgetpu1-std" in message and "libedgetpu1-max" in message
    assert_one_line_missing(message)


def test_delegate_load_with_library_but_no_device(on_path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real runtime raises the same ValueError as for a missing library; the library
    probe succeeding is what makes it a missing device."""
    on_path(v15_log())
    raising_delegate(monkeypatch, ValueError(FAILED_DELEGATE))
    monkeypatch.setattr(edgetpu_devices, "probe_library", lambda library: (True, "RuntimeVersion(14)"))
    # A listing that cannot be trusted (e.g. no USB sysfs in a container): check() lets it
    # through and the delegate load decides.
    monkeypatch.setattr(edgetpu_devices, "find_devices", lambda: ([], "USB devices cannot be listed", False))
    with pytest.raises(MissingHardware) as info:
        EdgeTPUSource(device="usb:1", work_dir=tmp_path / "work").measure(Target(b"TFL3 not really a model"))
    message = str(info.value)
    assert message.startswith("no Edge TPU device found for device 'usb:1' (USB devices cannot be listed): ")
    assert "runtime library" not in message
    assert_one_line_missing(message)


def test_check_rules_out_device_when_listing_is_trusted(on_path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path(v15_log())
    monkeypatch.setattr(edgetpu_devices, "pycoral_edgetpu", lambda: None)
    monkeypatch.setattr(edgetpu_devices, "probe_library", lambda library: (True, ""))
    monkeypatch.setattr(edgetpu_devices, "find_devices", lambda: ([], "no Coral USB device in /sys", True))
    with pytest.raises(MissingHardware, match=r"^no Edge TPU device found for device '' \(any\) "
                                              r"\(no Coral USB device in /sys\): .*edgetpu-model") as info:
        EdgeTPUSource().measure(NoWork())
    assert_one_line_missing(str(info.value))

    monkeypatch.setattr(edgetpu_devices, "find_devices", lambda: ([dict(FAKE_DEVICE)], "", True))
    for wanted in ("usb:1", "pci", ":1"):
        with pytest.raises(MissingHardware, match=rf"device '{wanted}' \(listed: usb:0\)"):
            EdgeTPUSource(device=wanted).check()
    for ok in ("", ":0", "usb", "usb:0"):
        EdgeTPUSource(device=ok).check()


# --------------------------------------------------------------------------- pipeline


@pytest.mark.slow
def test_full_pipeline_with_fake_compiler_and_cpu_interpreter(
    tiny_target: Target, on_path, coral, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    args_file = on_path(v15_log())
    work = tmp_path / "work"
    source = EdgeTPUSource(device="usb:0", n_runs=7, warmup=2, work_dir=work)
    result = source.measure(tiny_target)

    assert result.source == "edgetpu"
    assert result.latency_ms > 0 and result.n_runs == 7
    assert result.p90_ms >= result.latency_ms and result.spread >= 0
    # The v15 report: 85.75KiB cached, 5.50KiB streamed, 15 ops, all on the Edge TPU.
    assert (result.on_chip_bytes, result.off_chip_bytes) == (87808, 5632)
    assert (result.ops_on_tpu, result.ops_on_cpu) == (15, 0)
    d = result.details
    assert d["compiler_version"] == "15.0.340273435" and d["compile_ms"] == 128
    assert d["n_subgraphs"] == 1 and d["unmapped_ops"] == [] and d["device"] == "usb:0"
    assert d["on_chip_remaining_bytes"] == round(7.77 * 2**20) and d["warmup"] == 2
    assert "compiler=15.0.340273435" in result.source_version
    assert "libedgetpu=RuntimeVersion(14)" in result.source_version
    assert result.source_version.endswith("device=usb:0")

    assert coral == [("libedgetpu.so.1", {"device": "usb:0"})]
    key = tiny_target.key
    assert (work / f"{key}.tflite").read_bytes() == tiny_target.tflite()
    assert (work / f"{key}_edgetpu.tflite").is_file()  # work_dir given: files kept
    assert d["compiled_model"] == str(work / f"{key}_edgetpu.tflite")
    args = args_file.read_text().split()
    assert args == ["-s", "-o", str(work), "-t", "180", str(work / f"{key}.tflite")]

    # Default work dir: a temporary one, removed afterwards; stable mode; no -t.
    tmp_root = tmp_path / "tmp"
    tmp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_root))
    again = EdgeTPUSource(n_runs=5, stable=True, compile_timeout_s=None).measure(tiny_target)
    assert again.n_runs >= 15 and again.details["timing_rounds"] >= 3  # time_stable's min_rounds
    assert (again.on_chip_bytes, again.ops_on_tpu) == (87808, 15)
    assert "compiled_model" not in again.details
    assert list(tmp_root.iterdir()) == []
    assert "-t" not in args_file.read_text().split()
    assert coral[-1] == ("libedgetpu.so.1", {"device": ""})


def test_failed_compile_is_a_latency_error(on_path, coral, tmp_path: Path) -> None:
    failed = tmp_path / "failed.txt"
    failed.write_text(FAILED_OUTPUT)
    on_path(failed, exit_status=1, write_model=False)
    target = Target(b"TFL3 not really a model")
    with pytest.raises(LatencyError) as info:
        EdgeTPUSource(work_dir=tmp_path / "work").measure(target)
    assert str(info.value) == f"edgetpu_compiler could not compile {target.label}: {LARGE_ACTIVATIONS}"
    assert not isinstance(info.value, MissingHardware)
    assert coral == []  # never got as far as the delegate


def test_success_without_compiled_file_is_a_latency_error(on_path, coral, tmp_path: Path) -> None:
    on_path(v15_log(), write_model=False)
    with pytest.raises(LatencyError, match=r"compiler reported success but wrote no \w+_edgetpu.tflite"):
        EdgeTPUSource(work_dir=tmp_path / "work").measure(Target(b"TFL3 not really a model"))


def test_pycoral_is_used_when_installed(on_path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class FakePycoral:
        calls: list = []

        @staticmethod
        def list_edge_tpus():
            return [{"type": "pci", "path": "/dev/apex_0"}, {"type": "usb", "path": "/sys/bus/usb/devices/2-1"},
                    {"type": "usb", "path": "/sys/bus/usb/devices/4-2"}]

        @classmethod
        def make_interpreter(cls, model_path, device=None):
            cls.calls.append((Path(model_path).name, device))
            raise ValueError(FAILED_DELEGATE)  # what pycoral raises when the device is busy

    monkeypatch.setattr(edgetpu_devices, "pycoral_edgetpu", lambda: FakePycoral)
    devices, reason = list_devices()
    assert [d["device"] for d in devices] == ["pci:0", "usb:0", "usb:1"] and reason == ""

    on_path(v15_log())
    monkeypatch.setattr(edgetpu_devices, "probe_library", lambda library: (True, ""))
    target = Target(b"TFL3 not really a model")
    with pytest.raises(MissingHardware, match=r"device '' \(any\) \(listed: pci:0, usb:0, usb:1\).*in use"):
        EdgeTPUSource(work_dir=tmp_path / "work").measure(target)
    assert FakePycoral.calls == [(f"{target.key}_edgetpu.tflite", None)]


# --------------------------------------------------------------------------- devices


def test_sysfs_scan_finds_coral_usb_and_pcie(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usb = tmp_path / "sys/bus/usb/devices"
    for name, vendor, product in [("1-1", "1d6b", "0002"), ("2-1", "1a6e", "089a"), ("2-2", "18d1", "9302")]:
        (usb / name).mkdir(parents=True)
        (usb / name / "idVendor").write_text(vendor + "\n")
        (usb / name / "idProduct").write_text(product + "\n")
    (usb / "2-1:1.0").mkdir()  # an interface: no id files
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/apex_0").touch()
    monkeypatch.setattr(edgetpu_devices, "_USB_SYSFS", str(usb))
    monkeypatch.setattr(edgetpu_devices, "_DEV_GLOB", str(tmp_path / "dev/apex_*"))
    monkeypatch.setattr(edgetpu_devices, "pycoral_edgetpu", lambda: None)
    monkeypatch.setattr(sys, "platform", "linux")

    devices, reason = list_devices()
    assert reason == ""
    assert devices == [
        {"type": "pci", "path": str(tmp_path / "dev/apex_0"), "device": "pci:0"},
        {"type": "usb", "path": str(usb / "2-1"), "device": "usb:0", "usb_id": "1a6e:089a", "state": "unprogrammed"},
        {"type": "usb", "path": str(usb / "2-2"), "device": "usb:1", "usb_id": "18d1:9302", "state": "ready"},
    ]

    for path in [tmp_path / "dev/apex_0", *(usb / n / "idVendor" for n in ("2-1", "2-2"))]:
        path.unlink()
    devices, reason = list_devices()
    assert devices == []
    assert reason == (f"no PCIe Edge TPU ({tmp_path}/dev/apex_*) and no Coral USB device "
                      f"(1a6e:089a or 18d1:9302) in {usb}")


def test_list_devices_and_environment_on_this_host() -> None:
    devices, reason = list_devices()
    assert isinstance(devices, list) and isinstance(reason, str) and "\n" not in reason
    assert bool(devices) != bool(reason)  # a reason exactly when nothing was found
    for d in devices:
        assert d["type"] in ("usb", "pci") and d["path"] and d["device"].startswith(d["type"] + ":")

    env = environment_report()
    assert env["compiler"]["found"] == (env["compiler"]["path"] is not None) == bool(
        __import__("shutil").which("edgetpu_compiler"))
    assert env["library"]["name"] == default_library() and isinstance(env["library"]["found"], bool)
    assert env["devices"] == devices and env["reason"] == reason
    assert env["ready"] == (env["compiler"]["found"] and env["library"]["found"] and bool(devices)
                            and env["runtime"] != "none")
    if not env["library"]["found"]:
        assert env["library"]["detail"]  # the loader's reason


# --------------------------------------------------------------------------- real device


@pytest.mark.edgetpu
def test_real_edge_tpu(request: pytest.FixtureRequest) -> None:
    source = EdgeTPUSource(n_runs=20)
    try:
        source.check()
    except MissingHardware as e:
        pytest.skip(str(e))
    target = request.getfixturevalue("tiny_target")  # convert only when a device is there
    result = source.measure(target)
    assert result.source == "edgetpu" and result.n_runs == 20
    assert 0 < result.latency_ms <= result.p90_ms
    assert result.on_chip_bytes > 0 and result.ops_on_tpu > 0
    assert result.details["compiler_version"]
