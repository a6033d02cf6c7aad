"""The shape of the code (docs/design.md's boundaries), read from the source with ``ast``.

- ``search_spaces`` imports neither Ray nor the latency code nor ``nas``; ``latency_models``
  never imports ``nas``; Ray is imported by the Ray runner alone (``nas/run/ray_runner.py``
  and its measurement service, ``nas/run/ray_services.py``).
- No first-party module imports another in a loop, counting function-level imports too (a
  loop hidden in a function is still two modules that each need the other).
- No module imports another module's private (``_name``) names, except between the modules
  of one subpackage (``latency_models/analysis/`` is one job split by input kind).
- ``nas/`` is rooms (sub-packages), each with a docstring that says what it owns and which
  rooms it may import; :data:`ROOMS` is that rule, and no module sits at ``nas/``'s top level
  but the package's ``__init__``.
- Every file stays at or under 400 lines: one job per file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nas", "latency_models", "search_spaces")
MAX_LINES = 400  # a file past that holds two jobs
RAY_MODULES = ("nas.run.ray_runner", "nas.run.ray_services")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path, *, top_level_only: bool) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for each import in a module."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # also ``if TYPE_CHECKING``-free try/except blocks at module level
        nodes = [n for top in tree.body for n in ([top] if not isinstance(top, ast.Try) else ast.walk(top))]
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [a.name for a in node.names]
            # ``from pkg import mod`` imports the module pkg.mod
            subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
            out.append((base, [n for n in names if f"{base}.{n}" not in MODULES], node.lineno))
            out += [(s, [], node.lineno) for s in subs]
    return out


def _first_party(mod: str) -> str | None:
    """The module of ours that an import of ``mod`` loads (the longest known prefix)."""
    parts = mod.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in MODULES:
            return cand
    return None


#: Which rooms of ``nas`` each room may import (its own always). Lower rooms never import higher
#: ones, so the rooms stack without a loop: core, data < config < controllers, trial < ledger <
#: oneshot < run; bench and results stand beside run; the CLI and the package's public API on top.
_BASE = {"core"}
ROOMS: dict[str, set[str]] = {
    "core": set(),
    "data": _BASE,
    "config": _BASE | {"data"},
    "controllers": _BASE,
    "trial": _BASE | {"config", "data"},
    "ledger": _BASE | {"config", "data", "controllers", "trial"},
    "oneshot": _BASE | {"config", "data", "controllers", "trial", "ledger"},
    "run": _BASE | {"config", "data", "controllers", "trial", "ledger", "oneshot"},
    "bench": _BASE | {"config", "controllers", "ledger"},
    "results": _BASE | {"config", "data", "controllers", "trial", "ledger"},
}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "nas" and len(parts) > 1 else None


def test_nas_is_rooms():
    loose = [p.name for p in (ROOT / "nas").glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules at nas/'s top level: {loose}"
    rooms = {p.name for p in (ROOT / "nas").iterdir() if (p / "__init__.py").exists()}
    assert rooms == set(ROOMS) | {"cli"}, rooms ^ (set(ROOMS) | {"cli"})
    for room in rooms:
        doc = ast.get_docstring(ast.parse((ROOT / "nas" / room / "__init__.py").read_text()))
        assert doc and (room == "cli" or "May import" in doc), f"nas/{room}/__init__.py: say what it owns and may import"


def test_rooms_import_only_the_rooms_below_them():
    bad = []
    for name, path in MODULES.items():
        room = _room(name)
        if room is None or room == "cli":
            continue
        for mod, _, line in _imports(name, path, top_level_only=False):
            dep = _room(_first_party(mod) or "")
            if dep and dep != room and dep not in ROOMS[room]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: room {room} imports {mod} (room {dep})")
    assert not bad, "\n".join(bad)


def test_layer_boundaries_hold():
    bad = []
    for name, path in MODULES.items():
        for mod, _, line in _imports(name, path, top_level_only=False):
            top = mod.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line} imports {mod}"
            if name.startswith("search_spaces") and top in ("ray", "latency_models", "nas"):
                bad.append(where)
            if name.startswith("latency_models") and top == "nas":
                bad.append(where)
            if top == "ray" and name not in RAY_MODULES:
                bad.append(where)
    assert not bad, "\n".join(bad)


def test_no_module_imports_another_in_a_loop():
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = {_first_party(m) for m, _, _ in _imports(name, path, top_level_only=False)}
        # A package's __init__ importing its own submodules is how a package is built, not a loop.
        graph[name] = {d for d in deps if d and d != name and not name.startswith(d + ".")}
    loops = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                loops.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not loops, "\n".join(loops)


def _same_subpackage(a: str, b: str) -> bool:
    pa, pb = a.split(".")[:-1], b.split(".")[:-1]
    return len(pa) > 1 and pa == pb


def test_no_module_takes_another_modules_private_names():
    bad = []
    for name, path in MODULES.items():
        for mod, names, line in _imports(name, path, top_level_only=False):
            src = _first_party(mod)
            if src and src != name and not _same_subpackage(src, name):
                bad += [f"{path.relative_to(ROOT)}:{line}: {n} from {mod}" for n in names
                        if n.startswith("_") and not n.startswith("__")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", sorted(MODULES.values()), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_is_under_400_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)}: {n} lines"


def test_the_scan_sees_what_it_checks():
    # The checks above mean something only if the scan resolves relative imports and finds
    # Ray where it is imported.
    ledger_deps = {_first_party(m) for m, _, _ in _imports("nas.ledger.ledger", MODULES["nas.ledger.ledger"], top_level_only=True)}
    assert {"nas.core.record", "nas.controllers.base", "nas.core.errors"} <= ledger_deps
    ray = [m for m, _, _ in _imports("nas.run.ray_runner", MODULES["nas.run.ray_runner"], top_level_only=False)
           if m.split(".")[0] == "ray"]
    assert ray


def _public_names(package: str) -> set[str]:
    import importlib

    return set(getattr(importlib.import_module(package), "__all__", ()))


def test_benchmarks_use_only_the_public_api():
    # The benchmarks script the toolkit as a user would: from `nas`, a room's package
    # (nas.trial, nas.bench, ...), search_spaces, latency_models or one of its packages, taking
    # only the names each publishes in __all__; never a module inside a room.
    bad = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            mods = []
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                mods = [(node.module, [a.name for a in node.names])]
            elif isinstance(node, ast.Import):
                mods = [(a.name, []) for a in node.names]
            for mod, names in mods:
                if mod.split(".")[0] not in PACKAGES:
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                if not (ROOT / mod.replace(".", "/") / "__init__.py").is_file():
                    bad.append(f"{where}: imports the module {mod}, not a package's public names")
                    continue
                public = _public_names(mod)
                bad += [f"{where}: {n} is not in {mod}.__all__" for n in names if n not in public]
    assert not bad, "\n".join(bad)
