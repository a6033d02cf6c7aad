"""Shared test fixtures: quiet TensorFlow, the repo's examples importable, tiny proxy spaces."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

# Constructor arguments that make each space's models tiny (32 px proxy scale). A space
# registered later must be added here, or the contract suite fails and says so.
PROXY_KWARGS = {
    "mnasnet": {"resolution": 32, "width": 0.25, "depth": 0.5, "num_classes": 10},
    "efficientnet_edgetpu": {"resolution": 32, "width": 0.25, "depth": 0.5, "num_classes": 10},
    "efficientnet_edgetpu_bench": {"num_classes": 10},
    "my_spaces:TinySpace": {},
}

# Real edgetpu_compiler outputs (copied verbatim from ../shared/data/edgetpu/compiler_logs, where
# their README says where each was published), shipped with the tests so that a clean clone
# runs the parser and the fake-compiler branches.
COMPILER_LOGS = ROOT / "tests" / "data" / "compiler_logs"

HEAVY = ("tensorflow", "keras", "ai_edge_litert", "ray", "nas")


def heavy_modules_loaded_by(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter (it must succeed); the heavy modules it imported."""
    import subprocess

    probe = f"{code}\nimport sys\nprint('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("HEAVY ")][-1]
    return eval(line[len("HEAVY "):])  # a list literal we printed ourselves
