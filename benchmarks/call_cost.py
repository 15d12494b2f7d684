#!/usr/bin/env python3
"""What one sandboxed call costs, against the tools it is compared with, in one run.

Three tables (issue 15), each measured side by side:

- **calls**: the library call ``Sandbox("full").run(["/bin/true"], cwd="/")`` against bare
  bubblewrap (``bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc /bin/true``) and
  ``unshare --mount --pid --net --ipc --uts --fork /bin/true`` (with ``--user
  --map-root-user`` when not root); ``Sandbox("none").run`` against ``subprocess.run``; the
  command ``buildjail run -- /bin/true`` (this interpreter's console script, else ``python
  -m buildjail``) against ``python -I -c pass``, and its gap to ``python -I -c pass`` plus
  the library call against the 25 ms goal. All interleaved: each round runs ``--batch``
  calls of every case in turn, so that drift affects all alike; medians. Then the library
  call and bubblewrap again, each call after 0.2 s of rest, as a lone call (a command) pays.
- **caller size**: the per-call cost of ``Sandbox("full")`` from a process holding 50 MB
  and from one holding 1 GB of touched memory (``--caller-sizes``), each a child of this
  one, their rounds interleaved; in each child the supervisor forked directly
  (``fork_server=False``) and through the fork server (``True``), call by call in turn:
  the ratio server / direct per size, and 1 GB / 50 MB per mode.
- **throughput**: N hook-like calls at once (``python -c pass`` in the sandbox, N = 1, 2, 8,
  32 threads) against the same calls unsandboxed (``subprocess.run``): calls per second
  and the ratio, medians of ``--rounds`` rounds interleaved.

Run from the checkout, as root (a non-root user measures its own path, through a user
namespace; it needs a copy of the checkout it can read, and ``packaging`` on its path), with
the bytecode compiled (``python -m compileall -q src`` first where
``PYTHONDONTWRITEBYTECODE`` is set: else every command compiles what changed)::

    .venv/bin/python benchmarks/call_cost.py [--rounds 10] [--batch 5] [--quick]
        [--only calls,caller,throughput] [--caller-sizes 50,1024]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import buildjail  # after the checkout is put on the path
from buildjail import Sandbox

GOAL_MS = 25.0
"""Issue 15: ``buildjail run -- /bin/true`` within this of ``python -I -c pass`` plus the call."""
CALLER_SIZES_MB = (50, 1024)
MODES = ("direct", "server")
"""How the caller-size table starts each run's supervisor: ``fork_server`` False / True."""
CONCURRENCY = (1, 2, 8, 32)
TRUE = ["/bin/true"]
PYTHON = os.path.realpath(sys.executable)
"""The base interpreter: the sandbox's view shows it (not a venv's ``bin``)."""
SECTIONS = ("calls", "caller", "throughput")
IDLE_SECONDS = 0.2


def _ok(result_code: int, what: str) -> None:
    if result_code != 0:
        raise SystemExit(f"{what}: exited {result_code}")


_THIS_CHECKOUT = ("import sys; sys.path.insert(0, {src!r}); from buildjail.cli import command; "
                  "sys.exit(command())")
"""What the console script runs, with this checkout's package first on the path."""


def _command() -> tuple[list[str], str]:
    """``buildjail`` as a user runs it: the console script beside this interpreter, where
    it runs this checkout's package; else the same entry point with this checkout's source
    put first on the path (another checkout measured with one venv would otherwise time
    the venv's code)."""
    script = Path(sys.executable).with_name("buildjail")
    if script.is_file() and _installed_package() == Path(buildjail.__file__).resolve():
        return [str(script)], str(script)
    src = str(Path(buildjail.__file__).resolve().parent.parent)
    return ([sys.executable, "-I", "-c", _THIS_CHECKOUT.format(src=src)],
            f"{sys.executable} -I -c <cli.command from {src}>")


def _installed_package() -> Path | None:
    """The ``buildjail/__init__.py`` this interpreter imports on its own (None if none)."""
    found = subprocess.run([sys.executable, "-I", "-c",
                            "import buildjail; print(buildjail.__file__)"],
                           capture_output=True, text=True, check=False)
    return Path(found.stdout.strip()).resolve() if found.returncode == 0 else None


