"""The one narrow interface of latency sources, and their strict, lazy registry.

A latency source turns a *target* (an :class:`~search_spaces.Arch`, a Keras model, or a
``.tflite``/``.keras`` path) into a :class:`LatencyResult`. Sources are registered by name
with the import path of their class, so optional runtimes (LiteRT, libedgetpu, a tree
library) are imported only when that source is chosen.

Writing a source::

    from latency_models import LatencyResult, LatencySource, Target, register_source

    class FlopsProxy(LatencySource):
        '''Latency as 1 ms per 100M MACs: a stand-in that needs no runtime.'''
        name, version = "flops-proxy", "1"

        def measure(self, target: Target) -> LatencyResult:
            macs = target.analysis().total_macs
            return self.result(latency_ms=macs / 1e8)

    register_source("flops-proxy", FlopsProxy)   # or "my_module:FlopsProxy"
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import LatencyError, MissingHardware  # noqa: F401 - their old import path

if TYPE_CHECKING:
    from .target import Target


@dataclass(frozen=True)
class LayerLatency:
    """One row of a per-layer breakdown (predictors fill it; measured sources may not)."""

    name: str
    op: str
    latency_ms: float
    on_chip_bytes: int = 0
    off_chip_bytes: int = 0
    device: str = "tpu"  # "tpu" or "cpu"


@dataclass(frozen=True)
class LatencyResult:
    """A latency with its provenance; every unit is in the field name.

    ``latency_ms`` is the median of ``n_runs`` timed invokes (for predictions ``n_runs`` is
    0 and ``p90_ms`` is None). Edge TPU sources also fill the memory split and op placement.
    """

    latency_ms: float
    source: str
    source_version: str
    n_runs: int = 0
    p90_ms: float | None = None
    spread: float | None = None  # (p90 - p10) / median of the timed runs
    on_chip_bytes: int | None = None
    off_chip_bytes: int | None = None
    ops_on_tpu: int | None = None
    ops_on_cpu: int | None = None
    layers: tuple[LayerLatency, ...] = ()
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.latency_ms, (int, float)) and math.isfinite(self.latency_ms)
                and self.latency_ms >= 0):
            raise ValueError(f"latency_ms: expected a finite non-negative number, got {self.latency_ms!r}")

    def to_dict(self, *, with_layers: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_layers:
            d.pop("layers")
        return d

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(**kw), default=str)


LATENCY_ONLY = frozenset({"latency_ms"})
EDGETPU_METRICS = frozenset({"latency_ms", "on_chip_bytes", "off_chip_bytes", "ops_on_tpu", "ops_on_cpu"})


class LatencySource:
    """Base class of latency sources. Subclasses set ``name``/``version`` and implement
    :meth:`measure`. Constructor arguments are the source's options (threads, device...)."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    #: True for sources that time real invokes (they are noisy and cost seconds).
    measured: ClassVar[bool] = False
    #: The :class:`LatencyResult` fields the source fills (beyond ``latency_ms``), so that an
    #: experiment constraining one it never fills is refused before any work. None: not
    #: declared (a user source); constraints on it are then only warned about.
    metrics: ClassVar[frozenset[str] | None] = None

    def measure(self, target: "Target") -> LatencyResult:
        raise NotImplementedError

    def __call__(self, obj: Any, **target_kwargs: Any) -> LatencyResult:
        """Measure anything :class:`Target` accepts: ``source(arch, input_shape=(32, 32, 3))``."""
        from .target import Target

        return self.measure(obj if isinstance(obj, Target) else Target(obj, **target_kwargs))

    def describe(self) -> str:
        """The version string recorded with every result (runtime versions, options)."""
        return self.version

    def result(self, **fields: Any) -> LatencyResult:
        return LatencyResult(source=self.name, source_version=self.describe(), **fields)


# ------------------------------------------------------------------------------ registry

# name -> "module:Class" (imported on first use) or the class itself.
_SOURCES: dict[str, Any] = {
    "tflite-cpu": "latency_models.tflite_cpu:TFLiteCPUSource",
    "edgetpu": "latency_models.edgetpu:EdgeTPUSource",
    "edgetpu-model": "latency_models.edgetpu_model:EdgeTPUModelSource",
    "tflite-cpu-model": "latency_models.learned:LearnedSource",
}


def register_source(name: str, cls_or_path: Any) -> None:
    """Register a source class (or its ``"module:Class"`` path) under ``name``; duplicates raise."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"latency source name: expected a non-empty string, got {name!r}")
    if name in _SOURCES and _SOURCES[name] != cls_or_path:
        raise ValueError(f"latency source {name!r} is already registered ({_SOURCES[name]})")
    _SOURCES[name] = cls_or_path


def source_names() -> list[str]:
    return sorted(_SOURCES)


def _resolve(name: str) -> type[LatencySource]:
    entry = _SOURCES[name]
    if isinstance(entry, str):
        from search_spaces.importing import import_object

        entry = import_object(entry, "latency source")
    return entry


def _predictor_path(name: str):
    """("learned" | "edgetpu-model", path) when ``name`` is a fitted predictor on disk."""
    from pathlib import Path

    p = Path(name)
    if p.is_dir():
        if (p / "predictor.json").is_file():
            return "learned", p
        if (p / "edgetpu_model.json").is_file():
            return "edgetpu-model", p / "edgetpu_model.json"
    elif p.is_file() and p.suffix == ".json":
        return ("edgetpu-model" if '"edgetpu-model"' in p.read_text()[:200] else "learned"), p
    return None


def get_source(name: str, **options: Any) -> LatencySource:
    """A latency source by registered name, ``module:Class`` path, or predictor directory."""
    if not isinstance(name, str):
        raise ValueError(f"latency source: expected a name, got {type(name).__name__}")
    if name in _SOURCES:
        cls = _resolve(name)
    elif _predictor_path(name) is not None:
        kind, path = _predictor_path(name)
        if options:
            raise ValueError(f"latency source {name!r}: a predictor file takes no options, got {sorted(options)}")
        if kind == "edgetpu-model":
            return _resolve("edgetpu-model")(constants=str(path))
        from .learned import LearnedSource

        return LearnedSource(str(path))
    elif ":" in name:
        from search_spaces.importing import import_object

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
