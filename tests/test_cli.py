"""The ``nas`` CLI: spaces commands, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import search_spaces as s
from nas.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_spaces_list(capsys):
    code, out, _ = run(capsys, "spaces", "list")
    assert code == 0
    assert "mnasnet" in out and "efficientnet_edgetpu" in out


def test_spaces_show_with_params(capsys):
    code, out, _ = run(capsys, "spaces", "show", "efficientnet_edgetpu", "-p", "resolution=32", "-p", "width=0.5")
    assert code == 0
    assert "s6.expansion" in out and "resolution=32" in out
    assert f"{s.get('efficientnet_edgetpu', resolution=32, width=0.5).size:,}" in out


def test_spaces_show_user_space_by_import_path(capsys):
    code, out, _ = run(capsys, "spaces", "show", "my_spaces:TinySpace")
    assert code == 0 and "s2.block" in out and "size: 48" in out


def test_spaces_sample_is_seeded_and_reports_params_and_macs(capsys):
    args = ("spaces", "sample", "mnasnet", "-p", "resolution=32", "-p", "width=0.25", "--n", "3", "--seed", "4",
            "--format", "jsonl")
    code, out, _ = run(capsys, *args)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 3
    for row in rows:
        arch = s.Arch.from_string(row["arch"])
        assert row["params"] == s.count_params(arch) and row["macs"] == s.count_macs(arch)
    assert run(capsys, *args)[1] == out


def test_spaces_sample_table(capsys):
    code, out, _ = run(capsys, "spaces", "sample", "efficientnet_edgetpu", "--n", "2")
    assert code == 0 and out.splitlines()[0].split() == ["#", "params", "MACs", "arch"]
    assert len(out.splitlines()) == 3


def test_spaces_references(capsys):
    code, out, _ = run(capsys, "spaces", "references", "--strings")
    assert code == 0
    assert "5,438,392" in out and "3,504,872" in out
    assert s.reference("mnasnet_b1").to_string() in out


def test_arch_show_layers(capsys):
    text = s.reference("mobilenet_v2").to_string()
    code, out, _ = run(capsys, "arch", "show", text, "--layers")
    assert code == 0 and "params 3,504,872" in out and "block2b_add" in out


@pytest.mark.parametrize("argv,message", [
    (("spaces", "show", "mnasnt"), "space: unknown name 'mnasnt'.*did you mean 'mnasnet'"),
    (("spaces", "show", "mnasnet", "-p", "width"), "--param: expected KEY=VALUE"),
    (("spaces", "show", "mnasnet", "-p", "width=2", "-p", "width=3"), "--param: 'width' given twice"),
    (("spaces", "show", "mnasnet", "-p", "width=-1"), "width: expected a number in"),
    (("spaces", "show", "mnasnet", "-p", "colour=red"), "unexpected keyword argument 'colour'"),
    (("spaces", "show", "nowhere:Space"), "cannot import it \\(No module named 'nowhere'\\)"),
    (("spaces", "sample", "mnasnet", "--n", "0"), "Invalid value for '--n'"),
    (("spaces", "sample", "mnasnet", "--bogus"), "No such option"),
    (("arch", "show", "v1-res32:stem-k3-s2-o8-relu:conv-r1-k3-s1-o8-gelu:head-o8-relu"), "unknown token 'gelu'"),
    (("nonsense",), "No such command 'nonsense'"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    import re

    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in err


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(ValueError, match="unknown name"):
        main(["--debug", "spaces", "show", "mnasnt"])


def test_console_script_exit_status():
    # The real entry point, as a user runs it: status 2 and one line on stderr.
    r = subprocess.run([sys.executable, "-m", "nas.cli", "spaces", "show", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: space: unknown name 'nope'")
    assert r.stdout == ""


def test_ci_runs_the_readme_test_command():
    from conftest import ROOT

    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme = (ROOT / "README.md").read_text()
    assert ci in readme and "pytest" in ci


def test_space_membership_is_checked_before_the_input_size_applies(capsys):
    # A member of the space stays one when predicted at another input size.
    code, out, err = run(capsys, "latency", "predict", "sample:3", "--space", "efficientnet_edgetpu",
                         "-p", "resolution=64", "--input-size", "96")
    assert code == 0, err
    assert out.splitlines()[0].startswith("v1-res96")
    ref = s.reference("efficientnet_edgetpu_s").to_string()
    code, out, err = run(capsys, "latency", "predict", ref, "--space", "efficientnet_edgetpu", "--input-size", "128")
    assert code == 0, err
    code, out, err = run(capsys, "latency", "predict", ref, "--space", "mnasnet", "--input-size", "128")
    assert code == 2 and "--space: the arch is not a member of" in err
