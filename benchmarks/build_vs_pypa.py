#!/usr/bin/env python3
"""The whole-build overhead: ``buildjail build`` (``full``) against ``python -m build``.

The corpus is the 14 sdists of the test corpus plus ``tests/corpus.py``'s benchmark-only
``BENCH_EXTRA`` (cysignals: meson-python, C through Cython; levenshtein: scikit-build-core,
C++). Each round builds every sdist's wheel once with each command, side by side:

- ``python -m buildjail build --wheel --profile full --installer uv``
- ``python -m build --wheel --installer uv`` (pypa/build, isolated, unsandboxed)

both from the same local wheelhouse (``--no-index --find-links`` for buildjail, the same
through the environment for pypa/build: ``corpus.index_environment``), each build into a
fresh output directory (buildjail's package byte-compiled first, as pypa/build's is:
under ``PYTHONDONTWRITEBYTECODE=1`` an editable install is otherwise compiled anew by each
build). The builds are interleaved package by package and which command
goes first alternates from package to package and from round to round.

Prints, per package, each command's median wall time, the ratio buildjail/pypa and the
ratio of their median CPU times (user and system time of every process of the build,
which neighbours on a shared machine disturb less than wall time); the total ratio (every
buildjail build over every pypa/build build) against the target (at most 3 % more) with
PASS or MISS, and the same total for CPU time; the paired median ratio (same package,
same round); and, from buildjail's reports, how many times each hook ran per build and
its median duration: one ``build_wheel`` and a short ``prepare_metadata_for_build_wheel``
(meson-python defines none: the call only finds that out) means the wheel was compiled
exactly once. ``--json`` adds every build's figures.

Needs cmake and ninja on ``PATH`` (``apt-get install cmake ninja-build``): the wheelhouse
has no cmake or ninja wheels. The sdists and the wheelhouse (``wheelhouse-bench``) are
fetched into ``$BUILDJAIL_TEST_CACHE`` (default ``~/.cache/buildjail-tests``) the first
time. Run as root with the project's venv (the two compiled projects take about half a
minute per build each, a round about five minutes on 2 cores)::

    .venv/bin/python benchmarks/build_vs_pypa.py [--repeat 1] [--warmup 1] [--only NAME]
"""

from __future__ import annotations

import argparse
import collections
import compileall
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import build_corpus  # noqa: E402

import corpus  # noqa: E402

SDISTS = corpus.CORPUS + corpus.BENCH_EXTRA
REQUIREMENTS = corpus.BUILD_REQUIREMENTS + corpus.BENCH_BUILD_REQUIREMENTS
TOOLS = ("buildjail", "pypa")
TARGET_RATIO = 1.03
BUILD_TIMEOUT = 1800
NEEDED = {"cmake": "cmake", "ninja": "ninja-build"}  # program: Debian package


def command(tool: str, sdist: Path, outdir: Path, wheelhouse: Path) -> list[str]:
    """The command line that builds *sdist*'s wheel into *outdir* with *tool*."""
    if tool == "buildjail":
        return [sys.executable, "-m", "buildjail", "build", "--wheel", "--profile", "full",
                "--installer", "uv", "--no-index", "--find-links", str(wheelhouse), "-q",
                "--report", str(outdir / "report.json"), "-o", str(outdir), str(sdist)]
    return [sys.executable, "-m", "build", "--wheel", "--installer", "uv",
            "-o", str(outdir), str(sdist)]


