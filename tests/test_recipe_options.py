"""The recipe's options for real photos: augmentation, weight decay, warm-up, label smoothing,
how often and on what a trial validates, and export's own recipe (issue 33)."""

from __future__ import annotations

import numpy as np
import pytest

from nas.config.experiment import ExportConfig, TrainConfig, parse_experiment

keras = pytest.importorskip("keras")

BASE = {"space": {"name": "efficientnet_edgetpu"}, "reward": {"target_ms": 1.0}, "budget": {"trials": 1}}


def _model(seed: int = 0):
    """Conv (no bias) -> BN -> pool -> Dense (kernel and bias): decayed and undecayed variables."""
    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def _batches(n: int = 6):
    rng = np.random.default_rng(0)
    return [(rng.normal(size=(8, 6, 6, 2)).astype("float32"), rng.integers(0, 3, size=8).astype("int32"))
            for _ in range(n)]


@pytest.mark.parametrize("optimizer, schedule", [("adam", "cosine"), ("sgd", "constant"), ("rmsprop", "cosine")])
def test_warmup_weight_decay_and_label_smoothing_compute_what_keras_computes(optimizer, schedule):
    import tensorflow as tf

    from nas.trial.recipe import smoothed_loss
    from nas.trial.training import Step, keras_optimizer

    batches = _batches()
    ours, ref = _model(), _model()
    kw = {"warmup_steps": 2, "weight_decay": 0.05}
    step = Step(ours, optimizer, 0.05, total_steps=len(batches), schedule=schedule, label_smoothing=0.1, **kw)
    ref.compile(optimizer=keras_optimizer(optimizer, 0.05, len(batches), schedule, **kw),
                loss=smoothed_loss(0.1, 3), jit_compile=False)
    for x, y in batches:
        step.train(tf.constant(x), tf.constant(y))
        ref.train_on_batch(x, y)
    for a, b in zip(ours.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_weight_decay_leaves_batchnorm_and_biases_alone():
    import tensorflow as tf

    from nas.trial.training import Step

    model = _model()
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    step = Step(model, "sgd", 0.5, total_steps=1, schedule="constant", weight_decay=0.5)
    # Zero gradients (a zero loss scale is not available; zero inputs and a dead ReLU do it
    # for the conv, so compare decay alone): with lr * wd = 0.25 every kernel shrinks by a quarter.
    names = [v.path for v in model.trainable_variables]
    decayed = [n for n, d in zip(names, step.update._decay) if d]
    assert sorted(n.rsplit("/", 1)[1] for n in decayed) == ["kernel", "kernel"]
    step.update.apply([tf.zeros_like(v) for v in step.variables])
    for v in model.trainable_variables:
        want = before[v.path] * (0.75 if v.path in decayed else 1.0)
        np.testing.assert_allclose(v.numpy(), want, rtol=1e-6)


def test_the_warmup_rises_linearly_then_decays():
    from nas.trial.training import lr_schedule

    lr = lr_schedule(0.1, 20, "cosine", warmup_steps=4)
    values = [float(lr(i)) for i in range(20)]
    np.testing.assert_allclose(values[:5], [0.0, 0.025, 0.05, 0.075, 0.1], atol=1e-7)
    assert all(a >= b for a, b in zip(values[4:], values[5:]))  # then down the cosine
    flat = lr_schedule(0.1, 20, "constant", warmup_steps=4)
    assert float(flat(2)) == pytest.approx(0.05) and float(flat(10)) == pytest.approx(0.1)
    assert lr_schedule(0.1, 20, "constant") == 0.1


@pytest.mark.parametrize("kind", ["shift", "photo"])
def test_augmentations_keep_the_shape_and_range_and_change_the_image(kind):
    import tensorflow as tf

    from nas.data.stored import augmenter

    rng = np.random.default_rng(0)
    x = rng.random((24, 24, 3)).astype("float32")
    fn = augmenter(kind, seed=3)
    outs = [fn(tf.constant(x), 0)[0].numpy() for _ in range(6)]
    for o in outs:
        assert o.shape == x.shape and o.min() >= 0.0 and o.max() <= 1.0
    assert any(not np.allclose(o, x) for o in outs)
    assert augmenter("none") is None and augmenter(False) is None
    with pytest.raises(ValueError, match="train.augment: unknown 'mixup'; allowed: none, shift, photo"):
        augmenter("mixup")


def test_the_photo_set_flips_and_crops():
    import tensorflow as tf

    from nas.data.stored import augmenter

    x = np.zeros((16, 16, 1), "float32")
    x[:, :8] = 1.0  # left half white
    fn = augmenter("photo", seed=0)
    outs = [fn(tf.constant(x), 0)[0].numpy()[..., 0] for _ in range(40)]
    left_white = [o[:, :4].mean() > o[:, -4:].mean() for o in outs]
    assert any(left_white) and not all(left_white)  # flipped sometimes
    cropped = [not (np.allclose(o, x[..., 0]) or np.allclose(o, x[:, ::-1, 0])) for o in outs]
    assert any(cropped)  # and cropped (rescaled) sometimes


def test_fit_validates_every_n_epochs_on_the_subset_and_at_the_end_on_everything():
    import tensorflow as tf

    from nas.trial.recipe import eval_subset
    from nas.trial.training import fit

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6, 6, 2)).astype("float32"), rng.integers(0, 3, 40).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    val = tf.data.Dataset.from_tensor_slices((x, y)).batch(256)
    sub = eval_subset(val, 40, 10)
    assert sum(int(b[1].shape[0]) for b in sub) == 10 and eval_subset(val, 40, 100) is val
    seen = []
    acc, n = fit(_model(), train, val, optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=5,
                 steps_per_epoch=5, on_epoch=lambda e, a: seen.append((e, a)), eval_every=2, eval_val=sub)
    assert [e for e, _ in seen] == [2, 4, 5] and seen[-1][1] == acc and n == 5
    assert all(round(a * 10) == a * 10 for _, a in seen[:2])  # accuracies out of 10 images
    seen.clear()
    fit(_model(), train, val, optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=3, steps_per_epoch=5,
        on_epoch=lambda e, a: seen.append(e), eval_every=0)
    assert seen == [3]


