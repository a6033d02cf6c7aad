"""The one narrow interface of latency sources: :class:`LatencySource` and its :class:`LatencyResult`.

A latency source turns a *target* (an :class:`~search_spaces.Arch`, a Keras model, or a
``.tflite``/``.keras`` path) into a :class:`LatencyResult`. Sources are found by name in
:mod:`latency_models.registry`.

Writing a source::

    from latency_models import LatencyResult, LatencySource, Target, register_source

    class FlopsProxy(LatencySource):
        '''Latency as 1 ms per 100M MACs: a stand-in that needs no runtime.'''
        name, version = "flops-proxy", "1"

        def measure(self, target: Target) -> LatencyResult:
            macs = target.analysis().total_macs
            return self.result(latency_ms=macs / 1e8)

    register_source(FlopsProxy)   # found as "flops-proxy"; unregistered, as "my_module:FlopsProxy"
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Sequence

from latency_models.target import Target


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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LatencyResult":
        """From :meth:`to_dict` (what crosses a process boundary; layers are not carried)."""
        names = {f for f in cls.__dataclass_fields__ if f != "layers"}
        return cls(**{k: v for k, v in d.items() if k in names})

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

    def measure(self, target: Target) -> LatencyResult:
        raise NotImplementedError

    def measure_archs(self, archs: Sequence[Any], *, num_classes: int | None = None,
                      channels: int = 3) -> list[LatencyResult]:
        """Each arch at its own resolution with ``channels`` input channels; a source that can
        batch (``edgetpu-model``) overrides this, the others measure one by one."""
        return [self.measure(Target(a, input_shape=(a.resolution, a.resolution, channels), num_classes=num_classes))
                for a in archs]

    def __call__(self, obj: Any, **target_kwargs: Any) -> LatencyResult:
        """Measure anything :class:`Target` accepts: ``source(arch, input_shape=(32, 32, 3))``."""
        return self.measure(obj if isinstance(obj, Target) else Target(obj, **target_kwargs))

    def describe(self) -> str:
        """The version string recorded with every result (runtime versions, options)."""
        return self.version

    def result(self, **fields: Any) -> LatencyResult:
        return LatencyResult(source=self.name, source_version=self.describe(), **fields)