def build_once(tool: str, sdist: Path, wheelhouse: Path, work: Path) -> dict[str, Any]:
    """Build *sdist* with *tool* into a fresh directory; its wall time and buildjail's hooks."""
    outdir = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=work))
    try:
        usage, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        try:
            proc = subprocess.run(command(tool, sdist, outdir, wheelhouse), cwd=outdir,
                                  env=corpus.index_environment(wheelhouse),
                                  capture_output=True, text=True, check=False,
                                  timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(f"{sdist.name} with {tool}: {error}") from None
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
        if proc.returncode != 0 or not list(outdir.glob("*.whl")):
            raise RuntimeError(f"{sdist.name} with {tool} (exit {proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        hooks = []
        if tool == "buildjail":
            (report,) = json.loads((outdir / "report.json").read_text())
            hooks = [(hook["name"], hook["duration"]) for hook in report["hooks"]]
        return {"wall_s": wall, "cpu_s": cpu, "hooks": hooks}
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


def compile_buildjail() -> None:
    """Byte-compile buildjail's package, as installing it would: an editable install under
    ``PYTHONDONTWRITEBYTECODE=1`` otherwise compiles every module on every build (about
    70 ms a build here), which pypa/build's installed package never does."""
    import buildjail

    compileall.compile_dir(os.path.dirname(buildjail.__file__), quiet=1)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Fetch the sdists and the wheelhouse, warm up, then build *repeat* rounds."""
    compile_buildjail()
    cache = corpus.cache_dir()
    chosen = [sdist for sdist in SDISTS if not args.only or sdist.name in args.only]
    paths = corpus.fetch_corpus(cache, tuple(chosen))
    wheelhouse = corpus.build_wheelhouse(cache, REQUIREMENTS, "wheelhouse-bench")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="buildjail-vs-pypa-") as work:
        runs = build_corpus.interleaved(
            args, chosen, paths, key="tool", choices=TOOLS,
            build=lambda tool, path: build_once(tool, path, wheelhouse, Path(work)))
    return summarize(runs, chosen, args, time.monotonic() - started)


def summarize(runs: list[dict[str, Any]], chosen: list[corpus.Sdist],
              args: argparse.Namespace, elapsed: float) -> dict[str, Any]:
    """Per-package medians, ratios and hook counts; the total ratio and its verdict."""
    walls: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    cpus: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for run in runs:
        walls[run["package"], run["tool"]].append(run["wall_s"])
        cpus[run["package"], run["tool"]].append(run["cpu_s"])
    packages = []
    for sdist in chosen:
        ours, theirs = (statistics.median(walls[sdist.name, tool]) for tool in TOOLS)
        cpu_ours, cpu_theirs = (statistics.median(cpus[sdist.name, tool]) for tool in TOOLS)
        packages.append({"package": sdist.name, "backend": sdist.backend,
                         "buildjail_s": ours, "pypa_s": theirs, "ratio": ours / theirs,
                         "cpu_ratio": cpu_ours / cpu_theirs,
                         "hooks": hook_table([run["hooks"] for run in runs if run["package"]
                                              == sdist.name and run["tool"] == "buildjail"])})
    totals = {tool: sum(run["wall_s"] for run in runs if run["tool"] == tool)
              for tool in TOOLS}
    cpu = {tool: sum(run["cpu_s"] for run in runs if run["tool"] == tool) for tool in TOOLS}
    ratio = totals["buildjail"] / totals["pypa"]
    by_round: dict[tuple[str, int], dict[str, float]] = collections.defaultdict(dict)
    for run in runs:
        by_round[run["package"], run["round"]][run["tool"]] = run["wall_s"]
    pairs = [pair["buildjail"] / pair["pypa"] for pair in by_round.values()]
    return {
        "config": {"repeat": args.repeat, "warmup": args.warmup, "cpus": os.cpu_count(),
                   "python": sys.version.split()[0]},
        "packages": packages,
        "total": {"buildjail_s": totals["buildjail"], "pypa_s": totals["pypa"],
                  "ratio": ratio, "overhead_pct": (ratio - 1) * 100,
                  "target_ratio": TARGET_RATIO,
                  "verdict": "PASS" if ratio <= TARGET_RATIO else "MISS"},
        "cpu": {"buildjail_s": cpu["buildjail"], "pypa_s": cpu["pypa"],
                "ratio": cpu["buildjail"] / cpu["pypa"]},
        "paired_median_ratio": statistics.median(pairs),
        "elapsed_s": elapsed,
        "runs": runs,
    }


def hook_table(builds: list[list[tuple[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per hook of one package's buildjail builds: its calls per build, its median seconds."""
    table: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(name for hooks in builds for name, _ in hooks):
        calls = [[duration for hook, duration in hooks if hook == name] for hooks in builds]
        table[name] = {"calls_per_build": sorted({len(durations) for durations in calls}),
                       "median_s": statistics.median(sum(durations) for durations in calls)}
    return table


def print_report(report: dict[str, Any]) -> None:
    """The human table."""
    config = report["config"]
    print(f"buildjail build --profile full against python -m build, both --installer uv; "
          f"{len(report['packages'])} sdists, {config['repeat']} round(s), "
          f"{config['cpus']} CPUs, Python {config['python']}")
    build_corpus.print_packages(
        report, [("buildjail s", "buildjail_s", 12, 2), ("pypa s", "pypa_s", 8, 2),
                 ("ratio", "ratio", 7, 3), ("CPU", "cpu_ratio", 6, 3)],
        ("buildjail's hooks: calls per build, median s", lambda row: ", ".join(
            f"{name.removesuffix('_for_build_wheel')} "
            f"{'/'.join(map(str, hook['calls_per_build']))}x {hook['median_s']:.1f} s"
            for name, hook in row["hooks"].items())))
    total = report["total"]
    print(f"\nbuildjail costs {total['overhead_pct']:+.1f} % wall time over pypa/build "
          f"(target: at most {(total['target_ratio'] - 1) * 100:.0f} %): {total['verdict']}")
    cpu = report["cpu"]
    print(f"CPU time (user + system of every process of the builds): buildjail "
          f"{cpu['buildjail_s']:.1f} s, pypa/build {cpu['pypa_s']:.1f} s, ratio {cpu['ratio']:.3f}")
    print(f"paired builds (same package, same round): median ratio "
          f"{report['paired_median_ratio']:.3f}; "
          f"total wall time {report['elapsed_s']:.0f} s")


def main() -> int:
    """Run the benchmark and print it; 2 when cmake or ninja is missing, 1 on a failure."""
    args = build_corpus.parse_args(__doc__, SDISTS, "command")
    missing = [package for program, package in NEEDED.items() if not shutil.which(program)]
    if missing:
        print(f"build_vs_pypa.py: needs cmake and ninja on PATH for the scikit-build-core "
              f"and meson-python builds: apt-get install {' '.join(missing)}", file=sys.stderr)
        return 2
    return build_corpus.run_and_print("build_vs_pypa.py", run_benchmark, print_report, args)


if __name__ == "__main__":
    sys.exit(main())