def test_config_keys_and_their_errors():
    assert TrainConfig(augment=True).augment == "shift" and TrainConfig(augment=False).augment == "none"
    cfg = parse_experiment({**BASE, "train": {"augment": "photo", "weight_decay": 1e-4, "warmup_epochs": 1,
                                              "label_smoothing": 0.1, "eval_every": 2, "eval_images": 100}})
    assert cfg.train.augment == "photo" and cfg.score.accuracy == "float" and cfg.export.int8_margin == 0.02
    for train, msg in [
        ({"augment": "mixup"}, "train.augment: Input should be 'none', 'shift' or 'photo' (given 'mixup')"),
        ({"epochs": 2, "warmup_epochs": 2}, "train.warmup_epochs: 2 leaves no epoch after the warm-up of "
                                             "train.epochs 2; allowed: 0 <= warmup_epochs < epochs"),
        ({"label_smoothing": 1.0}, "train.label_smoothing: Input should be less than 1 (given 1.0)"),
    ]:
        with pytest.raises(ValueError) as e:
            parse_experiment({**BASE, "train": train})
        assert msg in str(e.value)
    with pytest.raises(ValueError, match="train.eval_every: 0 reports no accuracy before the end, and "
                                         "ray.scheduler asha"):
        parse_experiment({**BASE, "train": {"eval_every": 0}, "ray": {"scheduler": "asha"}})
    with pytest.raises(ValueError, match="score.accuracy: Input should be 'float' or 'int8'"):
        parse_experiment({**BASE, "score": {"accuracy": "int4"}})


def test_the_export_recipe_takes_train_s_keys_it_leaves_out():
    train = TrainConfig(epochs=3, learning_rate=0.01, augment="shift", weight_decay=1e-4)
    got = ExportConfig(epochs=40, learning_rate=0.05, augment="photo", warmup_epochs=2).recipe(train)
    assert (got.epochs, got.learning_rate, got.augment, got.weight_decay, got.warmup_epochs) == (40, 0.05, "photo",
                                                                                                1e-4, 2)
    assert ExportConfig().recipe(train, epochs=7).epochs == 7  # nas export --epochs
    with pytest.raises(ValueError, match="export: train.warmup_epochs: 2 leaves no epoch"):
        ExportConfig(warmup_epochs=2).recipe(train, epochs=2)
