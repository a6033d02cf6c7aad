"""The Edge TPU compiler's report: what Google's ``edgetpu_compiler`` prints, parsed.

Pure Python, standard library only: the parser must work on every host (the compiler itself
only exists for x86-64 Debian/Ubuntu), e.g. to read compiler reports copied from a Coral host.
Running the compiler is :func:`latency_models.edgetpu.compiler.run_compiler`.

Formats handled
---------------
1. The compiler's standard output (``edgetpu_compiler [-s] ...``), versions 1.0 to 16.0::

       Edge TPU Compiler version 16.0.384591198
       Started a compilation timeout timer of 180 seconds.
       Model compiled successfully in 3173 ms.
       Input model: yolov5s-int8-224.tflite
       Input size: 7.37MiB
       Output model: yolov5s-int8-224_edgetpu.tflite
       Output size: 8.34MiB
       On-chip memory used for caching model parameters: 6.08MiB
       On-chip memory remaining for caching model parameters: 0.00B
       Off-chip memory used for streaming uncached model parameters: 1.70MiB
       Number of Edge TPU subgraphs: 2
       Total number of operations: 294
       Operation log: yolov5s-int8-224_edgetpu.log
       Model successfully compiled but not all operations are supported by the Edge TPU. ...
       Number of operations that will run on Edge TPU: 289
       Number of operations that will run on CPU: 5
       Operator                       Count      Status
       CONV_2D                        62         Mapped to Edge TPU
       ...

   - The block from "Input model" to "Operation log" (plus the CPU split and, with ``-s``, the
     operator table that follow it) repeats once per co-compiled model and once per segment
     (``--num_segments``); each becomes one :class:`CompiledModel`.
   - The two "Number of operations that will run on Edge TPU/CPU" lines appear only when some
     ops fall back to the CPU; when absent, all ops are on the Edge TPU and
     :attr:`CompiledModel.ops_split_inferred` is True.
   - Older compilers say "On-chip memory available for caching model parameters" instead of
     "remaining"; both go to :attr:`CompiledModel.on_chip_remaining_bytes`.
   - A failed compile ("Compilation failed: <reason>", "ERROR: <reason>", ...) gives a report
     with ``success=False`` and ``failure_reason`` set; it is not an exception.
   - Lines this parser does not know are ignored (new compiler versions add lines), but a text
     with neither a version line nor a model block raises ``ValueError``.

2. The separate operation log ``<name>_edgetpu.log`` written next to the compiled model
   (a version line, "Input:"/"Output:" lines and an "Operator Count Status" table); see
   :func:`parse_operation_log`.

Sizes are printed in binary units (B, KiB, MiB, GiB) with two decimals; :func:`parse_size`
turns them into whole bytes, so they carry the compiler's own rounding (about 0.5% of a unit).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal

from latency_models.edgetpu.compiled import CompiledModel, CompilerReport, OperationLogEntry, OpRow

logger = logging.getLogger(__name__)

__all__ = [
    "KNOWN_STATUSES",
    "MAPPED_STATUS",
    "CompiledModel",
    "CompilerReport",
    "OpRow",
    "OperationLogEntry",
    "parse_compiler_output",
    "parse_operation_log",
    "parse_size",
]

#: The one status string meaning "this op runs on the Edge TPU".
MAPPED_STATUS = "Mapped to Edge TPU"

#: Status strings seen in real operator tables. Others are accepted (as not mapped) but logged,
#: so a new wording is noticed rather than silently misread.
KNOWN_STATUSES: tuple[str, ...] = (
    MAPPED_STATUS,
    "Operation is otherwise supported, but not mapped due to some unspecified limitation",
    "Operation is working on an unsupported data type",
    "More than one subgraph is not supported",
    "Operation not supported",
    "Operation version not supported",
)

_UNIT_BYTES: dict[str, int] = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_SIZE_RE = re.compile(r"(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>B|KiB|MiB|GiB)")

_VERSION_RE = re.compile(r"^Edge TPU Compiler version\s+(?P<version>\S+)")
# "Models" (plural) is printed when several models are co-compiled.
_SUCCESS_RE = re.compile(r"^Models? compiled successfully in\s+(?P<ms>\d+)\s*ms")
_TABLE_HEADER_RE = re.compile(r"^Operator\s{2,}.*\bStatus\s*$")
# Operator names and counts never contain spaces; the status (last column) does.
_OP_ROW_RE = re.compile(r"^(?P<operator>\S+)\s+(?P<count>\d+)\s+(?P<status>\S.*?)\s*$")
_KEY_VALUE_RE = re.compile(r"^(?P<key>[A-Za-z][^:]*?)\s*:\s*(?P<value>.*?)\s*$")
_NOT_ALL_MAPPED_PREFIX = "Model successfully compiled but not all operations are supported"

# "key as printed" -> CompiledModel field. Several keys may feed one field (old wording).
_BLOCK_KEYS: dict[str, str] = {
    "Input model": "input_model",
    "Input size": "input_size_bytes",
    "Output model": "output_model",
    "Output size": "output_size_bytes",
    "On-chip memory used for caching model parameters": "on_chip_bytes",
    "On-chip memory remaining for caching model parameters": "on_chip_remaining_bytes",
    "On-chip memory available for caching model parameters": "on_chip_remaining_bytes",
    "Off-chip memory used for streaming uncached model parameters": "off_chip_bytes",
    "Number of Edge TPU subgraphs": "n_subgraphs",
    "Total number of operations": "n_ops_total",
    "Number of operations that will run on Edge TPU": "n_ops_on_tpu",
    "Number of operations that will run on CPU": "n_ops_on_cpu",
    "Operation log": "operation_log",
}
_SIZE_FIELDS = frozenset(
    {"input_size_bytes", "output_size_bytes", "on_chip_bytes", "on_chip_remaining_bytes",
     "off_chip_bytes"}
)
_INT_FIELDS = frozenset({"n_subgraphs", "n_ops_total", "n_ops_on_tpu", "n_ops_on_cpu"})
# Every block must state these; the CPU split is optional (see module docstring).
_REQUIRED_FIELDS: tuple[str, ...] = (
    "input_model", "input_size_bytes", "output_model", "output_size_bytes", "on_chip_bytes",
    "on_chip_remaining_bytes", "off_chip_bytes", "n_subgraphs", "n_ops_total", "operation_log",
)
# Field -> the line to name in error messages (reversed so the first wording listed wins).
_FIELD_LINES: dict[str, str] = {f: k for k, f in reversed(_BLOCK_KEYS.items())}


# --------------------------------------------------------------------------- parsing


def parse_size(text: str) -> int:
    """Parse a compiler size such as ``"85.75KiB"`` into whole bytes (half rounds up).

    Only the binary units the compiler prints are accepted: B, KiB, MiB, GiB.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"bad Edge TPU compiler size {text!r}: expected a number followed by "
            f"one of {', '.join(_UNIT_BYTES)} (e.g. '85.75KiB')"
        )
    number = Decimal(match["num"])  # the regex guarantees a valid decimal literal
    # Decimal avoids float artefacts such as 6.08 * 2**20 landing on the wrong side of .5.
    return int((number * _UNIT_BYTES[match["unit"]]).to_integral_value(rounding=ROUND_HALF_UP))


