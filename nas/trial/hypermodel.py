"""The keras-tuner adapter: any search space as a ``keras_tuner.HyperModel`` with a latency-aware objective.

:class:`SpaceHyperModel` declares one ``hp.Choice`` per decision of the space (same names,
same order of values), builds the arch those choices decode to with the toolkit's builder,
trains it with Keras's ``fit`` and reports, besides Keras's own metrics, the arch's
``latency_ms`` (from any latency source, cached per arch string) and the MNAS ``reward``
(:func:`nas.core.reward.reward`). Any keras-tuner tuner (``RandomSearch``,
``BayesianOptimization``, ``Hyperband``) then searches the space for that reward::

    import keras_tuner
    import search_spaces
    from nas.data.sources import load
    from nas.trial.hypermodel import SpaceHyperModel, reward_objective

    space = search_spaces.get("efficientnet_edgetpu", resolution=32, width=0.25, depth=0.5, num_classes=10)
    hypermodel = SpaceHyperModel(space, latency="edgetpu-model", target_ms=1.8)
    tuner = keras_tuner.RandomSearch(hypermodel, objective=reward_objective(), max_trials=3,
                                     directory="kt", project_name="tiny")
    data = load("digits", 32, limit=400)           # scikit-learn's digits, 32 px, 3 channels
    tuner.search(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
                 epochs=1, batch_size=32, verbose=0)
    # Any source (an image folder, tfds:NAME) through the pipelines the trials read:
    train, val = data.datasets(32, augment="photo")
    tuner.search(train, validation_data=val, epochs=1, verbose=0)
    arch = hypermodel.arch_from_hp(tuner.get_best_hyperparameters()[0])
    print(arch.to_string())

To extend: subclass and override :meth:`SpaceHyperModel.compile` (loss, metrics, optimizer)
or :meth:`SpaceHyperModel.fit` (call ``super().fit`` to keep the reward).

What is reported. ``fit`` returns the Keras logs of the epoch with the best reward (the
epoch keras-tuner's checkpoint keeps, so ``tuner.get_best_models()`` returns the weights
that earned the reward) plus ``reward``, ``latency_ms`` and, when the source knows them,
``on_chip_bytes``/``off_chip_bytes``. ``reward`` is ``reward(val_accuracy, latency_ms)``
of that epoch; pass ``objective=reward_objective()`` to the tuner. Validation data
(``validation_data=`` or ``validation_split=`` in ``search``) is required: the reward is
defined on validation accuracy.

Failures. The latency is obtained before training (it is cheap for the predictors, and a
candidate that cannot be measured should not cost a training run). When the latency source
fails for an arch (conversion or compiler failure, ``LatencyError``) or a hard constraint
of the :class:`~nas.core.reward.RewardConfig` is broken, ``on_failure`` decides:

- ``"skip"`` (default, the toolkit's failure policy): nothing is trained and the trial is
  raised as ``keras_tuner.errors.FailedTrialError``; keras-tuner records it as ``FAILED``
  with the reason in ``trial.message``, the optimizer learns nothing from it, and the
  search goes on. keras-tuner stops a search after ``max_consecutive_failed_trials``
  (default 3) failures in a row; raise it in the tuner's arguments if your source often fails.
- ``"zero"``: nothing is trained and the trial completes with ``reward`` 0 (the lowest MNAS
  reward), so the optimizer learns to stay away from such archs. MNAS rewards only.

A NaN loss is a failed trial too. A missing runtime or device (``MissingHardware``) stops
the search (``keras_tuner.errors.FatalRuntimeError``): it is the machine, not the candidate.

This module never imports Ray.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import keras  # keras_tuner imports it anyway
import keras_tuner
import numpy as np

import search_spaces
from latency_models import LatencyError, LatencySource, MissingHardware, Target, get_source, source_names
from search_spaces import Arch, Decision, SearchSpace

from nas.trial.recipe import clamp_bn_momentum, compile_model, latency_fields
from nas.core.reward import RewardConfig, reward
from nas.trial.training import OPTIMIZERS, keras_optimizer
from nas.trial.worker import drop_custom_gradients

log = logging.getLogger(__name__)

ON_FAILURE = ("skip", "zero")
#: The Keras log the reward is computed from (the model is compiled with ``metrics=["accuracy"]``).
ACCURACY_KEY = "val_accuracy"


def reward_objective() -> keras_tuner.Objective:
    """The objective to give a tuner searching a :class:`SpaceHyperModel`: maximise ``reward``."""
    return keras_tuner.Objective("reward", direction="max")


# ------------------------------------------------------------------------------ choice <-> hp value

def hp_values(decision: Decision) -> list:
    """The ``hp.Choice`` values of a decision, in the decision's order (one per choice).

    keras-tuner takes int, float or str values, all of one type. Such choices are kept as
    they are; numpy scalars become their Python value; a mix of ints and floats (e.g. SE
    ratio ``(0, 0.25)``) becomes floats; anything else (bools, None, tuples, mixed types)
    becomes strings (``"True"``, ``"None"``, ``"(1, 3)"``). Bools become strings because
    keras-tuner stores a bool Choice as the ints 1 and 0. The order is kept because
    keras-tuner's Bayesian optimizer embeds a Choice by its index.
    """
    values = [v.item() if isinstance(v, np.generic) else v for v in decision.choices]
    types = {type(v) for v in values}
    if len(types) == 1 and types <= {int, float, str}:
        out = values
    elif types <= {int, float}:
        out = [float(v) for v in values]
    else:
        out = [v if isinstance(v, str) else repr(v) for v in values]
    if len(set(out)) < len(out):
        # Two choices would share a value (ints too big for a float, equal reprs): the
        # index keeps them apart.
        out = [f"{i}:{v!r}" for i, v in enumerate(decision.choices)]
    return out


def _to_choice(decision: Decision, hp_vals: list, value: Any) -> Any:
    for i, v in enumerate(hp_vals):
        # True == 1 in Python: a bool given for a number value must not pass as that number.
        if v == value and isinstance(v, bool) == isinstance(value, bool):
            return decision.choices[i]
    raise ValueError(f"hyperparameter {decision.name!r}: {value!r} is not one of its values; "
                     f"allowed: {', '.join(map(repr, hp_vals))}")


# ------------------------------------------------------------------------------ the hypermodel

class _RewardLogs(keras.callbacks.Callback):
    """Adds ``reward`` and ``latency_ms`` to every epoch's logs and remembers the logs.

    It must run before keras-tuner's own callbacks: the logs dict is shared by all
    callbacks of an epoch, so keras-tuner's checkpoint callback then sees the reward it
    monitors and keeps the best epoch's weights."""

    def __init__(self, latency_ms: float, cfg: RewardConfig):
        super().__init__()
        self.latency_ms, self.cfg = latency_ms, cfg
        self.epochs: list[dict[str, float]] = []

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["latency_ms"] = self.latency_ms
        acc = logs.get(ACCURACY_KEY)
        if acc is not None:  # absent on epochs that validation_freq skips
            logs["reward"] = reward(float(acc), self.latency_ms, self.cfg)
        self.epochs.append({k: float(v) for k, v in logs.items() if isinstance(v, (int, float, np.number))})


