#!/usr/bin/env python3
"""One compile per wheel: ``buildjail build`` against ``python -m build`` on a slow backend.

The project is ``tests/projects/onecompile``: a meson-python-like backend without
``prepare_metadata_for_build_wheel`` whose ``build_wheel`` "compiles" (sleeps) for
``-C compile-seconds=N``. Each round builds its wheel (``--wheel``, from the tree) once
with each tool, in a fresh copy of the project and into a fresh output directory, the
tool going first alternating from round to round; both use the same installer (uv when
it is on ``PATH``, else pip; the project has no build requirements). Prints each tool's
median wall time, the ratio buildjail/build, and how often each called ``build_wheel``
(the backend counts its calls in the tree): a wheel built twice shows as a ratio near 2.

``--src DIR`` runs another checkout's buildjail (its ``src``), e.g. the code before the
change, for the figure to compare. Run as root with the project's venv::

    .venv/bin/python benchmarks/one_compile.py [--seconds 5] [--repeat 3] [--src DIR]

Measured on a 2-core VM (compile 5 s, 3 rounds, pip): buildjail 5.59 s against build
5.31 s, ratio 1.05, one ``build_wheel`` call each; the code before (metadata through
pyproject_hooks' fallback) 10.64 s against 5.29 s, ratio 2.01, two calls.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "tests" / "projects" / "onecompile"
TOOLS = ("buildjail", "build")


def command(tool: str, project: Path, outdir: Path, seconds: float) -> list[str]:
    """The command line that builds *project*'s wheel into *outdir* with *tool*."""
    setting = f"compile-seconds={seconds}"
    if tool == "buildjail":
        return [sys.executable, "-m", "buildjail", "build", "--wheel", "--no-index",
                "-C", setting, "-o", str(outdir), str(project)]
    installer = ["--installer", "uv"] if shutil.which("uv") else []
    return [sys.executable, "-m", "build", "--wheel", *installer, f"-C{setting}",
            "-o", str(outdir), str(project)]


def build_once(tool: str, work: Path, seconds: float, src: Path) -> tuple[float, int]:
    """Build the wheel once with *tool* in a fresh copy; its wall time and build_wheel calls."""
    base = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=work))
    project, outdir = base / "onecompile", base / "dist"
    shutil.copytree(PROJECT, project)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    proc = subprocess.run(command(tool, project, outdir, seconds), env=env, cwd=work,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    calls = len((project / "build_wheel_calls").read_text().splitlines())
    shutil.rmtree(base)
    return wall, calls


def main() -> int:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="how long build_wheel compiles (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--src", type=Path, default=ROOT / "src",
                        help="the buildjail source directory to run (default this checkout's)")
    args = parser.parse_args()
    walls: dict[str, list[float]] = {tool: [] for tool in TOOLS}
    calls: dict[str, set[int]] = {tool: set() for tool in TOOLS}
    with tempfile.TemporaryDirectory(prefix="buildjail-one-compile-") as work:
        for round_ in range(args.repeat):
            for tool in TOOLS if round_ % 2 == 0 else TOOLS[::-1]:
                wall, count = build_once(tool, Path(work), args.seconds, args.src.resolve())
                walls[tool].append(wall)
                calls[tool].add(count)
                print(f"  round {round_ + 1}/{args.repeat} {tool:9} {wall:6.2f} s, "
                      f"build_wheel called {count}x", file=sys.stderr)
    medians = {tool: statistics.median(walls[tool]) for tool in TOOLS}
    print(f"compile {args.seconds:g} s, {args.repeat} rounds, {os.cpu_count()} CPUs, "
          f"buildjail from {args.src}")
    for tool in TOOLS:
        print(f"{tool:9} median {medians[tool]:6.2f} s, build_wheel calls per build "
              f"{sorted(calls[tool])}")
    print(f"ratio buildjail/build: {medians['buildjail'] / medians['build']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