def _status_row(operator: str, count: str, status: str) -> tuple[str, int, str, bool]:
    if status not in KNOWN_STATUSES:
        logger.debug("unknown Edge TPU operator status %r for %s", status, operator)
    return operator, int(count), status, status == MAPPED_STATUS


def _build_model(fields: dict[str, str | int], ops: list[OpRow]) -> CompiledModel:
    """Turn the collected lines of one block into a CompiledModel, checking completeness."""
    name = fields.get("input_model", "<unnamed model>")
    missing = [_FIELD_LINES[f] for f in _REQUIRED_FIELDS if f not in fields]
    if missing:
        raise ValueError(
            f"incomplete edgetpu_compiler model block for {name!r}: missing line(s) "
            + ", ".join(repr(m + ":") for m in missing)
        )
    has_tpu, has_cpu = "n_ops_on_tpu" in fields, "n_ops_on_cpu" in fields
    if has_tpu != has_cpu:
        present = "Edge TPU" if has_tpu else "CPU"
        raise ValueError(
            f"edgetpu_compiler model block for {name!r} gives the number of operations on "
            f"{present} but not the other one; expected both lines or neither"
        )
    values = dict(fields)
    inferred = not has_tpu
    if inferred:
        # The compiler prints the split only when some ops fall back to the CPU.
        values["n_ops_on_tpu"] = values["n_ops_total"]
        values["n_ops_on_cpu"] = 0
    # Values were typed per field while collecting (sizes/counts int, names str).
    model = CompiledModel(
        **values, ops_split_inferred=inferred, ops=tuple(ops)  # type: ignore[arg-type]
    )
    if ops:
        in_table = sum(row.count for row in ops)
        unmapped = sum(row.count for row in ops if not row.mapped)
        if in_table != model.n_ops_total or unmapped != model.n_ops_on_cpu:
            # Logged, not raised: the header lines are authoritative and a report is worth
            # keeping even if a future table layout counts ops differently.
            logger.debug(
                "%s: operator table has %d ops (%d unmapped), header says %d (%d on CPU)",
                name, in_table, unmapped, model.n_ops_total, model.n_ops_on_cpu,
            )
    return model


