"""Keras layers with no rule, lowered by the real TFLite converter: the layer alone, converted to
int8 in a one-layer model, its ops read back (cached). See :mod:`latency_models.analysis`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from latency_models import convert
from latency_models.analysis.records import Shape, _Row
from latency_models.analysis.tflite import _read_tflite

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ converter lowering
#
# A layer with no rule is converted on its own, in a one-layer model, by the converter the
# deployment uses (latency_models.convert). Its ops are what the converter makes of the layer in
# any model, except for rewrites across its boundary, which _lower still applies after the
# splice (folding into a neighbouring conv, activation fusion).


def _kshape(kt) -> Shape:
    """A Keras tensor's shape as the IR's: batch 1 when unknown, -1 for other unknown dimensions."""
    shape = tuple(kt.shape)
    return tuple(1 if (i == 0 and d is None) else (-1 if d is None else int(d)) for i, d in enumerate(shape))


@dataclass(frozen=True)
class _Lowering:
    """A layer as the converter lowered it alone; cached and shared, so never mutated.

    ``rows`` are the ops without the sub-model's boundary QUANTIZE/DEQUANTIZE, their tensor ids
    already resolved through the dropped ones; ``inputs`` is the .tflite input tensor of each
    of the layer's distinct input tensors (None: unused by the converted graph), ``outputs``
    the tensor holding each layer output (possibly an input tensor: an identity layer).
    """

    rows: tuple[_Row, ...]
    shapes: dict[int, Shape]
    dtypes: dict[int, str]
    inputs: tuple[int | None, ...]
    outputs: tuple[int, ...]


# (layer class, config without the name, input shapes and dtypes, call arguments, weights hash)
# -> _Lowering, or the reason it failed (failures are deterministic too, so they are cached).
_LOWERINGS: "OrderedDict[tuple, _Lowering | str]" = OrderedDict()
_LOWERINGS_MAX = 512


def _unique_inputs(node) -> list:
    # A tensor passed twice (layer([x, x])) is one input of the one-layer model.
    return list({id(kt): kt for kt in node.input_tensors}.values())


def _lowering_key(keras, layer, node) -> tuple | None:
    """What decides the converter's output for a layer call; None when it cannot be told.

    The config (less the name) describes the layer as Keras would rebuild it, the weights'
    values decide what the converter folds away (zero biases, unit scales), and the non-tensor
    call arguments (``training``, a scale passed at call time) can change the graph. A layer
    whose config is unavailable is converted every time rather than risk a wrong cache hit.
    """
    try:
        cfg = dict(layer.get_config())
    except Exception:  # noqa: BLE001 - custom layers often do not implement get_config
        return None
    cfg.pop("name", None)
    fn = getattr(layer, "function", None)
    if callable(fn) and getattr(fn, "__closure__", None):
        # A Lambda's config holds its code, not the values its closure captured.
        cfg["__closure__"] = [repr(c.cell_contents) for c in fn.__closure__]
    try:
        config = json.dumps(cfg, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return None
    uniq = _unique_inputs(node)
    index = {id(kt): i for i, kt in enumerate(uniq)}
    args = node.arguments.convert(lambda x: f"<input {index[id(x)]}>" if isinstance(x, keras.KerasTensor) else x)
    h = hashlib.sha256()
    for v in layer.weights:
        a = np.ascontiguousarray(keras.ops.convert_to_numpy(v))
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    cls = type(layer)
    return (f"{cls.__module__}.{cls.__qualname__}", config, tuple((tuple(kt.shape[1:]), str(kt.dtype)) for kt in uniq),
            repr(args), h.hexdigest())


def _converter_lowering(keras, layer, node) -> "_Lowering | str":
    """The layer call of ``node`` as the converter lowers it, or why that is impossible."""
    key = _lowering_key(keras, layer, node)
    if key is not None and key in _LOWERINGS:
        _LOWERINGS.move_to_end(key)
        return _LOWERINGS[key]
    try:
        result: _Lowering | str = _convert_layer(keras, layer, node)
    except _NoLowering as e:
        result = str(e)
    if key is not None:
        _LOWERINGS[key] = result
        while len(_LOWERINGS) > _LOWERINGS_MAX:
            _LOWERINGS.popitem(last=False)
    return result


class _NoLowering(Exception):
    """Why a layer cannot be lowered by the converter (one line)."""


def _short_error(e: BaseException) -> str:
    """The first line of an error, without the MLIR source locations the converter prefixes."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    line = re.sub(r"<unknown>:\d+:\s*", "", line)
    line = re.sub(r"loc\(.*\)\s*:\s*", "", line)
    if not line.startswith(type(e).__name__) and "failed:" not in line:
        line = f"{type(e).__name__}: {line}"
    return line if len(line) <= 300 else line[:297] + "..."


@contextlib.contextmanager
def _quiet_conversion():
    """Keep a helper conversion's chatter out of the user's output.

    TF's SavedModel path (the converter's fall-back, and the route for several inputs) prints
    the exported signature to stdout, which would corrupt a CLI's ``--json``; the warning that
    the frozen path failed and falls back is expected here, and the final outcome is reported
    by the caller, so both go to the debug log. (stdout is process-wide: a concurrent print in
    another thread would be captured too, and logged at debug.)
    """
    def demote(record: logging.LogRecord) -> bool:
        log.debug("helper conversion: %s", record.getMessage())
        return False

    conv_log = logging.getLogger(convert.__name__)
    conv_log.addFilter(demote)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            yield
    finally:
        conv_log.removeFilter(demote)
        if out.getvalue().strip():
            log.debug("helper conversion printed: %s", out.getvalue().strip()[:2000])


