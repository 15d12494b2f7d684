#!/usr/bin/env python3
"""What recording attempts costs a whole build: the corpus built with it on and off.

``buildjail build --wheel --profile full --installer uv`` of every sdist of the test
corpus (14 real sdists from PyPI), side by side in one run:

- ``recording``: as ``build`` runs by default (decoys, the DNS trap, programs and
  connections through the recording filter);
- ``off``: the same with a policy file saying ``record_attempts = false``.

Both from the same local wheelhouse (``--no-index --find-links``), each build into a
fresh directory, interleaved package by package, which goes first alternating from
package to package and from round to round. Prints per package each one's median wall
time and their ratio, the total ratio against the target (at most 2 % more) with PASS or
MISS, the CPU time ratio (user and system time of every process of the builds), and how
many programs and connections the recording saw per build (from the reports).

Run as root with the project's venv (a round takes about two minutes on 2 cores)::

    .venv/bin/python benchmarks/attempts_corpus.py [--repeat 2] [--warmup 1] [--only NAME]
"""

from __future__ import annotations

import argparse
import collections
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

MODES = ("recording", "off")
TARGET_RATIO = 1.02
BUILD_TIMEOUT = 1800
OFF_POLICY = 'extends = "full"\n\n[isolation]\nrecord_attempts = false\n'


def command(mode: str, sdist: Path, outdir: Path, wheelhouse: Path, policy: Path) -> list[str]:
    """The command line that builds *sdist*'s wheel into *outdir*, recording or not."""
    chosen = ["--profile", "full"] if mode == "recording" else ["--policy", str(policy)]
    return [sys.executable, "-m", "buildjail", "build", "--wheel", *chosen, "--installer",
            "uv", "--no-index", "--find-links", str(wheelhouse), "-q",
            "--report", str(outdir / "report.json"), "-o", str(outdir), str(sdist)]


def build_once(mode: str, sdist: Path, wheelhouse: Path, work: Path,
               policy: Path) -> dict[str, Any]:
    """Build *sdist* once; its wall and CPU time and the attempts its hooks recorded."""
    outdir = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=work))
    try:
        usage, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        proc = subprocess.run(command(mode, sdist, outdir, wheelhouse, policy), cwd=outdir,
                              capture_output=True, text=True, check=False,
                              timeout=BUILD_TIMEOUT)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0 or not list(outdir.glob("*.whl")):
            raise RuntimeError(f"{sdist.name} ({mode}, exit {proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        (report,) = json.loads((outdir / "report.json").read_text())
        kinds = collections.Counter(item["kind"] for hook in report["hooks"]
                                    for item in hook["attempts"])
        return {"wall_s": wall, "cpu_s": (after.ru_utime + after.ru_stime
                                          - usage.ru_utime - usage.ru_stime),
                "attempts": dict(kinds)}
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Fetch the corpus and the wheelhouse, warm up, then build *repeat* rounds."""
    cache = corpus.cache_dir()
    chosen = [sdist for sdist in corpus.CORPUS if not args.only or sdist.name in args.only]
    paths = corpus.fetch_corpus(cache, tuple(chosen))
    wheelhouse = corpus.build_wheelhouse(cache, corpus.BUILD_REQUIREMENTS)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="buildjail-attempts-corpus-") as work:
        policy = Path(work) / "off.toml"
        policy.write_text(OFF_POLICY)
        runs = build_corpus.interleaved(
            args, chosen, paths, key="mode", choices=MODES,
            build=lambda mode, path: build_once(mode, path, wheelhouse, Path(work), policy))
    return summarize(runs, chosen, args, time.monotonic() - started)


def summarize(runs: list[dict[str, Any]], chosen: list[corpus.Sdist],
              args: argparse.Namespace, elapsed: float) -> dict[str, Any]:
    """Per-package medians and ratios; the totals and the verdict."""
    walls: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for run in runs:
        walls[run["package"], run["mode"]].append(run["wall_s"])
    packages = []
    for sdist in chosen:
        on, off = (statistics.median(walls[sdist.name, mode]) for mode in MODES)
        seen = [run["attempts"] for run in runs
                if run["package"] == sdist.name and run["mode"] == "recording"]
        packages.append({"package": sdist.name, "recording_s": on, "off_s": off,
                         "ratio": on / off, "attempts": seen[0] if seen else {}})
    totals = {mode: sum(run["wall_s"] for run in runs if run["mode"] == mode) for mode in MODES}
    cpu = {mode: sum(run["cpu_s"] for run in runs if run["mode"] == mode) for mode in MODES}
    ratio = totals["recording"] / totals["off"]
    return {
        "config": {"repeat": args.repeat, "warmup": args.warmup, "cpus": os.cpu_count()},
        "packages": packages,
        "total": {**{f"{mode}_s": totals[mode] for mode in MODES}, "ratio": ratio,
                  "overhead_pct": (ratio - 1) * 100, "target_ratio": TARGET_RATIO,
                  "verdict": "PASS" if ratio <= TARGET_RATIO else "MISS"},
        "cpu_ratio": cpu["recording"] / cpu["off"],
        "elapsed_s": elapsed,
        "runs": runs,
    }


def print_report(report: dict[str, Any]) -> None:
    """The human table."""
    config = report["config"]
    print(f"buildjail build --profile full, recording attempts against not; "
          f"{len(report['packages'])} sdists, {config['repeat']} round(s), {config['cpus']} CPUs")
    build_corpus.print_packages(
        report, [("recording s", "recording_s", 12, 2), ("off s", "off_s", 8, 2),
                 ("ratio", "ratio", 7, 3)],
        ("recorded per build", lambda row: ", ".join(
            f"{kind} {count}" for kind, count in sorted(row["attempts"].items())) or "nothing"))
    total = report["total"]
    print(f"\nrecording costs {total['overhead_pct']:+.1f} % wall time (target: at most "
          f"{(total['target_ratio'] - 1) * 100:.0f} %): {total['verdict']}; CPU time ratio "
          f"{report['cpu_ratio']:.3f}; total wall time {report['elapsed_s']:.0f} s")


def main() -> int:
    """Run the benchmark and print it; 1 when a build failed."""
    args = build_corpus.parse_args(__doc__, corpus.CORPUS, "mode")
    return build_corpus.run_and_print("attempts_corpus.py", run_benchmark, print_report, args)


if __name__ == "__main__":
    sys.exit(main())
