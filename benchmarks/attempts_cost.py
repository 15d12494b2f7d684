#!/usr/bin/env python3
"""What recording attempts costs: ``Sandbox("full").run(["/bin/true"])`` with it on and off.

Both cases interleaved, each round one call of each in turn, per backend; medians and the
ratio on / off. Run from the checkout, as root::

    .venv/bin/python benchmarks/attempts_cost.py [--rounds 40] [--backends native,bwrap]
"""

from __future__ import annotations

import argparse
import statistics
import time

from buildjail import Policy, Sandbox


def _call(sandbox: Sandbox) -> float:
    start = time.perf_counter()
    result = sandbox.run(["/bin/true"], cwd="/")
    elapsed = time.perf_counter() - start
    if result.exit_code != 0:
        raise SystemExit(f"/bin/true failed in the sandbox: {result}")
    return elapsed


def measure(backend: str, rounds: int) -> tuple[float, float]:
    """Median seconds per call with recording on, and off."""
    on = Policy.profile("full").recording_attempts()  # as the build frontends run it
    off = on._replace(record_attempts=False)
    sandboxes = (Sandbox(on, backend=backend), Sandbox(off, backend=backend))
    for sandbox in sandboxes:  # warm up: imports, the view's cache
        _call(sandbox)
    for sandbox, recorded in zip(sandboxes, (True, False), strict=True):
        layers = sandbox.run(["/bin/true"], cwd="/").layers
        if ("attempts:dns" in layers) is not recorded:  # never compare off with off
            raise SystemExit(f"{backend}: recording is {'off' if recorded else 'on'} where "
                             f"it should be {'on' if recorded else 'off'}: {layers}")
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for sandbox, found in zip(sandboxes, times, strict=True):
            found.append(_call(sandbox))
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    """Print one line per backend: on, off, ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--backends", default="native,bwrap")
    args = parser.parse_args()
    print(f"{'backend':8} {'on (ms)':>8} {'off (ms)':>9} {'ratio':>6}")
    for backend in args.backends.split(","):
        on, off = measure(backend, args.rounds)
        print(f"{backend:8} {on * 1000:8.1f} {off * 1000:9.1f} {on / off:6.3f}")


if __name__ == "__main__":
    main()
