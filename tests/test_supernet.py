"""The weight-sharing supernet: a path computes what the standalone model with its weights
computes, a training step is traced once for every path, and only a path's weights and BN
channels move."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import search_spaces
from search_spaces.supernet import FUSED, FUSED_E1, MBCONV, MBCONV_E1, Supernet, block_kind, stage_shapes

tf = pytest.importorskip("tensorflow")

SMALL = {"resolution": 32, "width": 0.25, "depth": 0.5}


def _scramble(net, seed=0):
    """Non-trivial BN statistics and biases, so a wrong slice or mask shows in the outputs."""
    rng = np.random.default_rng(seed)
    for w in net.weights:
        if w.path.endswith(("moving_variance", "gamma")):
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        elif w.path.endswith(("moving_mean", "beta", "bias")):
            w.assign(rng.normal(0, 0.3, w.shape).astype("float32"))


def _logits(model_or_fn, x):
    return np.log(np.asarray(model_or_fn(x)) + 1e-12)


@pytest.fixture(scope="module")
def edgetpu_net():
    space = search_spaces.get("efficientnet_edgetpu", **SMALL)
    net = Supernet(space, num_classes=10, seed=1)
    _scramble(net)
    return space, net


def _covering_archs(space, want_kinds, n_max=40):
    """Sampled archs until every kind, both kernels and SE on/off have appeared in some stage."""
    seen, archs = set(), []
    for i in range(n_max):
        a = space.sample(i)
        new = {("kind", block_kind(b)) for b in a.stages} | {("k", b.kernel) for b in a.stages} | {
            ("se", bool(b.se_ratio)) for b in a.stages} | {("act", b.activation) for b in a.stages}
        if new - seen:
            archs.append(a)
            seen |= new
        if {("kind", k) for k in want_kinds} <= seen and len(archs) >= 4:
            break
    assert {("kind", k) for k in want_kinds} <= seen
    return archs


def test_a_path_computes_what_the_standalone_model_with_its_weights_computes(edgetpu_net):
    space, net = edgetpu_net
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    for arch in _covering_archs(space, (MBCONV, MBCONV_E1, FUSED, FUSED_E1)):
        model = net.standalone(arch)
        assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == search_spaces.count_params(
            arch, num_classes=10)
        got = _logits(lambda v: net(v, net.path(arch)), x)
        np.testing.assert_allclose(got, _logits(model, x), atol=2e-4, err_msg=arch.to_string())


def test_mnasnet_shares_weights_across_its_ops_and_skips():
    space = search_spaces.get("mnasnet", **SMALL)
    net = Supernet(space, num_classes=5, seed=2)
    _scramble(net, 1)
    x = np.random.default_rng(1).random((2, 32, 32, 3)).astype("float32")
    types = set()
    for i in range(6):
        arch = space.sample(i)
        types |= {b.type for b in arch.stages}
        np.testing.assert_allclose(_logits(lambda v: net(v, net.path(arch)), x), _logits(net.standalone(arch), x),
                                   atol=2e-4, err_msg=arch.to_string())
    assert {"conv", "ds", "mbconv"} <= types


def test_batch_norm_statistics_move_only_on_the_channels_a_path_uses(edgetpu_net):
    space, _ = edgetpu_net
    net = Supernet(space, num_classes=10, seed=1)
    narrow = space.decode({d.name: d.choices[0] for d in space.decision_list} | {"s6.block": "mbconv",
                                                                                "s6.expansion": 2})
    bn = net.parts["block6a_mb_project_bn"]
    used = int(narrow.stages[5].filters)
    assert used < bn.moving_mean.shape[0]
    x = np.random.default_rng(2).random((4, 32, 32, 3)).astype("float32")
    net(x, net.path(narrow), training=True)
    mean = np.asarray(bn.moving_mean)
    assert np.all(mean[used:] == 0) and np.any(mean[:used] != 0)
    assert np.all(np.asarray(bn.moving_variance)[used:] == 1)


def test_stage_shapes_hold_the_widest_choices():
    space = search_spaces.get("efficientnet_edgetpu", **SMALL)
    shapes = stage_shapes(space)
    assert [s.kernels for s in shapes] == [(3, 5)] * 6
    assert all(set(s.kinds) == {MBCONV, MBCONV_E1, FUSED, FUSED_E1} for s in shapes)
    for s, sh in zip(range(1, 7), shapes):
        assert sh.out == max(space.filter_choices(s)) and sh.layers == max(space.layer_choices(s))
    assert shapes[0].skips == (False,) and shapes[1].skips == (True,)


def test_an_arch_outside_the_space_is_refused_with_the_spaces_message(edgetpu_net):
    space, net = edgetpu_net
    other = search_spaces.get("efficientnet_edgetpu", resolution=32, width=0.5, depth=0.5).sample(0)
    with pytest.raises(ValueError, match="arch is not in space efficientnet_edgetpu"):
        net.path(other)


def test_a_zero_classifier_starts_every_path_at_equal_probabilities_and_reads_out_as_such():
    space = search_spaces.get("efficientnet_edgetpu_bench", resolution=32)
    net = Supernet(space, num_classes=10, seed=0, classifier_init="zeros")
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    for i in range(3):
        arch = space.sample(i)
        np.testing.assert_allclose(np.asarray(net(x, net.path(arch))), 0.1, atol=1e-6)
        assert not np.any(net.standalone(arch).get_layer("predictions").get_weights()[0])
    default = Supernet(space, num_classes=10, seed=0)
    assert np.any(np.asarray(default.predictions.kernel))  # the builder's init, as before
    with pytest.raises(ValueError, match=r"^classifier_init: expected 'default' or 'zeros', got 'ones'$"):
        Supernet(space, num_classes=10, classifier_init="ones")


def test_a_space_the_supernet_cannot_hold_is_a_clear_error():
    class Strided(search_spaces.EfficientNetEdgeTPUSpace):
        name = "strided_test"

        def stage_decisions(self, stage):
            return list(super().stage_decisions(stage)) + [search_spaces.Decision("stride", (1, 2))]

        def make_block(self, stage, c):
            block = super().make_block(stage, {k: v for k, v in c.items() if k != "stride"})
            return dataclasses.replace(block, stride=c["stride"])

    with pytest.raises(ValueError, match=r"^supernet: stage 1 of space strided_test.* chooses its stride; "):
        stage_shapes(Strided(resolution=32, width=0.25, depth=0.5))


def test_weight_steps_trace_once_move_only_the_path_and_one_shot_accuracy_is_the_standalone_models():
    from nas.oneshot.train import SupernetTrainer

    space = search_spaces.get("efficientnet_edgetpu_bench")
    net = Supernet(space, num_classes=3, seed=4)
    trainer = SupernetTrainer(net, optimizer="sgd", learning_rate=0.05, total_steps=4)
    rng = np.random.default_rng(3)
    x = rng.random((24, 32, 32, 3)).astype("float32")
    y = (x[:, :16].mean(axis=(1, 2, 3)) * 30).astype("int32") % 3
    # stage 2 mbconv in the first path, fused in the second: each moves only its own branch
    mb = space.decode(space.encode(space.sample(0)) | {"s2.block": "mbconv", "s2.se": 0, "s2.repeats": 1})
    fused = space.decode(space.encode(mb) | {"s2.block": "fused_mbconv"})
    parts = net.parts
    names = ("block2a_mb_dwconv", "block2a_fused_expand_conv", "block2b_mb_dwconv", "block2a_mb_se_reduce")
    before = {n: np.asarray(parts[n].kernel).copy() for n in names}
    trainer.train(x[:16], y[:16], mb)
    assert not np.array_equal(np.asarray(parts["block2a_mb_dwconv"].kernel), before["block2a_mb_dwconv"])
    for untouched in names[1:]:  # no gradient: neither the weights nor their optimizer slots move
        assert np.array_equal(np.asarray(parts[untouched].kernel), before[untouched]), untouched
    trainer.train(x[:16], y[:16], fused)
    calib = [x[:8], x[8:16]]
    for arch in (space.sample(5), space.sample(6)):
        acc = trainer.accuracy(arch, x[16:], y[16:], calibration=calib)
        standalone = net.standalone(arch)
        want = float(np.mean(np.argmax(standalone(x[16:], training=False), axis=-1) == y[16:]))
        assert acc == pytest.approx(want)
        # the recalibrated statistics are the mean of the two batches' statistics
        stem = keras_stem_stats(standalone, calib)
        np.testing.assert_allclose(np.asarray(parts["stem_bn"].moving_mean), stem, rtol=1e-4, atol=1e-5)
    assert trainer.tracing_counts() == {"train": 1, "calibrate": 1, "predict": 1}


def keras_stem_stats(model, batches):
    """Mean over batches of the per-channel batch mean entering the stem's BatchNorm."""
    import keras

    conv = keras.Model(model.input, model.get_layer("stem_conv").output)
    return np.mean([np.asarray(conv(b)).mean(axis=(0, 1, 2)) for b in batches], axis=0)


