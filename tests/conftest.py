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


# The order in which pytest-xdist hands test files to its two workers (--dist loadfile: a file
# to whichever worker frees up first, in collection order, kept by --no-loadscope-reorder).
# xdist's own order (most tests first) left the long end-to-end files with few tests for last:
# one worker ran them alone for 70-90 s after the other had finished, and with every long file
# first the two workers ran long files side by side all along, each slower in the other's
# processes (10 min 26 s against 9 min 5 s to 9 min 31 s; benchmarks/results/suite_time.md).
# Here the long files, longest first, take every third place among the others (most tests
# first), so each mostly runs beside short files and the suite ends on short ones.
LONG_FILES = ("test_search.py", "test_devices.py", "test_oneshot_search.py", "test_folder_search.py",
              "test_service.py", "test_oneshot.py", "test_faults.py", "test_cluster.py", "test_supernet.py")


def file_order(counts: dict[str, int]) -> list[str]:
    """Test files in the order the workers get them, from each file's number of tests."""
    short = sorted((f for f in counts if Path(f).name not in LONG_FILES), key=lambda f: -counts[f])
    long = sorted((f for f in counts if Path(f).name in LONG_FILES), key=lambda f: LONG_FILES.index(Path(f).name))
    order: list[str] = []
    while long or short:
        if long:
            order.append(long.pop(0))
        order.extend(short[:2])
        del short[:2]
    return order


def pytest_collection_modifyitems(session, config, items):
    counts: dict[str, int] = {}
    for item in items:
        counts[str(item.path)] = counts.get(str(item.path), 0) + 1
    rank = {f: i for i, f in enumerate(file_order(counts))}
    position = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (rank[str(item.path)], position[id(item)]))
