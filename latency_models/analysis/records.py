"""The records of a static analysis: one :class:`OpInfo` per op of the int8 ``.tflite``, and
the :class:`ModelAnalysis` holding them with totals; :func:`_finish` builds both from the final
ops of any front end (arch, Keras model, ``.tflite`` file). See :mod:`latency_models.analysis`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

_ITEMSIZE = {"float32": 4, "float16": 2, "float64": 8, "int32": 4, "uint8": 1, "int64": 8, "bool": 1,
             "int16": 2, "int8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "int4": 1, "complex64": 8}

Shape = tuple[int, ...]


# ------------------------------------------------------------------------------ public records


@dataclass(frozen=True)
class OpInfo:
    """One op of the int8 ``.tflite`` (or of what the converter will make of a Keras model).

    Shapes include the batch dimension (1); -1 marks a dynamic dimension. ``input_shapes``
    lists the activation inputs only (weights, biases and shape/axis constants are described
    by ``kernel``, ``params``, ``param_bytes``). ``kernel`` and ``stride`` are ``(h, w)`` for
    convolutions and pools, else None. ``groups`` is the convolution group count (the channel
    count for depthwise convs). ``param_bytes`` are the op's own weights and biases as TFLite
    stores them; ``activation_bytes`` is the size of its output tensor(s). ``edgetpu_supported``
    says whether the op itself can run on the Edge TPU (``reason`` says why not);
    ``device`` is where it runs given the single partition ("cpu" from the first unsupported
    op on). ``input_ops`` are the indices of the ops producing the inputs (-1: model input).
    """

    index: int
    name: str
    op_type: str
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    kernel: tuple[int, int] | None
    stride: tuple[int, int] | None
    groups: int
    depthwise: bool
    fused_activation: str | None
    macs: int
    param_bytes: int
    activation_bytes: int
    dtype: str
    edgetpu_supported: bool
    reason: str | None
    block: str
    device: str = "tpu"
    params: int = 0
    input_ops: tuple[int, ...] = ()

    def to_row(self) -> dict[str, Any]:
        """A flat, CSV-friendly row (shapes as ``1x32x32x3``, ``;`` between inputs)."""
        return {
            "index": self.index, "name": self.name, "block": self.block, "op_type": self.op_type,
            "input_shapes": ";".join(_fmt_shape(s) for s in self.input_shapes),
            "output_shape": _fmt_shape(self.output_shape),
            "kernel": _fmt_shape(self.kernel) if self.kernel else "",
            "stride": _fmt_shape(self.stride) if self.stride else "",
            "groups": self.groups, "depthwise": self.depthwise,
            "fused_activation": self.fused_activation or "", "macs": self.macs, "params": self.params,
            "param_bytes": self.param_bytes, "activation_bytes": self.activation_bytes, "dtype": self.dtype,
            "edgetpu_supported": self.edgetpu_supported, "device": self.device, "reason": self.reason or "",
            "input_ops": ";".join(str(i) for i in self.input_ops),
        }


@dataclass(frozen=True)
class ModelAnalysis:
    """The op table of a model with totals and its Edge TPU placement.

    ``source`` is "arch", "keras" or "tflite". ``input_shape`` is the first input's shape with
    the batch dimension. ``total_params`` counts the parameters that survive in the int8 model
    (weights and biases after BN folding); ``keras_trainable_params`` is Keras's trainable count
    (the plan's :func:`~search_spaces.count_params`) when the source knows it.
    ``peak_activation_bytes`` is the largest live set: running the ops in table order, each
    activation tensor is allocated when produced and freed after its last reader (model inputs
    live from the start, outputs to the end); the maximum of the summed live bytes is reported.
    It is a lower bound of a TFLite arena, which may add fragmentation, and always at least the
    largest input+output bytes of one op. ``first_cpu_op`` is the index of the first op the Edge
    TPU cannot run (None when all can); ``unsupported`` lists every such op with its reason.
    ``assumed_cpu`` lists the Keras layers that have neither a rule nor a converter lowering, as
    ``(layer name, layer class, reason)``: each is one ``UNKNOWN`` op assumed to run on the CPU,
    a guess a predictor should report. ``converted_layers`` names the layers the TFLite
    converter lowered (no rule); a subclassed model converted whole lists its own name.
    """

    ops: tuple[OpInfo, ...]
    source: str
    input_shape: Shape
    total_macs: int
    total_params: int
    total_param_bytes: int
    peak_activation_bytes: int
    first_cpu_op: int | None
    ops_on_tpu: int
    ops_on_cpu: int
    unsupported: tuple[tuple[int, str, str], ...]
    keras_trainable_params: int | None = None
    model_name: str = ""
    assumed_cpu: tuple[tuple[str, str, str], ...] = ()
    converted_layers: tuple[str, ...] = ()

    @property
    def op_types(self) -> tuple[str, ...]:
        return tuple(op.op_type for op in self.ops)

    @property
    def fully_on_edgetpu(self) -> bool:
        return self.first_cpu_op is None

    def to_dict(self, *, with_ops: bool = True) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        d = {k: v for k, v in asdict(self).items() if k != "ops"}
        d["input_shape"] = list(self.input_shape)
        d["unsupported"] = [list(u) for u in self.unsupported]
        d["assumed_cpu"] = [list(u) for u in self.assumed_cpu]
        d["converted_layers"] = list(self.converted_layers)
        if with_ops:
            d["ops"] = [_jsonable(asdict(op)) for op in self.ops]
        return d

    def to_rows(self) -> list[dict[str, Any]]:
        """One flat dict per op, for ``csv.DictWriter``."""
        return [op.to_row() for op in self.ops]

    def format_table(self, *, max_name: int = 34) -> str:
        """A fixed-width text table of the ops followed by the totals (for a CLI)."""
        head = ("#", "op", "name", "output", "k", "s", "act", "MACs", "param B", "act B", "dev", "note")
        rows = [head]
        for op in self.ops:
            name = op.name if len(op.name) <= max_name else op.name[: max_name - 1] + "~"
            note = "" if op.edgetpu_supported else (op.reason or "unsupported")
            rows.append((str(op.index), op.op_type, name, _fmt_shape(op.output_shape),
                         _fmt_shape(op.kernel) if op.kernel else "", _fmt_shape(op.stride) if op.stride else "",
                         op.fused_activation or "", f"{op.macs:,}", f"{op.param_bytes:,}",
                         f"{op.activation_bytes:,}", op.device, note))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
        right = {0, 7, 8, 9}
        lines = []
        for r in rows:
            cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
            lines.append("  ".join(cells + [r[-1]]).rstrip())
        lines.insert(1, "-" * len(lines[0]))
        lines.append("")
        label = f" {self.model_name}" if self.model_name else ""
        lines.append(f"source: {self.source}{label}  input: {_fmt_shape(self.input_shape)}  "
                     f"ops: {len(self.ops)} (Edge TPU {self.ops_on_tpu}, CPU {self.ops_on_cpu})")
        keras_p = (f", Keras trainable {self.keras_trainable_params:,}"
                   if self.keras_trainable_params is not None else "")
        lines.append(f"MACs: {self.total_macs:,}  params: {self.total_params:,}{keras_p}  "
                     f"param bytes: {self.total_param_bytes:,}  peak activations: {self.peak_activation_bytes:,} B")
        if self.first_cpu_op is None:
            lines.append("Edge TPU: every op is supported")
        else:
            op = self.ops[self.first_cpu_op]
            lines.append(f"Edge TPU: CPU fall-back from op #{op.index} {op.op_type} ({op.name}): {op.reason}; "
                         f"{len(self.unsupported)} unsupported op(s)")
        if self.converted_layers:
            shown = ", ".join(self.converted_layers[:6]) + (", ..." if len(self.converted_layers) > 6 else "")
            lines.append(f"lowered by the TFLite converter (no rule): {len(self.converted_layers)} layer(s): {shown}")
        for name, cls, reason in self.assumed_cpu:
            lines.append(f"warning: assumed to run on the CPU (no TFLite lowering): {name} ({cls}): {reason}")
        return "\n".join(lines)


def _fmt_shape(shape: Iterable[int]) -> str:
    return "x".join(str(d) for d in shape)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _numel(shape: Iterable[int]) -> int:
    # Unknown (-1) dimensions make the size unknown; 0 keeps totals honest rather than negative.
    n = 1
    for d in shape:
        if d < 0:
            return 0
        n *= d
    return n


# ------------------------------------------------------------------------------ from final ops


def _peak_live_bytes(steps: list[tuple[list[int], list[int]]], size: dict[int, int],
                     inputs: Iterable[int], outputs: Iterable[int]) -> int:
    last: dict[int, int] = {}
    for i, (ins, _) in enumerate(steps):
        for t in ins:
            last[t] = i
    for t in outputs:
        last[t] = len(steps)
    live = {t: size.get(t, 0) for t in inputs}
    cur = peak = sum(live.values())
    for i, (ins, outs) in enumerate(steps):
        for t in outs:
            if t not in live:
                live[t] = size.get(t, 0)
                cur += live[t]
        peak = max(peak, cur)
        for t in (*ins, *outs):
            if t in live and last.get(t, -1) <= i:
                cur -= live.pop(t)
    return peak


@dataclass
class _Row:
    # What _finish needs of one final op, from any source.
    name: str
    op_type: str
    inputs: list[int]
    outputs: list[int]
    kernel: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    groups: int = 1
    depthwise: bool = False
    act: str | None = None
    macs: int = 0
    params: int = 0
    param_bytes: int = 0
    dtype: str = "int8"
    reason: str | None = None
    block: str = ""


def _record(cls, fields: dict[str, Any]):
    # Frozen dataclasses assign each field through object.__setattr__, which dominates the cost
    # of an uncached analyze_arch (a predictor scores thousands of new archs); filling __dict__
    # directly gives the identical, still immutable, object several times faster.
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


def _finish(rows: list[_Row], shapes: dict[int, Shape], nbytes: dict[int, int], graph_inputs: list[int],
            graph_outputs: list[int], source: str, *, keras_trainable: int | None = None,
            model_name: str = "", assumed_cpu: Iterable[tuple[str, str, str]] = (),
            converted_layers: Iterable[str] = ()) -> ModelAnalysis:
    producer = {t: i for i, r in enumerate(rows) for t in r.outputs}
    first_cpu = next((i for i, r in enumerate(rows) if r.reason is not None), None)
    ops = []
    for i, r in enumerate(rows):
        outs = r.outputs
        ops.append(_record(OpInfo, {
            "index": i, "name": r.name, "op_type": r.op_type, "input_shapes": tuple([shapes[t] for t in r.inputs]),
            "output_shape": shapes[outs[0]] if outs else (), "kernel": r.kernel, "stride": r.stride,
            "groups": r.groups, "depthwise": r.depthwise, "fused_activation": r.act, "macs": r.macs,
            "param_bytes": r.param_bytes,
            "activation_bytes": nbytes[outs[0]] if len(outs) == 1 else sum([nbytes[t] for t in outs]),
            "dtype": r.dtype, "edgetpu_supported": r.reason is None, "reason": r.reason, "block": r.block,
            "device": "cpu" if first_cpu is not None and i >= first_cpu else "tpu", "params": r.params,
            "input_ops": tuple([producer.get(t, -1) for t in r.inputs])}))
    on_tpu = len(ops) if first_cpu is None else first_cpu
    peak = _peak_live_bytes([(r.inputs, r.outputs) for r in rows], nbytes, graph_inputs, graph_outputs)
    return ModelAnalysis(
        ops=tuple(ops), source=source,
        input_shape=shapes[graph_inputs[0]] if graph_inputs else (),
        total_macs=sum(o.macs for o in ops), total_params=sum(o.params for o in ops),
        total_param_bytes=sum(o.param_bytes for o in ops), peak_activation_bytes=peak,
        first_cpu_op=first_cpu, ops_on_tpu=on_tpu, ops_on_cpu=len(ops) - on_tpu,
        unsupported=tuple((o.index, o.op_type, o.reason) for o in ops if not o.edgetpu_supported),
        keras_trainable_params=keras_trainable, model_name=model_name,
        assumed_cpu=tuple(dict.fromkeys(tuple(u) for u in assumed_cpu)),
        converted_layers=tuple(dict.fromkeys(converted_layers)))
