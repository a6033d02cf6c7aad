"""Stand-ins for hardware this machine lacks, shared by the tests and the benchmarks.

``make_fake_compiler`` writes an ``edgetpu_compiler`` for PATH that behaves as the real one
does on success: it writes ``OUT_DIR/<name>_edgetpu.tflite`` (a copy of the model) and prints
a real compiler output (``tests/data/compiler_logs``, published logs) with the logged model's
name replaced by the input's, so the toolkit's compile step and report parser run end to end.
"""

from __future__ import annotations

import stat
from pathlib import Path

V15_MODEL = "tl_obj_experimental"  # the model name inside the v15 log, rewritten by the fake


def make_fake_compiler(bin_dir: Path, output: Path, *, exit_status: int = 0, write_model: bool = True) -> Path:
    """An ``edgetpu_compiler`` that records its arguments, copies the model as the compiled
    one, and prints ``output`` with the v15 model name replaced by the real input's name."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    args_file = bin_dir / "args.txt"
    copy = 'cp "$model" "$out/${stem}_edgetpu.tflite"' if write_model else ":"
    script = bin_dir / "edgetpu_compiler"
    script.write_text(f"""#!/bin/sh
printf '%s\\n' "$@" > '{args_file}'
out=.
while [ $# -gt 1 ]; do
  case "$1" in
    -o) out="$2"; shift 2 ;;
    -t|-m|-n) shift 2 ;;
    *) shift ;;
  esac
done
model="$1"
stem=$(basename "$model" .tflite)
{copy}
sed "s/{V15_MODEL}/$stem/g" '{output}'
exit {exit_status}
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return args_file