def test_a_supernet_of_the_proxies_holds_what_the_trials_train():
    from nas.config.experiment import ProxyConfig
    from nas.trial.proxy import proxy_arch
    from search_spaces.scaling import ScaledSpace

    from nas.config.experiment import parse_experiment
    from nas.trial.proxy import space_of

    deploy = search_spaces.get("efficientnet_edgetpu", resolution=128, width=1.0, depth=1.0, num_classes=10)
    proxies = ScaledSpace(deploy, width=0.25, depth=0.5, resolution=32)
    import yaml

    from conftest import ROOT

    cfg = parse_experiment(yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text()))
    assert space_of(deploy, cfg).decode(deploy.sample_choices(7)) == proxies.decode(deploy.sample_choices(7))
    assert proxies.decision_list == deploy.decision_list and "scaled (width 0.25, depth 0.5, 32 px)" in proxies.label
    net = Supernet(proxies, seed=3)
    _scramble(net, 2)
    x = np.random.default_rng(4).random((2, 32, 32, 3)).astype("float32")
    for i in range(3):
        c = deploy.sample_choices(i)
        small = proxy_arch(deploy.decode(c), ProxyConfig(resolution=32, width=0.25, depth=0.5))
        assert proxies.decode(c) == small  # the trial's proxy, from the controller's choices
        np.testing.assert_allclose(_logits(lambda v: net(v, net.path(small)), x), _logits(net.standalone(small), x),
                                   atol=2e-4)
