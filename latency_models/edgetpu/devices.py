"""What a host has for the ``edgetpu`` source: the runtime library, the Python runtime that
loads its delegate, the Edge TPUs plugged in; and the one-line :class:`MissingHardware` texts
naming what is missing and how to get it (the install steps are in :mod:`latency_models.edgetpu.source`).

Nothing is imported or probed at module import time: Google's ``pycoral`` is imported on first
use, the library is ``dlopen()``-ed only by :func:`probe_library`.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import importlib
import importlib.metadata
import logging
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from latency_models.errors import RuntimeNotFound
from latency_models.runtime import interpreter_module

logger = logging.getLogger(__name__)

__all__ = ["DEVICE_FORMS", "USB_IDS", "default_library", "environment_report", "list_devices", "validate_device"]

#: What the ``device`` option accepts, as told in error messages.
DEVICE_FORMS = "'' (any Edge TPU), ':N' (the N-th of any type), 'usb', 'usb:N', 'pci', 'pci:N' (N = 0, 1, 2, ...)"
# Canonical indices only ("usb:01" is rejected): results record the device string, so one
# device should have one spelling.
_DEVICE_RE = re.compile(r"(?:(?P<type>usb|pci)(?::(?P<index>0|[1-9]\d*))?|:(?P<any_index>0|[1-9]\d*))?")

# USB ids of the Coral USB Accelerator: before the runtime uploads its firmware it shows up
# as Global Unichip 1a6e:089a, afterwards as Google 18d1:9302.
USB_IDS = {("1a6e", "089a"): "unprogrammed", ("18d1", "9302"): "ready"}
# Where the Linux scan looks; module constants so tests can point them at a fake tree.
_DEV_GLOB = "/dev/apex_*"
_USB_SYSFS = "/sys/bus/usb/devices"

# Every MissingHardware message ends with this, so a user without a Coral knows the way on.
WITHOUT_HARDWARE = "the 'edgetpu-model' latency predictor works without hardware"


def default_library(platform: str | None = None) -> str:
    """The file name of the Edge TPU runtime library on ``platform`` (default: this one)."""
    platform = sys.platform if platform is None else platform
    if platform == "darwin":
        return "libedgetpu.1.dylib"
    if platform in ("win32", "cygwin"):
        return "edgetpu.dll"
    return "libedgetpu.so.1"


def validate_device(device: Any) -> str:
    """Return ``device`` if it is a Coral device string, else raise a one-line ValueError."""
    if not isinstance(device, str) or _DEVICE_RE.fullmatch(device) is None:
        raise ValueError(f"edgetpu option device: got {device!r}; allowed: {DEVICE_FORMS}")
    return device


def one_line(text: str, limit: int = 300) -> str:
    # dlerror()/runtime texts may span lines; MissingHardware messages must stay on one.
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# ------------------------------------------------------------------------- environment


def pycoral_edgetpu():
    """Google's ``pycoral.utils.edgetpu`` if installed, else None (never from PyPI, see below)."""
    return _import_pycoral()


@functools.lru_cache(maxsize=1)
def _import_pycoral():
    # Cached: a failed import is retried from scratch each time, and describe() asks per result.
    try:
        mod = importlib.import_module("pycoral.utils.edgetpu")
    except Exception as e:  # noqa: BLE001 - any failure to import means "not usable here"
        # The PyPI project named "pycoral" is unrelated; it either lacks this module or
        # fails to import it, and either way we must fall back to load_delegate.
        logger.debug("pycoral not usable: %s", e)
        return None
    if not (hasattr(mod, "make_interpreter") and hasattr(mod, "list_edge_tpus")):
        logger.debug("pycoral.utils.edgetpu lacks make_interpreter/list_edge_tpus: not Google's pycoral")
        return None
    return mod


