#!/usr/bin/env python3
"""What the full sandbox costs when building real packages: the corpus, ``full`` vs ``none``.

Builds every sdist of the test corpus (``tests/corpus.py``) into a wheel twice per round,
once with ``--profile full`` and once with ``--profile none``, through the library call
behind ``buildjail build`` (``build_all``), each build into its own fresh output directory
and both from the same local wheelhouse (``--no-index --find-links``). The builds are
interleaved package by package, and which profile goes first alternates from package to
package and from round to round, so drift (page cache, thermal, neighbours) hits both
profiles alike.

Prints, per package, the median wall time of each profile and the ratio full/none; the
total ratio (sum of every full build over sum of every none build) against the target
-- full costs at most 3 % more than none -- with PASS or MISS; the paired figures (full
against none for the same package in the same round: median ratio, median and mean
difference, and how much of it the hook calls account for), which are less noisy than the
totals when builds take a couple of seconds; and the sandbox overhead per hook: for the
same hook of the same package in the same round, the report's hook duration under full
minus under none, the median of those differences in milliseconds.

The corpus and the wheelhouse are fetched into ``$BUILDJAIL_TEST_CACHE`` (default
``~/.cache/buildjail-tests``) the first time. Run as root with the project's venv::

    .venv/bin/python benchmarks/build_corpus.py [--repeat 3] [--warmup 1] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import corpus  # noqa: E402

PROFILES = ("full", "none")
TARGET_RATIO = 1.03


@contextlib.contextmanager
def index_environment(wheelhouse: Path) -> Iterator[None]:
    """Within the block, pip installs build requirements only from *wheelhouse*."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(corpus.index_environment(wheelhouse, saved))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def build_once(sdist: Path, profile: str, wheelhouse: Path, work: Path) -> dict[str, Any]:
    """Build *sdist* with *profile* into a fresh directory; return its wall time and report."""
    from buildjail.build import BuildOptions, build_all
    from buildjail.buildenv import IndexOptions
    from buildjail.policy import Policy

    outdir = Path(tempfile.mkdtemp(prefix=f"{profile}-", dir=work))
    options = BuildOptions(policy=Policy.profile(profile),
                           index=IndexOptions(find_links=(str(wheelhouse),), no_index=True))
    started = time.perf_counter()
    (report,) = build_all([str(sdist)], str(outdir), options, jobs=1)
    wall = time.perf_counter() - started
    shutil.rmtree(outdir, ignore_errors=True)
    if report.result != "ok":
        raise RuntimeError(f"{sdist.name} with --profile {profile}: {report.error}")
    return {"wall_s": wall,
            "hooks": [(hook.name, hook.duration) for hook in report.hooks],
            "layers": list(report.layers)}


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Fetch the corpus, warm up, then build it *repeat* times under both profiles."""
    cache = corpus.cache_dir()
    sdists = corpus.fetch_corpus(cache)
    wheelhouse = corpus.build_wheelhouse(cache)
    chosen = [(sdist, path) for sdist, path in zip(corpus.CORPUS, sdists, strict=True)
              if not args.only or sdist.name in args.only]
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    with index_environment(wheelhouse), tempfile.TemporaryDirectory(
            prefix="buildjail-bench-") as work:
        for _ in range(args.warmup):
            for profile in PROFILES:
                build_once(chosen[0][1], profile, wheelhouse, Path(work))
        for round_ in range(args.repeat):
            for index, (sdist, path) in enumerate(chosen):
                order = PROFILES if (index + round_) % 2 == 0 else PROFILES[::-1]
                for profile in order:
                    run = build_once(path, profile, wheelhouse, Path(work))
                    runs.append({"package": sdist.name, "round": round_, "profile": profile,
                                 "first": profile == order[0], **run})
                    if not args.json:
                        print(f"  round {round_ + 1}/{args.repeat} {sdist.name:16} "
                              f"{profile:5} {run['wall_s']:6.2f} s", file=sys.stderr)
    return summarize(runs, [sdist.name for sdist, _ in chosen], args,
                     time.monotonic() - started)


def summarize(runs: list[dict[str, Any]], names: list[str], args: argparse.Namespace,
              elapsed: float) -> dict[str, Any]:
    """Per-package medians and ratios, the total ratio and verdict, the per-hook overhead."""
    def walls(name: str, profile: str) -> list[float]:
        return [run["wall_s"] for run in runs
                if run["package"] == name and run["profile"] == profile]

    packages = []
    for name in names:
        full, none = statistics.median(walls(name, "full")), statistics.median(walls(name, "none"))
        packages.append({"package": name, "full_s": full, "none_s": none, "ratio": full / none,
                         "full_runs_s": walls(name, "full"), "none_runs_s": walls(name, "none")})
    total_full = sum(run["wall_s"] for run in runs if run["profile"] == "full")
    total_none = sum(run["wall_s"] for run in runs if run["profile"] == "none")
    ratio = total_full / total_none
    return {
        "config": {"repeat": args.repeat, "warmup": args.warmup, "cpus": os.cpu_count(),
                   "packages": names, "python": sys.version.split()[0]},
        "packages": packages,
        "total": {"full_s": total_full, "none_s": total_none, "ratio": ratio,
                  "overhead_pct": (ratio - 1) * 100, "target_ratio": TARGET_RATIO,
                  "verdict": "PASS" if ratio <= TARGET_RATIO else "MISS"},
        "paired": paired_builds(runs),
        "hooks": hook_overhead(runs),
        "layers": {profile: next((run["layers"] for run in runs if run["profile"] == profile),
                                 []) for profile in PROFILES},
        "elapsed_s": elapsed,
    }


def paired_builds(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Full against none for the same package in the same round: less noisy than the totals.

    ``hooks_diff_ms`` is the part of a build's difference spent in its hook calls.
    """
    pairs: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for run in runs:
        pairs.setdefault((run["package"], run["round"]), {})[run["profile"]] = run
    diffs, ratios, hooks = [], [], []
    for pair in pairs.values():
        full, none = pair["full"], pair["none"]
        diffs.append(full["wall_s"] - none["wall_s"])
        ratios.append(full["wall_s"] / none["wall_s"])
        if len(full["hooks"]) == len(none["hooks"]):
            hooks.append(sum(duration for _, duration in full["hooks"])
                         - sum(duration for _, duration in none["hooks"]))
    return {"n": len(diffs), "median_ratio": statistics.median(ratios),
            "median_diff_ms": statistics.median(diffs) * 1000,
            "mean_diff_ms": statistics.fmean(diffs) * 1000,
            "hooks_diff_ms": statistics.median(hooks) * 1000 if hooks else float("nan")}


