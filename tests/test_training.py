"""The traced training step (nas.trial.training) against Keras's own optimizers and fit."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")


def _model(seed: int = 0, sequential: bool = False):
    """A functional model as the builder makes them (or a Sequential one, which runs unfused)."""
    keras.utils.set_random_seed(seed)
    # No bias before BN: its gradient is zero up to rounding, which Adam scales up to +-lr.
    layers = [keras.layers.Conv2D(4, 3, padding="same", use_bias=False), keras.layers.BatchNormalization(momentum=0.9),
              keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(), keras.layers.Dropout(0.2, seed=1),
              keras.layers.Dense(3, activation="softmax")]
    if sequential:
        return keras.Sequential([keras.Input((6, 6, 2)), *layers])
    x = inputs = keras.Input((6, 6, 2))
    skip = x
    for layer in layers[:3]:
        x = layer(x)
    x = keras.layers.Concatenate()([x, skip])  # a branch, as blocks have
    for layer in layers[3:]:
        x = layer(x)
    return keras.Model(inputs, x)


def _batches(n: int = 5):
    rng = np.random.default_rng(0)
    return [(rng.normal(size=(8, 6, 6, 2)).astype("float32"), rng.integers(0, 3, size=8).astype("int32"))
            for _ in range(n)]


@pytest.mark.parametrize("optimizer, schedule, sequential", [
    ("adam", "cosine", False), ("adam", "constant", False), ("sgd", "cosine", False), ("rmsprop", "cosine", False),
    ("rmsprop", "constant", False), ("adam", "cosine", True)])
def test_step_computes_what_keras_computes(optimizer, schedule, sequential):
    import tensorflow as tf

    from nas.trial.training import Step, keras_optimizer

    batches = _batches()
    ours, ref = _model(sequential=sequential), _model(sequential=sequential)
    step = Step(ours, optimizer, 0.05, total_steps=len(batches), schedule=schedule)
    graph = step._train.get_concrete_function().graph
    fused = any(op.type == "FusedBatchNormV3" for op in graph.get_operations())
    assert fused is not sequential  # the builder's functional models run BN fused
    ref.compile(optimizer=keras_optimizer(optimizer, 0.05, len(batches), schedule),
                loss="sparse_categorical_crossentropy", jit_compile=False)
    for x, y in batches:
        step.train(tf.constant(x), tf.constant(y))
        ref.train_on_batch(x, y)
    assert step.iterations == len(batches)
    for a, b in zip(ours.get_weights(), ref.get_weights()):  # trainable and BatchNorm statistics
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # a wrong term moves them by >1e-3


def test_step_accuracy_is_keras_evaluate():
    import tensorflow as tf

    from nas.trial.training import Step

    model = _model()
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.concatenate([b[0] for b in _batches()])
    y = np.concatenate([b[1] for b in _batches()])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # 40 rows: a last batch of 8
    step = Step(model, "adam", 1e-3, total_steps=1, element_spec=ds.element_spec)
    assert step.accuracy(ds) == pytest.approx(model.evaluate(ds, verbose=0)[1], abs=1e-6)


def test_fit_stops_at_a_nan_loss():
    import tensorflow as tf

    from nas.trial.training import fit

    x = np.full((16, 6, 6, 2), np.nan, "float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(16, "int32"))).batch(8)
    with pytest.raises(FloatingPointError, match="NaN loss at epoch 1, step 0"):
        fit(_model(), ds, ds, optimizer="adam", learning_rate=1e-3, schedule="constant", epochs=2, steps_per_epoch=2)


def test_unknown_optimizer_is_refused():
    from nas.trial.training import Step

    with pytest.raises(ValueError, match="train.optimizer: unknown 'lamb'; allowed: adam, sgd, rmsprop"):
        Step(_model(), "lamb", 1e-3, total_steps=1)


def test_the_docstring_examples_run():
    import doctest

    import nas.controllers.mnas
    import nas.trial.training

    for module in (nas.trial.training, nas.controllers.mnas):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_the_lazy_update_moves_what_has_a_gradient_and_nothing_else(optimizer):
    import tensorflow as tf

    from nas.trial.training import FusedUpdate

    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4)).astype("float32")
    grads = [rng.normal(size=(3, 4)).astype("float32") for _ in range(3)]
    for g in grads[1:]:
        g[:, 2:] = 0  # after the first step, two columns are masked out (an untaken channel)
    eager, lazy = tf.Variable(start), tf.Variable(start)
    ref = FusedUpdate([eager], optimizer, 0.01, total_steps=10, schedule="constant")
    upd = FusedUpdate([lazy], optimizer, 0.01, total_steps=10, schedule="constant", lazy=True)
    ref.apply([tf.constant(grads[0])])
    upd.apply([tf.constant(grads[0])])
    np.testing.assert_allclose(lazy.numpy(), eager.numpy(), rtol=1e-5, atol=1e-7)  # the same update
    after_first = lazy.numpy().copy()
    for g in grads[1:]:
        ref.apply([tf.constant(g)])
        upd.apply([tf.constant(g)])
    np.testing.assert_array_equal(lazy.numpy()[:, 2:], after_first[:, 2:])  # masked: not moved
    assert not np.allclose(eager.numpy()[:, 2:], after_first[:, 2:])  # (the eager one drifts on its momentum)
    assert not np.allclose(lazy.numpy()[:, :2], after_first[:, :2])
