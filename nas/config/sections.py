"""The recipe sections of an experiment: ``train`` (the proxies'), ``export`` (the winner's)
and ``score`` (which accuracy the reward takes). Parsed as part of
:class:`nas.config.experiment.ExperimentConfig`.

>>> ExportConfig(epochs=30).recipe(TrainConfig(epochs=3, augment=True)).augment
'shift'
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, ValidationError, model_validator

from nas.core.section import Section as Strict

__all__ = ["ExportConfig", "ScoreConfig", "Strict", "TrainConfig", "augment_bool"]


def augment_bool(data):
    """``augment`` was a boolean (random shifts or none): old experiments keep their meaning."""
    if isinstance(data, dict) and isinstance(data.get("augment"), bool):
        data = {**data, "augment": "shift" if data["augment"] else "none"}
    return data


class TrainConfig(Strict):
    """``train``: how every candidate's proxy is trained (the recipe of :mod:`nas.trial.recipe`)."""

    at = "train"


    epochs: int = Field(3, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=8192)
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(3e-3, gt=0, le=10)
    schedule: Literal["constant", "cosine"] = "cosine"
    augment: Literal["none", "shift", "photo"] = Field(
        "none", description="training-image augmentation: none; shift (a random translation of up to 1/8 of the "
        "image, pad-and-crop); photo (the standard set for photographs: a random-resized crop of 35-100% of the "
        "area at aspect 3/4-4/3, then a random horizontal flip). true and false mean shift and none")
    weight_decay: float = Field(0.0, ge=0, le=1, description="decoupled weight decay (AdamW's, Keras's "
                                "optimizer weight_decay): each step every kernel v -= lr * weight_decay * v; "
                                "BatchNorm scales and offsets and biases are not decayed")
    warmup_epochs: float = Field(0.0, ge=0, le=1000, description="epochs over which the learning rate rises "
                                 "linearly from 0 to learning_rate, before the schedule (Keras's CosineDecay "
                                 "warm-up)")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy against labels smoothed "
                                   "towards uniform by this much (Keras's label_smoothing)")
    eval_every: int = Field(1, ge=0, le=1000, description="epochs between the intermediate validations a "
                            "trial reports (what ASHA ranks; 0: none, only the final one)")
    eval_images: int | None = Field(None, ge=1, le=10_000_000, description="the intermediate validations "
                                    "use this fixed subset of the validation split (the first images of it); "
                                    "the final accuracy always uses the whole split (default: the whole split)")
    bn_momentum: float = Field(0.9, gt=0, lt=1, description="BatchNorm moving-average momentum for proxy runs")
    precision: Literal["float32", "mixed_float16"] = Field(
        "float32", description="mixed_float16: float16 compute with float32 weights and dynamic loss scaling "
        "(Keras's mixed precision; 2-3x faster on GPUs with tensor cores, slower on CPUs); the last layer stays "
        "float32, and export writes a float32 model")
    jit_compile: bool = Field(False, description="compile the training step with XLA (faster steps on GPUs, "
                              "seconds of compiling per model; off by default, as XLA's compiles cost more than "
                              "a CPU proxy run)")
    devices: Literal["all", "one"] = Field(
        "all", description="all: train one model on every GPU the process sees (tf.distribute.MirroredStrategy "
        "when it sees more than one: the supernet, nas export, and a trial given several GPUs); one: one device")
    gpu_memory: Literal["auto", "growth", "cap"] = Field(
        "auto", description="how a trial's TensorFlow takes GPU memory: growth (on demand), cap (its share "
        "budget.gpus_per_trial of the card, read with nvidia-smi), auto (cap when the share is below 1, "
        "so trials sharing a card never take each other's memory; else growth)")
    loop: Literal["step", "keras"] = Field(
        "step", description="step: one traced training step with each variable's update in one fused kernel "
        "(nas.trial.training; the same arithmetic as Keras's optimizers, a fraction of the tracing); keras: "
        "model.fit with Keras's optimizer (the reference path, ~10-20 s more per trial)")
    graph_optimizer: bool | None = Field(
        None, description="TensorFlow's graph optimizer (grappler) on the traced step of train.loop: step. "
        "Default (null): off in CPU trials, where it spent 0.5-3 s per trial rewriting the step and the "
        "rewritten step ran no faster at proxy size (benchmarks/trial_cost.py); TensorFlow's own default (on) "
        "in GPU trials (unmeasured there). Process-wide, so applied in the trial workers only")
    onednn: bool | None = Field(
        None, description="TensorFlow's oneDNN CPU kernels in the trial workers. Default (null): off in CPU "
        "trials, where they were no faster at proxy size (within +-5%) and cache compiled kernels per layer "
        "shape and thread, never freed, so a worker's memory grows with every new arch; TensorFlow's own "
        "default in GPU trials (unmeasured there)")
    allocator: Literal["jemalloc", "system"] = Field(
        "jemalloc", description="memory allocator of the Ray trial workers: jemalloc (the copy Ray ships, Linux) "
        "keeps a long-lived worker from creeping up; with glibc's malloc, TensorFlow's small long-lived "
        "allocations pin freed pages and a worker grows 2-4 MB a trial")

    @model_validator(mode="before")
    @classmethod
    def _augment_bool(cls, data):
        return augment_bool(data)

    @model_validator(mode="after")
    def _warmup(self):
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"train.warmup_epochs: {self.warmup_epochs:g} leaves no epoch after the warm-up of "
                             f"train.epochs {self.epochs}; allowed: 0 <= warmup_epochs < epochs")
        return self


