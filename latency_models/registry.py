"""Where latency sources are found: registered names, ``module:Class`` paths and fitted predictors.

Sources are registered by name with the import path of their class, so optional runtimes
(LiteRT, libedgetpu, a tree library) are imported only when that source is chosen. A fitted
predictor on disk (a directory, or its JSON file) is opened by the loader that its own module
registered with :func:`register_loader` (``latency_models`` imports those modules, so their
loaders are always there). This module imports no source; how to write one is in
:mod:`latency_models.base`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from search_spaces.registry import Registry

from latency_models.base import LatencySource

# name -> "module:Class" (imported on first use) or the class itself.
SOURCES: Registry[LatencySource] = Registry("latency source", LatencySource, arguments="options", builtin={
    "tflite-cpu": "latency_models.tflite_cpu:TFLiteCPUSource",
    "edgetpu": "latency_models.edgetpu.source:EdgeTPUSource",
    "edgetpu-model": "latency_models.edgetpu.model_source:EdgeTPUModelSource",
    "tflite-cpu-model": "latency_models.learned:LearnedSource",
})

Loader = Callable[[Path], LatencySource]

# (marker file of a predictor directory, text marking its JSON file or None, loader), in
# registration order.
_LOADERS: list[tuple[str, str | None, Loader]] = []


def register_source(cls: type[LatencySource]) -> type[LatencySource]:
    """Class decorator: register a source under ``cls.name``; a duplicate name raises."""
    return SOURCES.register(cls)


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
    return SOURCES.names()


def is_measured(name: str) -> bool:
    """Whether the source called ``name`` times real invokes (``LatencySource.measured``):
    a registered name or a ``module:Class`` path; a fitted predictor (a path) never does."""
    if name in SOURCES or (":" in name and _predictor_loader(name) is None):
        return bool(getattr(SOURCES.resolve(name), "measured", False))
    return False


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
    if name not in SOURCES and (load := _predictor_loader(name)) is not None:
        if options:
            raise ValueError(f"latency source {name!r}: a predictor file takes no options, got {sorted(options)}")
        return load(Path(name))
    return SOURCES.create(name, **options)