def _call_cases() -> tuple[dict[str, Callable[[], None]], str]:
    """The cases of the calls table, by name, each one call; and how the command is run."""
    full, none = Sandbox("full"), Sandbox("none")
    root = os.geteuid() == 0
    unshare = ["/usr/bin/unshare", *([] if root else ["--user", "--map-root-user"]),
               "--mount", "--pid", "--net", "--ipc", "--uts", "--fork", *TRUE]
    bwrap = ["/usr/bin/bwrap", "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev",
             "--proc", "/proc", *TRUE]
    command, described = _command()

    def tool(argv: list[str]) -> Callable[[], None]:
        return lambda: _ok(subprocess.run(argv, cwd="/", check=False).returncode, argv[0])

    cases: dict[str, Callable[[], None]] = {
        'Sandbox("full").run': lambda: _ok(full.run(TRUE, cwd="/").exit_code, "full"),
        "bwrap --unshare-all": tool(bwrap),
        "unshare": tool(unshare),
        'Sandbox("none").run': lambda: _ok(none.run(TRUE, cwd="/").exit_code, "none"),
        "subprocess.run": tool(TRUE),
        "buildjail run -- /bin/true": tool([*command, "run", "--", *TRUE]),
        "python -I -c pass": tool([sys.executable, "-I", "-c", "pass"]),
    }
    return cases, described


def _interleaved(cases: dict[str, Callable[[], None]], rounds: int,
                 batch: int) -> dict[str, float]:
    """The median ms of each case, over *rounds* rounds of *batch* calls of every case."""
    for case in cases.values():  # warm up: imports, the cached view and filters
        case()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            for _ in range(batch):
                start = time.perf_counter()
                case()
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def _after_idle(cases: dict[str, Callable[[], None]], names: tuple[str, ...], count: int,
                idle: float) -> dict[str, float]:
    """The median ms of each case named, each call timed after *idle* seconds of rest: what
    a lone call pays (a cgroup migration after a quiet spell waits for an RCU grace period;
    back-to-back calls do not)."""
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(count):
        for name in names:
            time.sleep(idle)
            start = time.perf_counter()
            cases[name]()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def _row(case: str, against: str, case_ms: float, against_ms: float) -> None:
    print(f"{case:<28} {case_ms:>8.2f}   {against:<22} {against_ms:>8.2f} "
          f"{case_ms / against_ms:>6.2f}x {case_ms - against_ms:>8.2f}")


def calls(rounds: int, batch: int) -> None:
    """The calls table."""
    cases, command = _call_cases()
    median = _interleaved(cases, rounds, batch)
    lone = _after_idle(cases, ('Sandbox("full").run', "bwrap --unshare-all"), 2 * rounds,
                       IDLE_SECONDS)
    print(f"== calls: median ms of {rounds * batch} calls each, interleaved "
          f"({'root' if os.geteuid() == 0 else f'uid {os.geteuid()}'}) ==")
    print(f"   command: {command}")
    pairs = [('Sandbox("full").run', "bwrap --unshare-all"),
             ('Sandbox("full").run', "unshare"),
             ('Sandbox("none").run', "subprocess.run"),
             ("buildjail run -- /bin/true", "python -I -c pass")]
    print(f"{'case':<28} {'ms':>8}   {'against':<22} {'ms':>8} {'ratio':>7} {'gap ms':>8}")
    for case, against in pairs:
        _row(case, against, median[case], median[against])
    print(f"after {IDLE_SECONDS} s idle ({2 * rounds} calls each):")
    _row(*pairs[0], *(lone[name] for name in pairs[0]))
    for which, call in (("back-to-back", median), (f"after {IDLE_SECONDS} s idle", lone)):
        gap = median["buildjail run -- /bin/true"] - (
            median["python -I -c pass"] + call['Sandbox("full").run'])
        print(f"buildjail run -- /bin/true - (python -I -c pass + Sandbox(\"full\").run "
              f"{which}) = {gap:.2f} ms (goal <= {GOAL_MS:.0f} ms: "
              f"{'met' if gap <= GOAL_MS else 'NOT met'})")


def _caller(megabytes: int) -> None:
    """A child: hold *megabytes* of touched memory; per line N on stdin, time N calls of
    ``Sandbox("full")`` forking the supervisor itself, then N through the fork server, in
    turn; print their ms as JSON, with this process's resident MB."""
    held = bytearray(megabytes << 20)
    held[::4096] = b"\1" * len(range(0, len(held), 4096))  # touch every page
    sandboxes = {mode: Sandbox("full", fork_server=mode == "server") for mode in MODES}
    for sandbox in sandboxes.values():  # the server starts here, once
        _ok(sandbox.run(TRUE, cwd="/").exit_code, "warm-up")
    for line in sys.stdin:
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(int(line)):
            for mode, sandbox in sandboxes.items():
                start = time.perf_counter()
                _ok(sandbox.run(TRUE, cwd="/").exit_code, "full")
                times[mode].append((time.perf_counter() - start) * 1000)
        print(json.dumps({"times": times, "rss_mb": _resident_mb()}), flush=True)
    del held


