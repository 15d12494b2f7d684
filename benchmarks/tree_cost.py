#!/usr/bin/env python3
"""Per-call cost against the size of the writable tree: ``Sandbox("full").run(["/bin/true"],
writable=[TREE])`` with trees of 0, 10k, 50k and 200k files.

Issue 15 asks for this cost to be flat within 10 %. As root every writable tree is lent to
the run's ephemeral uid and handed back by a walk (``_linux/ownership.py``), as non-root
what the run changed is normalised by one; each column is measured interleaved, a call of
each size in turn, on trees made under ``--dir`` (by default a fresh directory under
``/var/tmp``, removed afterwards). Besides each call, the floor any walk of the tree costs:
``trees.walk`` alone (one ``lstat`` per entry, nothing changed). Run from the checkout::

    .venv/bin/python benchmarks/tree_cost.py [--sizes 0,10000,50000,200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from buildjail import Sandbox, trees

FILES_PER_DIRECTORY = 100


def make_tree(root: Path, files: int) -> None:
    """Fill *root* with *files* empty files, FILES_PER_DIRECTORY to a directory."""
    root.mkdir()
    for start in range(0, files, FILES_PER_DIRECTORY):
        directory = root / f"d{start // FILES_PER_DIRECTORY}"
        directory.mkdir()
        for number in range(min(FILES_PER_DIRECTORY, files - start)):
            (directory / f"f{number}").touch()


def call(sandbox: Sandbox, tree: Path) -> float:
    """Seconds one sandboxed ``/bin/true`` takes with *tree* writable."""
    start = time.perf_counter()
    result = sandbox.run(["/bin/true"], cwd="/", writable=[tree])
    elapsed = time.perf_counter() - start
    if result.exit_code != 0:
        raise SystemExit(f"/bin/true failed in the sandbox: {result}")
    return elapsed


def walk_floor(tree: Path) -> float:
    """Seconds a bare walk of *tree* takes (its entries' ``lstat``, nothing else)."""
    start = time.perf_counter()
    for _ in trees.walk(str(tree)):
        pass
    return time.perf_counter() - start


def measure(sandbox: Sandbox, made: dict[int, Path], rounds: int) -> dict[int, list[float]]:
    """Per size, the seconds of each round's call, sizes interleaved."""
    times: dict[int, list[float]] = {size: [] for size in made}
    sizes = list(made)
    for turn in range(rounds):
        for size in sizes[turn % len(sizes):] + sizes[:turn % len(sizes)]:
            times[size].append(call(sandbox, made[size]))
    return times


def report(times: dict[int, list[float]], floors: dict[int, float]) -> None:
    """One line per size: the median call, its ratio to the empty tree's, the walk's floor."""
    base = statistics.median(times[min(times)])
    print(f"{'files':>7} {'call ms':>9} {'ratio':>7} {'us/file':>8} {'walk floor ms':>14}")
    for size, found in times.items():
        median = statistics.median(found)
        per_file = (median - base) / size * 1e6 if size else 0.0
        print(f"{size:7d} {median * 1000:9.1f} {median / base:7.2f} {per_file:8.2f} "
              f"{floors[size] * 1000:14.1f}")
    worst = max(statistics.median(found) for found in times.values()) / base
    verdict = "met" if worst <= 1.1 else "NOT met"
    print(f"largest / empty tree: {worst:.2f}x (goal <= 1.10: {verdict})")


def main() -> None:
    """Make the trees, measure, print, remove the trees."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,10000,50000,200000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", default="native")
    parser.add_argument("--dir", default="/var/tmp")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    work = Path(tempfile.mkdtemp(prefix="bj-tree-bench-", dir=args.dir))
    try:
        made = {size: work / f"tree-{size}" for size in sizes}
        for size, tree in made.items():
            make_tree(tree, size)
        os.sync()
        sandbox = Sandbox("full", backend=args.backend)
        for tree in made.values():  # warm up: the page cache, the view's cache
            call(sandbox, tree)
        print(f"{args.backend}, {'root' if os.geteuid() == 0 else 'non-root'}, "
              f"{args.rounds} rounds, trees under {work}")
        times = measure(sandbox, made, args.rounds)
        report(times, {size: walk_floor(tree) for size, tree in made.items()})
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
