"""Tests of latency_models.edgetpu.compiler against the real compiler outputs in shared/data.

The variants the fixture README describes (older wording, co-compiled models, failures, each
operator status, size units) are made by editing the real texts, so they stay close to what
the compiler prints. The compiler is not installed here: run_compiler is exercised with a fake
``edgetpu_compiler`` shell script on PATH that prints a real fixture.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
from pathlib import Path

import pytest

from latency_models.edgetpu import compiler as ec
from latency_models.edgetpu import report as edgetpu_report
from latency_models.edgetpu.compiler import run_compiler
from latency_models.errors import EdgeTPUCompilerNotFound
from latency_models.edgetpu.report import (
    KNOWN_STATUSES,
    MAPPED_STATUS,
    CompiledModel,
    CompilerReport,
    OperationLogEntry,
    OpRow,
    parse_compiler_output,
    parse_operation_log,
    parse_size,
)

from conftest import COMPILER_LOGS as LOGS_DIR  # noqa: E402
V15 = "v15_all_mapped_small_spill.txt"
V16 = "v16_cpu_ops_sram_full.txt"
V1_LOG = "v1_operation_log_mobilenet_v2.log"

UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
NOT_ALL_MAPPED = (
    "Model successfully compiled but not all operations are supported by the Edge TPU. "
    "A percentage of the model will instead run on the CPU, which is slower. If possible, "
    "consider updating your model to use only operations supported by the Edge TPU. "
    "For details, visit g.co/coral/model-reqs."
)
LARGE_ACTIVATIONS = "Compilation failed due to large activation tensors in model."


def fixture_path(name: str) -> Path:
    if not LOGS_DIR.is_dir():
        pytest.skip(f"real compiler outputs not found at {LOGS_DIR} (shared data folder absent)")
    path = LOGS_DIR / name
    assert path.is_file(), f"fixture {name} missing from {LOGS_DIR}"
    return path


def fixture_text(name: str) -> str:
    return fixture_path(name).read_text(encoding="utf-8")


def replace_once(text: str, old: str, new: str) -> str:
    """str.replace that fails loudly if the real text no longer contains ``old``."""
    assert text.count(old) == 1, f"expected exactly one {old!r} in the fixture"
    return text.replace(old, new)


def model_section(text: str) -> str:
    """The part of a real output from 'Input model:' to the end of its operator table."""
    start = text.index("Input model:")
    end = text.find("Compilation child process")  # v16 prints trailer lines after the table
    return text[start:end if end >= 0 else None]


# --------------------------------------------------------------------------- real files


def test_every_real_compiler_output_parses() -> None:
    names = sorted(p.name for p in fixture_path(V15).parent.glob("*.txt"))
    assert names == [V15, V16]  # a new fixture should get its own exact-value test below
    for name in names:
        report = parse_compiler_output(fixture_text(name))
        assert report.success and len(report.models) == 1, name


def test_v15_all_mapped_small_spill() -> None:
    report = parse_compiler_output(fixture_text(V15))

    assert report.compiler_version == "15.0.340273435"
    assert report.success is True
    assert report.compile_ms == 128
    assert report.failure_reason is None
    assert report.warnings == ()
    assert len(report.models) == 1
    m = report.model
    assert m.input_model == "tl_obj_experimental.tflite"
    assert m.input_size_bytes == 77_967  # 76.14 KiB
    assert m.output_model == "tl_obj_experimental_edgetpu.tflite"
    assert m.output_size_bytes == 156_201  # 152.54 KiB
    assert m.on_chip_bytes == 87_808  # 85.75 KiB
    assert m.on_chip_remaining_bytes == 8_147_436  # 7.77 MiB
    assert m.off_chip_bytes == 5_632  # 5.50 KiB
    assert m.n_subgraphs == 1
    assert (m.n_ops_total, m.n_ops_on_tpu, m.n_ops_on_cpu) == (15, 15, 0)
    assert m.ops_split_inferred is True  # no "will run on Edge TPU/CPU" lines in this output
    assert m.operation_log == "tl_obj_experimental_edgetpu.log"
    assert m.fully_mapped and m.unmapped_ops == ()
    assert m.ops == (
        OpRow("SOFTMAX", 1, MAPPED_STATUS, True),
        OpRow("FULLY_CONNECTED", 2, MAPPED_STATUS, True),
        OpRow("ADD", 4, MAPPED_STATUS, True),
        OpRow("MUL", 4, MAPPED_STATUS, True),
        OpRow("CONV_2D", 4, MAPPED_STATUS, True),
    )
    assert sum(row.count for row in m.ops) == m.n_ops_total
    # The report's shortcuts are the first model's values.
    assert (report.on_chip_bytes, report.on_chip_remaining_bytes, report.off_chip_bytes) == (
        87_808, 8_147_436, 5_632,
    )
    assert (report.n_ops_total, report.n_ops_on_tpu, report.n_ops_on_cpu) == (15, 15, 0)
    assert report.n_subgraphs == 1 and report.ops == m.ops


def test_v16_cpu_ops_sram_full() -> None:
    report = parse_compiler_output(fixture_text(V16))

    assert report.compiler_version == "16.0.384591198"
    assert report.success is True
    assert report.compile_ms == 3173
    assert report.failure_reason is None
    assert report.warnings == (NOT_ALL_MAPPED,)
    m = report.model
    assert m.input_model == "yolov5s-int8-224.tflite"
    assert m.input_size_bytes == 7_728_005  # 7.37 MiB
    assert m.output_model == "yolov5s-int8-224_edgetpu.tflite"
    assert m.output_size_bytes == 8_745_124  # 8.34 MiB
    assert m.on_chip_bytes == 6_375_342  # 6.08 MiB
    assert m.on_chip_remaining_bytes == 0  # 0.00B: SRAM full
    assert m.off_chip_bytes == 1_782_579  # 1.70 MiB streamed
    assert m.n_subgraphs == 2
    assert (m.n_ops_total, m.n_ops_on_tpu, m.n_ops_on_cpu) == (294, 289, 5)
    assert m.ops_split_inferred is False
    assert m.operation_log == "yolov5s-int8-224_edgetpu.log"
    assert not m.fully_mapped
    assert len(m.ops) == 17
    assert m.ops[0] == OpRow("RESIZE_NEAREST_NEIGHBOR", 2, MAPPED_STATUS, True)
    assert m.ops[-1] == OpRow("CONV_2D", 62, MAPPED_STATUS, True)
    assert OpRow("MUL", 80, MAPPED_STATUS, True) in m.ops
    assert OpRow("LOGISTIC", 62, MAPPED_STATUS, True) in m.ops
    assert m.unmapped_ops == (
        OpRow("CONCATENATION", 1, UNSPECIFIED, False),
        OpRow("TRANSPOSE", 1, UNSPECIFIED, False),
        OpRow("QUANTIZE", 2, UNSPECIFIED, False),
        OpRow("RESHAPE", 1, UNSPECIFIED, False),
    )
    # The table is consistent with the header counts.
    assert sum(row.count for row in m.ops) == 294
    assert sum(row.count for row in m.unmapped_ops) == 5


def test_v1_operation_log() -> None:
    entries = parse_operation_log(fixture_text(V1_LOG))

    assert entries == (
        OperationLogEntry("AVERAGE_POOL_2D", 1, MAPPED_STATUS, True),
        OperationLogEntry("CONV_2D", 36, MAPPED_STATUS, True),
        OperationLogEntry("DEPTHWISE_CONV_2D", 17, MAPPED_STATUS, True),
        OperationLogEntry("RESHAPE", 1, MAPPED_STATUS, True),
        OperationLogEntry("ADD", 10, MAPPED_STATUS, True),
    )
    assert sum(e.count for e in entries) == 65


def test_operation_log_is_not_mistaken_for_compiler_output() -> None:
    with pytest.raises(ValueError, match=r"operation log.*parse_operation_log"):
        parse_compiler_output(fixture_text(V1_LOG))


def test_operation_log_statuses_and_extra_columns() -> None:
    text = replace_once(
        fixture_text(V1_LOG), "CONV_2D                        36         Mapped to Edge TPU",
        "CONV_2D                        36         Operation version not supported",
    )
    entries = parse_operation_log(text)
    assert entries[1] == OperationLogEntry("CONV_2D", 36, "Operation version not supported", False)
    assert [e.mapped for e in entries] == [True, False, True, True, True]

    # A log with one more column keeps it, keyed by the header name.
    wide = (
        "Operator                       Count      Tensor      Status\n\n"
        "CONV_2D                        3          conv1       Operation not supported\n"
    )
    assert parse_operation_log(wide) == (
        OperationLogEntry("CONV_2D", 3, "Operation not supported", False, (("Tensor", "conv1"),)),
    )


def test_compiler_output_table_also_reads_as_operation_log() -> None:
    # The -s table of stdout has the operation log's layout; both parsers must agree on it.
    report = parse_compiler_output(fixture_text(V16))
    entries = parse_operation_log(fixture_text(V16))
    assert [(e.operator, e.count, e.status, e.mapped) for e in entries] == [
        (r.operator, r.count, r.status, r.mapped) for r in report.ops
    ]


# --------------------------------------------------------------------------- variants


@pytest.mark.parametrize("before", [False, True], ids=["in-place", "old-order"])
def test_older_available_wording(before: bool) -> None:
    text = fixture_text(V15)
    remaining = "On-chip memory remaining for caching model parameters: 7.77MiB\n"
    available = "On-chip memory available for caching model parameters: 7.77MiB\n"
    if before:
        # Old compilers printed the "available" line before the "used" line.
        text = replace_once(text, remaining, "")
        text = replace_once(
            text, "On-chip memory used", available + "On-chip memory used",
        )
    else:
        text = replace_once(text, remaining, available)
    m = parse_compiler_output(text).model
    assert m.on_chip_remaining_bytes == 8_147_436
    assert m.on_chip_bytes == 87_808 and m.off_chip_bytes == 5_632


def test_co_compiled_models_each_with_their_own_table() -> None:
    v15, v16 = fixture_text(V15), fixture_text(V16)
    text = (
        "Edge TPU Compiler version 16.0.384591198\n"
        "Started a compilation timeout timer of 180 seconds.\n\n"
        "Models compiled successfully in 3301 ms.\n\n"
        + model_section(v15) + "\n"
        + model_section(v16)
        + "Compilation child process completed within timeout period.\n"
        "Compilation succeeded!\n"
    )
    report = parse_compiler_output(text)

    assert report.success and report.compile_ms == 3301
    assert [m.input_model for m in report.models] == [
        "tl_obj_experimental.tflite", "yolov5s-int8-224.tflite",
    ]
    first, second = report.models
    assert report.model is first  # the first listed model gets the parameter cache first
    assert (first.on_chip_bytes, first.off_chip_bytes, first.n_ops_total) == (87_808, 5_632, 15)
    assert (first.n_ops_on_tpu, first.n_ops_on_cpu, first.ops_split_inferred) == (15, 0, True)
    assert [r.operator for r in first.ops] == [
        "SOFTMAX", "FULLY_CONNECTED", "ADD", "MUL", "CONV_2D",
    ]
    assert (second.on_chip_bytes, second.on_chip_remaining_bytes) == (6_375_342, 0)
    assert (second.n_ops_on_tpu, second.n_ops_on_cpu, second.ops_split_inferred) == (289, 5, False)
    assert len(second.ops) == 17 and second.ops[0].operator == "RESIZE_NEAREST_NEIGHBOR"
    assert sum(r.count for r in second.ops) == 294
    assert report.warnings == (NOT_ALL_MAPPED,)


def test_segments_without_tables_repeat_the_block() -> None:
    # --num_segments without -s: one block per segment, no operator tables.
    section = model_section(fixture_text(V15)).split("Operator ")[0]
    segments = [
        section.replace("tl_obj_experimental", f"tl_obj_experimental_segment_{i}_of_2")
        for i in range(2)
    ]
    text = "Edge TPU Compiler version 15.0.340273435\n\nModel compiled successfully in 99 ms.\n\n"
    report = parse_compiler_output(text + "\n".join(segments))
    assert [m.input_model for m in report.models] == [
        "tl_obj_experimental_segment_0_of_2.tflite", "tl_obj_experimental_segment_1_of_2.tflite",
    ]
    assert all(m.ops == () and m.n_ops_total == 15 for m in report.models)


def test_failed_compile_large_activations() -> None:
    text = (
        "Edge TPU Compiler version 16.0.384591198\n"
        "Started a compilation timeout timer of 180 seconds.\n"
        f"Compilation failed: {LARGE_ACTIVATIONS}\n"
        "Compilation child process completed within timeout period.\n"
        "Compilation failed! \n"
    )
    report = parse_compiler_output(text)
    assert report.compiler_version == "16.0.384591198"
    assert report.success is False
    assert report.failure_reason == LARGE_ACTIVATIONS
    assert report.models == () and report.compile_ms is None
    with pytest.raises(ValueError, match="large activation tensors"):
        _ = report.model


def test_failed_compile_without_reason_and_killed_compiler() -> None:
    bare = parse_compiler_output("Edge TPU Compiler version 16.0.384591198\nCompilation failed!\n")
    assert bare.success is False and bare.failure_reason == "Compilation failed!"

    killed = parse_compiler_output(
        "Edge TPU Compiler version 16.0.384591198\n"
        "Started a compilation timeout timer of 180 seconds.\n"
    )
    assert killed.success is False
    assert killed.failure_reason is not None
    assert "Model compiled successfully" in killed.failure_reason


@pytest.mark.parametrize("status", KNOWN_STATUSES)
def test_each_status_string(status: str) -> None:
    text = replace_once(
        fixture_text(V15),
        "CONV_2D                        4          Mapped to Edge TPU",
        f"CONV_2D                        4          {status}",
    )
    row = parse_compiler_output(text).model.ops[-1]
    assert row == OpRow("CONV_2D", 4, status, status == MAPPED_STATUS)


def test_unknown_status_is_kept_as_unmapped() -> None:
    text = replace_once(
        fixture_text(V15), "SOFTMAX                        1          Mapped to Edge TPU",
        "SOFTMAX                        1          Some future status wording",
    )
    assert parse_compiler_output(text).model.ops[0] == OpRow(
        "SOFTMAX", 1, "Some future status wording", False,
    )


@pytest.mark.parametrize(
    ("printed", "expected"),
    [("0.00B", 0), ("512.00B", 512), ("5.50KiB", 5_632), ("1.70MiB", 1_782_579)],
)
def test_sizes_in_each_unit(printed: str, expected: int) -> None:
    text = replace_once(
        fixture_text(V15),
        "Off-chip memory used for streaming uncached model parameters: 5.50KiB",
        f"Off-chip memory used for streaming uncached model parameters: {printed}",
    )
    assert parse_compiler_output(text).model.off_chip_bytes == expected


def test_unknown_lines_and_crlf_are_tolerated() -> None:
    text = fixture_text(V16)
    text = replace_once(text, "Input size:", "Some future statistic: 42\nINFO: new\nInput size:")
    text = text.replace("\n", "\r\n")
    m = parse_compiler_output(text).model
    assert (m.input_size_bytes, m.n_ops_on_cpu, len(m.ops)) == (7_728_005, 5, 17)


def test_missing_version_line_still_parses_a_model_block() -> None:
    report = parse_compiler_output(model_section(fixture_text(V15)))
    assert report.compiler_version is None
    assert report.success and report.model.on_chip_bytes == 87_808


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "garbage",
    ["", "   \n\n", "hello world\nthis is not a compiler report\n", '{"latency_ms": 3.2}'],
)
def test_garbage_raises(garbage: str) -> None:
    expected = r"not edgetpu_compiler output: expected an 'Edge TPU Compiler version"
    with pytest.raises(ValueError, match=expected):
        parse_compiler_output(garbage)


def test_incomplete_model_block_names_the_missing_line() -> None:
    text = replace_once(
        fixture_text(V15),
        "Off-chip memory used for streaming uncached model parameters: 5.50KiB\n", "",
    )
    with pytest.raises(ValueError, match=r"tl_obj_experimental\.tflite.*'Off-chip memory used"):
        parse_compiler_output(text)


def test_block_line_before_input_model_raises() -> None:
    with pytest.raises(ValueError, match=r"'Input size' appears before any 'Input model:'"):
        parse_compiler_output("Edge TPU Compiler version 16.0.1\nInput size: 1.00KiB\n")


def test_bad_size_in_report_raises_with_line() -> None:
    text = replace_once(fixture_text(V15), "Input size: 76.14KiB", "Input size: 76.14KB")
    with pytest.raises(ValueError, match=r"line \d+: bad value in 'Input size: 76\.14KB'"):
        parse_compiler_output(text)


def test_only_one_of_the_cpu_split_lines_raises() -> None:
    text = replace_once(fixture_text(V16), "Number of operations that will run on CPU: 5\n", "")
    with pytest.raises(ValueError, match="expected both lines or neither"):
        parse_compiler_output(text)


def test_garbage_operation_log_raises() -> None:
    with pytest.raises(ValueError, match=r"not an Edge TPU operation log: expected an 'Operator"):
        parse_operation_log("Edge TPU Compiler version 1.0\nInput: a.tflite\n")


# --------------------------------------------------------------------------- parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.00B", 0),
        ("0B", 0),
        ("1B", 1),
        ("1023.00B", 1023),
        ("1.00KiB", 1024),
        ("85.75KiB", 87_808),
        ("7.77MiB", 8_147_436),  # 8147435.52 rounds up
        ("6.08MiB", 6_375_342),  # 6375342.08 rounds down
        ("0.50B", 1),  # half rounds up, not to even
        ("1.00GiB", 1 << 30),
        ("  2.00MiB \n", 2 << 20),
        ("3 KiB", 3 * 1024),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "KiB", "12", "12KB", "12 kib", "-1.00B", "1.5TiB", "1,024B", "abc", "1.2.3MiB", ".5MiB"],
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"bad Edge TPU compiler size .*expected a number"):
        parse_size(text)


# --------------------------------------------------------------------------- run_compiler


def make_fake_compiler(bin_dir: Path, stdout_file: Path, exit_status: int = 0) -> Path:
    """An ``edgetpu_compiler`` that records its arguments and prints a real output."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "edgetpu_compiler"
    args_file = bin_dir / "args.txt"
    script.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$@\" > '{args_file}'\n"
        f"cat '{stdout_file}'\n"
        f"exit {exit_status}\n",
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return args_file