def _resident_mb() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def caller(rounds: int, batch: int, sizes: tuple[int, ...] = CALLER_SIZES_MB) -> None:
    """The caller-size table: one child per size, their rounds interleaved; in each, the
    direct fork and the fork server side by side."""
    children = {size: subprocess.Popen(
        [sys.executable, __file__, "--caller", str(size)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True) for size in sizes}
    times = {size: {mode: [] for mode in MODES} for size in sizes}
    resident: dict[int, float] = {}
    try:
        for _ in range(rounds):
            for size, child in children.items():
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write(f"{batch}\n")
                child.stdin.flush()
                answer = json.loads(child.stdout.readline())
                for mode in MODES:
                    times[size][mode] += answer["times"][mode]
                resident[size] = answer["rss_mb"]
    finally:
        for child in children.values():
            assert child.stdin is not None
            child.stdin.close()
            child.wait()
    median = {size: {mode: statistics.median(values) for mode, values in by_mode.items()}
              for size, by_mode in times.items()}
    print(f"== caller size: Sandbox(\"full\").run(/bin/true), median ms of {rounds * batch} "
          "calls each, direct fork and fork server interleaved ==")
    print(f"{'caller':>9} {'resident':>9} {'direct':>9} {'server':>9} {'server/direct':>14}")
    for size in sizes:
        direct, server = median[size]["direct"], median[size]["server"]
        print(f"{size:>6} MB {resident[size]:>6.0f} MB {direct:>6.2f} ms {server:>6.2f} ms "
              f"{server / direct:>13.2f}x")
    small, large = min(sizes), max(sizes)
    for mode in MODES:
        print(f"{mode}: ratio {large} MB / {small} MB: "
              f"{median[large][mode] / median[small][mode]:.2f}x (goal: flat within 10 %)")


def _at_once(count: int, call: Callable[[], None]) -> float:
    """Seconds for *count* calls started at once, one thread each."""
    threads = [threading.Thread(target=call) for _ in range(count)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def throughput(rounds: int, concurrency: tuple[int, ...]) -> None:
    """The throughput table: hook-like calls at once, sandboxed and not."""
    sandbox = Sandbox("full")
    hook = [PYTHON, "-c", "pass"]
    failures: list[str] = []

    def sandboxed() -> None:
        if (code := sandbox.run(hook, cwd="/").exit_code) != 0:
            failures.append(f"sandboxed: {code}")

    def bare() -> None:
        if (code := subprocess.run(hook, cwd="/", check=False).returncode) != 0:
            failures.append(f"subprocess: {code}")

    sandboxed(), bare()  # warm up
    print(f"== throughput: {' '.join(hook[1:])} by {PYTHON}, N at once (threads), median "
          f"of {rounds} rounds, interleaved ({os.cpu_count()} CPUs) ==")
    print(f"{'N':>3} {'sandboxed calls/s':>18} {'subprocess calls/s':>19} {'ratio':>7}")
    for count in concurrency:
        walls: dict[str, list[float]] = {"sandboxed": [], "bare": []}
        for _ in range(rounds):
            walls["sandboxed"].append(_at_once(count, sandboxed))
            walls["bare"].append(_at_once(count, bare))
        if failures:
            raise SystemExit(f"N={count}: {failures[:3]}")
        rate = {name: count / statistics.median(values) for name, values in walls.items()}
        print(f"{count:>3} {rate['sandboxed']:>18.1f} {rate['bare']:>19.1f} "
              f"{rate['sandboxed'] / rate['bare']:>6.2f}x")


def main() -> None:
    """Parse the options and print the tables asked for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds of 2 calls, N up to 8: a minute, not a figure to quote")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated tables to run ({','.join(SECTIONS)})")
    parser.add_argument("--caller-sizes", default=",".join(map(str, CALLER_SIZES_MB)),
                        help="the caller table's sizes in MB (e.g. 0,25,50,100,200 to find "
                        "where the fork server starts to pay)")
    parser.add_argument("--caller", type=int, help=argparse.SUPPRESS)  # the child's mode
    args = parser.parse_args()
    if args.caller is not None:
        _caller(args.caller)
        return
    rounds, batch = (3, 2) if args.quick else (args.rounds, args.batch)
    concurrency = tuple(n for n in CONCURRENCY if n <= 8) if args.quick else CONCURRENCY
    only = args.only.split(",")
    if unknown := set(only) - set(SECTIONS):
        parser.error(f"--only: unknown table {sorted(unknown)}")
    if "calls" in only and not all(shutil.which(tool) for tool in ("/usr/bin/bwrap",
                                                                     "/usr/bin/unshare")):
        raise SystemExit("the calls table needs /usr/bin/bwrap and /usr/bin/unshare")
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  Python {sys.version.split()[0]}  "
          f"Linux {os.uname().release}  load {os.getloadavg()[0]:.2f}")
    if "calls" in only:
        calls(rounds, batch)
    if "caller" in only:
        caller(rounds, batch, tuple(int(size) for size in args.caller_sizes.split(",")))
    if "throughput" in only:
        throughput(rounds, concurrency)


if __name__ == "__main__":
    main()
