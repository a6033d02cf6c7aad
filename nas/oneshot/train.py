"""Training a weight-sharing supernet and reading one-shot accuracy out of it.

:class:`SupernetTrainer` holds three traced functions over a
:class:`~search_spaces.supernet.Supernet`, each taking the path as a tensor, so each is
traced once for every arch of the space:

- ``train(x, y, path)``: one weight step on one path (the TuNAS step): cross-entropy, the
  recipe's optimizer (:class:`nas.trial.training.FusedUpdate`), BatchNorm statistics moving on
  the path's channels only;
- ``recalibrate(arch, batches)``: BatchNorm statistics of one arch, recomputed as the mean
  over a few training batches (shared statistics belong to no arch in particular);
- ``accuracy(arch, x, y)``: the one-shot accuracy of an arch, on recalibrated statistics;
  ``batch_accuracy(arch, x, y)``: on one batch's own statistics (a search's quick score).

>>> import numpy as np, search_spaces as s
>>> from search_spaces.supernet import Supernet
>>> space = s.get("efficientnet_edgetpu_bench")
>>> trainer = SupernetTrainer(Supernet(space, num_classes=10), total_steps=100)  # doctest: +SKIP
>>> x, y = np.zeros((8, 32, 32, 3), "float32"), np.zeros(8, "int32")
>>> loss = trainer.train(x, y, space.sample(0))                                  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from typing import Iterable

import numpy as np

from nas.trial.updates import FusedUpdate, LossScale, all_reduce_grads, distributed, replica_slice

log = logging.getLogger(__name__)


class SupernetTrainer:
    """Weight steps, BN recalibration and one-shot accuracy for one supernet (see the module doc)."""

    def __init__(self, net, *, optimizer: str = "adam", learning_rate: float = 3e-3, total_steps: int,
                 schedule: str = "cosine", jit_compile: bool = False, loss_scale: bool = False, strategy=None):
        """``jit_compile``, ``loss_scale`` and ``strategy`` as :class:`nas.trial.training.Step`'s: XLA,
        dynamic loss scaling for a supernet built under ``mixed_float16``, and the
        ``tf.distribute`` strategy the supernet was built under (each weight step then runs on
        every replica, a share of the batch each, gradients summed)."""
        import contextlib

        import keras
        import tensorflow as tf

        self.net, self.strategy = net, strategy
        variables = [v.value for v in net.trainable_variables]  # the tf.Variables behind Keras's
        # The recipe's optimizer as one kernel per variable (nas.trial.training): Keras's own took
        # most of the ~20 s the supernet's step spent tracing.
        # Lazy: a path leaves the other branches and the masked channels with zero gradients,
        # and those must not move (Adam's stale moments would drift them every step).
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self.update = FusedUpdate(variables, optimizer, learning_rate, total_steps=total_steps,
                                      schedule=schedule, lazy=True)
            self.loss_scale = LossScale() if loss_scale else None
        self._loss = keras.losses.SparseCategoricalCrossentropy()
        self.steps = 0

        def grads(x, y, path):
            x, y, weight = replica_slice(x, y)
            with tf.GradientTape() as tape:
                loss = self._loss(y, tf.cast(net(x, path, training=True), tf.float32)) * weight
                scaled = self.loss_scale.scaled(loss) if self.loss_scale is not None else loss
            return loss, tape.gradient(scaled, variables)

        # XLA on several devices: each replica's pass compiled, the all-reduce outside (Step's rule).
        replica_grads = (tf.function(grads, autograph=False, jit_compile=True) if jit_compile and strategy is not None
                         else grads)

        def train(x, y, path):
            loss, g = replica_grads(x, y, path)
            g = all_reduce_grads(g)
            if self.loss_scale is not None:
                update = self.loss_scale.apply(g, self.update.apply)
            else:
                update = self.update.apply(g)
            with tf.control_dependencies([update]):  # a skipped branch: no gradient, no move
                return tf.identity(loss)

        def calibrate(x, path, momentum):
            net(x, path, training=True, bn_momentum=momentum)

        def predict(x, path):
            return tf.argmax(net(x, path, training=False), axis=-1, output_type=tf.int32)

        def predict_batch_stats(x, path):
            return tf.argmax(net(x, path, batch_stats=True), axis=-1, output_type=tf.int32)

        # Signatures with an unknown batch size: a last, smaller batch does not trace again.
        images = tf.TensorSpec((None, *net.input_shape_), tf.float32)
        path = {k: tf.TensorSpec(v.shape, tf.int32) for k, v in net.path(net.space.sample(0)).items()}
        self._train = distributed(strategy, train, [images, tf.TensorSpec((None,), tf.int32), path],
                                  jit_compile=jit_compile)
        self._calibrate = tf.function(calibrate, input_signature=[images, path, tf.TensorSpec((), tf.float32)])
        self._predict = tf.function(predict, input_signature=[images, path], jit_compile=jit_compile)
        self._predict_batch_stats = tf.function(predict_batch_stats, input_signature=[images, path],
                                                jit_compile=jit_compile)

    def _path(self, arch):
        return self.net.path(arch) if not isinstance(arch, dict) else arch

    def train(self, x, y, arch) -> float:
        """One weight step on ``arch``'s path (an Arch, or a path from ``net.path``); the loss."""
        loss = float(self._train(x, np.asarray(y, np.int32), self._path(arch)))
        self.steps += 1
        if not math.isfinite(loss):
            raise FloatingPointError(f"supernet: non-finite loss at step {self.steps}")
        return loss

    def recalibrate(self, arch, batches: Iterable[np.ndarray]) -> None:
        """Set BatchNorm's statistics on ``arch``'s channels to their mean over ``batches``."""
        path = self._path(arch)
        for i, x in enumerate(batches):
            self._calibrate(x, path, np.float32(i / (i + 1)))  # the running mean of batch statistics

    def accuracy(self, arch, x: np.ndarray, y: np.ndarray, *, calibration: Iterable[np.ndarray] | None = None,
                 batch_size: int = 256) -> float:
        """One-shot accuracy of ``arch`` on ``(x, y)``, after recalibrating on ``calibration``."""
        return self.accuracy_on(arch, ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)),
                                calibration=calibration)

    def accuracy_on(self, arch, batches: Iterable[tuple[np.ndarray, np.ndarray]], *,
                    calibration: Iterable[np.ndarray] | None = None) -> float:
        """One-shot accuracy of ``arch`` over ``(x, y)`` batches (a split's ``val_batches()``:
        a folder's validation set is read a batch at a time, never whole)."""
        path = self._path(arch)
        if calibration is not None:
            self.recalibrate(path, calibration)
        hits = n = 0
        for x, y in batches:
            hits += int(np.sum(np.asarray(self._predict(x, path)) == y))
            n += len(y)
        return hits / max(1, n)

    def batch_accuracy(self, arch, x: np.ndarray, y: np.ndarray) -> float:
        """One-shot accuracy of ``arch`` on one batch, BatchNorm on that batch's statistics (the
        controller's reward during a search: no recalibration, nothing shared moves)."""
        return float(np.mean(np.asarray(self._predict_batch_stats(x, self._path(arch))) == y))

    def state_variables(self) -> list:
        """Everything a resumed run needs back: the supernet's weights (BatchNorm statistics
        included), the optimizer's slots and its step count."""
        return [*self.net.weights, *(v for slot in self.update.slots for v in slot), self.update.step_variable]

    def tracing_counts(self) -> dict[str, int]:
        """How often each step was traced (once each, whatever the paths)."""
        return {n: f.experimental_get_tracing_count() for n, f in
                (("train", self._train), ("calibrate", self._calibrate), ("predict", self._predict),
                 ("predict_batch_stats", self._predict_batch_stats)) if f.experimental_get_tracing_count()}


def calibration_batches(data, n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` random training batches for :meth:`SupernetTrainer.recalibrate`, from an array of
    images or a split (its ``train_batch``: read from the node's store for a folder)."""
    if isinstance(data, np.ndarray):
        return [data[rng.choice(len(data), size=min(batch_size, len(data)), replace=False)] for _ in range(n)]
    size = min(batch_size, data.n_train)
    return [data.train_batch(np.sort(rng.choice(data.n_train, size=size, replace=False)))[0] for _ in range(n)]
