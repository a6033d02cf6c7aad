"""Experiments: a YAML file parsed once, strictly, into frozen config objects.

Unknown keys, wrong types and out-of-range values stop the run before any work, with one
line naming the key path, the value given and what is allowed (pydantic does the checking;
:func:`load_experiment` turns its report into that line). The schema is versioned.

This module holds the experiment as a whole and the sections of what is searched (space, proxy,
controller, latency, data); :mod:`nas.config.search` holds how the search runs (budget, search,
ray, faults) and :mod:`nas.config.sections` a trial's recipe (train, score, export).

A minimal experiment::

    version: 1
    space: {name: efficientnet_edgetpu, resolution: 128, width: 1.0, num_classes: 10}   # what you ship
    proxy: {resolution: 32, width: 0.25, depth: 0.5}     # what each candidate is trained as
    controller: {name: mnas}
    reward: {target_ms: 2.0}
    latency: {source: edgetpu-model}
    data: {source: mnist5k}
    budget: {trials: 12}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from nas.config.search import BudgetConfig, FaultsConfig, OneShotConfig, RayConfig, SearchConfig
from nas.config.sections import ExportConfig, ScoreConfig, Strict as _Strict, TrainConfig
from nas.core.reward import RewardConfig

SCHEMA_VERSION = 1

__all__ = ["ExperimentConfig", "OneShotConfig", "ExportConfig", "ScoreConfig", "TrainConfig", "load_experiment", "override",
           "parse_experiment"]


class HoldConfig(_Strict):
    """Decisions of the space held at one value, so the search explores the others
    (``search_spaces.hold``). ``decisions`` take ``arch``'s choices: a reference name
    (``nas spaces references``; scaled to the space's width, depth and resolution) or an arch
    string of the space. ``values`` give a decision its value outright. A name is a stage
    decision's (``block``: every stage) or one stage's (``s2.block``)."""

    at = "space.hold"


    arch: str | None = None
    decisions: list[str] = Field(default_factory=list)
    values: dict[str, Any] = Field(default_factory=dict)


class SpaceConfig(_Strict):
    """The deployment model's space: the network the user will ship (its resolution, width,
    depth and the data's classes). Latency, memory, reward and constraints are its."""

    at = "space"


    name: str
    resolution: int | None = Field(None, ge=8, le=4096)
    width: float | None = Field(None, gt=0, le=8)
    depth: float | None = Field(None, gt=0, le=8)
    num_classes: int | None = Field(None, ge=2, le=1_000_000, description="the data's classes (default: counted "
                                    "from the data when the search starts, so arch strings carry them)")
    params: dict[str, Any] = Field(default_factory=dict, description="other constructor arguments")
    hold: HoldConfig | None = Field(None, description="decisions held at one value; the search explores the rest")

    def kwargs(self) -> dict[str, Any]:
        out = {k: v for k, v in (("resolution", self.resolution), ("width", self.width), ("depth", self.depth),
                                 ("num_classes", self.num_classes)) if v is not None}
        return {**self.params, **out}


class ProxyConfig(_Strict):
    """How a candidate is made cheap to train: compound scaling (``search_spaces.scale``) of the
    deployment arch. ``width`` and ``depth`` multiply the deployment arch's channels and
    repeats; ``resolution`` is the proxy's input size (default: the deployment's)."""

    at = "proxy"


    resolution: int | None = Field(None, ge=8, le=4096)
    width: float = Field(1.0, ge=0.05, le=8)
    depth: float = Field(1.0, ge=0.05, le=8)

    @model_validator(mode="after")
    def _not_larger(self):
        for key in ("width", "depth"):
            v = getattr(self, key)
            if v > 1:
                raise ValueError(f"proxy.{key}: {v:g} would make the proxy larger than the deployment model; "
                                 f"allowed (0.05 <= {key} <= 1, a multiplier of the deployment arch's "
                                 f"{'channels' if key == 'width' else 'repeats'})")
        return self

    @property
    def identity(self) -> bool:
        return self.resolution is None and self.width == 1 and self.depth == 1


class ControllerConfig(_Strict):
    at = "controller"

    name: Literal["mnas", "random", "evolution"] | str = "mnas"
    params: dict[str, Any] = Field(default_factory=dict)


class ServiceConfig(_Strict):
    """``latency.service``: where a measured source's timing happens (:mod:`latency_models.service`).

    With a service, a trial trains wherever the cluster has compute, converts its deployment
    model to int8 TFLite where it runs, and asks a long-lived measurement actor (one per
    device, on the node that offers ``resource``) to compile and time it; the actor serves
    requests in order and caches results by model fingerprint, so training never holds the
    device and a re-proposed arch is never measured twice."""

    at = "latency.service"


    mode: Literal["auto", "service", "trial"] = Field(
        "auto", description="service: measurement actors serve the trials; trial: each trial measures on its "
        "own node and, for edgetpu, holds the device (the 'edgetpu' resource) for its whole life; auto: "
        "service for the edgetpu source, trial for the others")
    resource: str | None = Field(
        None, description="the Ray resource each measurement actor holds, which places it on the nodes that "
        "offer it (default: 'edgetpu' for the edgetpu source; none for others: any node, or name a resource "
        "of a dedicated timing host, started with ray start --resources='{\"NAME\": 1}')")
    devices: int | None = Field(None, ge=1, le=64, description="measurement actors, one per device (default: "
                                "the cluster's units of the resource, else 1)")
    compile: Literal["service", "trial"] = Field(
        "service", description="where edgetpu_compiler runs: on the measurement node (service), or where the "
        "trial runs (trial: the compiler must be installed on every training node)")
    cpus: float = Field(0.0, ge=0, le=64, description="CPUs each measurement actor holds (0: none reserved; "
                        "compiling and timing take little beside the device, and a reserved CPU would be one "
                        "trial less on a small node)")
    timeout_s: float = Field(3600.0, gt=0, le=86_400, description="seconds a trial waits for its measurement, "
                             "queueing included, before it fails")


class LatencyConfig(_Strict):
    at = "latency"

    source: str = "edgetpu-model"
    options: dict[str, Any] = Field(default_factory=dict)
    service: ServiceConfig = Field(default_factory=ServiceConfig)

    @property
    def uses_service(self) -> bool:
        """Whether a measurement service times the trials' models (Ray runs; in-process runs
        measure in the process, through the same service object)."""
        mode = self.service.mode
        return mode == "service" or (mode == "auto" and self.source == "edgetpu")

    @property
    def service_resource(self) -> str | None:
        r = self.service.resource
        return r if r is not None else ("edgetpu" if self.source == "edgetpu" else None)

    @model_validator(mode="after")
    def _service(self):
        from latency_models.registry import is_measured  # (imports no source)

        if self.service.mode == "service" and not is_measured(self.source):
            raise ValueError(f"latency.service.mode: service times the models of a measured source (edgetpu, "
                             f"tflite-cpu); latency.source {self.source!r} predicts in the trial; allowed: "
                             "auto or trial, or a measured source")
        if self.service.compile == "trial" and self.source != "edgetpu":
            raise ValueError(f"latency.service.compile: trial compiles for the Edge TPU; latency.source "
                             f"{self.source!r} has no compiler; allowed: service")
        return self


class DataConfig(_Strict):
    at = "data"

    source: str = "mnist5k"
    channels: Literal[1, 3] = 3
    val_fraction: float = Field(0.2, gt=0, lt=1)
    limit: int | None = Field(None, ge=20)
    memory_mb: float = Field(1024, ge=0, le=1_048_576, description="the largest decoded set a process holds in "
                             "memory (float32 for the shipped sets and .npz, uint8 from the store); a larger set "
                             "is read from the node's store of decoded images as training needs it")
    cache_dir: str | None = Field(None, description="the node-local folder of decoded images (default: "
                                  "$NAS_CACHE_DIR/data, else ~/.cache/edgetpu-nas/data): a folder source is decoded "
                                  "there once per resolution and read by every trial of the node")
    cache_gb: float = Field(50, ge=0, le=100_000, description="the largest store of decoded images built there; a "
                            "source whose decoded images are larger streams (every epoch decodes the files it "
                            "reads); 0: never build one")

    def store_settings(self):
        from nas.data.sources import StoreSettings  # (data imports no config)

        return StoreSettings(cache_dir=self.cache_dir, cache_bytes=int(self.cache_gb * 2**30),
                             memory_bytes=int(self.memory_mb * 2**20))


class ExperimentConfig(_Strict):
    version: Literal[1] = SCHEMA_VERSION
    name: str = "experiment"
    seed: int = 0
    space: SpaceConfig
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)
    reward: RewardConfig
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    budget: BudgetConfig
    search: SearchConfig = Field(default_factory=SearchConfig)
    output: str = "runs"
    ray: RayConfig = Field(default_factory=RayConfig)
    faults: FaultsConfig = Field(default_factory=FaultsConfig)

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        """The experiment in a YAML file (:func:`load_experiment`)."""
        return load_experiment(path)

    def replace(self, **changes: Any) -> ExperimentConfig:
        """This experiment with dotted keys replaced, validated again (:func:`override`)."""
        return override(self, **changes)

    def to_yaml(self) -> str:
        """The experiment as YAML that :func:`load_experiment` reads back to an equal experiment."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @model_validator(mode="after")
    def _asha_evaluates(self):
        if self.ray.scheduler == "asha" and self.train.eval_every == 0:
            raise ValueError("train.eval_every: 0 reports no accuracy before the end, and ray.scheduler asha ranks "
                             "trials by their intermediate accuracy; allowed: 1 or more with asha")
        return self

    @model_validator(mode="after")
    def _proxy_resolution(self):
        p, s = self.proxy.resolution, self.space.resolution
        if p is not None and s is not None and p > s:
            raise ValueError(f"proxy.resolution: {p} is larger than the deployment model's space.resolution {s}; "
                             f"allowed 8..{s}")
        return self


def parse_experiment(data: Any, where: str = "experiment") -> ExperimentConfig:
    """Validate a parsed YAML mapping; ``ValueError`` with one line per the first problem."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of sections (space, reward, budget, ...), "
                         f"got {type(data).__name__}")
    return ExperimentConfig.parse(data, where)


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"experiment {str(path)!r}: no such file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"{p.name}: not valid YAML{at} ({getattr(e, 'problem', e)})") from None
    return parse_experiment(data, p.name)


def override(cfg: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    """``cfg`` with dotted keys replaced (``override(cfg, **{"budget.trials": 5})``), validated
    again; a None value leaves its key as it is. Used for command-line flags and a run's
    recorded overrides (``run.json``).

    >>> cfg = load_experiment(Path(__file__).parents[2] / "experiments" / "quickstart.yaml")
    >>> override(cfg, **{"budget.trials": 5, "seed": None}).budget.trials
    5
    """
    data = cfg.model_dump()
    for path, value in changes.items():
        if value is None:
            continue
        node = data
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return parse_experiment(data, "command line")
