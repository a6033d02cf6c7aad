"""The weight update of a training step, as one TensorFlow kernel per variable, and what a
step needs to run on several replicas: loss scaling for mixed precision, the batch split
across replicas, gradients summed over them.

:class:`FusedUpdate` computes exactly what Keras's Adam, SGD (momentum) and RMSprop compute
(``tests/test_training.py`` compares them step by step), in ``ResourceApply*`` kernels, so
tracing a step writes a few ops per variable instead of Keras's dozens
(:mod:`nas.trial.training` says why). Shared by the proxy's :class:`~nas.trial.training.Step`
and the one-shot supernet's trainer (:mod:`nas.oneshot.train`).
"""

from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger(__name__)

__all__ = ["NO_DECAY", "OPTIMIZERS", "FusedUpdate", "LossScale", "all_reduce_grads", "decays", "distributed",
           "lr_schedule", "replica_slice"]

#: What ``train.optimizer`` names, and the Keras class each one reproduces.
OPTIMIZERS = ("adam", "sgd", "rmsprop")

#: Variables decoupled weight decay leaves alone (Keras's ``exclude_from_weight_decay`` names):
#: BatchNorm's scale and offset, and biases.
NO_DECAY = ("bias", "gamma", "beta")



def lr_schedule(learning_rate: float, total_steps: int, schedule: str = "cosine", warmup_steps: int = 0):
    """The recipe's learning rate by step: a float (constant, no warm-up) or a Keras schedule.

    ``cosine``: Keras's ``CosineDecay`` to 1% of ``learning_rate`` over the steps after the
    warm-up; ``constant``: the same schedule with nothing to decay to. ``warmup_steps``: a
    linear rise from 0 to ``learning_rate`` first (``CosineDecay``'s own warm-up). The fused
    step and the Keras loop both read this one function.

    >>> round(float(lr_schedule(0.1, 100, "cosine", warmup_steps=10)(5)), 3)
    0.05
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"train.schedule: unknown {schedule!r}; allowed: cosine, constant")
    if schedule == "constant" and not warmup_steps:
        return learning_rate
    import keras

    alpha = 0.01 if schedule == "cosine" else 1.0
    decay = max(1, total_steps - warmup_steps)
    if not warmup_steps:
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=decay, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=decay, alpha=alpha, warmup_target=learning_rate,
                                                  warmup_steps=warmup_steps)


def decays(variable) -> bool:
    """Whether decoupled weight decay applies to this Keras variable (not in :data:`NO_DECAY`,
    matched on its name as Keras's optimizers match it)."""
    import re

    return not any(re.search(n, variable.name) for n in NO_DECAY)


class FusedUpdate:
    """The recipe's optimizer as one TensorFlow kernel per variable, to call inside a traced step.

    ``apply(grads)`` updates ``variables`` exactly as Keras's Adam (defaults), SGD (Nesterov
    momentum 0.9) or RMSprop (rho 0.9, momentum 0.9) would, at the learning rate of
    :func:`lr_schedule`, with Keras's decoupled ``weight_decay`` on the variables ``decay``
    marks; a None gradient (a variable the loss does not reach, or a supernet branch the path
    skipped) leaves its variable and slots alone, as Keras does. Tracing it costs a fraction
    of Keras's optimizer (see the module doc).
    """

    def __init__(self, variables, optimizer: str, learning_rate: float, *, total_steps: int,
                 schedule: str = "cosine", lazy: bool = False, warmup_steps: int = 0, weight_decay: float = 0.0,
                 decay: list[bool] | None = None):
        """``lazy``: an element whose gradient is exactly zero keeps its value and slots (a
        supernet's untaken branch or masked channel). Inside a traced step, a variable that
        only an untaken ``switch``/``cond`` branch uses gets a zero gradient, not None, and
        Adam or momentum would go on moving it with its stale slots. ``decay``: per variable,
        whether ``weight_decay`` applies (default: all)."""
        import tensorflow as tf

        self.lazy = lazy
        if lazy and weight_decay:
            raise ValueError("weight_decay: not with lazy updates (a skipped branch would still decay)")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer: unknown {optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        self.variables, self.optimizer = list(variables), optimizer
        slots = {"adam": 2, "sgd": 1, "rmsprop": 2}[optimizer]
        self._slots = [[tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables] for _ in range(slots)]
        self._it = tf.Variable(0, dtype=tf.int64, trainable=False)
        lr = lr_schedule(learning_rate, total_steps, schedule, warmup_steps)
        self._lr = lr if callable(lr) else (lambda _step: tf.constant(lr, tf.float32))
        self.weight_decay = float(weight_decay)
        self._decay = list(decay) if decay is not None else [True] * len(self.variables)

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
            if self.weight_decay and self._decay[i]:
                # Keras's decoupled decay: before the update, at the same learning rate.
                with tf.control_dependencies([v.assign_sub(v * tf.cast(lr * self.weight_decay, v.dtype))]):
                    g = tf.identity(g)
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


class LossScale:
    """Dynamic loss scaling for float16 compute, by Keras's ``LossScaleOptimizer`` rule.

    The loss is multiplied by ``scale`` before the gradients are taken (small float16
    gradients would otherwise flush to zero) and the gradients divided by it after. A step
    whose gradients are not all finite is skipped and halves the scale; every ``period``
    finite steps in a row double it. Starts at 2**15, as Keras's does.
    """

    def __init__(self, initial: float = 2.0 ** 15, period: int = 2000):
        import tensorflow as tf

        self.period = period
        self.scale = tf.Variable(initial, dtype=tf.float32, trainable=False)
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False)

    def scaled(self, loss):
        import tensorflow as tf

        return loss * tf.cast(self.scale, loss.dtype)

    def apply(self, grads, update: Callable):
        """Unscale ``grads`` and run ``update(grads)`` if they are all finite; the op."""
        import tensorflow as tf

        inv = 1.0 / self.scale
        grads = [None if g is None else g * tf.cast(inv, g.dtype) for g in grads]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])

        def step():
            with tf.control_dependencies([update(grads)]):
                grow = self.good_steps + 1 >= self.period
                return tf.group(self.scale.assign(tf.where(grow, self.scale * 2.0, self.scale)),
                                self.good_steps.assign(tf.where(grow, tf.constant(0, tf.int64), self.good_steps + 1)))

        def skip():
            return tf.group(self.scale.assign(tf.maximum(self.scale / 2.0, 1.0)), self.good_steps.assign(0))

        return tf.cond(finite, step, skip)


