"""The internal IR that mimics the TFLite converter: a graph of raw ops (one per Keras-level
operation) and the converter's rewrites applied to it (:func:`_lower`), shared by the arch and
Keras front ends so that they cannot disagree; plus the lowering of a layer plan
(:func:`_graph_of`). See :mod:`latency_models.analysis` for the table of lowerings.
"""

from __future__ import annotations

import re
from typing import Any

from search_spaces.plan import plan

from latency_models.analysis.records import _ITEMSIZE, ModelAnalysis, Shape, _finish, _numel, _Row
from latency_models.analysis.rules import _type_reason, edgetpu_reason

# ------------------------------------------------------------------------------ shared IR
#
# The arch and Keras sources first emit "raw" ops -- one per Keras-level operation, plus the
# pseudo op "BN" -- into a small graph, then _lower() applies the converter's rewrites in one
# forward pass: BN folding, relu/relu6 fusion, PAD into a SAME conv, reshape merging, moving
# element-wise ops above reshapes, folding constant MUL/ADD/SUB into a neighbouring conv, and the 1x1 quirks (keepdims MEAN removed, a residual
# ADD's second operand reshaped to 1-D). Both sources share that pass, so they cannot disagree
# on what the converter does. Keras models are then put in the converter's op order
# (_tflite_order); plans already are (the builder calls layers in plan order).


# Converter rewrites mirrored by the Keras and arch lowering.
_FOLDS_BN = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"})
_FUSED_ACTS = frozenset({"RELU", "RELU6", "RELU_N1_TO_1"})
_TAKES_FUSED_ACT = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV",
                              "ADD", "SUB", "MUL", "DIV"})
# TFLite's ReorderElementwiseAndMoveOperations: an element-wise op reading the only output of
# a data-movement op is moved above it (seen in TF 2.21: TANH above a RESHAPE).
_HOISTED = frozenset({"CEIL", "EXP", "FLOOR", "NEG", "RELU", "RELU_N1_TO_1", "RELU6", "ROUND", "TANH",
                      "SQRT", "SQUARE", "LOGISTIC"})
_MOVES = frozenset({"DEPTH_TO_SPACE", "EXPAND_DIMS", "SQUEEZE", "RESHAPE", "TRANSPOSE"})


class _Op:
    __slots__ = ("op_type", "names", "inputs", "outputs", "block", "kernel", "stride", "groups",
                 "depthwise", "act", "weights", "bias", "macs", "padding", "pads", "bn", "reason", "dead",
                 "counts")

    def __init__(self, op_type: str, names: list[str], inputs: list[int], outputs: list[int], block: str,
                 *, kernel=None, stride=None, groups: int = 1, depthwise: bool = False, weights: int = 0,
                 bias: int = 0, macs: int = 0, padding: str | None = None, pads=None, bn=None,
                 reason: str | None = None, counts: tuple[int, int] | None = None):
        self.op_type, self.names, self.inputs, self.outputs, self.block = op_type, names, inputs, outputs, block
        self.kernel, self.stride, self.groups, self.depthwise = kernel, stride, groups, depthwise
        self.act: str | None = None
        self.weights, self.bias, self.macs = weights, bias, macs  # int8 elements, int32 elements
        self.padding, self.pads = padding, pads
        self.bn = bn  # for "BN": (channels, scale is not 1, offset is not 0)
        self.reason = reason
        self.dead = False
        # (params, param bytes) as read from a converted .tflite, for ops spliced in from the
        # converter: their constants need not be int8 weights + int32 biases.
        self.counts = counts

    def const_elements(self) -> int:
        """Elements of the constant operand of a one-input MUL/ADD/SUB (0: not such an op)."""
        if self.op_type not in ("MUL", "ADD", "SUB") or len(self.inputs) != 1:
            return 0
        return self.counts[0] if self.counts is not None else self.weights


