"""A weight-sharing supernet of a stagewise space: every member is a path through one model.

TuNAS's sharing (Bender et al. 2020), on the stages of a :class:`~search_spaces.StagewiseSpace`
of ``mbconv`` and ``fused_mbconv`` blocks (``efficientnet_edgetpu`` and its sub-spaces):

- a larger kernel's centre serves the smaller kernel (a 5x5 kernel with its outer ring zeroed
  computes the 3x3 conv, strides and "same" padding included);
- the first channels serve narrower choices, for expansion, SE width and output filters: every
  tensor is held at the stage's widest choice and the channels a path does not use are zeroed;
- the first layers of a stage serve shallower choices (a path's unused layers are skipped);
- block kinds that differ in structure keep their own weights: ``mbconv`` (with or without its
  1x1 expansion, which then share the depthwise, SE and projection weights), ``fused_mbconv``
  with an expansion, and ``fused_mbconv`` with expansion 1 (a single conv).

A path is chosen by inputs, not by rebuilding: :meth:`Supernet.path` turns an arch into a
dict of small integer arrays (kind, kernel, activation, channel counts, active layers,
residuals) read off the arch's layer plan, so the counts are exactly the standalone model's;
the model applies it with ``keras.ops.cond``/``switch`` and masks, so a training step taking
the path as a tensor is traced once. BatchNorm statistics are updated only on the channels a
path uses. :meth:`Supernet.standalone` copies a path's weights into
:func:`search_spaces.build_model`'s model, which then computes what the supernet computes for
that path (``tests/test_supernet.py``) and trains on its own as any arch does.

>>> import numpy as np, search_spaces as s
>>> space = s.get("efficientnet_edgetpu_bench", resolution=32)
>>> net = Supernet(space, num_classes=10)
>>> arch = space.sample(0)
>>> probs = net(np.zeros((2, 32, 32, 3), "float32"), net.path(arch))
>>> tuple(probs.shape)
(2, 10)
>>> model = net.standalone(arch)           # a plain keras.Model holding the path's weights
>>> sum(int(np.prod(w.shape)) for w in model.trainable_weights) == s.count_params(arch, num_classes=10)
True
"""

from __future__ import annotations


import keras
import numpy as np
from keras import ops

from .arch import Arch
from .builder import BN_EPSILON, BN_MOMENTUM, KERAS_ACTIVATION, build_model, layer_seed
from .plan import layer_letters, plan, resolve_io
from .space import StagewiseSpace
from .supernet_shapes import (FUSED, FUSED_E1, MBCONV, MBCONV_E1, block_kind, stage_blocks, stage_shapes)

# ----------------------------------------------------------------------- the Keras parts


def _conv_init(seed, name):
    return keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal", seed=layer_seed(seed, name))


class MaskedBatchNorm(keras.layers.Layer):
    """BatchNorm whose moving statistics move only on the channels a path uses (``mask``)."""

    def __init__(self, channels: int, **kw):
        super().__init__(**kw)
        # float32 whatever the compute dtype, as Keras's BatchNormalization keeps them
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma", autocast=False)
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta", autocast=False)
        self.moving_mean = self.add_weight(shape=(channels,), initializer="zeros", name="moving_mean",
                                           trainable=False, autocast=False)
        self.moving_variance = self.add_weight(shape=(channels,), initializer="ones", name="moving_variance",
                                               trainable=False, autocast=False)
        self.momentum = BN_MOMENTUM
        self.built = True

    def call(self, x, mask, training=False, momentum=None, batch_stats=False):
        """``batch_stats`` (inference): normalise by the batch's statistics, moving nothing.
        Statistics and normalisation in float32 (float16 input under mixed precision)."""
        dtype = x.dtype
        x = ops.cast(x, "float32")
        mask = ops.cast(mask, "float32")
        if training or batch_stats:
            mean = ops.mean(x, axis=(0, 1, 2))
            var = ops.var(x, axis=(0, 1, 2))
            if training:
                on = mask > 0
                m = ops.cast(self.momentum if momentum is None else momentum, "float32")  # (autocast to float16)
                self.moving_mean.assign(ops.where(on, self.moving_mean * m + mean * (1 - m), self.moving_mean))
                self.moving_variance.assign(ops.where(on, self.moving_variance * m + var * (1 - m),
                                                      self.moving_variance))
        else:
            mean, var = self.moving_mean, self.moving_variance
        return ops.cast((x - mean) * ops.rsqrt(var + BN_EPSILON) * self.gamma + self.beta, dtype)

    def weights_for(self, c: int) -> list[np.ndarray]:
        """The standalone BatchNormalization weights of the first ``c`` channels."""
        return [np.asarray(v)[:c] for v in (self.gamma, self.beta, self.moving_mean, self.moving_variance)]


