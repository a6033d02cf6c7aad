"""The proxy's training loop: one traced step per trial, the optimizer in fused kernels.

Why this exists: a quickstart trial spent ~85% of its time before its first training step.
Profiling ``model.fit`` (``benchmarks/trial_cost.py``) showed where: tracing the training
step took 10-20 s, and about 70% of that was the Keras optimizer writing its per-variable
update (a dozen small ops for each of ~80-140 variables, each through Keras's op dispatch,
the distribution strategy's ``merge_call`` and AutoGraph), not the model. Here the update of
each variable is one TensorFlow kernel (``ResourceApplyAdam``, ``ResourceApplyKerasMomentum``,
``ResourceApplyRMSProp``) that computes exactly what Keras's optimizers compute (the tests
compare them step by step), BatchNormalization runs as TensorFlow's fused kernel (with
Keras's moving-average update), the step is traced once with an unknown batch size (so the
last, smaller batch does not trace it again), and AutoGraph is off (the step has no Python
control flow to convert). Together they cut the training graph from ~5,700 ops to ~2,600 for
a quickstart proxy, and with them most of the tracing. The model, its other layers, dropout,
the loss and the learning-rate schedule are Keras's own, and the trained model is the same
Keras model (``nas export`` saves it as it is).

>>> import numpy as np, keras
>>> from nas.trial.training import Step
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
>>> step = Step(model, "adam", 1e-2, total_steps=10)
>>> x, y = np.ones((8, 4), "float32"), np.zeros((8,), "int32")
>>> loss = step.train(x, y)
>>> step.iterations
1
"""

from __future__ import annotations

import logging
import math
from typing import Callable

from nas.trial.updates import (NO_DECAY, OPTIMIZERS, FusedUpdate, LossScale, all_reduce_grads,  # noqa: F401
                               decays, distributed, lr_schedule, replica_slice)

log = logging.getLogger(__name__)


