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


# The files that run end-to-end searches, longest first (each file's time on two workers:
# benchmarks/results/suite_time.md). pytest-xdist hands a file to a worker as it frees up
# (--dist loadfile), in collection order (--no-loadscope-reorder: by default it orders files by
# their number of tests, which put two long ones last, and one worker ran them for 70-90 s
# after the other had finished). The long ones first, the many short ones after, and the two
# workers end together. A file missing here keeps its place after them.
LONGEST_FIRST = ("test_search.py", "test_devices.py", "test_oneshot_search.py", "test_folder_search.py",
                 "test_service.py", "test_oneshot.py", "test_faults.py", "test_bad_inputs.py", "test_cluster.py",
                 "test_supernet.py", "test_hypermodel.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(Path(str(item.fspath)).name, len(rank)), order[id(item)]))
