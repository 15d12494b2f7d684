#!/usr/bin/env python3
"""Measure what buildjail costs per sandboxed command, in time and in memory.

Wall times (median and p90, in milliseconds) of running ``/bin/true``:

- ``library:full``     ``Sandbox("full").run(["/bin/true"], cwd="/")`` from this process,
                       the path every PEP 517 hook call takes;
- ``library:network``  the same with the ``network`` profile (context);
- ``library:none``     the same with the ``none`` profile (context);
- ``bwrap:full``       ``Sandbox("full", backend="bwrap")``: the same policy through
                       bubblewrap, with buildjail's supervisor around it;
- ``(d) bare bwrap``   ``bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc
                       /bin/true`` alone, bubblewrap's own floor (context for bwrap:full);
- ``(a) subprocess``   ``subprocess.run(["/bin/true"])``, no sandbox at all;
- ``(b) unshare``      ``unshare --mount --pid --net --ipc --uts --fork /bin/true``,
                       the kernel's floor for these namespaces;
- ``(c) useradd``      the fromager ``--build-isolation`` proposal: ``useradd`` a fresh
                       system user, ``setpriv`` to it, ``unshare --uts --net --pid --ipc
                       --fork --map-root-user /bin/true``, ``userdel``;
- ``command:full``     the whole ``buildjail run -- /bin/true`` command, interpreter
                       start-up included.

The variants are measured interleaved: every round runs each variant that is due once,
in an order rotated from round to round, so drift (thermal, page cache, neighbours)
affects all of them alike. The expensive variants (``(c)`` and the command) run in
fewer, evenly spread rounds (``--slow-iterations``).

Memory: while ``/bin/sleep`` runs in the sandbox, the benchmark samples its own
descendants (``/proc/<pid>/task/*/children``, recursively) — the supervisor and the
sandbox init, both forked Python processes — and sums their VmRSS, Pss and private
memory (``smaps_rollup``), leaving out the sleep command itself. It also reports how
much the caller's own peak RSS (``ru_maxrss``) grew over the benchmark.

Every user created for ``(c)`` is deleted, also on Ctrl-C or errors, and
``/etc/passwd``, ``/etc/group``, ``/etc/shadow`` and ``/etc/gshadow`` are compared
byte for byte with their state before the run.

Run as root (Python 3.11+, stdlib only)::

    python3 benchmarks/overhead.py [--iterations 200] [--slow-iterations 100] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import grp
import json
import os
import pwd
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TRUE = "/bin/true"
SLEEP = "/bin/sleep"
UNSHARE = "/usr/bin/unshare"
BWRAP = "/usr/bin/bwrap"
SETPRIV = "/usr/bin/setpriv"
USERADD = "/usr/sbin/useradd"
USERDEL = "/usr/sbin/userdel"
GROUPDEL = "/usr/sbin/groupdel"
ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")

LIBRARY_TARGET_MS = 2.0
BASELINE_OVER_LIBRARY_TARGET = 10.0
BASELINE_OVER_COMMAND_TARGET = 2.0

MEMORY_SLEEP_SECONDS = 0.3
MEMORY_SAMPLE_SECONDS = 0.005


# --------------------------------------------------------------------------- variants


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of running ``/bin/true``; *slow* variants run in fewer rounds."""

    name: str
    call: Callable[[int], None]
    slow: bool = False


def _check(argv: list[str], **kwargs: Any) -> None:
    """Run *argv*; raise if it fails."""
    completed = subprocess.run(argv, check=False, **kwargs)
    if completed.returncode != 0:
        raise RuntimeError(f"{argv} exited with {completed.returncode}")


def _library(profile: str, backend: str = "native") -> Callable[[int], None]:
    """A variant calling ``Sandbox(profile, backend=backend).run`` in this process."""
    from buildjail import Sandbox

    def call(_: int) -> None:
        result = Sandbox(profile, backend=backend).run([TRUE], cwd="/")
        if result.exit_code != 0:
            raise RuntimeError(f"Sandbox({profile!r}) returned {result.exit_code}")

    return call


def _plain(_: int) -> None:
    """(a): no sandbox."""
    _check([TRUE])


