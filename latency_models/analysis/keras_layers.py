"""The rules of the Keras front end (:mod:`latency_models.analysis.keras_model`): each stock
Keras layer (convolutions, dense, BatchNormalization, activations, pooling, merges, reshapes,
resizing, preprocessing) and the TFLite ops the converter lowers it to. A layer with no rule
here raises :class:`_Unknown`, and the walker has the converter lower it instead.
"""

from __future__ import annotations

import math

import numpy as np

from latency_models.analysis.ir import (
    _activation,
    _block_of,
    _bn,
    _conv,
    _dense,
    _dwconv,
    _Graph,
)
from latency_models.analysis.records import Shape, _numel


class _Unknown(Exception):
    """A layer the walker has no TFLite rule for."""


def _values(keras, var):
    return np.asarray(keras.ops.convert_to_numpy(var), dtype=np.float64)


def _act_name(fn) -> str | None:
    if fn is None:
        return None
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return name


def _lower_layer(keras, g: _Graph, layer, ins: list[int], out: Shape, node,
                 dynamic_batch: bool = False) -> int:
    """Add the TFLite ops of one stock Keras layer to ``g`` (inputs: tensor ids ``ins``;
    ``out``: its output shape; ``node``: its Keras node) and return its output tensor id;
    raises :class:`_Unknown` for a layer with no rule here."""
    L = keras.layers
    name, block = layer.name, _block_of(layer.name)
    names = [name]
    x = ins[0] if ins else None
    if x is None:
        raise _Unknown
    xs = g.shapes[x]
    if isinstance(layer, L.Conv2D):
        y = _conv(g, names, x, out, block, layer.kernel_size, layer.strides, groups=layer.groups,
                  padding=layer.padding)
        return _activation(g, _act_name(layer.activation), y, names, block)
    if isinstance(layer, L.DepthwiseConv2D):
        y = _dwconv(g, names, x, out, block, layer.kernel_size, layer.strides, padding=layer.padding)
        return _activation(g, _act_name(layer.activation), y, names, block)
    if isinstance(layer, L.SeparableConv2D):
        mid = (*out[:-1], xs[-1] * layer.depth_multiplier)
        y = _dwconv(g, names, x, mid, block, layer.kernel_size, layer.strides, padding=layer.padding)
        y = _conv(g, names, y, out, block, (1, 1), (1, 1))
        return _activation(g, _act_name(layer.activation), y, names, block)
    if isinstance(layer, L.Conv2DTranspose):
        kh, kw = layer.kernel_size
        w = kh * kw * xs[-1] * out[-1]
        has_bias = bool(layer.use_bias and _values(keras, layer.bias).any())
        y = g.add("TRANSPOSE_CONV", names, [x], out, block, kernel=(kh, kw), stride=tuple(layer.strides),
                  weights=w, bias=out[-1] if has_bias else 0, macs=_numel(xs[:-1]) * w)
        return _activation(g, _act_name(layer.activation), y, names, block)
    if isinstance(layer, L.Dense):
        has_bias = bool(layer.use_bias and _values(keras, layer.bias).any())
        y = _dense(g, names, x, out, block, bias=has_bias)
        return _activation(g, _act_name(layer.activation), y, names, block)
    if isinstance(layer, L.BatchNormalization):
        var = _values(keras, layer.moving_variance)
        gamma = _values(keras, layer.gamma) if layer.scale else np.ones_like(var)
        beta = _values(keras, layer.beta) if layer.center else np.zeros_like(var)
        scale = gamma / np.sqrt(var + layer.epsilon)
        offset = beta - _values(keras, layer.moving_mean) * scale
        return _bn(g, names, x, block, scaled=not np.allclose(scale, 1.0), offset=bool(offset.any()))
    if isinstance(layer, L.ReLU):
        slope = float(layer.negative_slope or 0.0)
        mx = None if layer.max_value is None else float(layer.max_value)
        if float(layer.threshold or 0.0) != 0.0:
            raise _Unknown
        if slope:
            y = g.add("LEAKY_RELU", names, [x], xs, block)
            return y if mx is None else g.add("MINIMUM", names, [y], xs, block, weights=1)
        if mx == 6.0:
            return g.add("RELU6", names, [x], xs, block)
        y = g.add("RELU", names, [x], xs, block)
        return y if mx is None else g.add("MINIMUM", names, [y], xs, block, weights=1)
    if isinstance(layer, L.Activation):
        return _activation(g, _act_name(layer.activation), x, names, block)
    if isinstance(layer, L.LeakyReLU):
        return g.add("LEAKY_RELU", names, [x], xs, block)
    if isinstance(layer, L.PReLU):
        return g.add("PRELU", names, [x], xs, block, weights=math.prod(layer.alpha.shape))
    if isinstance(layer, L.ELU):
        return g.add("ELU", names, [x], xs, block)
    if isinstance(layer, L.Softmax):
        return g.add("SOFTMAX", names, [x], xs, block)
    if isinstance(layer, L.ZeroPadding2D):
        return g.add("PAD", names, [x], out, block, pads=tuple(tuple(p) for p in layer.padding))
    if isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
        kind = "MAX_POOL_2D" if isinstance(layer, L.MaxPooling2D) else "AVERAGE_POOL_2D"
        return g.add(kind, names, [x], out, block, kernel=tuple(layer.pool_size), stride=tuple(layer.strides),
                     padding=layer.padding)
    if isinstance(layer, (L.GlobalAveragePooling2D, L.GlobalAveragePooling1D)):
        return g.add("MEAN", names, [x], out, block)
    if isinstance(layer, (L.GlobalMaxPooling2D, L.GlobalMaxPooling1D)):
        return g.add("REDUCE_MAX", names, [x], out, block)
    merge = {L.Add: "ADD", L.Multiply: "MUL", L.Maximum: "MAXIMUM", L.Minimum: "MINIMUM", L.Average: "ADD"}
    for cls, kind in merge.items():
        if isinstance(layer, cls):
            # Keras merges pairwise: n inputs -> n-1 binary ops (Average then divides by n).
            y = ins[0]
            for other in ins[1:]:
                y = g.add(kind, names, [y, other], out, block)
            return g.add("MUL", names, [y], out, block, weights=1) if cls is L.Average else y
    if isinstance(layer, L.Subtract):
        return g.add("SUB", names, ins, out, block)
    if isinstance(layer, L.Concatenate):
        return g.add("CONCATENATION", names, ins, out, block)
    if isinstance(layer, (L.Flatten, L.Reshape)):
        if dynamic_batch and node.input_tensors[0].shape[0] is None:
            # Keras 3 reshapes to (ops.shape(x)[0], ...): with an unknown batch the converter
            # keeps that run-time int32 shape arithmetic, which the Edge TPU cannot run.
            hint = (f"{type(layer).__name__} with an unknown batch size computes its shape at run time "
                    f"(SHAPE on int32); give the model a fixed batch, keras.Input(..., batch_size=1)")
            s = g.add("SHAPE", names, [x], (len(xs),), block, dtype="int32", reason=hint)
            s = g.add("STRIDED_SLICE", names, [s], (1,), block, dtype="int32")
            s = g.add("PACK", names, [s], (len(out),), block, dtype="int32")
            return g.add("RESHAPE", names, [x, s], out, block)
        return g.add("RESHAPE", names, [x], out, block)
    if isinstance(layer, L.Permute):
        return g.add("TRANSPOSE", names, [x], out, block)
    if isinstance(layer, L.Cropping2D):
        return g.add("STRIDED_SLICE", names, [x], out, block)
    if isinstance(layer, L.Rescaling):
        scale, offset = np.asarray(layer.scale, dtype=float), np.asarray(layer.offset, dtype=float)
        if not np.allclose(scale, 1.0):
            x = g.add("MUL", names, [x], xs, block, weights=max(scale.size, 1))
        if offset.any():
            x = g.add("ADD", names, [x], xs, block, weights=max(offset.size, 1))
        return x
    if isinstance(layer, L.Normalization):
        c = xs[-1]
        y = g.add("SUB", names, [x], xs, block, weights=c)
        return g.add("MUL", names, [y], xs, block, weights=c)
    if isinstance(layer, L.UpSampling2D):
        if layer.interpolation == "bilinear":
            return g.add("RESIZE_BILINEAR", names, [x], out, block)
        # Keras 3 repeats rows then columns: expand to 5-D, TILE, RESHAPE back, twice. With a
        # static batch the expansion is a RESHAPE (merging with the previous one); with an
        # unknown batch it is EXPAND_DIMS and the target shape is computed at run time.
        (fh, fw), (n, h, w, c) = layer.size, xs
        dynamic_batch = dynamic_batch and node.input_tensors[0].shape[0] is None
        y = x
        for tiled, shape, back in (((n, h, 1, w, c), (n, h, fh, w, c), (n, h * fh, w, c)),
                                   ((n, h * fh, w, 1, c), (n, h * fh, w, fw, c), out)):
            src = y
            y = g.add("EXPAND_DIMS" if dynamic_batch else "RESHAPE", names, [src], tiled, block)
            y = g.add("TILE", names, [y], shape, block)
            if dynamic_batch:
                sh = g.add("SHAPE", names, [src], (4,), block, dtype="int32")
                sh = g.add("STRIDED_SLICE", names, [sh], (1,), block, dtype="int32")
                sh = g.add("CONCATENATION", names, [sh], (4,), block, dtype="int32")
                y = g.add("RESHAPE", names, [y, sh], back, block)
            else:
                y = g.add("RESHAPE", names, [y], back, block)
        return y
    if isinstance(layer, L.Resizing):
        kind = "RESIZE_NEAREST_NEIGHBOR" if layer.interpolation == "nearest" else "RESIZE_BILINEAR"
        return g.add(kind, names, [x], out, block)
    raise _Unknown