class MaskedConv(keras.layers.Layer):
    """A conv (or depthwise conv) kernel held at its widest; ``kmask`` zeros a smaller kernel's ring."""

    def __init__(self, kernel: int, cin: int, cout: int, *, depthwise: bool = False, bias: bool = False,
                 seed: int | None = None, **kw):
        super().__init__(**kw)
        self.depthwise, self.k = depthwise, kernel
        shape = (kernel, kernel, cin, 1) if depthwise else (kernel, kernel, cin, cout)
        self.kernel = self.add_weight(shape=shape, initializer=_conv_init(seed, self.name), name="kernel")
        self.bias = self.add_weight(shape=(cout,), initializer="zeros", name="bias") if bias else None
        self.built = True

    def call(self, x, stride: int = 1, kmask=None):
        w = self.kernel if kmask is None else self.kernel * kmask
        y = (ops.depthwise_conv(x, w, strides=stride, padding="same") if self.depthwise
             else ops.conv(x, w, strides=stride, padding="same"))
        return y if self.bias is None else y + self.bias

    def weights_for(self, k: int, cin: int, cout: int) -> list[np.ndarray]:
        """The standalone layer's weights: the centre ``k`` x ``k``, the first channels."""
        c0 = (self.k - k) // 2
        w = np.asarray(self.kernel)[c0:c0 + k, c0:c0 + k, :cin]
        w = w if self.depthwise else w[..., :cout]
        return [w] if self.bias is None else [w, np.asarray(self.bias)[:cout]]


def _mask(n: int, count, dtype="float32"):
    """1.0 on the first ``count`` of ``n`` channels, else 0 (in the compute dtype: float16
    under mixed precision)."""
    return ops.cast(ops.arange(n) < count, dtype)


