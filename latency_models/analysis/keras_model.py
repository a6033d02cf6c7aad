"""The Keras front end: :func:`analyze_keras` walks a Keras 3 model's graph into the IR,
each stock layer by its rule (:mod:`latency_models.analysis.keras_layers`), any other layer
through the converter. See :mod:`latency_models.analysis`.
"""

from __future__ import annotations

import logging
import math

from latency_models.errors import ConversionError
from latency_models.analysis.converter import _converter_lowering, _kshape, _Lowering, _short_error, _to_int8_quietly, _unique_inputs
from latency_models.analysis.ir import _block_of, _finish_graph, _Graph, _lower, _Op, _tflite_order
from latency_models.analysis.keras_layers import _lower_layer, _Unknown
from latency_models.analysis.records import ModelAnalysis, _finish
from latency_models.analysis.tflite import _read_tflite

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ Keras source


def analyze_keras(model, *, dynamic_batch: bool = False) -> ModelAnalysis:
    """Analyse a Keras 3 model: functional or (built) Sequential, nested models included, or a
    subclassed model whose input shape is known.

    Layers without a rule (Lambda, custom layers) are lowered by the TFLite converter itself:
    the layer alone is converted to int8 (batch-1 inputs, random calibration, cached per layer
    class, config, input shapes and weights) and its ops, named after the layer and keeping
    their Edge TPU verdicts, are spliced into the table (listed in ``converted_layers``). Only
    when that fails does the layer become an ``UNKNOWN`` op marked unsupported -- the Edge TPU
    partition ends there -- listed with the reason in ``assumed_cpu``; the walk goes on. Bias
    and BN values are read to mirror the converter exactly (it drops all-zero
    FULLY_CONNECTED/TRANSPOSE_CONV biases and zero BN offsets).

    A subclassed model has no static graph to walk: when it has been built with a known input
    shape (called once, or ``model.build(shape)``) it is converted whole and the ``.tflite`` is
    analysed (``source`` stays "keras", ``converted_layers`` is its name); a conversion failure
    raises :class:`~latency_models.convert.ConversionError`. Without a known input shape, or
    for an unbuilt Sequential model, this raises a one-line ``ValueError`` saying how to fix it.

    ``dynamic_batch=False`` describes the model as :func:`latency_models.convert.to_int8_tflite`
    converts it (batch fixed to 1). ``True`` describes TensorFlow's own
    ``TFLiteConverter.from_keras_model`` on a model whose batch size is None: Keras 3's
    Flatten, Reshape and nearest UpSampling2D then keep run-time shape arithmetic (SHAPE,
    STRIDED_SLICE, PACK/CONCATENATION on int32), which the Edge TPU cannot run.
    """
    import keras

    if not isinstance(model, keras.Model):
        raise ValueError(f"analyze_keras: expected a keras.Model, got {type(model).__name__}")
    graph = _functional(model, keras)
    if graph is None:
        return _analyze_converted_model(keras, model)
    trainable = _trainable(model)
    w = _KerasWalker(keras, dynamic_batch)
    for kt in graph.inputs:
        tid = w.g.tensor(_kshape(kt))
        w.g.inputs.append(tid)
        w.ids[id(kt)] = tid
    w.walk(graph)
    w.g.outputs.extend(w.ids[id(kt)] for kt in graph.outputs)
    ops = _tflite_order(_lower(w.g), w.g.inputs)
    return _finish_graph(w.g, ops, "keras", keras_trainable=trainable, model_name=model.name,
                         assumed_cpu=w.assumed_cpu, converted_layers=w.converted)


def _trainable(model) -> int:
    return int(sum(math.prod(v.shape) for v in model.trainable_weights))


def _built_input_shapes(model) -> list[tuple] | None:
    """The input shapes a subclassed model was built with (None: unknown), batch included.

    Keras 3 records the shapes a layer was built for in ``_build_shapes_dict`` -- on the first
    call and on ``build(shape)`` alike -- keyed by the argument of ``build``; a subclassed model
    exposes neither ``inputs`` nor ``input_shape``.
    """
    shapes = getattr(model, "_build_shapes_dict", None)
    if not shapes or len(shapes) != 1:
        return None
    (shape,) = shapes.values()

    def is_shape(x) -> bool:
        return isinstance(x, (tuple, list)) and all(d is None or isinstance(d, int) for d in x)

    if is_shape(shape):
        return [tuple(shape)]
    if isinstance(shape, (tuple, list)) and shape and all(is_shape(x) for x in shape):
        return [tuple(x) for x in shape]  # a list of inputs, passed as one list argument
    return None


