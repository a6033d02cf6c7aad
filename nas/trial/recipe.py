"""The recipe: how the toolkit trains a candidate and reads its latency, written once.

Shared by the trials (:mod:`nas.trial.entry`), ``nas export`` (:mod:`nas.results.export`), the keras-tuner
adapter (:mod:`nas.trial.hypermodel`) and any other trainer: the experiment's reward, its data and
latency source (loaded once per process: a Ray worker runs many trials), the optimizer, the
BatchNorm-momentum clamp, the latency fields of a record, and the training loop with its
NaN-loss watch.

>>> from pathlib import Path
>>> from nas.config.experiment import load_experiment
>>> load_experiment(Path(__file__).parents[2] / "experiments" / "quickstart.yaml").train.optimizer
'adam'
"""

from __future__ import annotations

import functools
import json
import logging
import math
from typing import Any, Callable

from latency_models import LatencyError, Target, get_source
from latency_models.convert import ConversionError

from nas.config.experiment import ExperimentConfig
from nas.data.sources import load
from nas.core.errors import TrialFailure
from nas.trial.training import fit, keras_optimizer

log = logging.getLogger(__name__)

__all__ = ["clamp_bn_momentum", "compile_model", "eval_subset", "latency_fields", "latency_source", "load_data",
           "measure_latency", "needs_latency_first", "optimizer", "smoothed_loss", "submit_latency",
           "train_model", "warmup_steps"]

#: The record fields a latency reading fills (:func:`latency_fields`).
LATENCY_FIELDS = ("latency_ms", "on_chip_bytes", "off_chip_bytes", "ops_on_tpu", "ops_on_cpu", "latency_source")


# ------------------------------------------------------------------------------ per-process caches
# A Ray worker runs many trials (actors are reused): the data and the latency source are
# loaded once per process, keyed by what defines them.

@functools.lru_cache(maxsize=2)
def _data(source: str, resolution: int, channels: int, val_fraction: float, seed: int, limit: int | None, store):
    return load(source, resolution, channels=channels, val_fraction=val_fraction, seed=seed, limit=limit,
                settings=store)


def load_data(cfg: ExperimentConfig, resolution: int):
    d = cfg.data
    return _data(d.source, resolution, d.channels, d.val_fraction, cfg.seed, d.limit, d.store_settings())


@functools.lru_cache(maxsize=4)
def _source(name: str, options_json: str):
    return get_source(name, **json.loads(options_json))


def latency_source(cfg: ExperimentConfig):
    # keyed by the options' JSON: an option may itself be a mapping (edgetpu's replay: {...})
    return _source(cfg.latency.source, json.dumps(cfg.latency.options, sort_keys=True))


def measure_latency(arch, cfg: ExperimentConfig, num_classes: int, fault: str | None = None,
                    source=None) -> dict[str, Any]:
    """Latency and memory split of ``arch`` (the deployment arch) at its resolution with the
    experiment's channels, from ``source`` (default: the configured one): the record's
    latency fields."""
    return submit_latency(arch, cfg, num_classes, fault, source)()


def submit_latency(arch, cfg: ExperimentConfig, num_classes: int, fault: str | None = None,
                   source=None) -> Callable[[], dict[str, Any]]:
    """Ask for ``arch``'s latency (see :func:`measure_latency`); a function that returns the
    record's latency fields. A source with ``submit`` (a measurement service's client,
    :class:`latency_models.service.ServiceClient`) converts now and is answered later, so
    the trial can train meanwhile; any other measures now. ``TrialFailure`` either way."""
    res = arch.resolution
    target = Target(arch, input_shape=(res, res, cfg.data.channels), num_classes=num_classes)
    src = source if source is not None else latency_source(cfg)

    def failed(e: Exception) -> TrialFailure:
        return TrialFailure(f"latency: {type(e).__name__}: {e}")

    try:
        if fault == "conversion":
            raise ConversionError("injected fault")
        if fault == "latency":
            raise LatencyError("injected fault")
        if hasattr(src, "submit"):
            pending = src.submit(target)
        else:
            fields = latency_fields(src.measure(target))
            return lambda: fields
    except LatencyError as e:  # conversion errors too
        raise failed(e) from None

    def wait() -> dict[str, Any]:
        try:
            return latency_fields(pending.result())
        except LatencyError as e:
            raise failed(e) from None

    return wait


