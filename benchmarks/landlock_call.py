#!/usr/bin/env python3
"""The per-call cost of the landlock backend against native and bwrap, in one run.

One process times ``Sandbox("full", backend=B).run(["/bin/true"])`` for each backend,
interleaved: each round runs ``--batch`` calls of every backend in turn, so that drift
affects all alike. Prints the median per backend and its ratio to native's.

Run from the checkout (as root, and as a non-root user, each measures its own path)::

    .venv/bin/python benchmarks/landlock_call.py [--rounds 20] [--batch 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from buildjail import Sandbox  # after the checkout is put on the path

BACKENDS = ("native", "bwrap", "landlock")


def _time_calls(sandbox: Sandbox, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        result = sandbox.run(["/bin/true"], cwd="/")
        times.append((time.perf_counter() - start) * 1000)
        if result.exit_code != 0:
            raise SystemExit(f"{sandbox.backend.name}: /bin/true exited {result.exit_code}")
    return times


def main() -> None:
    """Run the backends interleaved and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()
    sandboxes = {name: Sandbox("full", backend=name) for name in BACKENDS}
    for sandbox in sandboxes.values():  # warm up: imports, the cached view and filters
        _time_calls(sandbox, 2)
    times: dict[str, list[float]] = {name: [] for name in BACKENDS}
    for _ in range(args.rounds):
        for name, sandbox in sandboxes.items():
            times[name] += _time_calls(sandbox, args.batch)
    native = statistics.median(times["native"])
    print(f"{'backend':<10} {'median ms':>10} {'vs native':>10}  ({len(times['native'])} calls "
          "each, interleaved)")
    for name in BACKENDS:
        median = statistics.median(times[name])
        print(f"{name:<10} {median:>10.2f} {median / native:>9.2f}x")


if __name__ == "__main__":
    main()