def replica_slice(*tensors):
    """In a replica of a distribution strategy: this replica's share of each whole batch, and
    its weight in the batch mean (1.0 and the tensors as they are with one replica).

    Every replica is given the whole batch and takes every n-th example, so a step keeps one
    signature with an unknown batch size, and the data pipeline stays the one-device one."""
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    n = ctx.num_replicas_in_sync if ctx is not None else 1
    if n == 1:
        return (*tensors, 1.0)
    i = ctx.replica_id_in_sync_group
    local = [t[i::n] for t in tensors]
    weight = tf.cast(tf.shape(local[0])[0], tf.float32) / tf.cast(tf.shape(tensors[0])[0], tf.float32)
    return (*local, weight)


def all_reduce_grads(grads):
    """The sum of each gradient over the replicas (None stays None; one replica: as it is).
    Each replica then applies the same update to its own copy of the variables, so the
    copies stay equal without a cross-replica update (Horovod's scheme)."""
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return grads
    idx = [i for i, g in enumerate(grads) if g is not None]
    reduced = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in idx])
    out = list(grads)
    for i, g in zip(idx, reduced):
        out[i] = g
    return out


def distributed(strategy, fn, input_signature, *, jit_compile: bool = False):
    """``fn`` traced once: as it is for one device (compiled with XLA if ``jit_compile``), or
    run on every replica of ``strategy`` with its outputs summed (each replica weighs its
    share, :func:`replica_slice`; XLA, if any, is the caller's inside ``fn``)."""
    import tensorflow as tf

    if strategy is None:
        return tf.function(fn, autograph=False, input_signature=input_signature, jit_compile=jit_compile)

    def run(*args):
        out = strategy.run(fn, args=args)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)

    return tf.function(run, autograph=False, input_signature=input_signature)
