#!/usr/bin/env python3
"""The per-call cost of the allow-list view against an earlier revision's view, in one run.

Two worker processes each import one buildjail — this checkout's, and ``--baseline``'s
(a git revision, checked out into a temporary worktree; by default the last one that
showed the host's whole tree minus masks) — and time ``Sandbox("full", backend=B)
.run(["/bin/true"])``. The parent interleaves them: each round asks every worker for
``--batch`` calls in turn, so drift affects both alike. Prints medians and the ratio.

Run as root from the checkout::

    .venv/bin/python benchmarks/view_overhead.py [--rounds 20] [--batch 10] [--baseline REV]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
BASELINE = "0bac599"
"""The last revision whose ``full`` showed the host's tree read-only minus masks."""
WORKER = """
import json, sys, time
from buildjail import Sandbox
sandboxes = {name: Sandbox("full", backend=name) for name in ("native", "bwrap")}
for line in sys.stdin:
    backend, count = line.split()
    times = []
    for _ in range(int(count)):
        start = time.perf_counter()
        assert sandboxes[backend].run(["/bin/true"], cwd="/").exit_code == 0
        times.append((time.perf_counter() - start) * 1000)
    print(json.dumps(times), flush=True)
"""


def _worker(src: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd="/",
                            env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})


def main() -> None:
    """Check out the baseline, run both workers interleaved, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--baseline", default=BASELINE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bj-view-bench-") as tree:
        subprocess.run(["git", "-C", str(CHECKOUT), "worktree", "add", "--detach", tree,
                        args.baseline], check=True, capture_output=True)
        try:
            workers = {"allow-list view": _worker(CHECKOUT / "src"),
                       f"host view ({args.baseline})": _worker(Path(tree) / "src")}
            times = _measure(workers, args.rounds, args.batch)
        finally:
            subprocess.run(["git", "-C", str(CHECKOUT), "worktree", "remove", "--force", tree],
                           check=False, capture_output=True)
    for backend in ("native", "bwrap"):
        print(f"\nSandbox('full', backend={backend!r}).run(['/bin/true']), "
              f"{args.rounds * args.batch} calls each, medians:")
        medians = {name: statistics.median(values[backend]) for name, values in times.items()}
        base = medians[f"host view ({args.baseline})"]
        for name, median in medians.items():
            print(f"  {name:28} {median:7.2f} ms  {median / base:5.2f} x")


def _measure(workers: dict[str, subprocess.Popen[str]], rounds: int,
             batch: int) -> dict[str, dict[str, list[float]]]:
    times: dict[str, dict[str, list[float]]] = {
        name: {"native": [], "bwrap": []} for name in workers}
    try:
        for index in range(rounds):
            order = list(workers) if index % 2 == 0 else list(reversed(workers))
            for backend in ("native", "bwrap"):
                for name in order:
                    worker = workers[name]
                    assert worker.stdin is not None and worker.stdout is not None
                    worker.stdin.write(f"{backend} {batch}\n")
                    worker.stdin.flush()
                    times[name][backend] += json.loads(worker.stdout.readline())
    finally:
        for worker in workers.values():
            if worker.stdin is not None:
                worker.stdin.close()
            worker.wait(timeout=60)
    return times


if __name__ == "__main__":
    main()