def needs_latency_first(cfg: ExperimentConfig) -> bool:
    """Whether a trial must know its latency before it trains: a hard constraint on what the
    source measures (an infeasible candidate is not trained), or a scheduler that ranks
    trials by their reward after every epoch (ASHA)."""
    c = cfg.reward.constraints
    return (c.max_off_chip_bytes is not None or c.max_latency_ms is not None or c.all_ops_on_tpu
            or cfg.ray.scheduler != "fifo")


def latency_fields(r) -> dict[str, Any]:
    """The record's latency fields of a :class:`~latency_models.LatencyResult` (None where the
    source gives no value)."""
    return {"latency_ms": r.latency_ms, "on_chip_bytes": r.on_chip_bytes, "off_chip_bytes": r.off_chip_bytes,
            "ops_on_tpu": r.ops_on_tpu, "ops_on_cpu": r.ops_on_cpu, "latency_source": r.source}


def optimizer(cfg: ExperimentConfig, steps: int, steps_per_epoch: int = 1):
    """The experiment's optimizer and learning-rate schedule over ``steps`` steps (its warm-up
    counted in epochs of ``steps_per_epoch``)."""
    t = cfg.train
    return keras_optimizer(t.optimizer, t.learning_rate, steps, t.schedule,
                           warmup_steps=warmup_steps(t, steps_per_epoch), weight_decay=t.weight_decay)


def warmup_steps(train, steps_per_epoch: int) -> int:
    """``train.warmup_epochs`` in steps."""
    return int(round(train.warmup_epochs * steps_per_epoch))


def smoothed_loss(label_smoothing: float, num_classes: int):
    """Keras's loss for sparse labels: cross-entropy, with labels smoothed if asked (Keras's
    sparse loss has no smoothing, so the labels are made one-hot here)."""
    if not label_smoothing:
        return "sparse_categorical_crossentropy"
    import keras

    def loss(y_true, y_pred):
        y = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), num_classes)
        return keras.losses.categorical_crossentropy(y, y_pred, label_smoothing=label_smoothing)

    return loss


def clamp_bn_momentum(model, momentum: float) -> None:
    """Cap every BatchNorm's moving-average momentum at ``momentum``.

    A proxy run is a few hundred steps: with Keras's BatchNorm momentum (0.99) the moving
    statistics would still be mostly their initial values at evaluation time, and the
    validation accuracy would measure that rather than the arch.
    """
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = min(layer.momentum, momentum)


def compile_model(model, opt, jit_compile: bool = False, loss="sparse_categorical_crossentropy") -> None:
    """Compile for sparse integer labels with an accuracy metric; XLA only when asked
    (``train.jit_compile``: its compiles cost more than a CPU proxy run). A model built under
    ``mixed_float16`` gets Keras's loss scaling from ``compile`` itself. ``loss``: see
    :func:`smoothed_loss`; a saved model is compiled with the plain one (it loads anywhere)."""
    model.compile(optimizer=opt, loss=loss, metrics=["accuracy"], jit_compile=jit_compile)


def eval_subset(val, n_val: int, eval_images: int | None):
    """The fixed subset of the batched validation dataset ``val`` that intermediate
    validations read (its first ``eval_images`` images); ``val`` itself when that is all of it."""
    if eval_images is None or eval_images >= n_val:
        return val
    from nas.data.stored import VAL_BATCH

    return val.unbatch().take(eval_images).batch(VAL_BATCH)