def _looks_like_operation_log(lines: Sequence[str]) -> bool:
    return any(line.startswith("Input: ") for line in lines) and any(
        _TABLE_HEADER_RE.match(line) for line in lines
    )


def parse_compiler_output(text: str) -> CompilerReport:
    """Parse the standard output of ``edgetpu_compiler`` into a :class:`CompilerReport`.

    Raises ``ValueError`` when the text is not compiler output at all, or when a model block
    is incomplete. A failed compilation is a normal report with ``success=False``.
    """
    lines = [line.strip() for line in text.splitlines()]

    version: str | None = None
    compile_ms: int | None = None
    succeeded_line = False
    failure_reasons: list[str] = []  # in printed order; the first one is reported
    failed_generic = False
    warnings: list[str] = []

    models: list[CompiledModel] = []
    block: dict[str, str | int] | None = None
    block_ops: list[OpRow] = []
    in_table = False

    def close_block() -> None:
        nonlocal block, block_ops
        if block is not None:
            models.append(_build_model(block, block_ops))
        block, block_ops = None, []

    for lineno, line in enumerate(lines, start=1):
        if not line:
            continue  # blank lines separate sections but carry no meaning
        if in_table:
            row = _OP_ROW_RE.match(line)
            if row is not None:
                if block is None:
                    logger.warning("line %d: operator row outside a model block ignored", lineno)
                else:
                    fields = _status_row(row["operator"], row["count"], row["status"])
                    block_ops.append(OpRow(*fields))
                continue
            in_table = False  # first non-row line ends the table; handle it normally below

        if (m := _VERSION_RE.match(line)) is not None:
            version = m["version"]
        elif (m := _SUCCESS_RE.match(line)) is not None:
            compile_ms = int(m["ms"])
            succeeded_line = True
        elif line.startswith("Compilation succeeded"):
            succeeded_line = True
        elif line.startswith("Compilation failed"):
            # "Compilation failed: <why>" carries the reason; "Compilation failed!" does not.
            _, sep, why = line.partition(":")
            if sep and why.strip():
                failure_reasons.append(why.strip())
            failed_generic = True
        elif line.startswith(("ERROR:", "Error:")):
            failure_reasons.append(line.partition(":")[2].strip())
        elif line.startswith("Internal compiler error"):
            failure_reasons.append(line)
        elif line.startswith(_NOT_ALL_MAPPED_PREFIX) or line.lower().startswith("warning"):
            if line not in warnings:  # co-compiled models repeat the same sentence
                warnings.append(line)
        elif _TABLE_HEADER_RE.match(line):
            if block is None:
                logger.warning("line %d: operator table outside a model block ignored", lineno)
            in_table = True
        elif (m := _KEY_VALUE_RE.match(line)) is not None and m["key"] in _BLOCK_KEYS:
            key, value = m["key"], m["value"]
            field = _BLOCK_KEYS[key]
            if field == "input_model":
                close_block()  # each "Input model" starts the next model/segment
                block = {}
            if block is None:
                raise ValueError(
                    f"line {lineno}: {key!r} appears before any 'Input model:' line; "
                    "expected each model block to start with 'Input model:'"
                )
            try:
                if field in _SIZE_FIELDS:
                    block[field] = parse_size(value)
                elif field in _INT_FIELDS:
                    block[field] = int(value)
                else:
                    block[field] = value
            except ValueError as exc:
                raise ValueError(f"line {lineno}: bad value in {line!r}: {exc}") from exc
        else:
            logger.debug("line %d ignored: %s", lineno, line)
    close_block()

    if not models and _looks_like_operation_log(lines):
        # The log starts with the same version line, so check it before the version test.
        raise ValueError(
            "this is an Edge TPU operation log (*_edgetpu.log), not compiler output; "
            "use parse_operation_log()"
        )
    if version is None and not models:
        raise ValueError(
            "not edgetpu_compiler output: expected an 'Edge TPU Compiler version ...' line "
            "or an 'Input model: ...' block"
        )

    failed = failed_generic or bool(failure_reasons)
    success = not failed and (succeeded_line or bool(models))
    failure_reason: str | None = None
    if failed:
        failure_reason = failure_reasons[0] if failure_reasons else "Compilation failed!"
    elif not success:
        # E.g. the compiler was killed: a version line and nothing else.
        failure_reason = "no 'Model compiled successfully' line and no model block in the output"
    return CompilerReport(
        compiler_version=version,
        success=success,
        compile_ms=compile_ms,
        models=tuple(models),
        failure_reason=failure_reason,
        warnings=tuple(warnings),
    )