class _Graph:
    def __init__(self) -> None:
        self.shapes: list[Shape] = []
        self.dtypes: list[str] = []
        self.ops: list[_Op] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    def tensor(self, shape: Shape, dtype: str = "int8") -> int:
        self.shapes.append(tuple(shape))
        self.dtypes.append(dtype)
        return len(self.shapes) - 1

    def add(self, op_type: str, names: list[str], inputs: list[int], shape: Shape, block: str,
            dtype: str = "int8", **kw: Any) -> int:
        t = self.tensor(shape, dtype)
        self.ops.append(_Op(op_type, names, list(inputs), [t], block, **kw))
        return t


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    # TF's SAME padding: the total pad makes ceil(size / stride) outputs, the extra pixel at the end.
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _lower(g: _Graph) -> list[_Op]:
    """Apply the TFLite converter's rewrites to the raw ops, in order; returns the final ops."""
    readers: dict[int, int] = {}
    for op in g.ops:
        for t in op.inputs:
            readers[t] = readers.get(t, 0) + 1
    for t in g.outputs:
        readers[t] = readers.get(t, 0) + 1
    out: list[_Op] = []
    producer: dict[int, _Op] = {}
    alias: dict[int, int] = {}  # output of a removed identity op -> its input

    def emit(op: _Op) -> None:
        out.append(op)
        for t in op.outputs:
            producer[t] = op

    def absorb(into: _Op, op: _Op) -> None:
        into.names.extend(n for n in op.names if n not in into.names)
        into.outputs = op.outputs
        for t in op.outputs:
            producer[t] = into

    def drop(op: _Op) -> None:
        src, dst = op.inputs[0], op.outputs[0]
        alias[dst] = src
        readers[src] = readers.get(src, 0) - 1 + readers.get(dst, 0)

    for op in g.ops:
        if alias:
            op.inputs = [alias.get(t, t) for t in op.inputs]
        src = producer.get(op.inputs[0]) if len(op.inputs) == 1 else None
        sole = src is not None and readers.get(op.inputs[0], 0) == 1 and len(src.outputs) == 1
        kind = op.op_type
        if kind == "BN":
            channels, scaled, offset = op.bn
            if sole and src.op_type in _FOLDS_BN and src.act is None:
                # Folded into the weights; an all-zero offset leaves FC/TRANSPOSE_CONV bias-free.
                if offset and not src.bias:
                    src.bias = g.shapes[src.outputs[0]][-1]
                absorb(src, op)
            elif scaled or offset:
                x = op.inputs[0]
                if scaled:
                    x = g.tensor(g.shapes[op.outputs[0]]) if offset else op.outputs[0]
                    emit(_Op("MUL", list(op.names), [op.inputs[0]], [x], op.block, weights=channels))
                if offset:
                    emit(_Op("ADD", list(op.names), [x], op.outputs, op.block, weights=channels))
            else:  # scale 1 and offset 0: nothing left to compute
                drop(op)
            continue
        if kind == "MEAN" and g.shapes[op.inputs[0]] == g.shapes[op.outputs[0]]:
            # A keepdims mean over 1x1 (squeeze-excite at the last stage of a 32 px proxy) is an
            # identity: the converter removes it.
            drop(op)
            continue
        hoisted_before = None
        while kind in _HOISTED and sole and src.op_type in _MOVES:
            # Swap: the element-wise op reads the move's input, the move reads its result.
            move, t = src, g.tensor(g.shapes[src.inputs[0]], g.dtypes[src.inputs[0]])
            op.inputs, op.outputs, move.inputs, move.outputs = [move.inputs[0]], [t], [t, *move.inputs[1:]], op.outputs
            producer[move.outputs[0]] = move
            readers[t] = 1
            hoisted_before = move
            src = producer.get(op.inputs[0])
            sole = src is not None and readers.get(op.inputs[0], 0) == 1 and len(src.outputs) == 1
        const = op.const_elements()
        if const and sole and src.op_type in _FOLDS_BN and src.act is None and \
                const in (1, g.shapes[src.outputs[0]][-1]):
            # Like BN: a scalar or per-channel constant MUL/ADD/SUB right after a conv or FC is
            # folded into its weights/bias (TF 2.21; hard_sigmoid's +3, a custom scale layer).
            if kind != "MUL" and not src.bias and src.counts is None:
                src.bias = g.shapes[src.outputs[0]][-1]
            absorb(src, op)
            src.act = op.act
            continue
        if kind in _FUSED_ACTS and sole and src.op_type in _TAKES_FUSED_ACT and src.act is None:
            src.act = kind
            absorb(src, op)
            continue
        if hoisted_before is not None:
            out.insert(out.index(hoisted_before), op)
            producer[op.outputs[0]] = op
            continue
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D") and op.padding == "valid" and sole and src.op_type == "PAD":
            (pt, pb), (pl, pr) = src.pads
            h, w = g.shapes[src.inputs[0]][1:3]
            if (pt, pb) == _same_pads(h, op.kernel[0], op.stride[0]) and \
                    (pl, pr) == _same_pads(w, op.kernel[1], op.stride[1]):
                # TF 2.21 turns PAD + VALID conv into one SAME conv when the pads are SAME's.
                src.dead = True
                op.names = src.names + op.names
                op.inputs = list(src.inputs)
                op.padding = "same"
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D") and sole and src.const_elements() == 1 and src.act is None \
                and (src.op_type == "MUL" or op.padding == "valid"):
            # A scalar constant in front of a conv folds into its weights (MUL; the zero padding
            # scales with it) or, with VALID padding only, its bias (ADD/SUB), as TF 2.21 does:
            # Rescaling(1/255) before a stem conv vanishes. Per-channel constants stay.
            src.dead = True
            op.names = src.names + [n for n in op.names if n not in src.names]
            op.inputs = list(src.inputs)
        if kind == "RESHAPE" and sole and src.op_type == "RESHAPE":
            absorb(src, op)
            continue
        if kind == "ADD" and len(op.inputs) == 2 and op.counts is None:
            # (Not for an ADD spliced from a converted layer: the converter already decided for it,
            # and does not reshape a MUL's output, e.g. InceptionResNetV2's scale layers at 1x1.)
            shape = g.shapes[op.inputs[0]]
            if len(shape) == 4 and shape[:3] == (1, 1, 1) and g.shapes[op.inputs[1]] == shape:
                # At 1x1 the converter treats the second operand like a bias: RESHAPE to 1-D
                # right after its producer, then ADD (MobileNetV2 and our residuals at 32 px).
                t = g.tensor(shape[-1:])
                r = _Op("RESHAPE", list(op.names), [op.inputs[1]], [t], op.block)
                p = producer.get(op.inputs[1])
                out.insert(out.index(p) + 1 if p is not None else 0, r)
                producer[t] = r
                op.inputs = [op.inputs[0], t]
        emit(op)
    if alias:
        g.outputs = [alias.get(t, t) for t in g.outputs]
    return [op for op in out if not op.dead]