def _unshare(_: int) -> None:
    """(b): the kernel's floor for the namespaces the full profile creates."""
    _check([UNSHARE, "--mount", "--pid", "--net", "--ipc", "--uts", "--fork", TRUE])


def _bare_bwrap(_: int) -> None:
    """(d): bubblewrap alone, with the namespaces and the minimal mounts of a sandbox."""
    _check([BWRAP, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev",
            "--proc", "/proc", TRUE])


def buildjail_command() -> list[str]:
    """The ``buildjail`` console script next to this interpreter, or ``python -m buildjail``."""
    script = Path(sys.executable).parent / "buildjail"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "buildjail"]


def _command(prefix: list[str]) -> Callable[[int], None]:
    """A variant running the whole ``buildjail run -- /bin/true`` command."""

    def call(_: int) -> None:
        _check([*prefix, "run", "--", TRUE], cwd="/")

    return call


class UserBaseline:
    """(c): the fromager ``--build-isolation`` proposal, a fresh system user per command."""

    def __init__(self) -> None:
        self.prefix = f"bjbench{os.getpid()}x"
        self.pending: set[str] = set()

    def __call__(self, iteration: int) -> None:
        name = f"{self.prefix}{iteration}"
        self.pending.add(name)  # before useradd: an interrupted useradd may leave it behind
        try:
            _check([USERADD, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name])
            entry = pwd.getpwnam(name)
            _check([SETPRIV, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
                    "--clear-groups", UNSHARE, "--uts", "--net", "--pid", "--ipc", "--fork",
                    "--map-root-user", TRUE])
        finally:
            self.remove(name)

    def remove(self, name: str) -> None:
        """Delete the user *name* and its group, whatever useradd managed to create."""
        if _exists(pwd.getpwnam, name):
            _check([USERDEL, name])
        if _exists(grp.getgrnam, name):
            _check([GROUPDEL, name])
        self.pending.discard(name)

    def cleanup(self) -> None:
        """Delete every user still pending (after Ctrl-C or an error)."""
        with _sigint_deferred():
            for name in sorted(self.pending):
                self.remove(name)