def probe_library(library: str) -> tuple[bool, str]:
    """(found, detail): can ``library`` be loaded the way the delegate loader will load it?

    Both "library missing" and "no device" reach us as the same ``ValueError("Failed to load
    delegate from libedgetpu.so.1")`` from the runtime, so this probe is what tells them apart.
    It dlopen()s the library with the same search rules as ``load_delegate`` (ctypes), which
    also catches a library that exists but cannot load (e.g. libusb missing). On success the
    detail is libedgetpu's own version string when it exports one.
    """
    try:
        lib = ctypes.CDLL(library)
    except OSError as e:
        return False, one_line(str(e)) or f"cannot load {library}"
    version = ""
    try:
        fn = lib.edgetpu_version  # exported by libedgetpu's C API (edgetpu_c.h)
        fn.restype, fn.argtypes = ctypes.c_char_p, []
        raw = fn() or b""
        text = raw.decode(errors="replace")
        # "BuildLabel(...), RuntimeVersion(14)": the runtime version is what models depend on.
        m = re.search(r"RuntimeVersion\((\d+)\)", text)
        version = f"RuntimeVersion({m.group(1)})" if m else one_line(text, 80)
    except AttributeError:
        pass
    return True, version


def _dist_version(*names: str) -> str:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "?"


def runtime_description() -> str:
    """Which Python runtime will load the delegate, with its version (never raises)."""
    if pycoral_edgetpu() is not None:
        return f"pycoral-{_dist_version('pycoral')}+tflite_runtime-{_dist_version('tflite-runtime', 'tflite_runtime')}"
    try:
        _, name = interpreter_module()
    except RuntimeNotFound:
        return "none"
    dist = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(name, name)
    return f"{name}-{_dist_version(dist)}"


def find_devices() -> tuple[list[dict[str, str]], str, bool]:
    """(devices, reason when none, authoritative): authoritative means an empty list can be
    trusted to mean "no device" (pycoral asked libedgetpu, or Linux sysfs was readable)."""
    coral = pycoral_edgetpu()
    if coral is not None:
        try:
            found = list(coral.list_edge_tpus())
        except Exception as e:  # noqa: BLE001 - a broken runtime must not crash a listing
            return [], f"pycoral.list_edge_tpus() failed: {one_line(str(e))}", False
        devices, counts = [], {"usb": 0, "pci": 0}
        for d in found:
            kind = str(d.get("type", "")).lower()
            entry = {"type": kind, "path": str(d.get("path", ""))}
            if kind in counts:
                entry["device"] = f"{kind}:{counts[kind]}"
                counts[kind] += 1
            devices.append(entry)
        reason = "" if devices else "no Edge TPU found by libedgetpu (via pycoral.list_edge_tpus())"
        return devices, reason, True

    if not sys.platform.startswith("linux"):
        return [], (f"cannot list Edge TPUs on {sys.platform} without Google's pycoral; "
                    "the runtime still finds one when the delegate loads"), False

    devices = [{"type": "pci", "path": p, "device": f"pci:{i}"}
               for i, p in enumerate(sorted(glob.glob(_DEV_GLOB)))]
    usb_root = Path(_USB_SYSFS)
    if not usb_root.is_dir():
        # Containers often lack /sys/bus/usb; a USB Accelerator may still be reachable.
        reason = "" if devices else (f"no PCIe Edge TPU ({_DEV_GLOB}) and USB devices cannot be listed "
                                     f"({_USB_SYSFS} is absent)")
        return devices, reason, bool(devices)
    n_usb = 0
    for dev in sorted(usb_root.iterdir()):
        try:
            ids = ((dev / "idVendor").read_text().strip().lower(), (dev / "idProduct").read_text().strip().lower())
        except OSError:
            continue  # interfaces and hubs without id files
        state = USB_IDS.get(ids)
        if state is not None:
            devices.append({"type": "usb", "path": str(dev), "device": f"usb:{n_usb}",
                            "usb_id": ":".join(ids), "state": state})
            n_usb += 1
    reason = "" if devices else (f"no PCIe Edge TPU ({_DEV_GLOB}) and no Coral USB device "
                                 f"(1a6e:089a or 18d1:9302) in {_USB_SYSFS}")
    return devices, reason, True