def parse_operation_log(text: str) -> tuple[OperationLogEntry, ...]:
    """Parse a ``*_edgetpu.log`` operation log into its table rows.

    Columns are taken from the "Operator ... Status" header line, so logs with more columns
    keep them in :attr:`OperationLogEntry.extra`. Header lines (version, Input, Output) are
    skipped. Raises ``ValueError`` when no operator table header is found.
    """
    entries: list[OperationLogEntry] = []
    columns: list[str] | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if _TABLE_HEADER_RE.match(line):
            # Headers are aligned with runs of spaces; a column name itself has single spaces.
            columns = re.split(r"\s{2,}", line)
            continue
        if columns is None:
            continue  # preamble: version, Input:, Output:
        # Every column but the last (status) is a single token.
        parts = line.split(None, len(columns) - 1)
        if len(parts) != len(columns):
            logger.debug("operation log line %d ignored: %s", lineno, line)
            continue
        row = dict(zip(columns, parts))
        count = row.get("Count", "1")
        if not count.isdigit():
            logger.debug("operation log line %d ignored (count %r): %s", lineno, count, line)
            continue
        operator, n, status, mapped = _status_row(row["Operator"], count, row["Status"])
        extra = tuple((c, v) for c, v in row.items() if c not in ("Operator", "Count", "Status"))
        entries.append(OperationLogEntry(operator, n, status, mapped, extra))
    if columns is None:
        raise ValueError(
            "not an Edge TPU operation log: expected an 'Operator   Count   Status' table header"
        )
    return tuple(entries)