def _analyze_converted_model(keras, model) -> ModelAnalysis:
    """A model without a static graph, converted whole (see :func:`analyze_keras`)."""
    label = f"analyze_keras: model {model.name!r} ({type(model).__name__})"
    shapes = _built_input_shapes(model)
    how = ("call it once on an input (model(x)) or build it with model.build((None, H, W, C)) first"
           if not isinstance(model, keras.Sequential) else
           "give it a keras.Input, call it once on an input or build it with model.build((None, H, W, C))")
    if shapes is None:
        raise ValueError(f"{label} has no static graph and its input shape is unknown: {how}")
    if any(d is None for s in shapes for d in s[1:]):
        raise ValueError(f"{label} has no static graph and was built for input shape(s) "
                         f"{', '.join(map(str, shapes))} with unknown dimensions: {how} of a fixed size")
    inputs = [keras.Input(shape=tuple(s[1:]), batch_size=1, name=f"nas_input_{i}") for i, s in enumerate(shapes)]
    n_nodes = len(model._inbound_nodes)
    try:
        try:
            y = model(inputs[0] if len(shapes) == 1 else inputs)
            wrapper = keras.Model(inputs[0] if len(shapes) == 1 else inputs, y, name=model.name)
        except Exception as e:  # noqa: BLE001 - whatever the model's call raises, the answer is the same
            raise ConversionError(f"{label} has no static graph and cannot be called on a symbolic input of "
                                  f"shape {shapes[0]}: {_short_error(e)}") from e
        try:
            blob = _to_int8_quietly(wrapper, [tuple(s[1:]) for s in shapes])
        except Exception as e:  # noqa: BLE001 - the converter raises many types
            raise ConversionError(f"{label} has no static graph and does not convert to int8 TFLite: "
                                  f"{_short_error(e)}") from e
    finally:
        # The symbolic call above recorded a node on the user's model; leave it as it was.
        del model._inbound_nodes[n_nodes:]
    log.debug("analyze_keras: %s has no static graph; analysed its int8 conversion", model.name)
    # As analyze_tflite, but op names skip the wrapper's scope: they name the model's own layers.
    t = _read_tflite(blob, scope_skip=1)
    # Counted after the call: a model built by build(shape) creates its layers' weights only then.
    return _finish(t.rows, t.shapes, t.nbytes, t.inputs, t.outputs, "keras", keras_trainable=_trainable(model),
                   model_name=model.name, converted_layers=(model.name,))


def _functional(model, keras):
    # A built Sequential wraps a Functional graph; Keras keeps it in `_functional`.
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if hasattr(model, "_nodes_by_depth") and getattr(model, "inputs", None) is not None:
        return model
    return None


