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
>>> from nas.training import Step
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

log = logging.getLogger(__name__)

#: What ``train.optimizer`` names, and the Keras class each one reproduces.
OPTIMIZERS = ("adam", "sgd", "rmsprop")


class FusedUpdate:
    """The recipe's optimizer as one TensorFlow kernel per variable, to call inside a traced step.

    ``apply(grads)`` updates ``variables`` exactly as Keras's Adam (defaults), SGD (Nesterov
    momentum 0.9) or RMSprop (rho 0.9, momentum 0.9) would, at a constant learning rate or
    Keras's ``CosineDecay`` to 1% over ``total_steps``; a None gradient (a variable the loss
    does not reach, or a supernet branch the path skipped) leaves its variable and slots
    alone, as Keras does. Tracing it costs a fraction of Keras's optimizer (see the module doc).
    """

    def __init__(self, variables, optimizer: str, learning_rate: float, *, total_steps: int,
                 schedule: str = "cosine", lazy: bool = False):
        """``lazy``: an element whose gradient is exactly zero keeps its value and slots (a
        supernet's untaken branch or masked channel). Inside a traced step, a variable that
        only an untaken ``switch``/``cond`` branch uses gets a zero gradient, not None, and
        Adam or momentum would go on moving it with its stale slots."""
        import keras
        import tensorflow as tf

        self.lazy = lazy

        if optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer: unknown {optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        self.variables, self.optimizer = list(variables), optimizer
        slots = {"adam": 2, "sgd": 1, "rmsprop": 2}[optimizer]
        self._slots = [[tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables] for _ in range(slots)]
        self._it = tf.Variable(0, dtype=tf.int64, trainable=False)
        if schedule == "cosine":
            self._lr = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, total_steps), alpha=0.01)
        else:
            self._lr = lambda _step: tf.constant(learning_rate, tf.float32)

    @property
    def iterations(self) -> int:
        return int(self._it.numpy())

    @property
    def slots(self) -> list[list]:
        """The optimizer's slot variables (Adam's m and v, ...), one list per kind."""
        return self._slots

    @property
    def step_variable(self):
        """The update count the schedule and Adam's bias correction read."""
        return self._it

    def apply(self, grads):
        """The update op (run it, or depend on it, inside a ``tf.function``)."""
        import tensorflow as tf

        # Keras evaluates the schedule at the step count before this update and bias-corrects
        # Adam with the count after it (local_step = iterations + 1).
        lr = tf.cast(self._lr(self._it), tf.float32)
        t = tf.cast(self._it + 1, tf.float32)
        b1, b2 = tf.pow(0.9, t), tf.pow(0.999, t)  # once, not per variable: every op costs tracing time
        updates = []
        for i, (v, g) in enumerate(zip(self.variables, grads)):
            if g is None:
                continue
            if self.lazy:
                updates.append(self._lazy(i, v, g, lr, b1, b2))
                continue
            if self.optimizer == "adam":
                updates.append(tf.raw_ops.ResourceApplyAdam(
                    var=v.handle, m=self._slots[0][i].handle, v=self._slots[1][i].handle,
                    beta1_power=b1, beta2_power=b2, lr=lr, beta1=0.9, beta2=0.999,
                    epsilon=1e-7, grad=g))
            elif self.optimizer == "sgd":
                updates.append(tf.raw_ops.ResourceApplyKerasMomentum(
                    var=v.handle, accum=self._slots[0][i].handle, lr=lr, grad=g, momentum=0.9, use_nesterov=True))
            else:
                updates.append(tf.raw_ops.ResourceApplyRMSProp(
                    var=v.handle, ms=self._slots[0][i].handle, mom=self._slots[1][i].handle, lr=lr, rho=0.9,
                    momentum=0.9, epsilon=1e-7, grad=g))
        with tf.control_dependencies(updates):
            return self._it.assign_add(1)

    def _lazy(self, i, v, g, lr, b1, b2):
        """The same update, written out, on the elements whose gradient is not zero."""
        import tensorflow as tf

        on = tf.cast(tf.not_equal(g, 0), g.dtype)
        if self.optimizer == "adam":  # Keras's Adam: lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
            m, s2 = self._slots[0][i], self._slots[1][i]
            m_new = m + on * 0.1 * (g - m)
            v_new = s2 + on * 0.001 * (g * g - s2)
            step = lr * tf.sqrt(1 - b2) / (1 - b1) * m_new / (tf.sqrt(v_new) + 1e-7)
            return tf.group(m.assign(m_new), s2.assign(v_new), v.assign_sub(on * step))
        if self.optimizer == "sgd":  # Keras's SGD, Nesterov momentum 0.9
            acc = self._slots[0][i]
            a_new = acc + on * ((0.9 * acc - lr * g) - acc)
            return tf.group(acc.assign(a_new), v.assign_add(on * (0.9 * a_new - lr * g)))
        ms, mom = self._slots[0][i], self._slots[1][i]  # RMSprop, rho 0.9, momentum 0.9
        ms_new = ms + on * 0.1 * (g * g - ms)
        mom_new = mom + on * ((0.9 * mom + lr * g / tf.sqrt(ms_new + 1e-7)) - mom)
        return tf.group(ms.assign(ms_new), mom.assign(mom_new), v.assign_sub(on * mom_new))


