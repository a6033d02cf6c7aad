"""Where latency sources are found: registered names, ``module:Class`` paths and fitted predictors.

Sources are registered by name with the import path of their class, so optional runtimes
(LiteRT, libedgetpu, a tree library) are imported only when that source is chosen. A fitted
predictor on disk (a directory, or its JSON file) is opened by the loader that its own module
registered with :func:`register_loader` (``latency_models`` imports those modules, so their
loaders are always there). This module imports no source; how to write one is in
:mod:`latency_models.base`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Callable

from search_spaces.importing import import_object

from latency_models.base import LatencySource

# name -> "module:Class" (imported on first use) or the class itself.
_SOURCES: dict[str, Any] = {
    "tflite-cpu": "latency_models.tflite_cpu:TFLiteCPUSource",
    "edgetpu": "latency_models.edgetpu.source:EdgeTPUSource",
    "edgetpu-model": "latency_models.edgetpu.model_source:EdgeTPUModelSource",
    "tflite-cpu-model": "latency_models.learned:LearnedSource",
}

Loader = Callable[[Path], LatencySource]

# (marker file of a predictor directory, text marking its JSON file or None, loader), in
# registration order.
_LOADERS: list[tuple[str, str | None, Loader]] = []


def register_source(name: str, cls_or_path: Any) -> None:
    """Register a source class (or its ``"module:Class"`` path) under ``name``; duplicates raise."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"latency source name: expected a non-empty string, got {name!r}")
    if name in _SOURCES and _SOURCES[name] != cls_or_path:
        raise ValueError(f"latency source {name!r} is already registered ({_SOURCES[name]})")
    _SOURCES[name] = cls_or_path


def register_loader(marker_file: str, load: Loader, *, marker: str | None = None) -> None:
    """Open fitted predictors of one kind: ``load(path)`` is the source of a directory holding
    ``marker_file``, or of a ``.json`` file whose first 200 characters contain ``marker``
    (``marker=None``: of any ``.json`` file that no other loader's marker claims).

    ``path`` is what the user gave, directory or file. For a directory, the loaders are asked
    in registration order; registering ``marker_file`` again replaces its loader.
    """
    if not isinstance(marker_file, str) or not marker_file or not callable(load):
        raise ValueError(f"predictor loader: expected a marker file name and a callable, got {marker_file!r}, "
                         f"{load!r}")
    entry = (marker_file, marker, load)
    for i, (known, _, _) in enumerate(_LOADERS):
        if known == marker_file:
            _LOADERS[i] = entry
            return
    _LOADERS.append(entry)


def source_names() -> list[str]:
    return sorted(_SOURCES)


def is_measured(name: str) -> bool:
    """Whether the source called ``name`` times real invokes (``LatencySource.measured``):
    a registered name or a ``module:Class`` path; a fitted predictor (a path) never does."""
    if name in _SOURCES:
        return bool(_resolve(name).measured)
    if ":" in name and _predictor_loader(name) is None:
        cls = import_object(name, "latency source")
        return bool(getattr(cls, "measured", False))
    return False


def _resolve(name: str) -> type[LatencySource]:
    entry = _SOURCES[name]
    if isinstance(entry, str):
        entry = import_object(entry, "latency source")
    return entry


def _predictor_loader(name: str) -> Loader | None:
    """The registered loader of the fitted predictor at path ``name`` (None: not one)."""
    p = Path(name)
    if p.is_dir():
        return next((load for marker_file, _, load in _LOADERS if (p / marker_file).is_file()), None)
    if p.is_file() and p.suffix == ".json":
        head = p.read_text()[:200]
        claimed = [load for _, marker, load in _LOADERS if marker is not None and marker in head]
        fallback = [load for _, marker, load in _LOADERS if marker is None]
        return next(iter(claimed + fallback), None)
    return None


def get_source(name: str, **options: Any) -> LatencySource:
    """A latency source by registered name, ``module:Class`` path, or predictor directory."""
    if not isinstance(name, str):
        raise ValueError(f"latency source: expected a name, got {type(name).__name__}")
    if name in _SOURCES:
        cls = _resolve(name)
    elif (load := _predictor_loader(name)) is not None:
        if options:
            raise ValueError(f"latency source {name!r}: a predictor file takes no options, got {sorted(options)}")
        return load(Path(name))
    elif ":" in name:
        cls = import_object(name, "latency source")
        if not (isinstance(cls, type) and issubclass(cls, LatencySource)):
            raise ValueError(f"latency source {name!r}: {cls!r} is not a LatencySource subclass")
    else:
        hint = difflib.get_close_matches(name, source_names(), n=1)
        raise ValueError(f"latency source: unknown name {name!r}; allowed: {', '.join(source_names())}"
                         + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    try:
        return cls(**options)
    except TypeError as e:
        raise ValueError(f"latency source {name!r}: bad options {options}: {e}") from None