def train_model(model, split, cfg: ExperimentConfig, *, epochs: int | None = None,
                on_epoch: Callable[[int, float], None] | None = None, poison: bool = False,
                strategy=None) -> tuple[float, int]:
    """Train ``model`` with the experiment's recipe; (final validation accuracy, epochs run).

    ``on_epoch(epoch, val_accuracy)`` is called after every epoch (for intermediate reports).
    A NaN or infinite loss stops training and raises :class:`TrialFailure`. ``poison`` turns
    the training images to NaN (the ``nan_loss`` injected fault), so the loss watch is tested.
    ``strategy`` is the ``tf.distribute`` strategy the model was built under
    (:func:`nas.trial.devices.strategy`; None: one device); the model was built under
    :func:`nas.trial.devices.precision`, so ``train.precision`` is already in its layers.
    """
    import keras

    from nas.trial.devices import scope

    t = cfg.train
    mixed = t.precision == "mixed_float16"
    epochs = epochs or t.epochs
    train, val = split.datasets(t.batch_size, t.augment, cfg.seed)
    sub = eval_subset(val, split.n_val, t.eval_images)
    if poison:
        train = train.map(lambda x, y: (x * float("nan"), y))
    clamp_bn_momentum(model, t.bn_momentum)
    per_epoch = math.ceil(split.n_train / t.batch_size)
    warmup = warmup_steps(t, per_epoch)
    if t.loop == "step":
        try:
            acc, n = fit(model, train, val, optimizer=t.optimizer, learning_rate=t.learning_rate, schedule=t.schedule,
                         epochs=epochs, steps_per_epoch=per_epoch, on_epoch=on_epoch, jit_compile=t.jit_compile,
                         loss_scale=mixed, strategy=strategy, warmup_steps=warmup, weight_decay=t.weight_decay,
                         label_smoothing=t.label_smoothing, eval_every=t.eval_every, eval_val=sub)
        except FloatingPointError as e:
            raise TrialFailure(str(e)) from None
        if not math.isfinite(acc):
            raise TrialFailure("validation accuracy is not finite")
        # Compiled as fit leaves it (no tracing happens here), so a saved model evaluates and
        # fine-tunes in plain Keras (nas export).
        with scope(strategy):
            compile_model(model, optimizer(cfg, epochs * per_epoch, per_epoch))
        return acc, n
    with scope(strategy):
        compile_model(model, optimizer(cfg, epochs * per_epoch, per_epoch), jit_compile=t.jit_compile,
                      loss=smoothed_loss(t.label_smoothing, split.num_classes))
    state = {"epochs": 0, "nan": None}

    class _Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                state["nan"] = (state["epochs"] + 1, batch)
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            state["epochs"] = epoch + 1
            if (on_epoch is not None and state["nan"] is None and "val_accuracy" in (logs or {})
                    and epoch + 1 < epochs):  # the last epoch reports the final accuracy, below
                on_epoch(epoch + 1, float(logs["val_accuracy"]))

    validate = on_epoch is not None and t.eval_every > 0 and t.eval_every < epochs
    model.fit(train, epochs=epochs, verbose=0, callbacks=[_Watch()], shuffle=False,  # tf.data shuffles
              validation_data=sub if validate else None, validation_freq=max(1, t.eval_every))
    if state["nan"] is not None:
        raise TrialFailure(f"NaN loss at epoch {state['nan'][0]}, step {state['nan'][1]}")
    _, acc = model.evaluate(val, verbose=0)
    if not math.isfinite(acc):
        raise TrialFailure("validation accuracy is not finite")
    if t.label_smoothing:  # saved with the plain loss, so model.keras needs no custom object
        with scope(strategy):
            compile_model(model, optimizer(cfg, epochs * per_epoch, per_epoch))
    if on_epoch is not None:
        on_epoch(state["epochs"], float(acc))
    return float(acc), state["epochs"]