class Step:
    """A traced training step and an evaluation step for one Keras model.

    The recipe is the toolkit's (see :func:`keras_optimizer`): Adam (Keras defaults), SGD
    with Nesterov momentum 0.9, or RMSprop (rho 0.9, momentum 0.9); a constant learning
    rate or Keras's ``CosineDecay`` to 1% over ``total_steps``.
    """

    def __init__(self, model, optimizer: str, learning_rate: float, *, total_steps: int, schedule: str = "cosine",
                 element_spec=None, fuse_bn: bool = True):
        import tensorflow as tf

        self.model, self.optimizer, self.fuse_bn = model, optimizer, fuse_bn
        self.variables = [v.value for v in model.trainable_variables]  # the tf.Variables behind Keras's
        self.update = FusedUpdate(self.variables, optimizer, learning_rate, total_steps=total_steps,
                                  schedule=schedule)
        # One signature with an unknown batch size: the last, smaller batch of an epoch reuses
        # the traced step instead of tracing a second one.
        if element_spec is None:
            element_spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32), tf.TensorSpec((None,), tf.int32))
        sig = [tf.TensorSpec((None, *s.shape[1:]), s.dtype) for s in element_spec]
        self._train = tf.function(self._train_step, autograph=False, input_signature=sig)
        self._eval = tf.function(self._eval_step, autograph=False, input_signature=sig)

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

        p = self._forward(x, training)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, p))
        if self.model.losses:  # layer regularisers, as Model.compute_loss adds them
            loss = loss + tf.add_n([tf.cast(v, loss.dtype) for v in self.model.losses])
        return p, loss

    def _train_step(self, x, y):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            _, loss = self._loss(x, y, True)
        grads = tape.gradient(loss, self.variables)
        with tf.control_dependencies([self.update.apply(grads)]):
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
    n = tf.cast(tf.size(x) // c, x.dtype)
    var = var * (n - 1.0) / tf.maximum(n, 2.0)  # the kernel returns the unbiased variance; Keras keeps the biased one
    m = layer.momentum
    mm.assign(mm * m + tf.stop_gradient(mean) * (1.0 - m))
    mv.assign(mv * m + tf.stop_gradient(var) * (1.0 - m))
    return y


def keras_optimizer(optimizer: str, learning_rate: float, total_steps: int, schedule: str = "cosine"):
    """The Keras optimizer :class:`Step` reproduces (``train.loop: keras`` trains with it)."""
    import keras

    lr = learning_rate
    if schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, total_steps), alpha=0.01)
    if optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    if optimizer == "rmsprop":
        return keras.optimizers.RMSprop(lr, rho=0.9, momentum=0.9)
    return keras.optimizers.Adam(lr)


def fit(model, train, val, *, optimizer: str, learning_rate: float, schedule: str, epochs: int, steps_per_epoch: int,
        on_epoch: Callable[[int, float], None] | None = None) -> tuple[float, int]:
    """Train ``model`` on the ``train`` dataset; (validation accuracy, epochs run).

    ``on_epoch(epoch, val_accuracy)`` after every epoch. A non-finite loss stops at once and
    raises ``FloatingPointError("NaN loss at epoch E, step S")``.
    """
    step = Step(model, optimizer, learning_rate, total_steps=epochs * steps_per_epoch, schedule=schedule,
                element_spec=train.element_spec)
    acc = None
    for epoch in range(1, epochs + 1):
        for b, (x, y) in enumerate(train):
            loss = step.train(x, y)
            if not math.isfinite(loss):
                raise FloatingPointError(f"NaN loss at epoch {epoch}, step {b}")
        acc = None
        if on_epoch is not None:
            acc = step.accuracy(val)
            on_epoch(epoch, acc)
    if acc is None:
        acc = step.accuracy(val)
    return acc, epochs
