"""The shape of the code (docs/design.md's boundaries), read from the source with ``ast``.

- ``search_spaces`` imports neither Ray nor the latency code nor ``nas``; ``latency_models``
  never imports ``nas``; Ray is imported by ``nas/ray_runner.py`` alone.
- No first-party module imports another in a loop, counting function-level imports too (a
  loop hidden in a function is still two modules that each need the other).
- No module imports another module's private (``_name``) names, except between the modules
  of one subpackage (``latency_models/analysis/`` is one job split by input kind).
- Every file stays under 500 lines (the refactor's "one job per file").
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nas", "latency_models", "search_spaces")
MAX_LINES = 500


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
            if top == "ray" and name != "nas.ray_runner":
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
def test_every_file_is_under_500_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)}: {n} lines"


def test_the_scan_sees_what_it_checks():
    # The checks above mean something only if the scan resolves relative imports and finds
    # Ray where it is imported.
    ledger_deps = {_first_party(m) for m, _, _ in _imports("nas.ledger", MODULES["nas.ledger"], top_level_only=True)}
    assert {"nas.record", "nas.controllers", "nas.errors"} <= ledger_deps
    ray = [m for m, _, _ in _imports("nas.ray_runner", MODULES["nas.ray_runner"], top_level_only=False)
           if m.split(".")[0] == "ray"]
    assert ray
