#!/usr/bin/env python3
"""What entering a run's cgroup costs: a process moved by another against one moving itself.

The supervisor used to write the init's pid into the run's ``cgroup.procs``; on cgroup v1
the init now writes ``0`` into each hierarchy's ``tasks`` itself (``cgroups.join``). The
first takes the kernel's global lock on all thread groups, which waits out an RCU grace
period when no other move happened in the last one (a lone call, as every hook call of a
build is); the second skips that lock. Side by side in one run, for fresh children, in a
throw-away cgroup made for the purpose (memory and pids, like a run's), interleaved,
after ``--idle`` seconds of rest (default 0.2 s) and back to back: median milliseconds and
the ratio. Run as root on a host with cgroup v1 controllers::

    .venv/bin/python benchmarks/cgroup_move.py [--rounds 20] [--idle 0.2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from buildjail._linux import cgroups  # after the checkout is put on the path

CONTROLLERS = ("memory", "pids")


def _make_cgroup() -> cgroups.Cgroup:
    paths = {name: f"{cgroups.ROOT}/{name}/bj-bench-move-{os.getpid()}" for name in CONTROLLERS}
    for path in paths.values():
        os.mkdir(path)
    return cgroups.Cgroup(paths, 1)


def _moved_by_parent(cgroup: cgroups.Cgroup) -> float:
    """Milliseconds the parent takes to write a fresh child's pid into ``cgroup.procs``."""
    fds = tuple(os.open(f"{path}/cgroup.procs", os.O_WRONLY) for path in cgroup.paths.values())
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.read(ready_r, 1)  # stays until it is moved
        finally:
            os._exit(0)
    try:
        started = time.perf_counter()
        cgroups.place(fds, child)
        return (time.perf_counter() - started) * 1000
    finally:
        os.write(ready_w, b"x")
        os.waitpid(child, 0)
        for fd in (*fds, ready_r, ready_w):
            os.close(fd)


def _joined_by_itself(cgroup: cgroups.Cgroup) -> float:
    """Milliseconds a fresh child takes to move itself in (``cgroups.join``), as it reports."""
    fds = cgroup.open_moves()
    took_r, took_w = os.pipe()
    child = os.fork()
    if child == 0:
        try:  # never run on into the parent's code
            started = time.perf_counter()
            cgroups.join(fds)
            os.write(took_w, str((time.perf_counter() - started) * 1000).encode())
        finally:
            os._exit(0)
    for fd in fds:
        os.close(fd)
    os.close(took_w)
    try:
        took = os.read(took_r, 64)
    finally:
        os.close(took_r)
        os.waitpid(child, 0)
    if not took:
        raise SystemExit("the child could not join the cgroup")
    return float(took)


def _in_cgroup_check(cgroup: cgroups.Cgroup) -> None:
    """Fail unless a child that joined is in the cgroup in every hierarchy (so the cheap
    path is measured doing the real thing)."""
    fds = cgroup.open_moves()
    seen_r, seen_w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            cgroups.join(fds)
            with open("/proc/self/cgroup", "rb") as stream:
                os.write(seen_w, stream.read())
        finally:
            os._exit(0)
    for fd in (*fds, seen_w):
        os.close(fd)
    seen = os.read(seen_r, 1 << 16).decode()
    os.close(seen_r)
    os.waitpid(child, 0)
    name = os.path.basename(next(iter(cgroup.paths.values())))
    for controller in CONTROLLERS:
        if not any(controller in line.split(":")[1].split(",") and line.endswith("/" + name)
                   for line in seen.splitlines()):
            raise SystemExit(f"a child that joined is not in the {controller} cgroup: {seen}")


def main() -> None:
    """Print the two moves' median costs and their ratio, after rest and back to back."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--idle", type=float, default=0.2)
    options = parser.parse_args()
    if os.geteuid() != 0 or not all(os.path.isdir(f"{cgroups.ROOT}/{name}")
                                    for name in CONTROLLERS):
        raise SystemExit("needs root and cgroup v1's memory and pids controllers")
    cgroup = _make_cgroup()
    try:
        _in_cgroup_check(cgroup)
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  load {os.getloadavg()[0]:.2f}  "
              f"medians of {options.rounds}, interleaved")
        print(f"{'rest':>8}  {'moved by parent':>16}  {'joined by itself':>17}  ratio")
        for rest in (options.idle, 0.0):
            moved, joined = [], []
            for _ in range(options.rounds):
                time.sleep(rest)
                moved.append(_moved_by_parent(cgroup))
                time.sleep(rest)
                joined.append(_joined_by_itself(cgroup))
            by_parent, by_itself = statistics.median(moved), statistics.median(joined)
            print(f"{rest:>7.2f}s  {by_parent:>13.3f} ms  {by_itself:>14.3f} ms  "
                  f"{by_parent / by_itself:6.2f}x")
    finally:
        time.sleep(0.05)  # the children's exits reach the cgroups
        cgroup.remove()


if __name__ == "__main__":
    main()