class ExportConfig(Strict):
    """``export``: the recipe of ``nas export``, which trains the winner at full size for longer
    than a proxy. Every recipe key left out (null) takes ``train``'s value."""

    at = "export"


    epochs: int | None = Field(None, ge=1, le=10_000, description="default: train.epochs (nas export --epochs "
                               "overrides both)")
    batch_size: int | None = Field(None, ge=1, le=8192)
    optimizer: Literal["adam", "sgd", "rmsprop"] | None = None
    learning_rate: float | None = Field(None, gt=0, le=10)
    schedule: Literal["constant", "cosine"] | None = None
    augment: Literal["none", "shift", "photo"] | None = None
    weight_decay: float | None = Field(None, ge=0, le=1)
    warmup_epochs: float | None = Field(None, ge=0, le=10_000)
    label_smoothing: float | None = Field(None, ge=0, lt=1)
    calibration_images: int = Field(200, ge=1, le=100_000, description="training images the int8 "
                                    "conversion calibrates its activation ranges on")
    eval_images: int | None = Field(2000, ge=1, le=10_000_000, description="validation images the int8 "
                                    "model is evaluated on (null: the whole split)")
    int8_margin: float = Field(0.02, ge=0, le=1, description="a warning when the int8 model's accuracy is more "
                               "than this below the float model's (post-training quantization hurt it)")

    RECIPE: ClassVar[tuple[str, ...]] = ("epochs", "batch_size", "optimizer", "learning_rate", "schedule", "augment", "weight_decay",
              "warmup_epochs", "label_smoothing")

    @model_validator(mode="before")
    @classmethod
    def _augment_bool(cls, data):
        return augment_bool(data)

    def recipe(self, train: TrainConfig, epochs: int | None = None) -> TrainConfig:
        """``train`` with this section's keys (and ``epochs``, nas export --epochs) put in."""
        given = {k: getattr(self, k) for k in self.RECIPE if getattr(self, k) is not None}
        if epochs is not None:
            given["epochs"] = epochs
        data = {**train.model_dump(), **given}
        try:
            return TrainConfig.model_validate(data)
        except ValidationError as e:  # (a warm-up longer than export's epochs)
            raise ValueError(f"export: {e.errors(include_url=False)[0]['msg'].removeprefix('Value error, ')}") from None


class ScoreConfig(Strict):
    """``score``: which accuracy the reward takes. The Edge TPU runs the int8 model, so the
    accuracy that decides what ships is the int8 model's; ``int8`` measures it in every trial
    (the trained proxy quantized post-training and run on the host's LiteRT)."""

    at = "score"


    accuracy: Literal["float", "int8"] = Field(
        "float", description="float: the trained proxy's validation accuracy; int8: that of the proxy "
        "quantized to full int8 (post-training, calibrated on calibration_images training images), evaluated on "
        "eval_images validation images; trials.csv keeps both (accuracy, int8_accuracy)")
    calibration_images: int = Field(100, ge=1, le=100_000)
    eval_images: int | None = Field(500, ge=1, le=10_000_000, description="the first validation images "
                                    "(null: the whole split; int8 inference runs on the host's CPU, one image "
                                    "per invoke)")
