"""How long the documented installs take: the CPU build (the quickstart's), the CPU build with
the test tools (CI's), and the GPU build; and that the GPU one holds no CPU build beside it.

    python benchmarks/install_time.py [--extras cpu cpu,test gpu]

Each install is a fresh virtual environment and ``pip install --no-cache-dir -e ".[EXTRAS]"``
of a copy of this checkout (so nothing is written into it), timed together as the README's
commands run them, on an empty pip cache (every wheel downloaded). Records each venv's size
and its TensorFlow, Keras and NVIDIA packages, imports TensorFlow in it (is it the CUDA
build, which devices it sees), then deletes it. Writes ``benchmarks/results/install_time.json``.
The GPU build needs about 7 GB of disk while it is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", "runs", ".pytest_cache")


def du(path: Path) -> str:
    return subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True).stdout.split()[0]


def install(src: Path, venv: Path, extras: str) -> dict:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-cache-dir", "-e", f".[{extras}]"], cwd=src,
                       capture_output=True, text=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    seconds = round(time.perf_counter() - t0, 1)
    if r.returncode != 0:
        return {"extras": extras, "seconds": seconds, "error": r.stderr.strip().splitlines()[-1][:300]}
    listed = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=json"], capture_output=True,
                            text=True).stdout
    names = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listed)}
    pkgs = sorted(f"{n}=={v}" for n, v in names.items() if n.startswith(("tensorflow", "nvidia", "keras")))
    probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import tensorflow as tf; print(tf.__version__, tf.test.is_built_with_cuda(), "
                            "[d.device_type for d in tf.config.list_physical_devices()])"],
                           capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return {"extras": extras, "seconds": seconds, "size": du(venv), "packages": pkgs,
            "tensorflow": probe.stdout.strip() or probe.stderr.strip().splitlines()[-1][:300],
            "cpu_and_gpu_builds_side_by_side": "tensorflow-cpu" in names and "tensorflow" in names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extras", nargs="+", default=["cpu", "cpu,test", "gpu"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "install_time.json"))
    args = ap.parse_args()
    pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True).stdout.split()[1]
    rows = []
    with tempfile.TemporaryDirectory(prefix="nas-install-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(ROOT, src, ignore=IGNORE)
        for extras in args.extras:
            venv = Path(tmp) / f"venv-{extras.replace(',', '-')}"
            rows.append(install(src, venv, extras))
            print(f"[{extras}]: {rows[-1]['seconds']} s, {rows[-1].get('size', rows[-1].get('error'))}",
                  file=sys.stderr)
            shutil.rmtree(venv, ignore_errors=True)
    result = {"command": "python benchmarks/install_time.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0], "pip": pip,
              "note": "fresh venv + pip install --no-cache-dir -e .[EXTRAS]: every wheel downloaded", "installs": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("| install | time | venv size | TensorFlow |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| `.[{r['extras']}]` | {r['seconds']:.0f} s | {r.get('size', '-')} | {r.get('tensorflow', r.get('error'))} |")


if __name__ == "__main__":
    main()