def _kernel_mask(kmax: int, k, dtype="float32"):
    r = ops.abs(ops.arange(kmax) - (kmax - 1) // 2) <= (k - 1) // 2
    m = ops.cast(ops.logical_and(r[:, None], r[None, :]), dtype)
    return m[:, :, None, None]


def _activation(name: str):
    return keras.activations.get(KERAS_ACTIVATION[name])


_BRANCH = {MBCONV: "mb", MBCONV_E1: "mb", FUSED: "fused", FUSED_E1: "fused1"}
#: path entries: per stage, and per stage and layer
STAGE_KEYS = ("branch", "expand", "kernel", "act", "out")
LAYER_KEYS = ("active", "mid", "squeeze", "residual")


class Supernet(keras.Model):
    """Every member of a stagewise ``space`` as a path through shared weights (see the module doc).

    ``net(images, net.path(arch), training=...)`` runs ``arch``; ``net.standalone(arch)`` is
    that arch as a plain Keras model with the path's weights. ``input_shape`` and
    ``num_classes`` as for :func:`search_spaces.build_model`. ``classifier_init="zeros"``
    starts the classifier's kernel at zero, so the first logits are equal (a chance-level
    loss, not the ~3.5-4 of EfficientNet's init): a supernet's features change with every
    path, and large random logits over them make early steps confidently wrong
    (``benchmarks/oneshot_interference.py`` measures what it buys).
    """

    def __init__(self, space: StagewiseSpace, input_shape=None, num_classes: int | None = None, *,
                 seed: int | None = 0, classifier_init: str = "default", name: str = "supernet"):
        super().__init__(name=name)
        if classifier_init not in ("default", "zeros"):
            raise ValueError(f"classifier_init: expected 'default' or 'zeros', got {classifier_init!r}")
        self.space = space
        self.shapes = stage_shapes(space)
        probe = space.decode_indices([0] * len(space.decision_list))
        self.input_shape_, self.classes = resolve_io(probe, input_shape, num_classes)
        self.stem, self.head = space.make_stem(), space.make_head()
        self.n_layers = max(sh.layers for sh in self.shapes)
        self.min_layers = [min(b.repeats for b in stage_blocks(space, s)) for s in range(1, len(self.shapes) + 1)]
        P: dict[str, keras.layers.Layer] = {}

        def conv(name, k, cin, cout, **kw):
            P[name] = MaskedConv(k, cin, cout, seed=seed, name=name, **kw)

        def bn(name, c):
            P[name] = MaskedBatchNorm(c, name=name)

        def conv_bn(prefix, k, cin, cout):  # the builder's "<prefix>conv" and "<prefix>bn"
            conv(prefix + "conv", k, cin, cout)
            bn(prefix + "bn", cout)

        st = self.stem
        conv("stem_conv", st.kernel, self.input_shape_[-1], st.filters)
        bn("stem_bn", st.filters)
        for s, sh in enumerate(self.shapes, start=1):
            kmax = max(sh.kernels)
            for li in range(sh.layers):
                p = f"block{s}{layer_letters(li)}_"
                cin = sh.cin if li == 0 else sh.out
                if MBCONV in sh.kinds or MBCONV_E1 in sh.kinds:
                    if MBCONV in sh.kinds:
                        conv_bn(p + "mb_expand_", 1, cin, sh.mid)
                    conv(p + "mb_dwconv", kmax, sh.mid, sh.mid, depthwise=True)
                    bn(p + "mb_dw_bn", sh.mid)
                    self._se_parts(conv, p + "mb_", sh.mid, sh.squeeze)
                    conv_bn(p + "mb_project_", 1, sh.mid, sh.out)
                if FUSED in sh.kinds:
                    conv_bn(p + "fused_expand_", kmax, cin, sh.mid)
                    self._se_parts(conv, p + "fused_", sh.mid, sh.squeeze)
                    conv_bn(p + "fused_project_", 1, sh.mid, sh.out)
                if FUSED_E1 in sh.kinds:
                    conv_bn(p + "fused1_", kmax, cin, sh.out)
                    self._se_parts(conv, p + "fused1_", sh.out, sh.squeeze)
        last = self.shapes[-1].out
        if self.head.filters:
            conv("head_conv", 1, last, self.head.filters)
            bn("head_bn", self.head.filters)
        feat = self.head.filters or last
        self.dropout = keras.layers.Dropout(self.head.dropout) if self.head.dropout else None
        init = ("zeros" if classifier_init == "zeros" else  # else the builder's (EfficientNet's)
                keras.initializers.VarianceScaling(1.0 / 3.0, "fan_out", "uniform", seed=layer_seed(seed, "predictions")))
        # (float32 under mixed precision, as the builder's classifier: a float16 softmax underflows)
        self.predictions = keras.layers.Dense(self.classes, activation="softmax", name="predictions",
                                              kernel_initializer=init,
                                              dtype="float32" if keras.config.dtype_policy().name != "float32" else None)
        self.predictions.build((None, feat))
        self.parts = P
        self.built = True

    @staticmethod
    def _se_parts(conv, p, c, squeeze):
        if squeeze:
            conv(p + "se_reduce", 1, c, squeeze, bias=True)
            conv(p + "se_expand", 1, squeeze, c, bias=True)

    # -- paths --------------------------------------------------------------------------------

    def path(self, arch: Arch) -> dict[str, np.ndarray]:
        """The inputs that select ``arch`` (a member of the space; ``ValueError`` if not)."""
        self.space.encode(arch)  # membership, with the space's own message
        S, L = len(self.shapes), self.n_layers
        out = {k: np.zeros(S, np.int32) for k in STAGE_KEYS} | {k: np.zeros((S, L), np.int32) for k in LAYER_KEYS}
        layers = {ly.name: ly for ly in plan(arch, self.input_shape_, self.classes)}
        for s, (b, sh) in enumerate(zip(arch.stages, self.shapes)):
            kind = block_kind(b)
            branches = sorted({_BRANCH[k] for k in sh.kinds})
            out["branch"][s] = branches.index(_BRANCH[kind])
            out["expand"][s] = kind == MBCONV
            out["kernel"][s] = b.kernel
            out["act"][s] = sh.activations.index(b.activation)
            out["out"][s] = b.filters
            for li in range(b.repeats):
                p = f"block{s + 1}{layer_letters(li)}_"
                out["active"][s, li] = 1
                first = layers[p + {MBCONV: "dwconv", MBCONV_E1: "dwconv", FUSED: "expand_conv", FUSED_E1: "conv"}[kind]]
                out["mid"][s, li] = first.input_shape[-1] if kind == MBCONV_E1 else first.filters
                if p + "se_reduce" in layers:
                    out["squeeze"][s, li] = layers[p + "se_reduce"].filters
                out["residual"][s, li] = p + "add" in layers
        return out

    # -- the forward pass ---------------------------------------------------------------------

    def call(self, images, path, training=False, bn_momentum=None, batch_stats=False):
        """Class probabilities of the path's arch. ``bn_momentum`` (training only) overrides
        BatchNorm's: a per-arch recalibration passes ``i / (i + 1)`` on its i-th batch.
        ``batch_stats`` (inference only): BatchNorm normalises by the batch's own statistics,
        as a one-shot search scores sampled archs without moving the shared ones."""
        bn = {"training": training, "momentum": bn_momentum, "batch_stats": batch_stats}
        P = self.parts
        st = self.stem
        x = P["stem_conv"](images, stride=st.stride)
        x = _activation(st.activation)(P["stem_bn"](x, _mask(st.filters, st.filters, self.compute_dtype), **bn))
        for s, sh in enumerate(self.shapes):
            x = self._stage(x, s, sh, path, bn)
        if self.head.filters:
            f = self.head.filters
            x = _activation(self.head.activation)(P["head_bn"](P["head_conv"](x), _mask(f, f, self.compute_dtype),
                                                               **bn))
        x = ops.mean(x, axis=(1, 2))
        if self.dropout is not None:
            x = self.dropout(x, training=training)
        return self.predictions(x)

    def _stage(self, x, s, sh, path, bn):
        kmask = (_kernel_mask(max(sh.kernels), path["kernel"][s], self.compute_dtype) if len(sh.kernels) > 1
                 else None)
        if len(sh.activations) > 1:
            fns = [_activation(a) for a in sh.activations]
            act_i = path["act"][s]

            def act(y):
                # Both activations and a select, not a switch: a switch nested in the layer's
                # cond and branch switch broke TensorFlow's gradient of nested control flow
                # (an AssertionError in cond_v2's _resolve_grad_inputs, full space only).
                out = fns[0](y)
                for i, f in enumerate(fns[1:], start=1):
                    out = ops.where(act_i == i, f(y), out)
                return out
        else:
            act = _activation(sh.activations[0])
        out_mask = _mask(sh.out, path["out"][s], self.compute_dtype)
        for li in range(sh.layers):
            def layer(x=x, li=li):
                return self._layer(x, s, li, sh, path, act, kmask, out_mask, bn)
            if li < self.min_layers[s]:
                x = layer()
            else:
                x = ops.cond(path["active"][s, li] > 0, layer, lambda x=x: self._widen(x, sh.out))
        return x

    @staticmethod
    def _widen(x, c):
        """``x`` with ``c`` channels (zeros added or unused ones dropped), for a residual or skip."""
        have = x.shape[-1]
        if have == c:
            return x
        return x[..., :c] if have > c else ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, c - have]])

    def _layer(self, x, s, li, sh, path, act, kmask, out_mask, bn):
        P = self.parts
        p = f"block{s + 1}{layer_letters(li)}_"
        stride = sh.stride if li == 0 else 1
        mid_mask = _mask(sh.mid, path["mid"][s, li], self.compute_dtype)
        squeeze = path["squeeze"][s, li]

        def se(h, q, c):
            if not sh.squeeze:
                return h

            def on():
                g = ops.mean(h, axis=(1, 2), keepdims=True)
                g = act(P[q + "se_reduce"](g)) * _mask(sh.squeeze, squeeze, self.compute_dtype)
                return h * ops.sigmoid(P[q + "se_expand"](g))
            return ops.cond(squeeze > 0, on, lambda: h)

        def bn_act(h, name, mask, with_act=True):
            h = P[name](h, mask, **bn)
            return (act(h) if with_act else h) * mask

        def mb():
            q = p + "mb_"
            if MBCONV in sh.kinds:
                def expand():
                    return bn_act(P[q + "expand_conv"](x), q + "expand_bn", mid_mask)
                h = (ops.cond(path["expand"][s] > 0, expand, lambda: self._widen(x, sh.mid))
                     if MBCONV_E1 in sh.kinds else expand())
            else:
                h = self._widen(x, sh.mid)
            h = bn_act(P[q + "dwconv"](h, stride=stride, kmask=kmask), q + "dw_bn", mid_mask)
            h = se(h, q, sh.mid)
            return bn_act(P[q + "project_conv"](h), q + "project_bn", out_mask, with_act=False)

        def fused():
            q = p + "fused_"
            h = bn_act(P[q + "expand_conv"](x, stride=stride, kmask=kmask), q + "expand_bn", mid_mask)
            h = se(h, q, sh.mid)
            return bn_act(P[q + "project_conv"](h), q + "project_bn", out_mask, with_act=False)

        def fused1():
            q = p + "fused1_"
            h = bn_act(P[q + "conv"](x, stride=stride, kmask=kmask), q + "bn", out_mask)
            return se(h, q, sh.out)

        fns = {"mb": mb, "fused": fused, "fused1": fused1}
        branches = [fns[b] for b in sorted({_BRANCH[k] for k in sh.kinds})]
        y = branches[0]() if len(branches) == 1 else ops.switch(path["branch"][s], branches)
        if True in sh.skips and stride == 1:
            res = self._widen(x, sh.out)
            fixed = li > 0 and sh.skips == (True,)  # every choice has it: no flag needed
            y = y + res if fixed else y + res * ops.cast(path["residual"][s, li], self.compute_dtype)
        return y

    # -- read-out -----------------------------------------------------------------------------

    def standalone(self, arch: Arch, *, name: str | None = None):
        """``arch`` as :func:`search_spaces.build_model` builds it, holding this supernet's weights."""
        self.space.encode(arch)  # membership, with the space's own message
        model = build_model(arch, self.input_shape_, self.classes, name=name)
        kinds = {s + 1: block_kind(b) for s, b in enumerate(arch.stages)}
        for ly in plan(arch, self.input_shape_, self.classes):
            if ly.op not in ("conv2d", "depthwise_conv2d", "batch_norm", "dense"):
                continue
            if ly.op == "dense":
                model.get_layer(ly.name).set_weights(self.predictions.get_weights())
                continue
            src = ly.name
            if ly.block.startswith("block"):
                stage = int(ly.block[5:].rstrip("abcdefghijklmnopqrstuvwxyz"))
                p, part = ly.name.split("_", 1)
                src = f"{p}_{_BRANCH[kinds[stage]]}_{part}"
            sub = self.parts[src]
            if ly.op == "batch_norm":
                w = sub.weights_for(ly.input_shape[-1])
            else:
                w = sub.weights_for(ly.kernel, ly.input_shape[-1], ly.filters)
            model.get_layer(ly.name).set_weights(w)
        return model