def _tflite_order(ops: list[_Op], inputs: list[int]) -> list[_Op]:
    """The ops in the order the converter writes them.

    TensorFlow's graph importer lays ops out in reverse post-order of a depth-first walk from
    the inputs; where a tensor has several readers (parallel branches) this is not the
    Keras call order: TF visits the readers of a tensor in descending name order, so of two
    branches the one with the larger layer name finishes first and is written last (seen in
    TF 2.21: Flatten+Dense before GlobalAveragePooling2D, hard_sigmoid before LeakyReLU, a
    1x1 residual's RESHAPE right after its producer). Ops reading no op output are extra roots.
    """
    readers: dict[int, list[_Op]] = {}
    for op in ops:
        for t in dict.fromkeys(op.inputs):
            readers.setdefault(t, []).append(op)
    # Ops spliced in from a converted layer share the layer's name and are already in the
    # converter's order; visiting the later one first makes this walk reproduce that order.
    pos = {id(op): i for i, op in enumerate(ops) if op.counts is not None}
    for t, rs in readers.items():
        if len(rs) > 1:
            rs.sort(key=lambda o: (o.names[0] if o.names else "", pos.get(id(o), 0)), reverse=True)
    made = {t for op in ops for t in op.outputs}
    roots = [r for t in inputs for r in readers.get(t, ())]
    roots += [op for op in ops if not any(t in made for t in op.inputs)]
    seen: set[int] = set()
    post: list[_Op] = []
    for root in roots:
        if id(root) in seen:
            continue
        seen.add(id(root))
        stack = [(root, iter([r for t in root.outputs for r in readers.get(t, ())]))]
        while stack:
            op, children = stack[-1]
            for child in children:
                if id(child) not in seen:
                    seen.add(id(child))
                    stack.append((child, iter([r for t in child.outputs for r in readers.get(t, ())])))
                    break
            else:
                post.append(op)
                stack.pop()
    post.reverse()
    return post


