"""Attacks on the host's resources: each one stopped, and reported for the right reason."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import NONROOT_UID, SYSTEM_PYTHON, Runner, host_processes
from sandbox_driver import run_spec

MIB = 1 << 20
SAFETY_NET = 60.0  # wall time of the attacks that another limit must stop first

FORK_BOMB = """
import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
"""

MEMORY_HOG = """
chunks = []
while True:
    chunks.append(b"x" * (64 << 20))  # 64 MiB, every page touched
    print(len(chunks), flush=True)
"""

EFBIG_WRITER = """
import errno, sys
with open(sys.argv[1], "wb", buffering=0) as stream:
    try:
        for _ in range(20):
            stream.write(bytes(1 << 20))
    except OSError as error:
        print("write failed:", errno.errorcode[error.errno], stream.tell())
    else:
        print("wrote everything:", stream.tell())
"""

DAEMON = """
import os, sys, time
heartbeat = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        beats = 0
        while True:
            beats += 1
            with open(heartbeat + ".new", "w") as stream:
                stream.write(str(beats))
            os.replace(heartbeat + ".new", heartbeat)
            time.sleep(0.1)
    os._exit(0)
os.wait()
time.sleep(0.5)  # the daemon beats a few times, then the command returns
"""


def leftovers(result: dict[str, object], marker: str) -> list[tuple[int, set[int], bytes]]:
    """Processes the sandbox left on the host: its ephemeral uid (root) or *marker*."""
    uid = result.get("uid")
    ephemeral = isinstance(uid, int) and uid not in (0, NONROOT_UID)
    return [(pid, uids, cmdline) for pid, uids, cmdline in host_processes()
            if marker.encode() in cmdline or (ephemeral and uid in uids)]


def assert_nothing_left(result: dict[str, object], marker: str, within: float = 3.0) -> None:
    """Wait briefly (reaping is asynchronous), then require no process of the sandbox."""
    deadline = time.monotonic() + within
    while (found := leftovers(result, marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not found, f"processes of the sandbox survived it: {found}"


def cgroup_dirs(name: str) -> list[str]:
    """The cgroup directories called *name* (in any v1 hierarchy, or v2)."""
    return [os.path.join(top, name) for top, dirs, _ in os.walk("/sys/fs/cgroup")
            if name in dirs]


def python(code: str, *args: str) -> list[str]:
    return [SYSTEM_PYTHON, "-c", code, *args]


def check_ran(result: dict[str, object]) -> None:
    assert "setup_error" not in result, f"sandbox not set up: {result}"


def test_fork_bomb_stops_on_the_process_limit(run_sandbox: Runner) -> None:
    marker = f"bj-forkbomb-{uuid.uuid4().hex}"
    result = run_sandbox(python(FORK_BOMB, marker), cwd="/",
                         limits={"processes": 64, "wall_time": SAFETY_NET})
    check_ran(result)
    assert result["limit_hit"] == "processes", result
    assert result["exit_code"] == 128 + signal.SIGKILL
    assert result["duration"] < SAFETY_NET / 3, "the process limit, not the wall time, stopped it"
    assert_nothing_left(result, marker)


def test_memory_hog_stops_on_the_memory_limit(run_sandbox: Runner) -> None:
    marker = f"bj-memhog-{uuid.uuid4().hex}"
    result = run_sandbox(python(MEMORY_HOG, marker), cwd="/",
                         limits={"memory": 256 * MIB, "wall_time": SAFETY_NET})
    check_ran(result)
    assert result["limit_hit"] == "memory", result
    assert result["exit_code"] == 128 + signal.SIGKILL
    assert result["duration"] < SAFETY_NET / 3
    assert_nothing_left(result, marker)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
@pytest.mark.parametrize("attack", ["processes", "memory"])
def test_cgroup_limits_stop_the_attack_too(attack: str) -> None:
    """As root, a policy can enforce the limits with a cgroup instead of the monitor."""
    marker = f"bj-cgroup-{attack}-{uuid.uuid4().hex}"
    code, limit = (FORK_BOMB, 64) if attack == "processes" else (MEMORY_HOG, 256 * MIB)
    result = run_spec({"cmd": python(code, marker), "cwd": "/",
                       "policy": {"isolation": {"cgroup_limits": True}},
                       "limits": {attack: limit, "wall_time": SAFETY_NET}})
    check_ran(result)
    assert any(layer.startswith("limits:cgroup") for layer in result["layers"])
    assert result["limit_hit"] == attack, result
    assert result["duration"] < SAFETY_NET / 3
    assert_nothing_left(result, marker)
    assert not cgroup_dirs(f"buildjail-{result['uid']}"), "the cgroup was not removed"


@pytest.mark.parametrize("where", ["sandbox-tmp", "writable-dir"])
def test_huge_file_stops_on_the_file_size_limit(
    run_sandbox: Runner, shared_dir: Path, where: str
) -> None:
    if where == "sandbox-tmp":
        # exec: head itself is the command, and dies of SIGXFSZ.
        script, writable = "exec /usr/bin/head -c 100M /dev/zero > /tmp/huge", []
    else:
        # head runs as the shell's child; the shell exits with its status, 128 + SIGXFSZ.
        script = f"/usr/bin/head -c 100M /dev/zero > {shared_dir}/huge"
        writable = [str(shared_dir)]
    result = run_sandbox(["/bin/sh", "-c", script], cwd="/", writable=writable,
                         limits={"file_size": 10 * MIB, "wall_time": SAFETY_NET})
    check_ran(result)
    assert result["limit_hit"] == "file_size", result
    assert result["exit_code"] == 128 + signal.SIGXFSZ
    if where == "sandbox-tmp":
        assert result["signal"] == _reported_signal(result, signal.SIGXFSZ)
    else:
        assert (shared_dir / "huge").stat().st_size == 10 * MIB


def test_write_past_the_file_size_limit_fails_with_efbig(
    run_sandbox: Runner, shared_dir: Path
) -> None:
    # Python ignores SIGXFSZ, so the write itself fails, and the program sees why.
    target = shared_dir / "huge"
    result = run_sandbox(python(EFBIG_WRITER, str(target)), cwd="/", writable=[str(shared_dir)],
                         limits={"file_size": 10 * MIB, "wall_time": SAFETY_NET}, capture=True)
    check_ran(result)
    assert result["exit_code"] == 0, result
    assert result["stdout"] == f"write failed: EFBIG {10 * MIB}\n"
    assert target.stat().st_size == 10 * MIB


def test_endless_command_stops_on_the_wall_time(run_sandbox: Runner) -> None:
    marker = f"bj-sleeper-{uuid.uuid4().hex}"
    result = run_sandbox(["/bin/sh", "-c", "/bin/sleep 30", marker], cwd="/",
                         limits={"wall_time": 1})
    check_ran(result)
    assert result["exit_code"] == 124
    assert result["limit_hit"] == "wall_time"
    assert result["duration"] < 10
    assert_nothing_left(result, marker)


def _heartbeat(path: Path) -> tuple[str, int] | None:
    try:
        return path.read_text(), path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def test_detached_daemon_dies_with_the_sandbox(run_sandbox: Runner, shared_dir: Path) -> None:
    marker = f"bj-daemon-{uuid.uuid4().hex}"
    heartbeat = shared_dir / "heartbeat"
    result = run_sandbox(python(DAEMON, str(heartbeat), marker), cwd="/",
                         writable=[str(shared_dir)], limits={"wall_time": SAFETY_NET})
    check_ran(result)
    assert result["exit_code"] == 0, result
    assert result["limit_hit"] is None
    beat = _heartbeat(heartbeat)
    assert beat is not None and int(beat[0]) >= 2, "the daemon never ran"
    time.sleep(1)
    assert _heartbeat(heartbeat) == beat, "the daemon still beats after the sandbox returned"
    assert_nothing_left(result, marker, within=0)


def test_exit_code_passes_through(run_sandbox: Runner) -> None:
    result = run_sandbox(["/bin/sh", "-c", "exit 3"], cwd="/")
    check_ran(result)
    assert (result["exit_code"], result["signal"], result["limit_hit"]) == (3, None, None)


def test_death_by_signal_is_128_plus_the_signal(run_sandbox: Runner) -> None:
    result = run_sandbox(["/bin/sh", "-c", "kill -TERM $$"], cwd="/")
    check_ran(result)
    assert result["exit_code"] == 128 + signal.SIGTERM
    assert result["signal"] == _reported_signal(result, signal.SIGTERM)
    assert result["limit_hit"] is None


def _reported_signal(result: dict[str, Any], number: int) -> int | None:
    """bubblewrap folds a death by signal N into exit status 128 + N: no signal is known."""
    return None if result["backend"] == "bwrap" else number


def test_memory_in_the_sandboxs_tmpfs_counts(run_sandbox: Runner) -> None:
    """Files in /tmp, /var/tmp, /dev/shm and HOME are memory: they cannot bypass the limit."""
    script = ("for d in /tmp /var/tmp /dev/shm $HOME; do "
              "head -c 150M /dev/zero > $d/fill || exit 9; done; sleep 5")
    result = run_sandbox(["/bin/sh", "-c", script], cwd="/",
                         limits={"memory": 200 << 20, "wall_time": 60})
    assert result["limit_hit"] == "memory", result
    assert result["duration"] < 30