def _to_int8_quietly(model, input_shapes: list[tuple]) -> bytes:
    """``to_int8_tflite`` of a model with one or more float inputs, on random calibration data."""
    with _quiet_conversion():
        if len(input_shapes) == 1:
            return convert.to_int8_tflite(model)

        def representative():
            # convert._representative assumes one input; the list follows the model's inputs.
            rng = np.random.default_rng(0)
            yield [rng.random((1, *s), dtype=np.float32) for s in input_shapes]

        # The frozen path traces one input only: go straight to the SavedModel path.
        return convert.to_int8_tflite(model, representative, method="saved_model")


def _convert_layer(keras, layer, node) -> _Lowering:  # noqa: C901 - build, convert, map back
    uniq = _unique_inputs(node)
    if not uniq:
        raise _NoLowering("it has no tensor inputs")
    for kt in uniq:
        if any(d is None for d in tuple(kt.shape)[1:]):
            raise _NoLowering(f"its input shape {tuple(kt.shape)} is not static")
    names = [f"nas_layer_input_{i}" for i in range(len(uniq))]
    inputs = [keras.Input(shape=tuple(kt.shape[1:]), batch_size=1, dtype=kt.dtype, name=n)
              for kt, n in zip(uniq, names)]
    by_id = {id(kt): x for kt, x in zip(uniq, inputs)}
    args, kwargs = node.arguments.convert(lambda x: by_id[id(x)] if isinstance(x, keras.KerasTensor) else x)
    n_nodes = len(layer._inbound_nodes)
    try:
        try:
            outs = keras.tree.flatten(layer(*args, **kwargs))
            sub = keras.Model(inputs[0] if len(inputs) == 1 else inputs, outs[0] if len(outs) == 1 else outs)
        except Exception as e:  # noqa: BLE001 - whatever the layer raises, it cannot be lowered this way
            raise _NoLowering(f"it cannot be called on symbolic batch-1 inputs: {_short_error(e)}") from None
        if len(outs) != len(node.output_tensors):
            raise _NoLowering(f"called alone it returns {len(outs)} tensors, in the model "
                              f"{len(node.output_tensors)}")
        try:
            blob = _to_int8_quietly(sub, [tuple(kt.shape[1:]) for kt in uniq])
        except Exception as e:  # noqa: BLE001 - the converter raises many types
            raise _NoLowering(_short_error(e)) from None
    finally:
        # Calling the layer recorded a node on it; the user's model must not see it.
        del layer._inbound_nodes[n_nodes:]
    t = _read_tflite(blob)

    alias: dict[int, int] = {}

    def resolve(x: int) -> int:
        while x in alias:
            x = alias[x]
        return x

    rows = []
    for r in t.rows:
        r = _Row(**{**r.__dict__, "inputs": [resolve(x) for x in r.inputs], "outputs": list(r.outputs)})
        if r.op_type in ("QUANTIZE", "DEQUANTIZE") and len(r.inputs) == 1 and len(r.outputs) == 1 and \
                (r.inputs[0] in t.inputs or r.outputs[0] in t.outputs):
            # The sub-model's own int8 boundary: inside the real model the tensor stays int8.
            alias[r.outputs[0]] = r.inputs[0]
            continue
        rows.append(r)

    # Inputs: by name (the SavedModel path reorders them; serving_default_<name>:0), else by order.
    tfl_in: list[int | None] = [None] * len(uniq)
    if len(uniq) == 1 and len(t.inputs) == 1:
        tfl_in[0] = t.inputs[0]
    else:
        for x in t.inputs:
            base = re.sub(r"^serving_default_|:\d+$", "", t.names[x])
            if base not in names:
                raise _NoLowering(f"cannot tell which layer input the converted input {t.names[x]!r} is")
            tfl_in[names.index(base)] = x
    for x, kt in zip(tfl_in, uniq):
        if x is not None and t.shapes[x][1:] != tuple(kt.shape[1:]):
            raise _NoLowering(f"the converted input shape {t.shapes[x]} does not match {tuple(kt.shape)}")

    # Outputs: in order when the shapes agree, else matched by (unique) shape.
    want = [_kshape(kt) for kt in outs]
    got = [resolve(x) for x in t.outputs]
    if len(got) != len(want):
        raise _NoLowering(f"the conversion has {len(got)} outputs, the layer {len(want)}")
    if [t.shapes[x] for x in got] != want:
        by_shape: dict[Shape, list[int]] = {}
        for x in got:
            by_shape.setdefault(t.shapes[x], []).append(x)
        if any(len(by_shape.get(w, ())) != 1 for w in want):
            raise _NoLowering(f"cannot match the converted outputs {[t.shapes[x] for x in got]} to the layer's {want}")
        got = [by_shape[w][0] for w in want]
    return _Lowering(rows=tuple(rows), shapes=dict(t.shapes), dtypes=dict(t.dtypes), inputs=tuple(tfl_in),
                     outputs=tuple(got))
