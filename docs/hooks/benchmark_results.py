"""MkDocs hook: serve the committed benchmark plots from ``benchmarks/results/``.

The plots stay where the benchmark scripts write them; each ``.png`` is added to the site at
``benchmarks/results/<name>.png``, so a page in ``docs/benchmarks/`` embeds one as
``![...](results/<name>.png)``, the same relative link that ``benchmarks/README.md`` uses.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def on_files(files: Files, config) -> Files:
    for png in sorted(RESULTS.rglob("*.png")):
        uri = "benchmarks/results/" + png.relative_to(RESULTS).as_posix()
        files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files