class Step:
    """A traced training step and an evaluation step for one Keras model.

    The recipe is the toolkit's (see :func:`keras_optimizer`): Adam (Keras defaults), SGD
    with Nesterov momentum 0.9, or RMSprop (rho 0.9, momentum 0.9); the learning rate of
    :func:`lr_schedule` (``warmup_steps``); decoupled ``weight_decay`` of the kernels;
    cross-entropy with ``label_smoothing``. ``jit_compile`` compiles
    the step with XLA; ``loss_scale`` adds dynamic loss scaling (:class:`LossScale`, for a
    model built under ``mixed_float16``); ``strategy`` (a ``tf.distribute`` strategy the model
    was built under) runs the step on each of its replicas, gradients summed across them.
    """

    def __init__(self, model, optimizer: str, learning_rate: float, *, total_steps: int, schedule: str = "cosine",
                 element_spec=None, fuse_bn: bool = True, jit_compile: bool = False, loss_scale: bool = False,
                 strategy=None, warmup_steps: int = 0, weight_decay: float = 0.0, label_smoothing: float = 0.0):
        import contextlib

        import tensorflow as tf

        self.model, self.optimizer, self.fuse_bn = model, optimizer, fuse_bn
        self.label_smoothing = float(label_smoothing)
        self.variables = [v.value for v in model.trainable_variables]  # the tf.Variables behind Keras's
        with strategy.scope() if strategy is not None else contextlib.nullcontext():  # slots mirrored like the model
            self.update = FusedUpdate(self.variables, optimizer, learning_rate, total_steps=total_steps,
                                      schedule=schedule, warmup_steps=warmup_steps, weight_decay=weight_decay,
                                      decay=[decays(v) for v in model.trainable_variables])
            self.loss_scale = LossScale() if loss_scale else None
        # One signature with an unknown batch size: the last, smaller batch of an epoch reuses
        # the traced step instead of tracing a second one.
        if element_spec is None:
            element_spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32), tf.TensorSpec((None,), tf.int32))
        sig = [tf.TensorSpec((None, *s.shape[1:]), s.dtype) for s in element_spec]
        # With XLA on several devices, each replica's forward and backward pass is compiled and
        # the all-reduce and update run outside XLA (MirroredStrategy's collectives are not XLA ops).
        self._replica_grads = self._grads
        if jit_compile and strategy is not None:
            self._replica_grads = tf.function(self._grads, autograph=False, jit_compile=True)
        self._train = distributed(strategy, self._train_step, sig, jit_compile=jit_compile)
        self._eval = tf.function(self._eval_step, autograph=False, input_signature=sig, jit_compile=jit_compile)

    @property
    def iterations(self) -> int:
        return self.update.iterations

    # -- the traced functions -----------------------------------------------------------------

    def _forward(self, x, training: bool):
        """The model's output, with its BatchNormalization layers run as one fused kernel each.

        Keras 3 writes batch normalisation as a dozen element-wise ops (and their gradients),
        ~30% of a proxy's training graph; TensorFlow's ``FusedBatchNormV3`` computes the same
        normalisation, batch moments and moving averages in one op. Walks the functional
        graph with Keras's own runner; any other model, or a BN layer with options this does
        not reproduce (masking, renorm, another axis), runs as Keras wrote it.
        """
        runner = getattr(self.model, "_run_through_graph", None)
        if not self.fuse_bn or runner is None or not hasattr(self.model, "_nodes_by_depth"):
            return self.model(x, training=training)
        from keras.src.models.functional import operation_fn

        def op_fn(op):
            keras_call = operation_fn(op, training=training)
            if not _fusable(op):
                return keras_call

            def call(inputs, *args, **kwargs):
                if args or kwargs.get("mask") is not None:  # a masked call: Keras's own path
                    return keras_call(inputs, *args, **kwargs)
                return _fused_bn(op, inputs, training)

            return call

        out = runner([x], operation_fn=op_fn)
        return out[0] if isinstance(out, (list, tuple)) and len(out) == 1 else out

    def _loss(self, x, y, training: bool):
        import keras
        import tensorflow as tf

        p = tf.cast(self._forward(x, training), tf.float32)  # (float16 under mixed precision)
        if self.label_smoothing:
            onehot = tf.one_hot(tf.cast(y, tf.int32), tf.shape(p)[-1], dtype=p.dtype)
            loss = tf.reduce_mean(keras.losses.categorical_crossentropy(onehot, p, label_smoothing=self.label_smoothing))
        else:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, p))
        if self.model.losses:  # layer regularisers, as Model.compute_loss adds them
            loss = loss + tf.add_n([tf.cast(v, loss.dtype) for v in self.model.losses])
        return p, loss

    def _grads(self, x, y):
        """One replica's loss (its share of the batch mean) and gradients (of the scaled loss)."""
        import tensorflow as tf

        x, y, weight = replica_slice(x, y)
        with tf.GradientTape() as tape:
            _, loss = self._loss(x, y, True)
            loss = loss * weight
            scaled = self.loss_scale.scaled(loss) if self.loss_scale is not None else loss
        return loss, tape.gradient(scaled, self.variables)

    def _train_step(self, x, y):
        import tensorflow as tf

        loss, grads = self._replica_grads(x, y)
        grads = all_reduce_grads(grads)
        if self.loss_scale is not None:
            update = self.loss_scale.apply(grads, self.update.apply)
        else:
            update = self.update.apply(grads)
        with tf.control_dependencies([update]):
            return tf.identity(loss)

    def _eval_step(self, x, y):
        import tensorflow as tf

        p, _ = self._loss(x, y, False)
        hit = tf.cast(tf.equal(tf.argmax(p, axis=-1), tf.cast(y, tf.int64)), tf.float32)
        return tf.reduce_sum(hit)

    # -- running them -------------------------------------------------------------------------

    def train(self, x, y) -> float:
        """One step on a batch; its loss (before the update)."""
        return float(self._train(x, y))

    def accuracy(self, dataset) -> float:
        """Top-1 accuracy over a batched ``(images, labels)`` dataset."""
        hits, n = 0.0, 0
        for x, y in dataset:
            hits += float(self._eval(x, y))
            n += int(y.shape[0])
        return hits / n if n else float("nan")