def _finish_graph(g: _Graph, ops: list[_Op], source: str, *, plain: bool = False, **kw: Any) -> ModelAnalysis:
    """ModelAnalysis of lowered ops; ``plain``: every tensor is static, int8, at most 4-D, batch 1
    (true of archs by construction), so only the op type can make an op unsupported."""
    rows = []
    for op in ops:
        if op.reason:
            reason = op.reason
        elif plain and op.op_type != "SOFTMAX":
            reason = _type_reason(op.op_type)
        else:
            ts = (*op.inputs, *op.outputs)
            reason = edgetpu_reason(op.op_type, [g.shapes[t] for t in ts], [g.dtypes[t] for t in ts])
        rows.append(_Row(
            name="+".join(op.names), op_type=op.op_type, inputs=op.inputs, outputs=op.outputs, kernel=op.kernel,
            stride=op.stride, groups=op.groups, depthwise=op.depthwise, act=op.act, macs=op.macs,
            params=op.counts[0] if op.counts else op.weights + op.bias,
            param_bytes=op.counts[1] if op.counts else op.weights + 4 * op.bias,
            dtype=g.dtypes[op.outputs[0]], reason=reason, block=op.block))
    nbytes = {t: _numel(s) * _ITEMSIZE.get(g.dtypes[t], 1) for t, s in enumerate(g.shapes)}
    return _finish(rows, dict(enumerate(g.shapes)), nbytes, g.inputs, g.outputs, source, **kw)


# ------------------------------------------------------------------------------ raw op builders
# Shared by the arch and Keras sources: one function per Keras-level operation.