def list_devices() -> tuple[list[dict[str, str]], str]:
    """The Edge TPUs on this host and, when there are none, a one-line reason.

    Each device is a dict with ``type`` ("usb" or "pci"), ``path`` and ``device`` (the device
    string that selects it, e.g. ``"usb:0"``); the sysfs scan adds ``usb_id`` and ``state``
    ("unprogrammed" before the runtime first uploads the USB firmware, "ready" after).
    With Google's pycoral this asks libedgetpu itself; otherwise it scans ``/dev/apex_*`` and
    USB sysfs (Linux only), numbering devices of each type in path order, which is how
    libedgetpu usually numbers them but not guaranteed.
    """
    devices, reason, _ = find_devices()
    return devices, reason


def environment_report(compiler: str = "edgetpu_compiler", library: str | None = None) -> dict[str, Any]:
    """What this host has for the ``edgetpu`` source: compiler, runtime, library, devices."""
    library = library or default_library()
    lib_found, lib_detail = probe_library(library)
    devices, reason, _ = find_devices()
    compiler_path = shutil.which(compiler)
    runtime = runtime_description()
    return {
        "platform": sys.platform,
        "compiler": {"name": compiler, "path": compiler_path, "found": compiler_path is not None},
        # detail: libedgetpu's version when found, the loader's error when not.
        "library": {"name": library, "found": lib_found, "detail": lib_detail},
        "runtime": runtime,
        "pycoral": pycoral_edgetpu() is not None,
        "devices": devices,
        "reason": reason,
        "ready": compiler_path is not None and lib_found and runtime != "none" and bool(devices),
    }


def device_available(devices: list[dict[str, str]], device: str) -> bool:
    m = _DEVICE_RE.fullmatch(device)
    kind, index, any_index = m["type"], m["index"], m["any_index"]
    if any_index is not None:
        return len(devices) > int(any_index)
    pool = [d for d in devices if kind is None or d.get("type") == kind]
    return len(pool) > (int(index) if index is not None else 0)


# ------------------------------------------------------------------------------ messages


def device_listing(devices: list[dict[str, str]], reason: str) -> str:
    """What the device listing said, for a no-device message: its reason or what it saw."""
    if not devices:
        return reason
    return "listed: " + ", ".join(d.get("device") or d.get("type", "?") for d in devices)


def compiler_missing(compiler: str) -> str:
    return (f"Edge TPU compiler {compiler!r} not found on PATH: install the package edgetpu-compiler from "
            "Coral's apt repository (x86-64 Debian/Ubuntu only, https://coral.ai/docs/edgetpu/compiler/); "
            + WITHOUT_HARDWARE)


def library_missing(library: str, detail: str) -> str:
    if sys.platform.startswith("linux"):
        how = ("install the package libedgetpu1-std (or libedgetpu1-max, maximum clock) from Coral's apt "
               "repository (https://coral.ai/docs/accelerator/get-started/)")
    else:
        how = ("install the edgetpu_runtime archive from https://coral.ai/software/#edgetpu-runtime "
               "(on Linux: the package libedgetpu1-std or libedgetpu1-max from Coral's apt repository)")
    return f"Edge TPU runtime library {library!r} is missing ({detail}): {how}; {WITHOUT_HARDWARE}"


def no_device(device: str, reason: str) -> str:
    asked = f"device {device!r}" if device else "device '' (any)"
    why = f" ({reason})" if reason else ""
    return (f"no Edge TPU device found for {asked}{why}: plug in a Coral USB Accelerator or install a PCIe card "
            "with its driver (gasket-dkms), and check it is not in use by another process; " + WITHOUT_HARDWARE)


def interpreter_missing() -> str:
    return ("no TFLite interpreter to load the Edge TPU delegate: install it with 'pip install ai-edge-litert'; "
            + WITHOUT_HARDWARE)
