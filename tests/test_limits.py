"""Attacks on the host's resources: each one stopped, and reported for the right reason."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from buildjail._linux import cgroups
from conftest import (
    NONROOT_UID,
    SYSTEM_PYTHON,
    WITHOUT_SECCOMP,
    Runner,
    early_in_a_second,
    host_processes,
)
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


V1_ONLY = pytest.mark.skipif(
    os.geteuid() != 0 or os.path.exists("/sys/fs/cgroup/cgroup.controllers"),
    reason="needs root and cgroup v1 controllers (CI's host has them)")


def _child_cgroup_lines(join: Callable[[], None]) -> tuple[list[str], str]:
    """Fork a child that runs *join*, and read its cgroups from outside while it waits:
    the lines of ``/proc/PID/cgroup`` and what the child said (``ok`` or its error)."""
    said_r, said_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            join()
            os.write(said_w, b"ok")
        except OSError as error:
            os.write(said_w, f"errno {error.errno}".encode())
        finally:
            os.read(go_r, 1)
            os._exit(0)
    try:
        os.close(said_w)
        said = os.read(said_r, 256).decode()
        with open(f"/proc/{child}/cgroup") as stream:
            return stream.read().splitlines(), said
    finally:
        os.write(go_w, b"x")
        os.waitpid(child, 0)
        for fd in (said_r, go_r, go_w):
            os.close(fd)


@V1_ONLY
def test_the_init_joins_its_v1_cgroup_itself() -> None:
    """On v1 a fresh process moves itself in (``cgroups.join``: one thread through
    ``tasks``, no global lock) and is then in the run's cgroup in every hierarchy, as seen
    from outside; the control, a child that does not join, is in none."""
    name = f"bj-join-{uuid.uuid4().hex[:12]}"
    cgroup = cgroups.create(name, 256 * MIB, 64)
    assert cgroup is not None and cgroup.joined_from_inside
    try:
        lines, said = _child_cgroup_lines(lambda: cgroups.join(cgroup.open_moves()))
        assert said == "ok"
        joined = {line.split(":")[1] for line in lines if line.endswith("/" + name)}
        assert {"memory", "pids"} <= joined, lines
        control, _ = _child_cgroup_lines(lambda: None)
        assert not any(line.endswith("/" + name) for line in control), control
    finally:
        time.sleep(0.05)
        cgroup.remove()


@V1_ONLY
def test_a_process_with_threads_cannot_join_only_one_of_them() -> None:
    """``tasks`` moves one thread: a process with a second thread is refused (EBUSY) and
    left where it was, rather than joined in part with its other threads outside."""
    name = f"bj-join-{uuid.uuid4().hex[:12]}"
    cgroup = cgroups.create(name, 256 * MIB, 64)
    assert cgroup is not None
    try:
        def join_with_a_thread() -> None:
            stop = threading.Event()
            threading.Thread(target=stop.wait, daemon=True).start()
            try:
                cgroups.join(cgroup.open_moves())
            finally:
                stop.set()

        lines, said = _child_cgroup_lines(join_with_a_thread)
        assert said == f"errno {errno.EBUSY}"
        assert not any(line.endswith("/" + name) for line in lines), lines
    finally:
        time.sleep(0.05)
        cgroup.remove()


@pytest.mark.parametrize("version", [1, 2])
def test_a_cgroups_limit_counters_are_reread_through_kept_descriptors(
        tmp_path: Path, version: int) -> None:
    """The supervisor asks on every tick whether the kernel enforced a limit: each counter
    file is opened once, close-on-exec, and read afresh through its descriptor, so a hit
    after the first look is still seen; closing (or removing) the cgroup drops them, and a
    pickled copy (the fork server's) holds none."""
    import pickle

    memory = tmp_path / ("memory.events" if version == 2 else "memory.oom_control")
    memory.write_text("oom 0\noom_kill 0\n" if version == 2 else "under_oom 0\noom_kill 0\n")
    (tmp_path / "pids.events").write_text("max 0\n")
    cgroup = cgroups.Cgroup({"memory": str(tmp_path), "pids": str(tmp_path)}, version)

    def descriptors() -> set[str]:
        return {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                if os.path.islink(f"/proc/self/fd/{fd}")}

    before = descriptors()
    assert cgroup.limit_hit() is None
    kept = descriptors() - before
    assert kept == {str(memory), str(tmp_path / "pids.events")}
    assert all(not os.get_inheritable(fd) for fd in cgroup._counters.values())
    assert pickle.loads(pickle.dumps(cgroup))._counters == {}
    with open(tmp_path / "pids.events", "r+") as stream:  # the same file, rewritten in place
        stream.write("max 3\n")
    assert cgroup.limit_hit() == "processes"
    memory.write_text(memory.read_text().replace("oom_kill 0", "oom_kill 1"))
    assert cgroup.limit_hit() == "memory"
    assert descriptors() - before == kept, "a counter was opened again"
    cgroup.close()
    assert descriptors() == before
    assert cgroup.limit_hit() == "memory", "reopened after a close"
    cgroup.close()


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


# --- memory a build holds without mapping it, disk, CPU time, descriptors -------------

SYSV_DETACHED = """
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.shmget.restype = ctypes.c_int
libc.shmat.restype = ctypes.c_void_p
chunk, held = 64 << 20, 0
while held < int(sys.argv[1]) << 20:
    shmid = libc.shmget(0, chunk, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
    assert shmid >= 0, ctypes.get_errno()
    address = libc.shmat(shmid, None, 0)
    ctypes.memset(address, 1, chunk)
    libc.shmdt(ctypes.c_void_p(address))  # detached: no process maps it any more
    held += chunk
time.sleep(0.5)
print("held", held >> 20)
"""

QUEUE_FILLER = """
import socket, sys, time
{listen}
held, pairs = 0, []
while held < int(sys.argv[1]) << 20 and len(pairs) < 400:
    {pair}
    a.setblocking(False)
    try:
        while True:
            held += a.send(b"x" * 65536)
    except OSError:
        pass
    pairs.append((a, b))  # nothing reads b: the bytes wait in the kernel
time.sleep(0.5)
print("held", held >> 20)
"""
"""Pairs of sockets filled one way until the kernel takes no more, *pair* making each."""

SOCKET_BUFFERS = QUEUE_FILLER.format(
    listen="", pair="a, b = socket.socketpair(); "
                     "a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)")

UNMAPPED_MEMFD = """
import os, sys
try:
    fd = os.memfd_create("bypass")
except OSError as error:
    print("memfd_create:", error.errno)
    sys.exit(0)
for _ in range(int(sys.argv[1])):
    os.write(fd, b"x" * (1 << 20))  # written, never mapped
print("held", os.fstat(fd).st_size >> 20)
"""

BYPASSES = {"sysv-detached": SYSV_DETACHED, "socket-buffers": SOCKET_BUFFERS}
MONITOR_ONLY = {"isolation": {"cgroup_limits": False}}


@pytest.mark.parametrize("attack", BYPASSES)
@pytest.mark.parametrize("counter", ["auto", "monitor"])
def test_memory_held_outside_any_process_counts(run_sandbox: Runner, attack: str,
                                                counter: str) -> None:
    """512 MiB in detached System V segments or unread socket buffers, against 128 MiB.

    *auto* is the default (a cgroup where one can be had: root here; the monitor for a
    non-root user); *monitor* forces the in-sandbox monitor for root too.
    """
    extra = {"policy": MONITOR_ONLY} if counter == "monitor" else {}
    result = run_sandbox(python(BYPASSES[attack], "512"), cwd="/", capture=True,
                         limits={"memory": 128 * MIB, "wall_time": SAFETY_NET}, **extra)
    check_ran(result)
    assert result["limit_hit"] == "memory", result
    assert "held" not in result["stdout"], result["stdout"]


@pytest.mark.parametrize("attack", BYPASSES)
def test_memory_bypasses_work_without_a_memory_limit(run_sandbox: Runner, attack: str) -> None:
    """The control: the same attack, no memory limit, holds its 512 MiB to the end."""
    result = run_sandbox(python(BYPASSES[attack], "512"), cwd="/", capture=True,
                         limits={"wall_time": SAFETY_NET})  # memory: full's ¾ of the RAM
    check_ran(result)
    assert result["limit_hit"] is None and result["exit_code"] == 0, result
    assert int(result["stdout"].split()[-1]) >= 512, result["stdout"]


def test_unmapped_memfds_are_refused(run_sandbox: Runner) -> None:
    """A memfd written but never mapped is in no process and no file system of the sandbox."""
    result = run_sandbox(python(UNMAPPED_MEMFD, "512"), cwd="/", capture=True,
                         limits={"memory": 128 * MIB, "wall_time": SAFETY_NET})
    check_ran(result)
    assert result["stdout"].strip() == "memfd_create: 38", result  # ENOSYS


def test_without_the_filter_an_unmapped_memfd_dodges_the_monitor() -> None:
    """The control: seccomp off, monitor only: 512 MiB under a 128 MiB limit goes unseen."""
    result = run_spec({"cmd": python(UNMAPPED_MEMFD, "512"), "cwd": "/", "capture": True,
                       "policy": {"isolation": {"seccomp": False, "cgroup_limits": False}},
                       "limits": {"memory": 128 * MIB, "wall_time": SAFETY_NET}})
    check_ran(result)
    assert result["limit_hit"] is None, result
    assert result["stdout"].strip() == "held 512", result


MANY_FILES = """
import sys
for index in range(int(sys.argv[2])):
    with open(f"{sys.argv[1]}/f{index}", "wb") as stream:
        stream.write(b"x" * int(sys.argv[3]))
print("wrote all")
"""

DELETED_OPEN = """
import os, sys, time
path = sys.argv[1] + "/gone"
stream = open(path, "wb")
os.unlink(path)  # no name left: only the open descriptor holds the blocks
for _ in range(int(sys.argv[2])):
    stream.write(b"x" * (1 << 20))
    stream.flush()
time.sleep(1)
print("wrote all")
"""


@pytest.mark.parametrize(("attack", "args", "limits"), [
    ("small-files", ["300", str(MIB)], {"disk": 64 * MIB, "file_size": 16 * MIB}),
    ("many-inodes", ["20000", "0"], {"disk_inodes": 1000}),
    ("deleted-open", ["300"], {"disk": 64 * MIB}),
])
def test_the_disk_limit_stops_what_the_build_adds(run_sandbox: Runner, shared_dir: Path,
                                                  attack: str, args: list[str],
                                                  limits: dict[str, int]) -> None:
    code = DELETED_OPEN if attack == "deleted-open" else MANY_FILES
    result = run_sandbox(python(code, str(shared_dir), *args), cwd="/", capture=True,
                         writable=[str(shared_dir)], limits={**limits, "wall_time": SAFETY_NET})
    check_ran(result)
    assert result["limit_hit"] == "disk", result
    assert "wrote all" not in result["stdout"]
    files = list(shared_dir.iterdir())
    if attack == "small-files":
        assert len(files) < 300
    elif attack == "many-inodes":
        assert len(files) < 20000


@pytest.mark.parametrize("attack", ["small-files", "many-inodes"])
def test_without_a_disk_limit_the_same_writes_finish(run_sandbox: Runner, shared_dir: Path,
                                                     attack: str) -> None:
    """The control: the default budget (¾ of what is free) lets the same build finish."""
    args = ["300", str(MIB)] if attack == "small-files" else ["20000", "0"]
    result = run_sandbox(python(MANY_FILES, str(shared_dir), *args), cwd="/", capture=True,
                         writable=[str(shared_dir)], limits={"wall_time": SAFETY_NET})
    check_ran(result)
    assert result["limit_hit"] is None and result["stdout"] == "wrote all\n", result
    assert len(list(shared_dir.iterdir())) == int(args[0])


CPU_BURNERS = """
import os, time
os.fork()
os.fork()  # four processes, each under the limit, together over it
start = time.process_time()
while time.process_time() - start < 3:
    pass
print("done", flush=True)
while True:  # the command ends when its first process does: wait for the others
    try:
        os.wait()
    except ChildProcessError:
        break
"""


def test_the_cpu_time_limit_adds_up_every_process(run_sandbox: Runner) -> None:
    result = run_sandbox(python(CPU_BURNERS), cwd="/", capture=True,
                         limits={"cpu_time": 1.5, "wall_time": SAFETY_NET})
    check_ran(result)
    assert result["limit_hit"] == "cpu_time", result
    assert "done" not in result["stdout"]


def test_without_a_cpu_time_limit_the_burners_finish(run_sandbox: Runner) -> None:
    result = run_sandbox(python(CPU_BURNERS), cwd="/", capture=True,
                         limits={"wall_time": SAFETY_NET})
    check_ran(result)
    assert result["limit_hit"] is None and result["stdout"].count("done") == 4, result


OPEN_FILES = """
import os, resource
opened = 0
try:
    while True:
        os.open("/dev/null", os.O_RDONLY)
        opened += 1
except OSError as error:
    print(resource.getrlimit(resource.RLIMIT_NOFILE)[1], error.errno, opened)
"""


def test_descriptors_per_process_are_limited(run_sandbox: Runner) -> None:
    """The inherited RLIMIT_NOFILE (20000 here) would let a few processes fill the host's
    file table; full sets 1024."""
    result = run_sandbox(python(OPEN_FILES), cwd="/", capture=True)
    check_ran(result)
    hard, code, opened = (int(value) for value in result["stdout"].split())
    assert (hard, code) == (1024, 24), result  # EMFILE
    assert opened < 1024


# --- found by an attack pass: memory the first monitor did not see ----------------------

NETLINK_QUEUES = """
import socket, struct, sys, time
socks = []
request = struct.pack("=IHHII", 20, 18, 0x301, 1, 0) + bytes(4)  # RTM_GETLINK dump
while len(socks) < 900:
    link = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
    link.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    for _ in range(200):
        try:
            link.send(request)  # the replies queue up unread
        except OSError:
            break
    socks.append(link)
time.sleep(0.5)
print("held", len(socks))
"""

PAGE_TABLES = """
import mmap, time
size = 64 << 30
MAP_NORESERVE = 0x4000  # not in Python 3.11's mmap module
area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
for offset in range(0, size, 2 << 20):  # one byte per 2 MiB: page tables, hardly any data
    area[offset]
time.sleep(0.5)
print("held")
"""

TMPFS_INODES = """
import os, time
for index in range(400000):  # empty files: no blocks, but an inode each
    os.close(os.open(f"/tmp/e{index}", os.O_CREAT | os.O_WRONLY, 0o600))
time.sleep(0.5)
print("held")
"""

HIDDEN = {"netlink-queues": NETLINK_QUEUES, "page-tables": PAGE_TABLES,
          "tmpfs-inodes": TMPFS_INODES}


@pytest.mark.parametrize("attack", HIDDEN)
def test_memory_the_first_monitor_missed_counts(run_sandbox: Runner, attack: str) -> None:
    """Netlink queues, page tables, tmpfs inodes: stopped at 128 MiB by the monitor."""
    result = run_sandbox(python(HIDDEN[attack]), cwd="/", capture=True, policy=MONITOR_ONLY,
                         limits={"memory": 128 * MIB, "wall_time": SAFETY_NET})
    check_ran(result)
    assert result["limit_hit"] == "memory", result
    assert "held" not in result["stdout"]


CGROUP_PATHS = """
print(open("/proc/self/cgroup").read())
"""


def test_the_build_sees_its_cgroup_as_the_root(run_sandbox: Runner, identity_kind: str) -> None:
    """The cgroup namespace is rooted at the sandbox's own cgroup, whose path (or the
    caller's) never shows: the init makes it once the supervisor has moved it in. As root
    the build is in a cgroup of its own (limits:cgroup), yet sees ``/``."""
    result = run_sandbox(python(CGROUP_PATHS), cwd="/", capture=True)
    check_ran(result)
    assert "namespace:cgroup" in result["layers"], result["layers"]
    if identity_kind == "root":
        assert any(layer.startswith("limits:cgroup") for layer in result["layers"]), result
    paths = [line.split(":", 2)[2] for line in result["stdout"].splitlines() if line]
    assert paths and all(path == "/" for path in paths), result["stdout"]


LOOPBACK_TCP_BUFFERS = QUEUE_FILLER.format(
    listen='server = socket.create_server(("127.0.0.1", 0), backlog=512)',
    pair="a = socket.create_connection(server.getsockname()); b, _ = server.accept()")


UDP_LITE_QUEUES = """
import socket, sys, time
held, socks = 0, []
while held < int(sys.argv[1]) << 20 and len(socks) < 900:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)  # IPPROTO_UDPLITE
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 30)  # up to 2 * rmem_max
    receiver.bind(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)
    sender.connect(receiver.getsockname())
    sent = 0
    while sent < min(receiver.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), 16 << 20):
        sent += sender.send(b"x" * 65000)  # never read: queued up to the receive buffer
    sender.close()
    held += sent
    socks.append(receiver)
time.sleep(0.5)
print("held", held >> 20)
"""


INET_QUEUES = {"loopback-tcp": LOOPBACK_TCP_BUFFERS, "udp-lite": UDP_LITE_QUEUES}


@pytest.mark.parametrize("recording", [True, False], ids=["recording", "not-recording"])
@pytest.mark.parametrize("attack", INET_QUEUES)
def test_inet_queues_count_beside_the_dns_trap(run_sandbox: Runner, attack: str,
                                               recording: bool) -> None:
    """Unread loopback TCP or UDP-Lite queues (tables of their own, sockstat's UDPLITE),
    512 MiB against 128 MiB, seen by the monitor: also where the DNS trap's own socket is
    in the namespace (the tables are walked only when a socket besides the trap's is)."""
    policy = {"isolation": {"cgroup_limits": False, "record_attempts": recording}}
    result = run_sandbox(python(INET_QUEUES[attack], "512"), cwd="/", capture=True,
                         policy=policy, limits={"memory": 128 * MIB, "wall_time": SAFETY_NET})
    check_ran(result)
    assert ("attempts:dns" in result["layers"]) is recording, result["layers"]
    assert result["limit_hit"] == "memory", result
    assert "held" not in result["stdout"], result["stdout"]


@pytest.mark.parametrize("attack", INET_QUEUES)
def test_inet_queues_hold_without_a_limit(run_sandbox: Runner, attack: str) -> None:
    """The control: the same attacks, the DNS trap there, no memory limit, hold 512 MiB."""
    result = run_sandbox(python(INET_QUEUES[attack], "512"), cwd="/", capture=True,
                         policy={"isolation": {"record_attempts": True}},
                         limits={"wall_time": SAFETY_NET})
    check_ran(result)
    assert result["limit_hit"] is None and result["exit_code"] == 0, result
    assert int(result["stdout"].split()[-1]) >= 512, result["stdout"]


MPTCP_QUEUES = """
import socket, sys, time
try:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)  # IPPROTO_MPTCP
except OSError as error:
    sys.exit(print("refused", error.errno))
server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 30)  # up to 2 * rmem_max
server.bind(("127.0.0.1", 0))
server.listen(512)
held, pairs = 0, []
while held < int(sys.argv[1]) << 20 and len(pairs) < 400:
    a = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    a.connect(server.getsockname())
    b, _ = server.accept()  # never read: the bytes wait in b's own queue, in no table
    a.setblocking(False)
    idle = time.monotonic()
    while time.monotonic() - idle < 0.05:  # until both queues stay full
        try:
            held += a.send(b"x" * 65536)
            idle = time.monotonic()
        except BlockingIOError:
            time.sleep(0.002)
    pairs.append((a, b))
time.sleep(0.5)
print("held", held >> 20)
"""


def test_mptcp_queues_no_table_shows_are_refused_at_the_socket(run_sandbox: Runner) -> None:
    """Unread MPTCP queues cannot be made: socket(IPPROTO_MPTCP) fails with ENOPROTOOPT,
    as where MPTCP is disabled (programs then use TCP)."""
    result = run_sandbox(python(MPTCP_QUEUES, "512"), cwd="/", capture=True,
                         policy={"isolation": {"cgroup_limits": False, "record_attempts": True}},
                         limits={"memory": 128 * MIB, "wall_time": SAFETY_NET})
    check_ran(result)
    assert result["stdout"].split() == ["refused", str(errno.ENOPROTOOPT)], result


def test_mptcp_queues_pass_a_limit_unseen_without_the_filter(run_sandbox: Runner) -> None:
    """Why they are refused: without the seccomp filter the same attack holds 512 MiB past
    a 128 MiB limit, the monitor walking the tables (an MPTCP socket's own queue is in
    none; its subflows' lines show a few MiB)."""
    result = run_sandbox(python(MPTCP_QUEUES, "512"), cwd="/", capture=True,
                         policy={"extends": "full", "isolation": {
                             "cgroup_limits": False, "record_attempts": True,
                             "seccomp": False}},
                         limits={"memory": 128 * MIB, "wall_time": SAFETY_NET})
    check_ran(result)
    assert result["limit_hit"] is None and result["exit_code"] == 0, result
    assert int(result["stdout"].split()[-1]) >= 512, result["stdout"]


def test_netlink_queues_count_beside_a_cgroup_too() -> None:
    """A v1 cgroup does not charge them: the monitor adds them to the cgroup's usage."""
    result = run_spec({"cmd": python(NETLINK_QUEUES), "cwd": "/", "capture": True,
                       "limits": {"memory": 128 * MIB, "wall_time": SAFETY_NET}})
    check_ran(result)
    assert any(layer.startswith("limits:cgroup") for layer in result["layers"]), result
    assert result["limit_hit"] == "memory", result


@pytest.mark.parametrize("attack", HIDDEN)
def test_the_hidden_memory_attacks_hold_it_without_a_limit(run_sandbox: Runner,
                                                          attack: str) -> None:
    """The control: without a low limit each attack holds what it took to the end."""
    result = run_sandbox(python(HIDDEN[attack]), cwd="/", capture=True, policy=MONITOR_ONLY,
                         limits={"wall_time": SAFETY_NET})
    check_ran(result)
    assert result["limit_hit"] is None and "held" in result["stdout"], result


AUTOREAPED_BURNERS = """
import os, signal, time
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped by the kernel, never waited
for _ in range(6):
    if os.fork() == 0:
        start = time.process_time()
        while time.process_time() - start < 1.25:
            pass
        os._exit(0)
    time.sleep(1.3)
print("done")
"""


def test_cpu_of_children_nobody_waits_for_counts_in_the_cgroup() -> None:
    """Root: the cgroup adds up CPU time that no parent's cutime ever receives."""
    result = run_spec({"cmd": python(AUTOREAPED_BURNERS), "cwd": "/", "capture": True,
                       "limits": {"cpu_time": 3, "wall_time": SAFETY_NET}})
    check_ran(result)
    assert result["limit_hit"] == "cpu_time", result
    assert "done" not in result["stdout"]


DEEP_TREE = """
import os, sys, time
top = path = sys.argv[1]
for _ in range(1100):  # deeper than a recursive walk can go
    path = os.path.join(path, "d")
    os.mkdir(path)
if os.fork() == 0:  # goes on making set-uid files at the top until killed
    count = 0
    while True:
        os.close(os.open(f"{top}/late-{count}", os.O_CREAT | os.O_WRONLY, 0o4755))
        count += 1
        time.sleep(0.001)
os.chdir(path)
with open("big", "wb") as stream:
    for _ in range(60):
        stream.write(b"x" * (1 << 20))
        stream.flush()
        os.fsync(stream.fileno())
time.sleep(5)
print("not stopped")
"""


def test_a_deep_tree_is_counted_and_nothing_outlives_the_stop(shared_dir: Path) -> None:
    """Root: the disk limit stops it, and the hand-back finds no live build: nothing of the
    pool's uid, nothing set-uid is left in the tree."""
    try:
        result = run_spec({"cmd": python(DEEP_TREE, str(shared_dir)), "cwd": "/",
                           "capture": True, "writable": [str(shared_dir)],
                           "limits": {"disk": 20 * MIB, "wall_time": SAFETY_NET},
                           "policy": WITHOUT_SECCOMP})  # it would refuse 0o4755: the walk's test
        check_ran(result)
        assert result["limit_hit"] == "disk", result
        left = [entry.lstat() for entry in shared_dir.iterdir()]
        assert all(info.st_uid == 0 for info in left), {info.st_uid for info in left}
        assert not any(info.st_mode & 0o6000 for info in left)
    finally:  # shutil.rmtree recurses, and this tree is deeper than Python may
        subprocess.run(["/bin/rm", "-rf", str(shared_dir / "d")], check=False)


MAPPED_DELETED = """
import ctypes, mmap, os, sys, time
libc = ctypes.CDLL(None)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long)
for index in range(10):
    path = f"{sys.argv[1]}/m{index}"
    with open(path, "w+b") as stream:
        for _ in range(20):
            stream.write(b"x" * (1 << 20))
        stream.flush()
        os.fsync(stream.fileno())
        address = libc.mmap(None, 4096, mmap.PROT_READ, mmap.MAP_SHARED, stream.fileno(), 0)
        assert address not in (None, ctypes.c_void_p(-1).value)
    os.unlink(path)  # mapped, closed and nameless: only the mapping keeps its blocks
time.sleep(2)
print("not stopped")
"""


def test_deleted_files_kept_by_a_mapping_count(shared_dir: Path) -> None:
    result = run_spec({"cmd": python(MAPPED_DELETED, str(shared_dir)), "cwd": "/",
                       "capture": True, "writable": [str(shared_dir)],
                       "limits": {"disk": 64 * MIB, "wall_time": SAFETY_NET}})
    check_ran(result)
    assert result["limit_hit"] == "disk", result
    assert "not stopped" not in result["stdout"]


def test_the_disk_count_sees_a_file_made_in_the_runs_first_second_where_times_are_whole(
        coarse_fs: Path) -> None:
    """The disk watch counts what changed since its start by change time: a file system
    keeping whole seconds stamps a file made in the start's second with that second's
    beginning, before the start (trees.changed_after allows for it)."""
    from buildjail._linux.disk import DiskWatch

    tree = coarse_fs / "tree"
    tree.mkdir()
    early_in_a_second(0.3)
    watch = DiskWatch([str(tree)], None, None)
    (tree / "made").write_bytes(b"x" * (1 << 20))
    assert (tree / "made").stat().st_ctime_ns < watch.start_ns  # the case under test
    added = watch.added(os.getpid())
    assert added.inodes >= 1 and added.bytes >= 1 << 20, added