#: What ``precision`` takes (``train.precision``'s values).
PRECISIONS = ("float32", "mixed_float16")


class SpaceHyperModel(keras_tuner.HyperModel):
    """A search space as a keras-tuner ``HyperModel`` whose trials report an MNAS ``reward``.

    Args:
        space: a :class:`~search_spaces.SearchSpace` instance, a registered name or a
            ``module:Class`` path (built with its default arguments).
        latency: latency source name (``"edgetpu-model"``, ``"tflite-cpu"``, a predictor
            directory, ``module:Class``) or a :class:`~latency_models.LatencySource` instance.
        reward: a :class:`~nas.core.reward.RewardConfig` (kind, target, exponents, hard constraints),
            or give ``target_ms`` for the soft MNAS reward with that target. Exactly one of the two.
        target_ms: latency target of the soft MNAS reward, in milliseconds.
        input_shape, num_classes: of the built models and the measured latency; default the
            arch's resolution with 3 channels, and the arch's class count (else 1000).
        optimizer: ``"adam"``, ``"sgd"`` (Nesterov momentum 0.9), ``"rmsprop"`` (momentum 0.9),
            as in the experiment schema, or a callable returning a fresh Keras optimizer.
        learning_rate: of the named optimizers.
        bn_momentum: BatchNorm moving-average momentum of the built models; proxy runs are a
            few hundred steps, too few for Keras's 0.99 to forget the initial statistics.
            None keeps the builder's.
        on_failure: ``"skip"`` or ``"zero"``, see the module documentation.
        seed: initial-weight seed of the built models (None: fresh weights every build).
        precision: ``"float32"`` or ``"mixed_float16"`` (models built under Keras's mixed policy,
            their classifier float32, loss scaling by ``compile``), as ``train.precision``.
        jit_compile: compile the training step with XLA, as ``train.jit_compile``. Several GPUs
            for one model: keras-tuner's own ``distribution_strategy=`` argument of the tuner.
        name, tunable: as for ``keras_tuner.HyperModel``.
    """

    def __init__(self, space: SearchSpace | str, latency: Any = "edgetpu-model", *,
                 reward: RewardConfig | None = None, target_ms: float | None = None,
                 input_shape: tuple[int, int, int] | None = None, num_classes: int | None = None,
                 optimizer: str | Callable[[], Any] = "adam", learning_rate: float = 3e-3,
                 bn_momentum: float | None = 0.9, on_failure: str = "skip", seed: int | None = None,
                 precision: str = "float32", jit_compile: bool = False, name: str | None = None,
                 tunable: bool = True):
        super().__init__(name=name, tunable=tunable)
        if precision not in PRECISIONS:
            raise ValueError(f"precision: unknown {precision!r}; allowed: {', '.join(PRECISIONS)}")
        if not isinstance(jit_compile, bool):
            raise ValueError(f"jit_compile: expected true or false, got {jit_compile!r}")
        self.precision, self.jit_compile = precision, jit_compile
        self.space = search_spaces.get(space)
        self.reward_config = _reward_config(reward, target_ms)
        self.latency_source = _latency_source(latency)
        if not (isinstance(optimizer, str) and optimizer in OPTIMIZERS) and not callable(optimizer):
            raise ValueError(f"optimizer: unknown {optimizer!r}; allowed: {', '.join(OPTIMIZERS)} "
                             "or a callable returning a Keras optimizer")
        if not _positive(learning_rate):
            raise ValueError(f"learning_rate: expected a positive number, got {learning_rate!r}")
        if bn_momentum is not None and not (_number(bn_momentum) and 0 < bn_momentum < 1):
            raise ValueError(f"bn_momentum: expected a number in (0, 1) or None, got {bn_momentum!r}")
        if on_failure not in ON_FAILURE:
            raise ValueError(f"on_failure: unknown {on_failure!r}; allowed: {', '.join(ON_FAILURE)}")
        if on_failure == "zero" and self.reward_config.kind != "mnas":
            raise ValueError(f"on_failure: 'zero' needs an MNAS reward (a {self.reward_config.kind} reward can be "
                             "negative, so 0 is no penalty); allowed with it: skip")
        if input_shape is not None and not (isinstance(input_shape, (tuple, list)) and len(input_shape) == 3
                                            and all(_number(d) and d == int(d) > 0 for d in input_shape)):
            raise ValueError(f"input_shape: expected (height, width, channels) of positive ints, got {input_shape!r}")
        if num_classes is not None and not (isinstance(num_classes, int) and num_classes >= 2):
            raise ValueError(f"num_classes: expected an integer >= 2 or None, got {num_classes!r}")
        self.input_shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
        self.num_classes = num_classes
        self.optimizer, self.learning_rate, self.bn_momentum = optimizer, learning_rate, bn_momentum
        self.on_failure, self.seed = on_failure, seed
        self._hp_values = {d.name: hp_values(d) for d in self.space.decision_list}
        # arch string -> latency metrics, or the reason the source failed (failures are
        # cached too: a measured source would fail again, slowly).
        self._latency_cache: dict[str, dict[str, float] | str] = {}

    # -- hyperparameters <-> choices <-> arch -------------------------------------------------

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        """Declare one ``hp.Choice`` per decision (keras-tuner calls this before the search)."""
        self._choices(hp)

    def _choices(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        out = {}
        for d in self.space.decision_list:
            vals = self._hp_values[d.name]
            out[d.name] = _to_choice(d, vals, hp.Choice(d.name, vals))
        return out

    def hp_values_of(self, choices: Mapping[str, Any] | Arch) -> dict[str, Any]:
        """``{decision name: hp value}`` of a choice mapping or a member arch (e.g. to seed a tuner)."""
        if isinstance(choices, Arch):
            choices = self.space.encode(choices)
        c = self.space.validate(choices)
        return {d.name: self._hp_values[d.name][d.index(c[d.name])] for d in self.space.decision_list}

    def choices_from_hp(self, hp: keras_tuner.HyperParameters | Mapping[str, Any]) -> dict[str, Any]:
        """The space's choices of hyperparameter values; names that are not decisions
        (Hyperband's ``tuner/epochs`` and the like) are ignored."""
        values = hp.values if isinstance(hp, keras_tuner.HyperParameters) else hp
        out = {}
        for d in self.space.decision_list:
            if d.name not in values:
                raise ValueError(f"hyperparameters: missing {d.name!r}; allowed values: "
                                 f"{', '.join(map(repr, self._hp_values[d.name]))}")
            out[d.name] = _to_choice(d, self._hp_values[d.name], values[d.name])
        return out

    def arch_from_hp(self, hp: keras_tuner.HyperParameters | Mapping[str, Any]) -> Arch:
        """The arch of a trial's hyperparameters, e.g. ``tuner.get_best_hyperparameters()[0]``."""
        return self.space.decode(self.choices_from_hp(hp))

    # -- keras-tuner's interface ---------------------------------------------------------------

    def build(self, hp: keras_tuner.HyperParameters):
        arch = self.space.decode(self._choices(hp))
        log.debug("building %s", arch.to_string())
        import keras

        before = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.precision)
        try:
            model = search_spaces.build_model(arch, self.input_shape, self.num_classes, seed=self.seed)
        finally:
            keras.config.set_dtype_policy(before)
        if self.bn_momentum is not None:
            clamp_bn_momentum(model, self.bn_momentum)
        self.compile(model)
        return model

    def compile(self, model) -> None:
        """Compile a built model (sparse integer labels, accuracy); override for other losses.

        The reward reads ``val_accuracy`` from Keras's logs, so keep an ``"accuracy"`` metric.
        """
        compile_model(model, self._make_optimizer(), jit_compile=self.jit_compile)

    def _make_optimizer(self):
        if callable(self.optimizer):
            return self.optimizer()
        # The search's recipe, at a constant learning rate.
        return keras_optimizer(self.optimizer, self.learning_rate, total_steps=1, schedule="constant")

    def fit(self, hp: keras_tuner.HyperParameters, model, *args, **kwargs) -> dict[str, float]:
        """Measure the arch, train with ``model.fit(*args, **kwargs)``, return the metrics with ``reward``."""
        if kwargs.get("validation_data") is None and not kwargs.get("validation_split"):
            raise keras_tuner.errors.FatalValueError(
                "search(): the reward needs validation accuracy; pass validation_data=(x, y) or validation_split=")
        arch = self.arch_from_hp(hp)
        metrics = self._latency(arch)
        why = metrics if isinstance(metrics, str) else self.reward_config.constraints.violation(
            {**metrics, "params": search_spaces.count_params(arch, self.input_shape, self.num_classes)})
        if why is not None:
            return self._failed(arch, why, metrics)

        logger = _RewardLogs(metrics["latency_ms"], self.reward_config)
        kwargs["callbacks"] = [logger, *(kwargs.get("callbacks") or [])]
        try:
            model.fit(*args, **kwargs)
        finally:
            _forget_training_graphs()
        bad = [i + 1 for i, e in enumerate(logger.epochs) if not math.isfinite(e.get("loss", 0.0))]
        if bad:
            raise keras_tuner.errors.FailedTrialError(f"NaN loss in epoch {bad[0]}: {arch.to_string()}")
        if logger.epochs and not any("reward" in e for e in logger.epochs):
            # The set-up, not this candidate: every trial would end the same way.
            raise keras_tuner.errors.FatalValueError(
                f"no epoch logged {ACCURACY_KEY!r}, which the reward needs; compile with metrics=['accuracy'] "
                f"and validate at least once (logged: {', '.join(logger.epochs[-1])})")
        epochs = [e for e in logger.epochs if math.isfinite(e.get("reward", math.nan))]
        if not epochs:
            raise keras_tuner.errors.FailedTrialError(
                f"no epoch reported a finite {ACCURACY_KEY}: {arch.to_string()}")
        best = max(epochs, key=lambda e: e["reward"])
        out = {**best, **metrics}
        log.info("reward %.4f  %s %.4f  latency %.3f ms  %s", out["reward"], ACCURACY_KEY, out[ACCURACY_KEY],
                 out["latency_ms"], arch.to_string())
        return out

    # -- latency ---------------------------------------------------------------------------

    def _latency(self, arch: Arch) -> dict[str, float] | str:
        """``{"latency_ms": ..., ...}`` of an arch from the source (cached per arch string), or
        the reason the source failed for it."""
        key = arch.to_string()
        if key not in self._latency_cache:
            target = Target(arch, input_shape=self.input_shape, num_classes=self.num_classes)
            try:
                r = self.latency_source.measure(target)
            except MissingHardware as e:
                raise keras_tuner.errors.FatalRuntimeError(f"latency: {e}") from None
            except LatencyError as e:  # conversion and compiler errors too
                self._latency_cache[key] = f"latency: {type(e).__name__}: {e}"
            else:
                fields = latency_fields(r)
                self._latency_cache[key] = {k: float(fields[k]) for k in ("latency_ms", "on_chip_bytes",
                                                                          "off_chip_bytes")
                                            if fields[k] is not None}
        cached = self._latency_cache[key]
        return cached if isinstance(cached, str) else dict(cached)

    def _failed(self, arch: Arch, why: str, metrics: dict[str, float] | str) -> dict[str, float]:
        if self.on_failure == "skip":
            raise keras_tuner.errors.FailedTrialError(f"{why}: {arch.to_string()}")
        log.warning("reward 0 (%s): %s", why, arch.to_string())
        return {"reward": 0.0, **(metrics if isinstance(metrics, dict) else {})}


