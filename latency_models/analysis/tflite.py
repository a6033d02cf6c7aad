"""The ``.tflite`` front end: :func:`analyze_tflite` parses the flatbuffer (bytes or a path).
See :mod:`latency_models.analysis`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from latency_models.analysis.ir import _block_of
from latency_models.analysis.records import _ITEMSIZE, ModelAnalysis, Shape, _finish, _numel, _Row
from latency_models.analysis.rules import EDGETPU_CUSTOM_OP, edgetpu_reason

log = logging.getLogger(__name__)

# Constant inputs that are parameters although int32: the bias position of weight ops.
# Other int32/int64 constants (shapes, axes, paddings, slice bounds) are metadata, not parameters.
_BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3}


# ------------------------------------------------------------------------------ TFLite source


@lru_cache(maxsize=1)
def _schema():
    """The TFLite flatbuffer schema module and its enum name tables.

    LiteRT ships the same generated schema as TensorFlow and imports in a fraction of a second,
    so it is preferred; TensorFlow's copy is the fall-back.
    """
    try:
        from ai_edge_litert import schema_py_generated as s
    except ImportError:  # pragma: no cover - LiteRT is a dependency; TF is the documented fall-back
        from tensorflow.lite.python import schema_py_generated as s

    def names(enum) -> dict[int, str]:
        return {v: k for k, v in vars(enum).items() if not k.startswith("_") and isinstance(v, int)}

    return s, names(s.BuiltinOperator), names(s.TensorType), names(s.BuiltinOptions), \
        names(s.ActivationFunctionType)


_TF_SCOPE_SUFFIX = re.compile(r"_\d+$")


def _layer_names(tensor_name: str, skip: int = 0) -> list[str]:
    """Keras layer names in a converted tensor name, in source order.

    Names look like ``model_1/layer_1/op;model_1/other_1/op``: fused ops join their source
    tensors with ';' (last = first in the source), and TF's name scopes add a ``_N`` suffix to
    the model and layer scopes, removed only when the model scope has one too. ``skip`` drops
    that many outer scopes first (a functional wrapper around a subclassed model).
    """
    out: list[str] = []
    for part in reversed(tensor_name.split(";")):
        comps = part.split("/")[skip:]
        if len(comps) < 2 or not comps[1]:
            continue
        layer = _TF_SCOPE_SUFFIX.sub("", comps[1]) if _TF_SCOPE_SUFFIX.search(comps[0]) else comps[1]
        if layer not in out:
            out.append(layer)
    return out


def analyze_tflite(model: bytes | bytearray | memoryview | str | Path) -> ModelAnalysis:
    """Analyse a ``.tflite`` flatbuffer given as bytes or a file path (the main subgraph).

    Raises ``ValueError`` for anything that is not a readable TFLite model.
    """
    label = ""
    if isinstance(model, (str, Path)):
        p = Path(model)
        if not p.is_file():
            raise ValueError(f"analyze_tflite: file {str(model)!r} does not exist")
        data, label = p.read_bytes(), p.name
    elif isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
    else:
        raise ValueError(f"analyze_tflite: expected .tflite bytes or a path, got {type(model).__name__}")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(f"analyze_tflite: not a TFLite model (expected the flatbuffer identifier b'TFL3' at "
                         f"bytes 4-8, got {data[4:8]!r} in {len(data)} bytes)")
    try:
        return _parse_tflite(data, label)
    except ValueError:
        raise
    except Exception as e:  # flatbuffers raises many types on truncated or corrupt data
        raise ValueError(f"analyze_tflite: corrupt or truncated .tflite ({type(e).__name__}: {e})") from None


def _parse_tflite(data: bytes, label: str = "") -> ModelAnalysis:
    t = _read_tflite(data)
    return _finish(t.rows, t.shapes, t.nbytes, t.inputs, t.outputs, "tflite", model_name=label)


@dataclass
class _TfliteGraph:
    # The main subgraph as final ops over tensor ids (shared by analyze_tflite and the splicing
    # of converter-lowered Keras layers, which needs the tensor ids and names).
    rows: list[_Row]
    shapes: dict[int, Shape]
    dtypes: dict[int, str]
    names: dict[int, str]
    nbytes: dict[int, int]
    inputs: list[int]
    outputs: list[int]


def _read_tflite(data: bytes, scope_skip: int = 0) -> _TfliteGraph:  # noqa: C901 - one pass over the flatbuffer
    s, op_names, type_names, option_names, act_names = _schema()
    m = s.Model.GetRootAs(data, 0)
    # Garbage that happens to carry the identifier can claim absurd vector lengths: every
    # element needs at least 4 bytes, so anything longer than the file is corrupt.
    limit = len(data) // 4
    if not 0 < m.SubgraphsLength() <= limit:
        raise ValueError(f"analyze_tflite: corrupt .tflite ({m.SubgraphsLength()} subgraphs)")
    if m.SubgraphsLength() > 1:
        log.debug("analyze_tflite: %d subgraphs; analysing the main one", m.SubgraphsLength())
    sg = m.Subgraphs(0)
    n_tensors, n_ops, n_buffers = sg.TensorsLength(), sg.OperatorsLength(), m.BuffersLength()
    if max(n_tensors, n_ops, n_buffers, m.OperatorCodesLength()) > limit:
        raise ValueError("analyze_tflite: corrupt .tflite (vector lengths exceed the file size)")

    shapes: dict[int, Shape] = {}
    dtypes: dict[int, str] = {}
    dynamic: dict[int, bool] = {}
    const: dict[int, bool] = {}
    names: dict[int, str] = {}
    for i in range(n_tensors):
        t = sg.Tensors(i)
        shape = tuple(int(t.Shape(j)) for j in range(t.ShapeLength()))
        sig = tuple(int(t.ShapeSignature(j)) for j in range(t.ShapeSignatureLength()))
        shapes[i] = shape
        dtypes[i] = type_names.get(t.Type(), f"type{t.Type()}").lower()
        # The batch dimension may be dynamic (-1): the compiler uses the stored shape (batch 1).
        dynamic[i] = any(d < 0 for d in sig[1:]) or any(d < 0 for d in shape[1:])
        b = t.Buffer()
        buf = m.Buffers(b) if 0 < b < n_buffers else None
        const[i] = buf is not None and (buf.DataLength() > 0 or (buf.Offset() > 1 and buf.Size() > 0))
        names[i] = (t.Name() or b"").decode("utf-8", "replace")
    graph_inputs = [int(sg.Inputs(j)) for j in range(sg.InputsLength())]
    graph_outputs = [int(sg.Outputs(j)) for j in range(sg.OutputsLength())]

    rows: list[_Row] = []
    for k in range(n_ops):
        op = sg.Operators(k)
        oc = m.OperatorCodes(op.OpcodeIndex())
        # Codes >= 127 live only in builtin_code; older files only set the deprecated byte.
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        op_type = op_names.get(code, f"BUILTIN_{code}")
        custom = (oc.CustomCode() or b"").decode("utf-8", "replace") if op_type == "CUSTOM" else ""
        ins = [int(op.Inputs(j)) for j in range(op.InputsLength())]
        outs = [int(op.Outputs(j)) for j in range(op.OutputsLength()) if op.Outputs(j) >= 0]
        acts = [t for t in ins if t >= 0 and not const[t]]
        opts = _options(s, option_names, op)
        row = _Row(name="", op_type=op_type, inputs=acts, outputs=outs, dtype=dtypes[outs[0]] if outs else "")
        layer_names = [n for t in outs for n in _layer_names(names[t], scope_skip)]
        layer_names = list(dict.fromkeys(layer_names))
        row.name = "+".join(layer_names) or custom or (names[outs[0]] if outs else op_type)
        row.block = next((b for b in map(_block_of, layer_names) if b), "")
        act = getattr(opts, "FusedActivationFunction", None)
        if act is not None:
            a = act_names.get(act(), "NONE")
            row.act = None if a == "NONE" else a

        # Parameters: constant inputs, except int32/int64 metadata (shapes, axes, paddings) that
        # is not in a bias slot.
        bias_slot = _BIAS_INPUT.get(op_type)
        for j, t in enumerate(ins):
            if t >= 0 and const[t] and (dtypes[t] not in ("int32", "int64") or j == bias_slot):
                n = _numel(shapes[t])
                row.params += n
                row.param_bytes += n * _ITEMSIZE.get(dtypes[t], 1)

        x_shape = shapes[acts[0]] if acts else ()
        out_shape = shapes[outs[0]] if outs else ()
        if op_type in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV") and opts is not None:
            wi = 1
            w_shape = shapes[ins[wi]] if len(ins) > wi and ins[wi] >= 0 else ()
            if len(w_shape) == 4:
                row.kernel = (w_shape[1], w_shape[2])
            row.stride = (opts.StrideH(), opts.StrideW())
            if op_type == "CONV_2D" and len(w_shape) == 4 and x_shape:
                row.groups = max(x_shape[-1] // max(w_shape[3], 1), 1)
                row.macs = _numel(out_shape) * w_shape[1] * w_shape[2] * w_shape[3]
            elif op_type == "DEPTHWISE_CONV_2D" and len(w_shape) == 4 and x_shape:
                row.groups, row.depthwise = x_shape[-1], True
                row.macs = _numel(out_shape) * w_shape[1] * w_shape[2]
            elif op_type == "TRANSPOSE_CONV" and len(w_shape) == 4:
                row.macs = _numel(x_shape) * w_shape[0] * w_shape[1] * w_shape[2]
        elif op_type == "FULLY_CONNECTED" and len(ins) > 1 and ins[1] >= 0:
            w_shape = shapes[ins[1]]
            if len(w_shape) == 2 and x_shape:
                row.macs = _numel(x_shape) // max(w_shape[1], 1) * w_shape[0] * w_shape[1]
        elif op_type in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D") and opts is not None:
            row.kernel = (opts.FilterHeight(), opts.FilterWidth())
            row.stride = (opts.StrideH(), opts.StrideW())

        io = [*acts, *outs]
        if op_type == "CUSTOM":
            row.reason = (None if custom == EDGETPU_CUSTOM_OP
                          else f"custom op {custom!r} is not supported by the Edge TPU")
        elif op_type == "QUANTIZE" and acts and acts[0] in graph_inputs:
            # The input QUANTIZE of a float-io model: compiler reports list it as mapped to the
            # Edge TPU (only its output is checked), while the final DEQUANTIZE runs on the CPU.
            row.reason = edgetpu_reason(op_type, [shapes[t] for t in io], [dtypes[t] for t in outs],
                                        dynamic=any(dynamic[t] for t in io))
        elif op_type == "DEQUANTIZE" and outs and outs[0] in graph_outputs:
            row.reason = "DEQUANTIZE to a float output runs on the CPU"
        else:
            row.reason = edgetpu_reason(op_type, [shapes[t] for t in io], [dtypes[t] for t in io],
                                        dynamic=any(dynamic[t] for t in io))
        rows.append(row)

    # The converter names the model's output tensor after the serving signature, which loses
    # the layer name; such an op belongs to the block of the op it reads.
    made_by = {t: r for r in rows for t in r.outputs}
    for r in rows:
        if not r.block and r.inputs and r.inputs[0] in made_by:
            r.block = made_by[r.inputs[0]].block
    nbytes = {t: _numel(shapes[t]) * _ITEMSIZE.get(dtypes[t], 1) for t in shapes if not const[t]}
    return _TfliteGraph(rows, shapes, dtypes, names, nbytes, graph_inputs, graph_outputs)


def _options(s, option_names: dict[int, str], op):
    """The op's builtin options table as its generated class (None when absent or unknown)."""
    kind = op.BuiltinOptionsType()
    table = op.BuiltinOptions()
    cls = getattr(s, option_names.get(kind, ""), None) if kind else None
    if table is None or cls is None:
        return None
    obj = cls()
    obj.Init(table.Bytes, table.Pos)
    return obj