def hook_overhead(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """For each hook name (and ``all``): median full and none durations and their difference.

    Differences pair the same hook of the same package in the same round, so the build's
    own work cancels out and what remains is what the sandbox adds to one hook call.
    """
    durations: dict[tuple[str, int, str, int], dict[str, float]] = {}
    for run in runs:
        seen: dict[str, int] = {}
        for hook, duration in run["hooks"]:
            occurrence = seen[hook] = seen.get(hook, -1) + 1
            key = (run["package"], run["round"], hook, occurrence)
            durations.setdefault(key, {})[run["profile"]] = duration
    paired = [(key[2], value["full"], value["none"]) for key, value in durations.items()
              if set(value) == set(PROFILES)]
    table = {}
    for hook in [*sorted({name for name, _, _ in paired}), "all"]:
        rows = [row for row in paired if hook in ("all", row[0])]
        table[hook] = {
            "n": len(rows),
            "full_ms": statistics.median(full for _, full, _ in rows) * 1000,
            "none_ms": statistics.median(none for _, _, none in rows) * 1000,
            "overhead_ms": statistics.median(full - none for _, full, none in rows) * 1000,
        }
    return table


def print_report(report: dict[str, Any]) -> None:
    """The human table."""
    config = report["config"]
    print(f"buildjail build, corpus of {len(config['packages'])} sdists, "
          f"{config['repeat']} round(s), {config['cpus']} CPUs, Python {config['python']}")
    print_packages(report, [("full s", "full_s", 8, 2), ("none s", "none_s", 8, 2),
                            ("full/none", "ratio", 10, 3)])
    total = report["total"]
    print(f"\nfull costs {total['overhead_pct']:+.1f} % wall time over none "
          f"(target: at most {(total['target_ratio'] - 1) * 100:.0f} %): {total['verdict']}")
    paired = report["paired"]
    print(f"paired builds (same package, same round; n={paired['n']}): median full/none "
          f"{paired['median_ratio']:.3f}, full - none median {paired['median_diff_ms']:+.0f} ms, "
          f"mean {paired['mean_diff_ms']:+.0f} ms, of which in hooks (median) "
          f"{paired['hooks_diff_ms']:+.0f} ms")
    print("\nsandbox overhead per hook call (full minus none, paired, median):")
    print(f"{'hook':36} {'n':>4} {'full ms':>9} {'none ms':>9} {'overhead ms':>12}")
    for hook, row in report["hooks"].items():
        print(f"{hook:36} {row['n']:4d} {row['full_ms']:9.1f} {row['none_ms']:9.1f} "
              f"{row['overhead_ms']:12.1f}")
    print(f"\nlayers under full: {', '.join(report['layers']['full'])}")
    print(f"total wall time: {report['elapsed_s']:.0f} s")


def interleaved(args: argparse.Namespace, chosen: Sequence[corpus.Sdist], paths: Sequence[Path],
                *, key: str, choices: tuple[str, ...],
                build: Callable[[str, Path], dict[str, Any]]) -> list[dict[str, Any]]:
    """The measuring loop of attempts_corpus.py and build_vs_pypa.py: *warmup* untimed
    builds of the first package per choice, then *repeat* rounds, each building every
    package (*chosen*, at *paths*) once per choice, which goes first alternating from package
    to package and from round to round. A run per build: its package, round and choice
    (under *key*) with what ``build(choice, path)`` returned, each said on stderr."""
    runs: list[dict[str, Any]] = []
    for _ in range(args.warmup):
        for choice in choices:
            build(choice, paths[0])
    for round_ in range(args.repeat):
        for index, (sdist, path) in enumerate(zip(chosen, paths, strict=True)):
            for choice in choices if (index + round_) % 2 == 0 else choices[::-1]:
                run = build(choice, path)
                runs.append({"package": sdist.name, "round": round_, key: choice, **run})
                print(f"  round {round_ + 1}/{args.repeat} {sdist.name:16} {choice:9} "
                      f"{run['wall_s']:6.2f} s", file=sys.stderr)
    return runs


def print_packages(report: dict[str, Any], columns: Sequence[tuple[str, str, int, int]],
                   note: tuple[str, Callable[[dict[str, Any]], str]] | None = None) -> None:
    """The per-package table of a report (also attempts_corpus.py's and build_vs_pypa.py's):
    a row a package of *columns* (title, key, width, decimals), then *note*'s text (its
    title heading it); last the total's row, of the columns the report's total has."""
    head = "".join(f" {title:>{width}}" for title, _, width, _ in columns)
    print(f"\n{'package':18}{head}" + (f"  {note[0]}" if note else ""))
    for row in report["packages"]:
        cells = "".join(f" {row[key]:{width}.{decimals}f}" for _, key, width, decimals in columns)
        print(f"{row['package']:18}{cells}" + (f"  {note[1](row)}" if note else ""))
    total = report["total"]
    print(f"{'total':18}" + "".join(f" {total[key]:{width}.{decimals}f}"
                                    for _, key, width, decimals in columns if key in total))


def parse_args(doc: str = __doc__, sdists: tuple[corpus.Sdist, ...] = corpus.CORPUS,
               each: str = "profile") -> argparse.Namespace:
    """The command line (also build_vs_pypa.py's: its *doc*, its *sdists*, per *each*)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1,
                        help=f"rounds over the corpus, every {each} each (default: 1)")
    parser.add_argument("--warmup", type=int, default=1,
                        help=f"untimed builds of the first package per {each} (default: 1)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="build only this corpus package (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be at least 1 and --warmup at least 0")
    unknown = set(args.only or ()) - {sdist.name for sdist in sdists}
    if unknown:
        parser.error(f"not in the corpus: {', '.join(sorted(unknown))}")
    return args


def main() -> int:
    """Run the benchmark and print it; exit 1 when a build failed."""
    args = parse_args()
    if os.geteuid() != 0:
        print("build_corpus.py: run as root (the full profile's identity needs it)",
              file=sys.stderr)
        return 2
    return run_and_print("build_corpus.py", run_benchmark, print_report, args)


def run_and_print(script: str, run: Callable[[argparse.Namespace], dict[str, Any]],
                  printer: Callable[[dict[str, Any]], None], args: argparse.Namespace) -> int:
    """Run the benchmark and print its report (JSON with ``--json``); 1 when a build failed."""
    try:
        report = run(args)
    except RuntimeError as error:
        print(f"{script}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        printer(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