class _KerasWalker:
    """Turns the nodes of a Keras graph into raw ops, in the order Keras executes them."""

    IDENTITY = ("InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity")

    def __init__(self, keras, dynamic_batch: bool = False) -> None:
        self.keras = keras
        self.dynamic_batch = dynamic_batch
        self.L = keras.layers
        self.g = _Graph()
        self.ids: dict[int, int] = {}  # id(KerasTensor) -> tensor id
        self.assumed_cpu: list[tuple[str, str, str]] = []  # (layer, class, reason): no lowering at all
        self.converted: list[str] = []  # layers lowered by the TFLite converter

    def walk(self, graph) -> None:
        for node in self._order(graph):
            self._node(node)

    def _order(self, graph) -> list:
        by_depth = getattr(graph, "_nodes_by_depth", None)
        if by_depth:
            # The order Keras traces a functional model in (Function._run_through_graph), which
            # is the creation order of the TF ops the converter later sorts (see _tflite_order).
            return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]
                    if node.operation is not None and not node.is_input]
        # Otherwise an iterative post-order DFS from the outputs, stopping at known tensors.
        order, seen = [], set()
        stack = [(self._producer(kt), False) for kt in reversed(graph.outputs) if id(kt) not in self.ids]
        while stack:
            node, done = stack.pop()
            if node is None or (id(node) in seen and not done):
                continue
            if done:
                order.append(node)
                continue
            seen.add(id(node))
            stack.append((node, True))
            for kt in reversed(node.input_tensors):
                if id(kt) not in self.ids:
                    p = self._producer(kt)
                    if p is not None and id(p) not in seen:
                        stack.append((p, False))
        return order

    @staticmethod
    def _producer(kt):
        hist = getattr(kt, "_keras_history", None)
        if hist is None:
            return None
        op, node_index, _ = hist
        return op._inbound_nodes[node_index]

    def _node(self, node) -> None:
        layer = node.operation
        if any(id(kt) not in self.ids for kt in node.input_tensors):
            log.debug("analyze_keras: skipping %s, its inputs are not computed by this model", layer.name)
            return
        ins = [self.ids[id(kt)] for kt in node.input_tensors]
        outs = list(node.output_tensors)
        if isinstance(layer, self.keras.Model):
            inner = _functional(layer, self.keras)
            if inner is not None and len(inner.inputs) == len(ins):
                # Inline the nested graph, then forget its tensors so a second call of the same
                # (shared) model is walked again rather than aliased to the first call.
                before = set(self.ids)
                for kt, tid in zip(inner.inputs, ins):
                    self.ids[id(kt)] = tid
                self.walk(inner)
                results = [self.ids[id(inner_kt)] for inner_kt in inner.outputs]
                for k in set(self.ids) - before:
                    del self.ids[k]
                for kt, tid in zip(outs, results):
                    self.ids[id(kt)] = tid
                return
        cls = type(layer).__name__
        if cls == "InputLayer" and not ins:
            for kt in outs:  # an input of a nested graph not fed from outside: a new model input
                if id(kt) not in self.ids:
                    self.ids[id(kt)] = self.g.tensor(_kshape(kt))
                    self.g.inputs.append(self.ids[id(kt)])
            return
        if cls in self.IDENTITY and ins:
            for kt in outs:
                self.ids[id(kt)] = ins[0]
            return
        out_shape = _kshape(outs[0]) if outs else ()
        n_ops, n_tensors = len(self.g.ops), len(self.g.shapes)
        try:
            y = _lower_layer(self.keras, self.g, layer, ins, out_shape, node, self.dynamic_batch)
        except _Unknown:
            y = None
        if y is not None and any(op.op_type == "UNKNOWN" for op in self.g.ops[n_ops:]):
            # A stock layer whose activation has no rule: the converter lowers the whole layer.
            del self.g.ops[n_ops:], self.g.shapes[n_tensors:], self.g.dtypes[n_tensors:]
            y = None
        if y is None:
            self._converted(layer, node, ins, outs)
            return
        self.ids[id(outs[0])] = y

    def _converted(self, layer, node, ins: list[int], outs: list) -> None:
        """Lower a layer with no rule by converting it alone; an UNKNOWN op if even that fails."""
        name, cls, block = layer.name, type(layer).__name__, _block_of(layer.name)
        low = _converter_lowering(self.keras, layer, node)
        if isinstance(low, _Lowering):
            g = self.g
            tids = {t: self.ids[id(kt)] for t, kt in zip(low.inputs, _unique_inputs(node)) if t is not None}
            for r in low.rows:
                for t in r.outputs:
                    tids[t] = g.tensor(low.shapes[t], low.dtypes[t])
                # A tensor no op of the layer produces and no input feeds (an op's state) is new here.
                op_ins = [tids[t] if t in tids else tids.setdefault(t, g.tensor(low.shapes[t], low.dtypes[t]))
                          for t in r.inputs]
                op = _Op(r.op_type, [name], op_ins, [tids[t] for t in r.outputs], block, kernel=r.kernel,
                         stride=r.stride, groups=r.groups, depthwise=r.depthwise, macs=r.macs, reason=r.reason,
                         counts=(r.params, r.param_bytes))
                op.act = r.act
                g.ops.append(op)
            for kt, t in zip(outs, low.outputs):
                self.ids[id(kt)] = tids[t]
            self.converted.append(name)
            log.debug("analyze_keras: %s (%s) has no rule; the converter lowered it to %s", name, cls,
                      ", ".join(r.op_type for r in low.rows) or "nothing")
            return
        reason = f"no rule, and converting the layer on its own failed: {low}"
        for kt in outs:
            self.ids[id(kt)] = self.g.add("UNKNOWN", [name], ins, _kshape(kt), block,
                                          reason=f"unknown layer type {cls}: {reason}")
        self.assumed_cpu.append((name, cls, reason))
        log.debug("analyze_keras: %s (%s) has no TFLite lowering (%s); assumed to run on the CPU", name, cls, low)
