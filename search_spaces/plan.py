"""The layer plan of an arch: every layer the builder will create, without building anything.

:func:`plan` expands an :class:`~search_spaces.arch.Arch` into a flat, topologically ordered
tuple of :class:`Layer` records: the exact Keras layer names, shapes, kernel, stride,
groups, trainable parameter count and multiply-accumulates. The Keras builder
(:mod:`search_spaces.builder`) is only an interpreter of this plan, so names, parameter
counts and MACs can never disagree with the model; and latency predictors read the plan
directly, so they score an arch in microseconds without a TF graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from .arch import Arch, Block

# Ops of the plan, each mapped 1:1 to a standard Keras layer by the builder.
OPS = ("input", "conv2d", "depthwise_conv2d", "batch_norm", "activation", "global_pool",
       "dense", "add", "multiply", "dropout")

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Layer:
    """One layer: its Keras name, op, inputs (layer names) and static facts."""

    name: str
    op: str
    inputs: tuple[str, ...]
    input_shape: Shape
    output_shape: Shape
    block: str  # "stem", "block3b", "head": the unit a latency breakdown is reported by
    kernel: int = 0
    stride: int = 1
    filters: int = 0
    use_bias: bool = False
    activation: str | None = None
    rate: float = 0.0
    keepdims: bool = False

    @property
    def depthwise(self) -> bool:
        return self.op == "depthwise_conv2d"

    @property
    def groups(self) -> int:
        """Convolution groups: the channel count for depthwise convs, else 1."""
        return self.input_shape[-1] if self.depthwise else 1

    @property
    def params(self) -> int:
        """Trainable parameters (BN's moving statistics are not trainable)."""
        cin = self.input_shape[-1] if self.input_shape else 0
        if self.op == "conv2d":
            return self.kernel * self.kernel * cin * self.filters + (self.filters if self.use_bias else 0)
        if self.op == "depthwise_conv2d":
            return self.kernel * self.kernel * cin + (cin if self.use_bias else 0)
        if self.op == "batch_norm":
            return 2 * cin
        if self.op == "dense":
            return cin * self.filters + self.filters
        return 0

    @property
    def non_trainable_params(self) -> int:
        return 2 * self.input_shape[-1] if self.op == "batch_norm" else 0

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one inference (convs and dense only, as papers count them)."""
        if self.op in ("conv2d", "depthwise_conv2d"):
            h, w, c = self.output_shape
            cin = self.input_shape[-1]
            per_pixel = self.kernel * self.kernel * (cin if self.op == "depthwise_conv2d" else cin * c)
            return h * w * per_pixel
        if self.op == "dense":
            return self.input_shape[-1] * self.filters
        return 0

    @property
    def activation_bytes(self) -> int:
        """int8 bytes of this layer's output tensor."""
        return math.prod(self.output_shape)


def layer_letters(i: int) -> str:
    # Keras-applications style layer letters: a..z, then aa, ab, ...
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(ord("a") + r) + s
    return s


def _same(size: int, stride: int) -> int:
    return -(-size // stride)


class _Planner:
    def __init__(self) -> None:
        self.layers: list[Layer] = []
        self.shapes: dict[str, Shape] = {}

    def add(self, name: str, op: str, inputs: tuple[str, ...], out_shape: Shape, block: str, **kw) -> str:
        if name in self.shapes:  # a bug in the planner, never user input
            raise RuntimeError(f"duplicate layer name {name!r}")
        in_shape = self.shapes[inputs[0]] if inputs else out_shape
        self.layers.append(Layer(name, op, inputs, in_shape, out_shape, block, **kw))
        self.shapes[name] = out_shape
        return name

    def conv(self, x: str, name: str, block: str, filters: int, kernel: int, stride: int,
             *, use_bias: bool = False, activation: str | None = None) -> str:
        h, w, _ = self.shapes[x]
        out = (_same(h, stride), _same(w, stride), filters)
        return self.add(name, "conv2d", (x,), out, block, kernel=kernel, stride=stride,
                        filters=filters, use_bias=use_bias, activation=activation)

    def dwconv(self, x: str, name: str, block: str, kernel: int, stride: int) -> str:
        h, w, c = self.shapes[x]
        return self.add(name, "depthwise_conv2d", (x,), (_same(h, stride), _same(w, stride), c), block,
                        kernel=kernel, stride=stride, filters=c)

    def bn(self, x: str, name: str, block: str) -> str:
        return self.add(name, "batch_norm", (x,), self.shapes[x], block)

    def act(self, x: str, name: str, block: str, activation: str) -> str:
        return self.add(name, "activation", (x,), self.shapes[x], block, activation=activation)

    def conv_bn_act(self, x: str, prefix: str, block: str, filters: int, kernel: int, stride: int,
                    activation: str | None) -> str:
        x = self.conv(x, f"{prefix}conv", block, filters, kernel, stride)
        x = self.bn(x, f"{prefix}bn", block)
        return self.act(x, f"{prefix}act", block, activation) if activation else x

    def se(self, x: str, p: str, block: str, squeeze_to: int, activation: str) -> str:
        c = self.shapes[x][-1]
        s = self.add(f"{p}se_squeeze", "global_pool", (x,), (1, 1, c), block, keepdims=True)
        s = self.conv(s, f"{p}se_reduce", block, squeeze_to, 1, 1, use_bias=True, activation=activation)
        s = self.conv(s, f"{p}se_expand", block, c, 1, 1, use_bias=True, activation="sigmoid")
        return self.add(f"{p}se_excite", "multiply", (x, s), self.shapes[x], block)

    def layer(self, x: str, b: Block, block: str, stride: int, ref_in: int) -> str:
        """One layer of a stage; ``ref_in`` is the width the expansion and SE ratios apply to."""
        p = f"{block}_"
        cin = self.shapes[x][-1]
        inp = x
        squeeze_to = max(1, int(ref_in * b.se_ratio)) if b.se_ratio else 0
        mid = max(1, int(round(ref_in * b.expansion)))
        if b.type in ("mbconv", "ds"):  # ds is an mbconv without the expansion
            if b.expansion != 1:
                x = self.conv_bn_act(x, f"{p}expand_", block, mid, 1, 1, b.activation)
            x = self.dwconv(x, f"{p}dwconv", block, b.kernel, stride)
            x = self.bn(x, f"{p}dw_bn", block)
            x = self.act(x, f"{p}dw_act", block, b.activation)
            if squeeze_to:
                x = self.se(x, p, block, squeeze_to, b.activation)
            x = self.conv_bn_act(x, f"{p}project_", block, b.filters, 1, 1, None)
        elif b.type == "conv" or (b.type == "fused_mbconv" and b.expansion == 1):
            x = self.conv_bn_act(x, p, block, b.filters, b.kernel, stride, b.activation)
            if squeeze_to:
                x = self.se(x, p, block, squeeze_to, b.activation)
        else:  # fused_mbconv with expansion
            x = self.conv_bn_act(x, f"{p}expand_", block, mid, b.kernel, stride, b.activation)
            if squeeze_to:
                x = self.se(x, p, block, squeeze_to, b.activation)
            x = self.conv_bn_act(x, f"{p}project_", block, b.filters, 1, 1, None)
        if b.skip and stride == 1 and cin == b.filters:
            x = self.add(f"{p}add", "add", (x, inp), self.shapes[x], block)
        return x


def resolve_io(arch: Arch, input_shape=None, num_classes: int | None = None) -> tuple[Shape, int]:
    """Validated ``(input_shape, num_classes)``: defaults ``(res, res, 3)`` and the arch's classes or 1000."""
    shape = tuple(input_shape) if input_shape is not None else (arch.resolution, arch.resolution, 3)
    if len(shape) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(f"input_shape: expected (height, width, channels) of positive ints, got {input_shape!r}")
    classes = num_classes if num_classes is not None else (arch.num_classes or 1000)
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"num_classes: expected a positive integer, got {classes!r}")
    return shape, classes


def plan(arch: Arch, input_shape=None, num_classes: int | None = None) -> tuple[Layer, ...]:
    """The layers :func:`search_spaces.build_model` creates for ``arch``, in order.

    ``input_shape`` defaults to ``(res, res, 3)``; ``num_classes`` to the arch's, else 1000.
    """
    return _plan(arch, *resolve_io(arch, input_shape, num_classes))


@lru_cache(maxsize=4096)
def _plan(arch: Arch, input_shape: Shape, classes: int) -> tuple[Layer, ...]:
    p = _Planner()
    x = p.add("input", "input", (), input_shape, "stem")
    st = arch.stem
    x = p.conv_bn_act(x, "stem_", "stem", st.filters, st.kernel, st.stride, st.activation)
    for si, b in enumerate(arch.stages, start=1):
        for li in range(b.repeats):
            first = li == 0
            ref_in = (b.expand_from or p.shapes[x][-1]) if first else p.shapes[x][-1]
            x = p.layer(x, b, f"block{si}{layer_letters(li)}", b.stride if first else 1, ref_in)
    hd = arch.head
    if hd.filters:
        x = p.conv_bn_act(x, "head_", "head", hd.filters, 1, 1, hd.activation)
    c = p.shapes[x][-1]
    x = p.add("head_pool", "global_pool", (x,), (c,), "head")
    if hd.dropout:
        x = p.add("head_dropout", "dropout", (x,), (c,), "head", rate=hd.dropout)
    p.add("predictions", "dense", (x,), (classes,), "head", filters=classes, use_bias=True, activation="softmax")
    return tuple(p.layers)


def layer_plan(b: Block, input_shape: Shape, stride: int, ref_in: int, name: str = "block1a") -> tuple[Layer, ...]:
    """The layers :func:`plan` emits for one layer of a stage, from the tensor entering it:
    an ``input`` layer of ``input_shape``, then the block's layers named ``name_*``.
    ``stride`` is the layer's (the stage's on its first layer, else 1) and ``ref_in`` the width
    its expansion and SE ratios apply to. Lets a predictor lower one block on its own."""
    p = _Planner()
    x = p.add("input", "input", (), tuple(input_shape), "stem")
    p.layer(x, b, name, stride, ref_in)
    return tuple(p.layers)


def count_params(arch: Arch, input_shape: Shape | None = None, num_classes: int | None = None) -> int:
    """Trainable parameters of the built model, computed from the plan (no TF)."""
    return sum(layer.params for layer in plan(arch, input_shape, num_classes))


def count_macs(arch: Arch, input_shape: Shape | None = None, num_classes: int | None = None) -> int:
    """Multiply-accumulates of one inference, computed from the plan (no TF)."""
    return sum(layer.macs for layer in plan(arch, input_shape, num_classes))
