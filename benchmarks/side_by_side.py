#!/usr/bin/env python3
"""One command in the sandbox and outside it at the same moment: what the sandbox costs it.

Each round starts the command twice at once — ``python -m buildjail run [--profile P |
--policy FILE] [--readonly PATH...] -- CMD`` and ``CMD`` itself, each in a session of its
own (the sandbox gives its command one; the scheduler's autogroups then treat both alike),
the one started first alternating from round to round — and waits for both. Both runs meet
the same neighbours at the same time, which a sequential A/B (however interleaved) cannot
promise on a shared 2-core machine: there a neighbour's burst lands on one side only, and
the ratio of a 30 s compile wandered by ±10 % from run to run.

Prints, per side, the median wall time and the median CPU time (user + system of the
process and every descendant it waited for, from ``wait4``: for the sandboxed side the
command, buildjail's own start-up, its supervisor and its init), the median paired ratio
sandbox/outside of each, and the median paired difference in milliseconds (a fixed cost
shows as a difference that does not grow with the command, a proportional one as a ratio).
With two CPUs the two sides compete for them; CPU time is the figure to read, wall time is
only context. ``--json`` adds every round.

Run from the checkout as root with the project's venv; a command that reads a path the
view hides needs ``--readonly`` (the working directory is ``/``)::

    .venv/bin/python benchmarks/side_by_side.py [--rounds 8] [--profile full | --policy FILE]
        [--readonly PATH] -- CMD [ARGS...]

Measured (issue 15, a 2-core VM with a neighbour at work), ``full``: ``/bin/true`` +117 ms
of CPU (buildjail's start-up and one sandbox); ``/bin/sleep 5`` +143 to +221 ms (the
supervisor and the init watching); Cython and gcc on cysignals' ``tests.pyx`` (6.3 s of
CPU, 6 rounds) ratio 1.069, +424 ms, wall 1.000 — the compile's own CPU time, measured
inside it, was 0.986 to 1.000 of the unsandboxed one: what the sandbox adds is fixed costs
and the watch, not a slower compile, while both sides share the two CPUs. Run one after
the other, each with both CPUs (``build_vs_pypa.py --repeat 2 --warmup 1``, quiet),
cysignals' whole build still took 1.11 x the wall and 1.12 x the CPU time in the
sandbox: not explained yet.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any


def parse_args() -> argparse.Namespace:
    """The command line: rounds, the sandbox's policy and paths, the command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="paired runs (default: 8)")
    parser.add_argument("--profile", default="full", help="the sandbox's profile (full)")
    parser.add_argument("--policy", help="a policy TOML file instead of the profile")
    parser.add_argument("--readonly", action="append", default=[], metavar="PATH",
                        help="show PATH to the sandboxed command (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    args = parser.parse_args()
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command or args.rounds < 1:
        parser.error("give a command after --, and at least one round")
    return args


def sandboxed(args: argparse.Namespace) -> list[str]:
    """``buildjail run`` of the command under the chosen policy."""
    policy = ["--policy", args.policy] if args.policy else ["--profile", args.profile]
    shown = [option for path in args.readonly for option in ("--readonly", path)]
    return [sys.executable, "-m", "buildjail", "run", *policy, *shown, "--", *args.command]


def start(cmd: list[str]) -> tuple[subprocess.Popen[bytes], float]:
    """Start *cmd* in a session of its own, its output discarded; the process and its start."""
    process = subprocess.Popen(cmd, cwd="/", stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, start_new_session=True)
    return process, time.perf_counter()


def finish(process: subprocess.Popen[bytes], started: float) -> dict[str, float]:
    """Wait for *process*: its wall time and the CPU time of it and what it waited for."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
    return {"wall_s": time.perf_counter() - started, "cpu_s": usage.ru_utime + usage.ru_stime}


def one_round(args: argparse.Namespace, sandbox_first: bool) -> dict[str, dict[str, float]]:
    """Both sides at once; their figures."""
    sides = {"sandbox": sandboxed(args), "outside": list(args.command)}
    order = list(sides) if sandbox_first else list(sides)[::-1]
    running = {side: start(sides[side]) for side in order}
    return {side: finish(*running[side]) for side in order}


def summarize(rounds: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Medians per side, paired ratios and differences."""
    summary: dict[str, Any] = {}
    for key in ("wall_s", "cpu_s"):
        ours = [r["sandbox"][key] for r in rounds]
        theirs = [r["outside"][key] for r in rounds]
        summary[key] = {
            "sandbox": statistics.median(ours), "outside": statistics.median(theirs),
            "ratio": statistics.median(a / b for a, b in zip(ours, theirs, strict=True)),
            "difference_ms": statistics.median(
                1000 * (a - b) for a, b in zip(ours, theirs, strict=True)),
        }
    return summary


def main() -> int:
    """Run the rounds and print the summary; 1 when a run failed."""
    args = parse_args()
    try:
        rounds = [one_round(args, sandbox_first=index % 2 == 0) for index in range(args.rounds)]
    except RuntimeError as error:
        print(f"side_by_side.py: {error}", file=sys.stderr)
        return 1
    summary = summarize(rounds)
    if args.json:
        print(json.dumps({"summary": summary, "rounds": rounds}, indent=2))
        return 0
    print(f"{' '.join(args.command)}: {args.rounds} paired rounds, "
          f"{args.policy or args.profile} against no sandbox, both at once")
    for key, label in (("cpu_s", "CPU time"), ("wall_s", "wall time (context)")):
        row = summary[key]
        print(f"  {label:20s} sandbox {row['sandbox']:8.3f} s  outside {row['outside']:8.3f} s"
              f"  ratio {row['ratio']:.3f}  difference {row['difference_ms']:+.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