def _exists(lookup: Callable[[str], object], name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Ignore Ctrl-C while cleaning up, so a second one cannot leave users behind."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------- timing


def _due(round_index: int, count: int, rounds: int) -> bool:
    """Whether a variant that runs *count* times in *rounds* rounds runs in this one."""
    return (round_index * count) // rounds != ((round_index + 1) * count) // rounds


def measure(variants: list[Variant], fast: int, slow: int, warmup: int) -> dict[str, list[float]]:
    """Run the variants round-robin; return each one's wall times in milliseconds."""
    for variant in variants:
        for iteration in range(warmup if not variant.slow else max(1, warmup // 2)):
            variant.call(-1 - iteration)
    times: dict[str, list[float]] = {variant.name: [] for variant in variants}
    rounds = max(fast, slow)
    for index in range(rounds):
        due = [v for v in variants if _due(index, slow if v.slow else fast, rounds)]
        shift = index % len(due) if due else 0
        for variant in due[shift:] + due[:shift]:
            start = time.perf_counter_ns()
            variant.call(index)
            times[variant.name].append((time.perf_counter_ns() - start) / 1e6)
    return times


def summarize(samples: list[float]) -> dict[str, float]:
    """Median, p90, min and count of a list of milliseconds."""
    return {
        "n": len(samples),
        "median_ms": statistics.median(samples),
        "p90_ms": statistics.quantiles(samples, n=10, method="inclusive")[8],
        "min_ms": min(samples),
    }


def compare(stats: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """The three targets, each with its value and PASS or MISS (medians)."""
    library = stats["library:full"]["median_ms"]
    floor = stats["(b) unshare"]["median_ms"]
    baseline = stats["(c) useradd"]["median_ms"]
    command = stats["command:full"]["median_ms"]
    over_library, over_command = baseline / library, baseline / command
    rows = []
    if "bwrap:full" in stats:
        bwrap = stats["bwrap:full"]["median_ms"]
        bare = stats["(d) bare bwrap"]["median_ms"]
        rows = [("bwrap:full - (d) bare bwrap", bwrap - bare, "ms", "(context)", None),
                ("(c) useradd / bwrap:full", baseline / bwrap, "x",
                 f">= {BASELINE_OVER_LIBRARY_TARGET:g}x",
                 baseline / bwrap >= BASELINE_OVER_LIBRARY_TARGET)]
    checks = [
        ("library:full - (b) unshare", library - floor, "ms", f"<= {LIBRARY_TARGET_MS:g} ms",
         library - floor <= LIBRARY_TARGET_MS),
        ("(c) useradd / library:full", over_library, "x", f">= {BASELINE_OVER_LIBRARY_TARGET:g}x",
         over_library >= BASELINE_OVER_LIBRARY_TARGET),
        ("(c) useradd / command:full", over_command, "x", f">= {BASELINE_OVER_COMMAND_TARGET:g}x",
         over_command >= BASELINE_OVER_COMMAND_TARGET),
        *rows,
    ]
    verdicts = {True: "PASS", False: "MISS", None: ""}
    return [{"name": name, "value": value, "unit": unit, "target": target,
             "verdict": verdicts[ok]} for name, value, unit, target, ok in checks]


# --------------------------------------------------------------------------- memory


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, depth) of every descendant of *pid*, from ``/proc/<pid>/task/*/children``."""
    found: list[tuple[int, int]] = []
    stack = [(pid, 0)]
    while stack:
        parent, depth = stack.pop()
        for path in glob.glob(f"/proc/{parent}/task/*/children"):
            with contextlib.suppress(OSError):
                for child in Path(path).read_text().split():
                    found.append((int(child), depth + 1))
                    stack.append((int(child), depth + 1))
    return found


def _is_command(pid: int, command: str) -> bool:
    """Whether *pid* is the exec'd *command* (not a forked Python process)."""
    try:
        return os.readlink(f"/proc/{pid}/exe") == os.path.realpath(command)
    except PermissionError:
        return Path(f"/proc/{pid}/comm").read_text().strip() == Path(command).name


def _kib_fields(path: str, names: tuple[str, ...]) -> dict[str, int]:
    values = {}
    for line in Path(path).read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in names:
            values[key] = int(rest.split()[0])
    return values


def process_memory(pid: int) -> dict[str, int]:
    """VmRSS, Pss and private (clean + dirty) memory of *pid*, in KiB."""
    rss = _kib_fields(f"/proc/{pid}/status", ("VmRSS",))["VmRSS"]
    rollup = _kib_fields(f"/proc/{pid}/smaps_rollup", ("Pss", "Private_Clean", "Private_Dirty"))
    return {"rss_kib": rss, "pss_kib": rollup["Pss"],
            "private_kib": rollup["Private_Clean"] + rollup["Private_Dirty"]}


def _sample(command: str) -> list[dict[str, Any]] | None:
    """The sandbox machinery's processes right now, or None unless *command* is running."""
    machinery, command_seen = [], False
    for pid, depth in descendants(os.getpid()):
        try:
            if _is_command(pid, command):
                command_seen = True
                continue
            machinery.append({"pid": pid, "depth": depth, **process_memory(pid)})
        except (OSError, KeyError, IndexError, ValueError):
            continue  # exited while we looked
    return machinery if command_seen else None


def _totals(processes: list[dict[str, Any]]) -> dict[str, int]:
    return {key: sum(p[key] for p in processes) for key in ("rss_kib", "pss_kib", "private_kib")}


def _sample_during(action: Callable[[], object]) -> list[list[dict[str, Any]]]:
    """Run *action*, sampling the sandbox machinery from a thread meanwhile."""
    stop = threading.Event()
    seen: list[list[dict[str, Any]]] = []

    def sampler() -> None:
        while not stop.is_set():
            found = _sample(SLEEP)
            if found is not None:
                seen.append(found)
            time.sleep(MEMORY_SAMPLE_SECONDS)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        action()
    finally:
        stop.set()
        thread.join()
    return seen


def sandbox_memory(profile: str, repeats: int, backend: str = "native") -> dict[str, Any]:
    """Peak memory of the sandbox machinery while ``/bin/sleep`` runs under *profile*."""
    from buildjail import Sandbox

    peak: dict[str, Any] = {"rss_kib": 0, "pss_kib": 0, "private_kib": 0, "processes": []}
    samples = 0
    for _ in range(repeats):
        seen = _sample_during(
            lambda: Sandbox(profile, backend=backend).run([SLEEP, str(MEMORY_SLEEP_SECONDS)],
                                                          cwd="/"))
        samples += len(seen)
        for processes in seen:
            totals = _totals(processes)
            for key, value in totals.items():
                peak[key] = max(peak[key], value)
            if totals["pss_kib"] >= _totals(peak["processes"])["pss_kib"]:
                peak["processes"] = processes
    peak["samples"] = samples
    return peak


def caller_max_rss_kib() -> int:
    """This process's peak RSS so far (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --------------------------------------------------------------------------- account files


def snapshot_accounts() -> dict[str, bytes]:
    """The bytes of the account files (passwd, group, shadow, gshadow)."""
    return {path: Path(path).read_bytes() for path in ACCOUNT_FILES if Path(path).exists()}


def account_changes(before: dict[str, bytes]) -> dict[str, bool]:
    """For each account file: True when it equals its state in *before*."""
    after = snapshot_accounts()
    return {path: after.get(path) == data for path, data in before.items()}


# --------------------------------------------------------------------------- report

MEMORY_NOTE = (
    "The supervisor and the sandbox init are fork()ed from the caller: they share its pages\n"
    "copy-on-write, so their VmRSS mostly counts memory that exists once, in the caller.\n"
    "Pss divides every shared page among the processes mapping it; Private counts pages\n"
    "only that process maps. The honest added cost lies between the sum of Private (pages\n"
    "freed when the sandbox machinery exits) and the sum of Pss (its fair share, counting\n"
    "pages shared only between supervisor and init in full); VmRSS overstates it."
)


def _print_times(stats: dict[str, dict[str, float]]) -> None:
    print(f"{'variant':<20} {'n':>5} {'median ms':>10} {'p90 ms':>10} {'min ms':>10}")
    for name, row in stats.items():
        print(f"{name:<20} {row['n']:>5} {row['median_ms']:>10.2f} {row['p90_ms']:>10.2f} "
              f"{row['min_ms']:>10.2f}")


def _print_checks(checks: list[dict[str, Any]]) -> None:
    print("\ntargets (medians):")
    for check in checks:
        value = f"{check['value']:.2f} {check['unit']}"
        print(f"  {check['name']:<30} {value:>10}   target {check['target']:<9} "
              f"{check['verdict']}")


def _print_memory(memory: dict[str, Any]) -> None:
    print(f"\nmemory added by the sandbox machinery while {SLEEP} runs (peak over samples, KiB):")
    print(f"  {'profile':<10} {'procs':>5} {'VmRSS':>8} {'Pss':>8} {'Private':>8} {'samples':>8}")
    for profile, peak in memory["sandbox"].items():
        print(f"  {profile:<10} {len(peak['processes']):>5} {peak['rss_kib']:>8} "
              f"{peak['pss_kib']:>8} {peak['private_kib']:>8} {peak['samples']:>8}")
    roles = {1: "supervisor", 2: "sandbox init", 3: "bwrap", 4: "bwrap's init"}
    for profile in ("full", "full/bwrap"):
        for process in sorted(memory["sandbox"].get(profile, {"processes": []})["processes"],
                              key=lambda p: p["depth"]):
            role = roles.get(process["depth"], f"depth {process['depth']}")
            print(f"    {profile}, {role:<12} VmRSS {process['rss_kib']:>6}  "
                  f"Pss {process['pss_kib']:>6}  "
                  f"Private {process['private_kib']:>6}")
    caller = memory["caller"]
    print(f"  caller ru_maxrss: {caller['start_kib']} KiB at start, "
          f"{caller['after_import_kib']} after importing buildjail, {caller['end_kib']} at end "
          f"(+{caller['end_kib'] - caller['start_kib']} KiB over the benchmark)")
    print("\n" + MEMORY_NOTE)


def describe_accounts(accounts: dict[str, Any]) -> str:
    """One line: whether the account files are as before and no user was left behind."""
    files = ", ".join(f"{path}: {'same' if same else 'CHANGED'}"
                      for path, same in accounts["unchanged"].items())
    verdict = "all identical" if all(accounts["unchanged"].values()) else "CHANGED"
    left = ", ".join(accounts["left_behind"]) or "none"
    return f"account files after the run: {verdict} ({files}); users left behind: {left}"


def print_report(report: dict[str, Any]) -> None:
    """The human-readable report."""
    config = report["config"]
    print(f"buildjail overhead: {config['iterations']} rounds for cheap variants, "
          f"{config['slow_iterations']} for (c) and the command, interleaved; "
          f"{config['cpus']} CPUs; command: {' '.join(config['command'])}\n")
    _print_times(report["times"])
    _print_checks(report["checks"])
    _print_memory(report["memory"])
    print("\n" + describe_accounts(report["accounts"]))
    print(f"total wall time: {report['elapsed_s']:.1f} s")


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200,
                        help="rounds for the cheap variants (default: 200)")
    parser.add_argument("--slow-iterations", type=int, default=100,
                        help="rounds for (c) and the whole command (default: 100)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed calls per variant before measuring (default: 5)")
    parser.add_argument("--memory-repeats", type=int, default=3,
                        help="sandboxed sleeps sampled per profile (default: 3)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if min(args.iterations, args.slow_iterations) < 2 or args.warmup < 0:
        parser.error("--iterations and --slow-iterations must be at least 2")
    return args


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Measure everything; always delete the users created for (c)."""
    start_rss = caller_max_rss_kib()
    import buildjail  # noqa: F401 - imported here to see what importing it costs

    import_rss = caller_max_rss_kib()
    accounts = snapshot_accounts()
    baseline = UserBaseline()
    command = buildjail_command()
    variants = [
        Variant("library:full", _library("full")),
        Variant("library:network", _library("network")),
        Variant("library:none", _library("none")),
        Variant("(a) subprocess", _plain),
        Variant("(b) unshare", _unshare),
        *([Variant("bwrap:full", _library("full", "bwrap")),
           Variant("(d) bare bwrap", _bare_bwrap)] if os.access(BWRAP, os.X_OK) else []),
        Variant("(c) useradd", baseline, slow=True),
        Variant("command:full", _command(command), slow=True),
    ]
    started = time.monotonic()
    try:
        times = measure(variants, args.iterations, args.slow_iterations, args.warmup)
    finally:
        baseline.cleanup()
        checked = {"unchanged": account_changes(accounts), "left_behind": sorted(baseline.pending)}
        if sys.exc_info()[0] is not None:
            print("overhead.py: stopped; " + describe_accounts(checked), file=sys.stderr)
    stats = {name: summarize(samples) for name, samples in times.items()}
    sandbox = {profile: sandbox_memory(profile, args.memory_repeats)
               for profile in ("full", "network", "none")}
    if os.access(BWRAP, os.X_OK):
        sandbox["full/bwrap"] = sandbox_memory("full", args.memory_repeats, "bwrap")
    return {
        "config": {"iterations": args.iterations, "slow_iterations": args.slow_iterations,
                   "warmup": args.warmup, "cpus": os.cpu_count(), "command": command},
        "times": stats,
        "checks": compare(stats),
        "memory": {"sandbox": sandbox,
                   "caller": {"start_kib": start_rss, "after_import_kib": import_rss,
                              "end_kib": caller_max_rss_kib()},
                   "note": MEMORY_NOTE},
        "accounts": checked,
        "elapsed_s": time.monotonic() - started,
    }


def main() -> int:
    """Run the benchmark; exit 1 if the account files changed or users were left behind."""
    args = parse_args()
    if os.geteuid() != 0:
        print("overhead.py: run as root (the (c) baseline creates users)", file=sys.stderr)
        return 2
    report = run_benchmark(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    clean = all(report["accounts"]["unchanged"].values()) and not report["accounts"]["left_behind"]
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
