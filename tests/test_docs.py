"""The documentation: the site builds strictly, the README stays a front page, and every
result file and page the docs name exists."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import yaml
from conftest import ROOT

RESULT_PATH = re.compile(r"benchmarks/results/[\w./-]*[\w/]")
MD_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)")


def _doc_files():
    return [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_site_builds_strictly(tmp_path):
    assert importlib.util.find_spec("mkdocs"), "mkdocs is missing: pip install -e '.[test]' (or '.[docs]')"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    if r.returncode != 0:
        print(r.stderr)
    assert r.returncode == 0, r.stderr[-3000:]


def test_readme_is_a_front_page():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 260, f"README.md has {n} lines; move details to docs/ or benchmarks/README.md"


def test_every_named_result_file_exists():
    missing = []
    for path in _doc_files():
        text = path.read_text()
        for name in sorted(set(RESULT_PATH.findall(text))):
            if not (ROOT / name.rstrip("/.")).exists():
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    # benchmarks/README.md links its result files and plots relative to itself
    bench = ROOT / "benchmarks" / "README.md"
    for target in MD_LINK.findall(bench.read_text()):
        if "://" not in target and not (bench.parent / target).exists():
            missing.append(f"benchmarks/README.md: {target}")
    assert not missing, "\n".join(missing)


def _nav_pages(node) -> set[str]:
    if isinstance(node, str):
        return {node}
    if isinstance(node, dict):
        return set().union(*(_nav_pages(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_nav_pages(v) for v in node))
    return set()


class _ConfigLoader(yaml.SafeLoader):
    """mkdocs.yml with MkDocs's own tags (``!relative``, ``!ENV``) read as plain values."""


_ConfigLoader.add_multi_constructor("!", lambda loader, tag, node: None)


def test_every_page_is_in_the_nav():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_ConfigLoader)
    nav = _nav_pages(config["nav"])
    docs = ROOT / "docs"
    pages = {p.relative_to(docs).as_posix() for p in docs.rglob("*.md")}
    assert pages - nav == set(), f"pages missing from mkdocs.yml's nav: {sorted(pages - nav)}"
    assert nav - pages == set(), f"nav entries without a page: {sorted(nav - pages)}"
