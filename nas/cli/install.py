"""Which TensorFlow build is installed: exactly one, or a one-line error saying how to fix it.

TensorFlow's CPU build (``tensorflow-cpu``) and its GPU-capable build (``tensorflow``, with
``[and-cuda]`` its CUDA libraries) are two distributions that install into the same
``tensorflow`` folder. With both installed, whichever pip wrote last wins file by file, and
uninstalling either breaks the other. So the toolkit depends on neither directly: the
extras ``[cpu]`` and ``[gpu]`` choose one (``pyproject.toml``), and :func:`check` refuses a
machine where none or both are installed, before any work.

>>> builds(lambda name: {"tensorflow-cpu": "2.21.0"}.get(name))
{'tensorflow-cpu': '2.21.0'}
>>> problem({"tensorflow-cpu": "2.21.0", "tensorflow": "2.21.0"})[:40]
'two TensorFlow builds are installed side'
"""

from __future__ import annotations

from importlib import metadata
from typing import Callable

__all__ = ["BUILDS", "builds", "check", "problem"]

#: The distributions that install the ``tensorflow`` package.
BUILDS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-macos", "tensorflow-intel", "tf-nightly",
          "tf-nightly-cpu")

_INSTALL = ("pip install -e '.[cpu]' (CPU) or pip install -e '.[gpu]' (Linux with an NVIDIA GPU)")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def builds(version: Callable[[str], str | None] = _version) -> dict[str, str]:
    """The installed TensorFlow distributions and their versions.

    ``tensorflow-intel`` is what the ``tensorflow`` wheel for Windows pulls in, so a pair of
    those is one build."""
    found = {name: v for name in BUILDS if (v := version(name)) is not None}
    if "tensorflow-intel" in found and "tensorflow" in found:
        found.pop("tensorflow-intel")
    return found


def problem(found: dict[str, str]) -> str | None:
    """What is wrong with the installed builds, as one line; None when exactly one is there."""
    if not found:
        return f"TensorFlow is not installed: {_INSTALL}"
    if len(found) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in sorted(found.items()))
        keep = "[gpu]" if "tensorflow" in found else "[cpu]"
        return (f"two TensorFlow builds are installed side by side ({listed}) and overwrite each other's files: "
                f"pip uninstall -y {' '.join(sorted(found))}, then pip install -e '.{keep}' (or the other extra)")
    return None


def check() -> None:
    """``ValueError`` (one line; the CLI exits 2) unless exactly one TensorFlow build is installed."""
    why = problem(builds())
    if why is not None:
        raise ValueError(why)
