"""What ``edgetpu_compiler`` reports, as data: the operator table's rows, the operation log's
entries, each compiled model's memory and op split, and the whole report.
:mod:`latency_models.edgetpu.report` parses the compiler's text into these.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CompiledModel", "CompilerReport", "OpRow", "OperationLogEntry"]


@dataclass(frozen=True)
class OpRow:
    """One row of the compiler's operator table (``-s``): ``count`` ops of one type and status."""

    operator: str
    count: int
    status: str
    mapped: bool


@dataclass(frozen=True)
class OperationLogEntry:
    """One row of a ``*_edgetpu.log`` operation log.

    ``extra`` holds (column name, value) pairs of any columns besides Operator/Count/Status,
    so a log format with more columns still parses without losing them.
    """

    operator: str
    count: int
    status: str
    mapped: bool
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CompiledModel:
    """One "Input model ... Operation log" block: one co-compiled model or one segment."""

    input_model: str
    input_size_bytes: int
    output_model: str
    output_size_bytes: int
    on_chip_bytes: int  # parameters cached in on-chip SRAM
    on_chip_remaining_bytes: int  # SRAM still free for parameters ("remaining"/"available")
    off_chip_bytes: int  # parameters streamed from host memory on every inference
    n_subgraphs: int
    n_ops_total: int
    n_ops_on_tpu: int
    n_ops_on_cpu: int
    operation_log: str
    ops_split_inferred: bool = False  # True when the TPU/CPU lines were absent (all on TPU)
    ops: tuple[OpRow, ...] = ()  # empty unless the compiler ran with -s

    @property
    def fully_mapped(self) -> bool:
        """True when every op runs on the Edge TPU."""
        return self.n_ops_on_cpu == 0

    @property
    def unmapped_ops(self) -> tuple[OpRow, ...]:
        """Operator-table rows that fall back to the CPU."""
        return tuple(row for row in self.ops if not row.mapped)


@dataclass(frozen=True)
class CompilerReport:
    """Everything one ``edgetpu_compiler`` invocation printed."""

    compiler_version: str | None  # None only when the text lacks the version line
    success: bool
    compile_ms: int | None
    models: tuple[CompiledModel, ...]
    failure_reason: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def model(self) -> CompiledModel:
        """The single (or first) compiled model; first in a co-compile gets the cache first."""
        if not self.models:
            reason = self.failure_reason or "no model block in the compiler output"
            raise ValueError(f"edgetpu_compiler report has no compiled model: {reason}")
        return self.models[0]

    # Shortcuts for the common single-model case; all refer to self.model.
    @property
    def on_chip_bytes(self) -> int:
        return self.model.on_chip_bytes

    @property
    def on_chip_remaining_bytes(self) -> int:
        return self.model.on_chip_remaining_bytes

    @property
    def off_chip_bytes(self) -> int:
        return self.model.off_chip_bytes

    @property
    def n_subgraphs(self) -> int:
        return self.model.n_subgraphs

    @property
    def n_ops_total(self) -> int:
        return self.model.n_ops_total

    @property
    def n_ops_on_tpu(self) -> int:
        return self.model.n_ops_on_tpu

    @property
    def n_ops_on_cpu(self) -> int:
        return self.model.n_ops_on_cpu

    @property
    def ops(self) -> tuple[OpRow, ...]:
        return self.model.ops