def _conv(g: _Graph, names, x: int, out: Shape, block: str, kernel, stride, *, groups: int = 1,
          padding: str = "same") -> int:
    # TFLite's CONV_2D always has a bias (from BN folding, or zeros), so it is always counted.
    cin, cout = g.shapes[x][-1], out[-1]
    w = kernel[0] * kernel[1] * (cin // max(groups, 1)) * cout
    return g.add("CONV_2D", list(names), [x], out, block, kernel=tuple(kernel), stride=tuple(stride), groups=groups,
                 weights=w, bias=cout, macs=_numel(out[:-1]) * w, padding=padding)


def _dwconv(g: _Graph, names, x: int, out: Shape, block: str, kernel, stride, *, padding: str = "same") -> int:
    cin, cout = g.shapes[x][-1], out[-1]
    w = kernel[0] * kernel[1] * cout
    return g.add("DEPTHWISE_CONV_2D", list(names), [x], out, block, kernel=tuple(kernel), stride=tuple(stride),
                 groups=cin, depthwise=True, weights=w, bias=cout, macs=_numel(out[:-1]) * w, padding=padding)


def _dense(g: _Graph, names, x: int, out: Shape, block: str, *, bias: bool = True) -> int:
    cin, cout = g.shapes[x][-1], out[-1]
    return g.add("FULLY_CONNECTED", list(names), [x], out, block, weights=cin * cout, bias=cout if bias else 0,
                 macs=_numel(out[:-1]) * cin * cout)


def _bn(g: _Graph, names, x: int, block: str, *, scaled: bool = True, offset: bool = True) -> int:
    c = g.shapes[x][-1]
    return g.add("BN", list(names), [x], g.shapes[x], block, bn=(c, scaled, offset))


_ACTIVATION_ALIASES = {"swish": "silu", "hard_swish": "hard_silu", None: "linear"}
_SIMPLE_ACTIVATIONS = {"relu": "RELU", "relu6": "RELU6", "sigmoid": "LOGISTIC", "hard_silu": "HARD_SWISH",
                       "tanh": "TANH", "softmax": "SOFTMAX", "gelu": "GELU", "elu": "ELU",
                       "leaky_relu": "LEAKY_RELU", "exponential": "EXP", "log_softmax": "LOG_SOFTMAX"}


def _activation(g: _Graph, act: str | None, x: int, names, block: str) -> int:
    """The ops of an activation function (plan/Keras name); returns the output tensor."""
    act = _ACTIVATION_ALIASES.get(act, act)
    shape = g.shapes[x]
    if act == "linear":
        return x
    if act in _SIMPLE_ACTIVATIONS:
        return g.add(_SIMPLE_ACTIVATIONS[act], list(names), [x], shape, block)
    if act == "silu":  # x * sigmoid(x): TF 2.21 emits two ops, no fused swish
        s = g.add("LOGISTIC", list(names), [x], shape, block)
        return g.add("MUL", list(names), [x, s], shape, block)
    if act == "hard_sigmoid":  # Keras 3: relu6(x + 3) / 6 -> ADD (fused RELU6) + MUL; after a conv
        # the +3 folds into its bias and RELU6 fuses into it (_lower): CONV_2D/RELU6 + MUL.
        a = g.add("ADD", list(names), [x], shape, block, weights=1)
        r = g.add("RELU6", list(names), [a], shape, block)
        return g.add("MUL", list(names), [r], shape, block, weights=1)
    return g.add("UNKNOWN", list(names), [x], shape, block,
                 reason=f"activation {act!r} has no known TFLite lowering")


_BLOCK = re.compile(r"^(stem|head|block\d+[a-z]+)(?:_|$)")


def _block_of(name: str) -> str:
    """Our builder's block of a layer name ("block3b_dwconv" -> "block3b"; "predictions" -> "head")."""
    m = _BLOCK.match(name)
    if m:
        return m.group(1)
    return "head" if name == "predictions" else ""


def _arch_graph(arch, input_shape: Shape, classes: int) -> tuple[_Graph, list[_Op]]:
    return _graph_of(plan(arch, input_shape, classes))


def _graph_of(layers) -> tuple[_Graph, list[_Op]]:
    """The lowered ops of a layer plan (and the graph holding their tensors)."""
    g = _Graph()
    t: dict[str, int] = {}
    for ly in layers:
        out = (1, *ly.output_shape)
        x = t[ly.inputs[0]] if ly.inputs else -1
        names = [ly.name]
        if ly.op == "input":
            y = g.tensor(out)
            g.inputs.append(y)
        elif ly.op == "conv2d":
            y = _conv(g, names, x, out, ly.block, (ly.kernel, ly.kernel), (ly.stride, ly.stride))
            y = _activation(g, ly.activation, y, names, ly.block)
        elif ly.op == "depthwise_conv2d":
            y = _dwconv(g, names, x, out, ly.block, (ly.kernel, ly.kernel), (ly.stride, ly.stride))
        elif ly.op == "batch_norm":
            y = _bn(g, names, x, ly.block)
        elif ly.op == "activation":
            y = _activation(g, ly.activation, x, names, ly.block)
        elif ly.op == "global_pool":
            y = g.add("MEAN", names, [x], out, ly.block)
        elif ly.op == "dense":
            y = _dense(g, names, x, out, ly.block)
            y = _activation(g, ly.activation, y, names, ly.block)
        elif ly.op == "add":
            y = g.add("ADD", names, [t[i] for i in ly.inputs], out, ly.block)
        elif ly.op == "multiply":
            y = g.add("MUL", names, [t[i] for i in ly.inputs], out, ly.block)
        elif ly.op == "dropout":
            y = x
        else:  # the plan's op vocabulary is closed; a new op must be taught here
            raise RuntimeError(f"analysis has no rule for plan op {ly.op!r}")
        t[ly.name] = y
    g.outputs.append(y)
    return g, _lower(g)