def _fusable(op) -> bool:
    import keras

    return (type(op) is keras.layers.BatchNormalization and not op.renorm and op.axis in (-1, len(op.input.shape) - 1)
            and len(op.input.shape) == 4 and op.trainable and op.dtype == "float32")


def _fused_bn(layer, x, training: bool):
    """``layer`` (a Keras BatchNormalization) on ``x`` through ``FusedBatchNormV3``, with the
    moving statistics updated as Keras updates them (biased batch variance)."""
    import tensorflow as tf

    c = x.shape[-1]
    gamma = layer.gamma.value if layer.scale else tf.ones((c,), x.dtype)
    beta = layer.beta.value if layer.center else tf.zeros((c,), x.dtype)
    mm, mv = layer.moving_mean.value, layer.moving_variance.value
    if not training:
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, mean=mm, variance=mv, epsilon=layer.epsilon,
                                                   is_training=False)
        return y
    y, mean, var = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=layer.epsilon, is_training=True)
    n = tf.cast(tf.size(x) // c, var.dtype)  # the statistics are float32 under mixed precision too
    var = var * (n - 1.0) / tf.maximum(n, 2.0)  # the kernel returns the unbiased variance; Keras keeps the biased one
    m = layer.momentum
    mm.assign(mm * m + tf.stop_gradient(mean) * (1.0 - m))
    mv.assign(mv * m + tf.stop_gradient(var) * (1.0 - m))
    return y


def keras_optimizer(optimizer: str, learning_rate: float, total_steps: int, schedule: str = "cosine", *,
                    warmup_steps: int = 0, weight_decay: float = 0.0):
    """The Keras optimizer :class:`Step` reproduces (``train.loop: keras`` trains with it)."""
    import keras

    lr = lr_schedule(learning_rate, total_steps, schedule, warmup_steps)
    wd = weight_decay or None
    if optimizer == "sgd":
        opt = keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=wd)
    elif optimizer == "rmsprop":
        opt = keras.optimizers.RMSprop(lr, rho=0.9, momentum=0.9, weight_decay=wd)
    else:
        opt = keras.optimizers.Adam(lr, weight_decay=wd)
    if wd:
        opt.exclude_from_weight_decay(var_names=list(NO_DECAY))
    return opt


def evaluates(epoch: int, epochs: int, eval_every: int) -> bool:
    """Whether an intermediate validation follows ``epoch`` (the last epoch's is the final one)."""
    return epoch < epochs and eval_every > 0 and epoch % eval_every == 0


def fit(model, train, val, *, optimizer: str, learning_rate: float, schedule: str, epochs: int, steps_per_epoch: int,
        on_epoch: Callable[[int, float], None] | None = None, jit_compile: bool = False, loss_scale: bool = False,
        strategy=None, warmup_steps: int = 0, weight_decay: float = 0.0, label_smoothing: float = 0.0,
        eval_every: int = 1, eval_val=None) -> tuple[float, int]:
    """Train ``model`` on the ``train`` dataset; (validation accuracy on all of ``val``, epochs run).

    ``on_epoch(epoch, val_accuracy)`` after every ``eval_every``-th epoch (0: none), on the
    ``eval_val`` subset (default: all of ``val``), and after the last epoch with the final
    accuracy. A non-finite loss stops at once and raises ``FloatingPointError("NaN loss at
    epoch E, step S")``. The other keywords are :class:`Step`'s.
    """
    step = Step(model, optimizer, learning_rate, total_steps=epochs * steps_per_epoch, schedule=schedule,
                element_spec=train.element_spec, jit_compile=jit_compile, loss_scale=loss_scale, strategy=strategy,
                warmup_steps=warmup_steps, weight_decay=weight_decay, label_smoothing=label_smoothing)
    for epoch in range(1, epochs + 1):
        for b, (x, y) in enumerate(train):
            loss = step.train(x, y)
            if not math.isfinite(loss):
                raise FloatingPointError(f"NaN loss at epoch {epoch}, step {b}")
        if on_epoch is not None and evaluates(epoch, epochs, eval_every):
            on_epoch(epoch, step.accuracy(val if eval_val is None else eval_val))
    acc = step.accuracy(val)
    if on_epoch is not None:
        on_epoch(epochs, acc)
    return acc, epochs