# ------------------------------------------------------------------------------ argument checks

def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v: Any) -> bool:
    return _number(v) and v > 0


def _reward_config(cfg: RewardConfig | None, target_ms: float | None) -> RewardConfig:
    if cfg is not None and target_ms is not None:
        raise ValueError(f"target_ms: given with reward= (target_ms={target_ms!r}); allowed: one of the two "
                         "(the RewardConfig has its own target_ms)")
    if cfg is not None:
        if not isinstance(cfg, RewardConfig):
            raise ValueError(f"reward: expected a nas.core.reward.RewardConfig, got {type(cfg).__name__}")
        return cfg
    if target_ms is None:
        raise ValueError("target_ms: missing; allowed: a positive latency target in milliseconds, "
                         "or reward=RewardConfig(...)")
    if not _positive(target_ms):
        raise ValueError(f"target_ms: expected a positive number of milliseconds, got {target_ms!r}")
    return RewardConfig(target_ms=float(target_ms))


def _latency_source(latency: Any):
    if isinstance(latency, LatencySource):
        return latency
    if not isinstance(latency, str):
        raise ValueError(f"latency: expected a source name or a LatencySource, got {type(latency).__name__}")
    # An existing path is a predictor file or directory: get_source says what is wrong with it.
    if latency not in source_names() and ":" not in latency and not Path(latency).exists():
        raise ValueError(f"latency: unknown source {latency!r}; allowed: {', '.join(source_names())}, "
                         "a predictor directory or 'module:Class'")
    return get_source(latency)


def _forget_training_graphs() -> None:
    # TensorFlow keeps every traced training step alive through its gradient registry
    # (~100 MB per trained model at proxy size, see nas.trial.worker); keras-tuner clears the Keras
    # session before each build, but not that registry.
    drop_custom_gradients()