@pytest.fixture
def tflite(tmp_path: Path) -> Path:
    model = tmp_path / "model.tflite"
    model.write_bytes(b"TFL3 fake")
    return model


def test_run_compiler_missing_binary(
    tmp_path: Path, tflite: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("subprocess.run called although the compiler is missing")

    monkeypatch.setattr(ec.subprocess, "run", must_not_run)
    with pytest.raises(EdgeTPUCompilerNotFound) as info:
        run_compiler(tflite, tmp_path / "out")
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert "\n" not in message
    assert "'edgetpu_compiler' not found" in message
    assert "Coral's apt repository" in message and "package edgetpu-compiler" in message
    assert "x86-64 Debian/Ubuntu only" in message
    assert "'edgetpu-model' latency predictor" in message
    assert not (tmp_path / "out").exists()  # nothing was done


def test_run_compiler_parses_real_output_from_fake_binary(
    tmp_path: Path, tflite: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bin_dir = tmp_path / "bin"
    args_file = make_fake_compiler(bin_dir, fixture_path(V16))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    out_dir = tmp_path / "compiled"

    report = run_compiler(tflite, out_dir, extra_args=("-a",))

    assert args_file.read_text().splitlines() == [
        "-s", "-o", str(out_dir), "-t", "180", "-a", str(tflite),
    ]
    assert out_dir.is_dir()
    assert isinstance(report, CompilerReport) and report.success
    assert report.compiler_version == "16.0.384591198"
    assert isinstance(report.model, CompiledModel)
    assert (report.on_chip_bytes, report.on_chip_remaining_bytes, report.off_chip_bytes) == (
        6_375_342, 0, 1_782_579,
    )
    assert (report.n_ops_on_tpu, report.n_ops_on_cpu) == (289, 5)


def test_run_compiler_without_timeout_flag_and_explicit_path(tmp_path: Path, tflite: Path) -> None:
    bin_dir = tmp_path / "bin"
    args_file = make_fake_compiler(bin_dir, fixture_path(V15))
    assert str(bin_dir) not in os.environ.get("PATH", "")  # found by its path, not via PATH

    report = run_compiler(
        tflite, tmp_path / "out", timeout_s=None, compiler=str(bin_dir / "edgetpu_compiler"),
    )
    assert args_file.read_text().splitlines() == ["-s", "-o", str(tmp_path / "out"), str(tflite)]
    assert report.success and report.model.n_ops_total == 15


def test_run_compiler_failed_compile_is_a_report(
    tmp_path: Path, tflite: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    failed = tmp_path / "failed.txt"
    failed.write_text(
        "Edge TPU Compiler version 16.0.384591198\n"
        f"Compilation failed: {LARGE_ACTIVATIONS}\nCompilation failed!\n",
        encoding="utf-8",
    )
    make_fake_compiler(tmp_path / "bin", failed, exit_status=1)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")

    report = run_compiler(tflite, tmp_path / "out")
    assert report.success is False and report.failure_reason == LARGE_ACTIVATIONS


def test_run_compiler_nonzero_exit_overrides_success_and_garbage(
    tmp_path: Path, tflite: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    make_fake_compiler(tmp_path / "bin", fixture_path(V15), exit_status=3)
    report = run_compiler(tflite, tmp_path / "out")
    assert report.success is False
    assert report.failure_reason == "edgetpu_compiler exited with status 3"
    assert report.model.n_ops_total == 15  # what was printed is kept

    junk = tmp_path / "junk.txt"
    junk.write_text("Segmentation fault\n", encoding="utf-8")
    make_fake_compiler(tmp_path / "bin", junk, exit_status=139)
    report = run_compiler(tflite, tmp_path / "out")
    assert report.success is False
    assert report.failure_reason == "edgetpu_compiler exited with status 139: Segmentation fault"

    make_fake_compiler(tmp_path / "bin", junk, exit_status=0)
    with pytest.raises(ValueError, match="not edgetpu_compiler output"):
        run_compiler(tflite, tmp_path / "out")


def test_run_compiler_hang_is_a_failed_report(
    tmp_path: Path, tflite: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_fake_compiler(tmp_path / "bin", fixture_path(V15))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")

    def hang(cmd: list[str], **kwargs: object) -> None:
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])  # type: ignore[arg-type]

    monkeypatch.setattr(ec.subprocess, "run", hang)
    report = run_compiler(tflite, tmp_path / "out", timeout_s=5)
    assert report.success is False and report.models == ()
    assert report.failure_reason == "edgetpu_compiler did not finish within 65 s"


def test_run_compiler_missing_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_fake_compiler(tmp_path / "bin", fixture_path(V15))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    with pytest.raises(FileNotFoundError, match="TFLite model to compile not found"):
        run_compiler(tmp_path / "absent.tflite", tmp_path / "out")


def test_module_logs_instead_of_printing(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    with caplog.at_level(logging.DEBUG, logger=edgetpu_report.__name__):
        parse_compiler_output(fixture_text(V16))
    assert edgetpu_report.logger.name == "latency_models.edgetpu.report"
    assert any("ignored" in r.getMessage() for r in caplog.records)  # e.g. the trailer lines
    assert capsys.readouterr() == ("", "")
