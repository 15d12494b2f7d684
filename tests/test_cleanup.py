"""Nothing is left on the host: after many runs at once, a killed caller, failed set-ups.

Every check looks only at what the test's own sandboxes made (see `OwnRuns`): the host is
shared, and other test runs, other users' sandboxes and anything else on it come and go
while a test runs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from buildjail import Sandbox
from buildjail._linux import cgroups, identity
from conftest import (
    NONROOT_UID,
    SRC,
    SYSTEM_PYTHON,
    Process,
    Runner,
    every_backend,
    processes_of_host,
    read_process,
)

sandbox_backend = pytest.fixture(params=["native", "bwrap", "landlock"])(every_backend)
"""These tests hold for every backend, the landlock one included."""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
EPHEMERAL_BASE = identity.PREFERRED_BASE
MARKER_VARIABLE = "BJ_TEST_MARKER"
"""The environment variable carrying a test's marker into the callers it starts."""


# --- the processes of the host ----------------------------------------------------------


def descendants(processes: Iterable[Process], ancestor: int) -> set[int]:
    """The pids of *ancestor*'s children, their children, and so on."""
    children: dict[int, list[int]] = {}
    for process in processes:
        children.setdefault(process.ppid, []).append(process.pid)
    found: set[int] = set()
    pending = list(children.get(ancestor, []))
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children.get(pid, []))
    return found


# --- the identity locks: byte N of the lock file is the uid range's start + N -----------


def _lock_device() -> str | None:
    """How /proc/locks names the identity lock file (``MAJOR:MINOR:INODE``, hex device)."""
    try:
        info = os.stat(os.path.join(identity.LOCK_DIR, identity.LOCK_FILE))
    except FileNotFoundError:
        return None
    return f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"


def _locked_slots(lines: Iterable[str], device: str) -> set[int]:
    """The slots locked on the lock file in lock lines (/proc/locks or an fdinfo's)."""
    slots = set()
    for line in lines:
        fields = line.split()
        if "->" not in fields and device in fields:  # "->": a waiter, not a holder
            slots.add(int(fields[-2]))
    return slots


def slots_held_by(pid: int, device: str) -> set[int]:
    """The identity slots that process *pid* holds locked (through any descriptor)."""
    slots: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fdinfo"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/fdinfo/{fd}") as stream:
                slots |= _locked_slots(
                    (line for line in stream if line.startswith("lock:")), device)
    return slots


def slots_held_on_host(device: str) -> set[int]:
    """Every identity slot locked on the host, by whoever holds it."""
    with open("/proc/locks") as stream:
        return _locked_slots(stream, device)


def slot_of(uid: int) -> int:
    return uid - identity.host_range().start


# --- what a test's own sandboxes made ---------------------------------------------------


def _mounts_mentioning(paths: Iterable[Path]) -> frozenset[str]:
    """The mount table's lines naming one of *paths* (or a path below one)."""
    names = tuple(str(path) for path in paths)
    below = tuple(f"{name}/" for name in names)
    with open("/proc/self/mountinfo") as stream:
        return frozenset(line for line in stream.read().splitlines()
                         if any(field in names or field.startswith(below)
                                for field in line.split()))


def _cgroup_dirs_named(names: set[str], prefixes: tuple[str, ...]) -> list[str]:
    """Cgroup directories (any v1 hierarchy, or v2) called one of *names* or starting with
    one of *prefixes*."""
    return sorted(os.path.join(directory, name)
                  for directory, subdirs, _ in os.walk(cgroups.ROOT)
                  for name in subdirs if name in names or name.startswith(prefixes))


@dataclasses.dataclass
class OwnRuns:
    """A test's own sandboxes, and what they could leave behind on the host.

    They are the processes carrying the test's *marker* (in their command line or
    environment), the test process's descendants, and the processes running as an
    ephemeral uid the test's runs leased (*uids*) unless someone else leases it again
    now; their identity locks are the ones those processes (or the test process) hold;
    their cgroups are named for those uids (``buildjail-UID``) or for a caller
    (``buildjail-PID-N``); their mounts name the test's own *paths*.
    """

    marker: str
    paths: tuple[Path, ...]
    uids: set[int] = dataclasses.field(default_factory=set)
    callers: set[int] = dataclasses.field(default_factory=set)
    earlier_children: frozenset[int] = frozenset()
    mounts_before: frozenset[str] = frozenset()

    def leased(self, uid: int | None) -> None:
        """Count *uid* as leased by one of the test's runs (None: the run leased none)."""
        if uid is not None and uid >= EPHEMERAL_BASE:
            self.uids.add(uid)

    def started(self, pid: int) -> None:
        """Count *pid* as a caller (a ``buildjail`` or a driver) the test started."""
        self.callers.add(pid)

    def env(self, pythonpath: str = str(SRC)) -> dict[str, str]:
        """The environment for a caller the test starts: the package, and the marker."""
        return {**python_env(pythonpath), MARKER_VARIABLE: self.marker}

    def processes(self) -> list[Process]:
        """The test's own processes still running (not the test process itself)."""
        return self._find().processes

    def cgroups(self) -> list[str]:
        """The cgroup directories named for the test's leased uids or its callers."""
        return self._cgroups(self._find())

    def leftovers(self) -> dict[str, list[Any]]:
        """What the test's own sandboxes left on the host, by kind (none: empty)."""
        found = self._find()
        kinds: dict[str, list[Any]] = {
            "processes": sorted((p.pid, max(p.uids), p.cmdline) for p in found.processes),
            "mounts": sorted(_mounts_mentioning(self.paths) ^ self.mounts_before),
            "identity locks": sorted(identity.host_range().start + slot
                                     for slot in found.locked),
            "cgroups": self._cgroups(found),
        }
        return {kind: items for kind, items in kinds.items() if items}

    def assert_clean(self, writable: Iterable[Path] = (), within: float = 5.0) -> None:
        """Require nothing of the test's sandboxes left (waiting up to *within* s)."""
        deadline = time.monotonic() + within
        while (found := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not found, f"left on the host: {found}"
        assert not _ephemeral_files(writable), "files still owned by an ephemeral identity"

    def _find(self) -> _Found:
        everything = processes_of_host()
        mine = descendants(everything, os.getpid()) - self.earlier_children
        marker = self.marker.encode()
        own = {p.pid: p for p in everything
               if (p.pid in mine or p.carries(marker)) and p.pid != os.getpid()}
        device = _lock_device()
        if device is None:
            return _Found(sorted(own.values(), key=_pid), set(), set())
        on_host = slots_held_on_host(device)
        elsewhere = on_host - _slots_held(own, device)
        leased = {uid for uid in self.uids if slot_of(uid) not in elsewhere}
        own.update({p.pid: p for p in everything if p.uids & leased})
        locked = _slots_held(own, device)
        return _Found(sorted(own.values(), key=_pid), locked, on_host - locked)

    def _cgroups(self, found: _Found) -> list[str]:
        names = {f"buildjail-{uid}" for uid in self.uids
                 if slot_of(uid) not in found.elsewhere}
        prefixes = tuple(f"buildjail-{pid}-" for pid in {os.getpid(), *self.callers})
        return _cgroup_dirs_named(names, prefixes)


@dataclasses.dataclass(frozen=True)
class _Found:
    processes: list[Process]  # the test's own, but the test process
    locked: set[int]  # the identity slots they or the test process hold
    elsewhere: set[int]  # the identity slots anyone else holds


def _pid(process: Process) -> int:
    return process.pid


def _slots_held(own: dict[int, Process], device: str) -> set[int]:
    """The identity slots held by the test process and the processes *own*."""
    slots = slots_held_by(os.getpid(), device)
    for pid in own:
        slots |= slots_held_by(pid, device)
    return slots


def _ephemeral_files(paths: Iterable[Path]) -> list[tuple[str, int, int]]:
    found = []
    for top in paths:
        for directory, subdirs, files in os.walk(top):
            for name in (".", *subdirs, *files):
                info = os.lstat(os.path.join(directory, name))
                if info.st_uid >= EPHEMERAL_BASE or info.st_gid >= EPHEMERAL_BASE:
                    found.append((os.path.join(directory, name), info.st_uid, info.st_gid))
    return found


@pytest.fixture
def own_runs(tmp_path: Path, shared_dir: Path,
             monkeypatch: pytest.MonkeyPatch) -> OwnRuns:
    """The test's own sandboxes: a fresh marker; every identity leased in this process is
    recorded (in-process runs, failed set-ups included)."""
    own = OwnRuns(marker=f"bj-cleanup-{uuid.uuid4().hex}", paths=(tmp_path, shared_dir),
                  earlier_children=frozenset(descendants(processes_of_host(), os.getpid())),
                  mounts_before=_mounts_mentioning((tmp_path, shared_dir)))
    acquire = identity.acquire

    def recording_acquire(id_range: identity.IdRange | None = None) -> identity.Lease:
        lease = acquire(id_range)
        own.leased(lease.identity.uid)
        return lease

    monkeypatch.setattr(identity, "acquire", recording_acquire)
    return own


# --- every check can fail: a leftover the test plants itself is reported ---------------


def _orphan(cmd: list[str], env: dict[str, str] | None = None, *,
            uid: int | None = None) -> int:
    """Start *cmd* in the background of a shell that exits: a process that is nobody's
    child here (like a sandbox that outlived its caller). Return its pid."""
    user = [] if uid is None else ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}",
                                   "--clear-groups"]
    line = " ".join([*user, *cmd])
    done = subprocess.run(["/bin/sh", "-c", f"{line} >/dev/null 2>&1 & echo $!"],
                          env=env if env is not None else {"PATH": "/usr/bin:/bin"}, cwd="/",
                          capture_output=True, text=True, timeout=10, check=True)
    return int(done.stdout)


@contextlib.contextmanager
def _killed_afterwards(pid: int) -> Iterator[int]:
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_for_uid(pid: int, uid: int, timeout: float = 10.0) -> None:
    """Wait until process *pid* runs as *uid* (setpriv has switched to it)."""
    deadline = time.monotonic() + timeout
    while (process := read_process(pid)) is None or uid not in process.uids:
        assert time.monotonic() < deadline, f"process {pid} never ran as {uid}"
        time.sleep(0.02)


def _reported_pids(own: OwnRuns) -> set[int]:
    return {pid for pid, _, _ in own.leftovers().get("processes", [])}


SLEEPER = [SYSTEM_PYTHON, "-c", "'import time; time.sleep(60)'"]


@needs_root  # reads other processes' environments
@pytest.mark.parametrize("where", ["cmdline", "environ"])
def test_control_a_process_carrying_the_marker_is_reported(own_runs: OwnRuns,
                                                           where: str) -> None:
    cmdline = [*SLEEPER, own_runs.marker] if where == "cmdline" else SLEEPER
    env = {"PATH": "/usr/bin:/bin", **({MARKER_VARIABLE: own_runs.marker}
                                       if where == "environ" else {})}
    with _killed_afterwards(_orphan(cmdline, env)) as pid:
        assert pid in _reported_pids(own_runs)
        assert pid not in _reported_pids(dataclasses.replace(own_runs, marker="bj-other"))


def test_control_a_child_of_the_test_is_reported(own_runs: OwnRuns) -> None:
    child = subprocess.Popen(["/bin/sleep", "60"])
    try:
        assert child.pid in _reported_pids(own_runs)
    finally:
        child.kill()
        child.wait()
    assert not own_runs.leftovers()


@needs_root
def test_control_a_process_of_a_leased_uid_is_reported(own_runs: OwnRuns) -> None:
    lease = identity.acquire()
    lease.release()  # what a sandbox's process left running after its run ended
    with _killed_afterwards(_orphan(["/bin/sleep", "60"], uid=lease.identity.uid)) as pid:
        _wait_for_uid(pid, lease.identity.uid)
        assert pid in _reported_pids(own_runs)
        own_runs.uids.clear()
        assert pid not in _reported_pids(own_runs)


@needs_root
def test_control_an_identity_lock_held_is_reported(own_runs: OwnRuns) -> None:
    lease = identity.acquire()  # held by this process: a lease a run did not give back
    try:
        assert own_runs.leftovers().get("identity locks") == [lease.identity.uid]
    finally:
        lease.release()
    assert not own_runs.leftovers()


@needs_root
def test_control_a_cgroup_for_a_leased_uid_is_reported(own_runs: OwnRuns) -> None:
    lease = identity.acquire()
    lease.release()
    group = cgroups.create(f"buildjail-{lease.identity.uid}", None, None)
    if group is None:
        pytest.skip("no cgroup can be created here")
    try:
        found = own_runs.leftovers().get("cgroups", [])
        assert found and all(path.endswith(f"/buildjail-{lease.identity.uid}")
                             for path in found), found
    finally:
        group.remove()
    assert not own_runs.leftovers()


@needs_root
def test_control_a_cgroup_for_the_caller_is_reported(own_runs: OwnRuns) -> None:
    group = cgroups.create(f"buildjail-{os.getpid()}-{uuid.uuid4().hex[:8]}", None, None)
    if group is None:
        pytest.skip("no cgroup can be created here")
    try:
        assert own_runs.leftovers().get("cgroups"), own_runs.leftovers()
    finally:
        group.remove()
    assert not own_runs.leftovers()


@needs_root
def test_control_a_mount_under_the_tests_directory_is_reported(own_runs: OwnRuns,
                                                               shared_dir: Path) -> None:
    point = shared_dir / "mounted"
    point.mkdir()
    subprocess.run(["/usr/bin/mount", "--bind", str(point), str(point)], check=True)
    try:
        found = own_runs.leftovers().get("mounts", [])
        assert found and all(str(point) in line for line in found), found
    finally:
        subprocess.run(["/usr/bin/umount", str(point)], check=True)
    assert not own_runs.leftovers()


@needs_root
def test_another_runs_sandbox_is_not_a_leftover(own_runs: OwnRuns, sandbox_backend: str) -> None:
    """Someone else's sandbox, running on the same host (its caller, its init, its
    leased identity and cgroup), fails none of the checks."""
    other = Path(tempfile.mkdtemp(dir="/var/lib/buildjail-tests", prefix="bj-other-run-"))
    other.chmod(0o777)
    started = other / "started"
    cmd = [sys.executable, "-m", "buildjail", "run", "--backend", sandbox_backend,
           "--writable", str(other), "--", "/bin/sh", "-c", f"'touch {started}; sleep 30'"]
    try:
        with _killed_afterwards(_orphan(cmd, python_env())) as pid:
            _wait_for(started)
            assert started.stat().st_uid >= EPHEMERAL_BASE  # a leased identity
            assert pid not in _reported_pids(own_runs)
            assert not own_runs.leftovers()
            own_runs.leased(started.stat().st_uid)  # as if it were leased again after ours
            assert not own_runs.leftovers()
        _wait_for_hand_back(started)
    finally:
        shutil.rmtree(other)


def _wait_for_hand_back(path: Path, timeout: float = 20.0) -> None:
    """Wait until *path* is root's again: the sandbox (killed with its caller) is over."""
    deadline = time.monotonic() + timeout
    while path.stat().st_uid != 0:
        assert time.monotonic() < deadline, f"{path} never handed back"
        time.sleep(0.05)


# --- helpers to run sandboxes ---------------------------------------------------------


def python_env(path: str = str(SRC)) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": path}


def buildjail(own: OwnRuns, *args: str) -> subprocess.CompletedProcess[str]:
    """``buildjail ARGS`` as a caller of the test's (the marker in its environment)."""
    return subprocess.run([sys.executable, "-m", "buildjail", *args], cwd="/",
                          env=own.env(), capture_output=True, text=True, timeout=120,
                          check=False)


def _writable_dirs(top: Path, count: int) -> list[Path]:
    dirs = [top / f"run{number}" for number in range(count)]
    for path in dirs:
        path.mkdir()
        path.chmod(0o777)
    return dirs


def _wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


# --- many at once ---------------------------------------------------------------------


@needs_root
def test_fifty_concurrent_sandboxes_leave_nothing(own_runs: OwnRuns, shared_dir: Path,
                                                  sandbox_backend: str) -> None:
    writable = _writable_dirs(shared_dir, 50)

    def run(path: Path) -> tuple[int, int | None, str]:
        # Each waits (up to a minute) until all 50 run at once: only sandboxes alive at the
        # same time must have distinct identities (a finished one's uid is free again).
        script = (f"id -u; echo made > {path}/made; n=0; while [ ! -e {path}/go ] && "
                  "[ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done")
        with tempfile.TemporaryFile() as output:
            result = Sandbox("full", backend=sandbox_backend).run(
                ["/bin/sh", "-c", script, own_runs.marker], cwd="/", writable=[path],
                stdout=output.fileno())
            output.seek(0)
            return result.exit_code, result.uid, output.read().decode()

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        futures = [pool.submit(run, path) for path in writable]
        deadline = time.monotonic() + 60
        while not all((path / "made").exists() for path in writable):
            ended = [future.result() for future in futures if future.done()]
            assert not ended, f"sandboxes ended before all 50 ran: {ended}"
            assert time.monotonic() < deadline, "the 50 sandboxes never all ran at once"
            time.sleep(0.05)
        for path in writable:
            (path / "go").touch()
        outcomes = [future.result() for future in futures]

    assert [code for code, _, _ in outcomes] == [0] * 50
    uids = [uid for _, uid, _ in outcomes]
    assert len(set(uids)) == 50, "two sandboxes shared an identity"
    assert all(uid is not None and uid >= EPHEMERAL_BASE for uid in uids)
    # each sees itself as the same fixed uid, which its own user namespace maps onto its
    # leased one; Landlock makes no namespace: the leased uid shows
    seen = [int(output) for _, _, output in outcomes]
    assert seen == (uids if sandbox_backend == "landlock" else [identity.BUILD_UID] * 50)
    assert all((path / "made").stat().st_uid == 0 for path in writable)
    assert set(uids) <= own_runs.uids
    own_runs.assert_clean(writable=writable)


@needs_root
def test_ten_concurrent_nonroot_sandboxes_leave_nothing(
    own_runs: OwnRuns, shared_dir: Path, world_src: str, sandbox_backend: str
) -> None:
    marker = own_runs.marker
    writable = _writable_dirs(shared_dir, 10)
    runs = []
    for path in writable:
        spec = {"cmd": ["/bin/sh", "-c", f"id -u; echo made > {path}/made; sleep 0.5", marker],
                "cwd": "/", "writable": [str(path)], "capture": True,
                "backend": sandbox_backend}
        runs.append(subprocess.Popen(
            ["/usr/bin/setpriv", f"--reuid={NONROOT_UID}", f"--regid={NONROOT_UID}",
             "--clear-groups", SYSTEM_PYTHON, "-Es", f"{world_src}/sandbox_driver.py",
             json.dumps(spec)],
            cwd="/", env=own_runs.env(world_src), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
        own_runs.started(runs[-1].pid)
    results = []
    for proc in runs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    assert [result.get("exit_code") for result in results] == [0] * 10, results
    assert [result["stdout"] for result in results] == [f"{NONROOT_UID}\n"] * 10
    assert all((path / "made").stat().st_uid == NONROOT_UID for path in writable)
    own_runs.assert_clean(writable=writable)


# --- the caller killed ----------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("limits", ["monitor", "cgroup"])
@pytest.mark.parametrize("kill", ["process", "process-group"])
def test_killed_caller_leaves_nothing(own_runs: OwnRuns, shared_dir: Path,
                                      kill: str, limits: str, sandbox_backend: str) -> None:
    started = shared_dir / "f"
    policy = shared_dir.parent / f"{shared_dir.name}.toml"
    policy.write_text(f"[isolation]\ncgroup_limits = {str(limits == 'cgroup').lower()}\n")
    caller = subprocess.Popen(
        [sys.executable, "-m", "buildjail", "run", "--policy", str(policy),
         "--backend", sandbox_backend, "--writable", str(shared_dir), "--", "/bin/sh", "-c",
         f"touch {started}; sleep 30", own_runs.marker],
        cwd="/", env=own_runs.env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    own_runs.started(caller.pid)
    try:
        _wait_for(started)
        uid = started.stat().st_uid
        assert uid >= EPHEMERAL_BASE
        own_runs.leased(uid)
        running = own_runs.leftovers()  # the checks see this run while it runs
        assert uid in {owner for _, owner, _ in running["processes"]}, running
        assert running["identity locks"] == [uid], running
        assert bool(running.get("cgroups")) == (limits == "cgroup"), running
        if kill == "process":
            os.kill(caller.pid, signal.SIGKILL)
        else:  # the supervisor has its own process group, so it survives this too
            os.killpg(caller.pid, signal.SIGKILL)
        caller.wait(timeout=10)
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
    policy.unlink()
    own_runs.assert_clean(writable=[shared_dir])
    assert (started.stat().st_uid, started.stat().st_gid) == (0, 0)


# --- failed set-ups -------------------------------------------------------------------


def test_missing_writable_path_is_a_setup_error(run_sandbox: Runner, own_runs: OwnRuns,
                                                shared_dir: Path) -> None:
    missing = shared_dir / "no" / "such" / "dir"
    result = run_sandbox(["/bin/true", own_runs.marker], cwd="/",
                         writable=[str(shared_dir), str(missing)])
    assert str(missing) in result["setup_error"], result
    own_runs.assert_clean(writable=[shared_dir])


def test_missing_command_is_a_setup_error(run_sandbox: Runner, own_runs: OwnRuns,
                                          shared_dir: Path) -> None:
    missing = "/no/such/command"
    result = run_sandbox([missing, own_runs.marker], cwd="/", writable=[str(shared_dir)],
                         capture_stderr=True)  # a file: bwrap's own message is then read back
    assert missing in result["setup_error"], result
    own_runs.assert_clean(writable=[shared_dir])


def test_setup_failure_inside_is_reported_when_buildjail_is_hidden_there(
    identity_kind: str, world_src: str, own_runs: OwnRuns, shared_dir: Path
) -> None:
    """The init fails after its mounts, and buildjail itself lives in the host's /tmp.

    world_src is under /tmp, which the sandbox replaces: the init must still report the
    reason (and never unwind into the caller's code) although it cannot import anything.
    """
    assert world_src.startswith("/tmp/")
    dangling = shared_dir / "dangling"
    dangling.symlink_to("/no/such/target")  # masking it fails once the mounts are under way
    spec = {"cmd": ["/bin/true", own_runs.marker], "cwd": "/", "masked": [str(dangling)],
            "writable": [str(shared_dir)]}  # a mask counts inside a tree the view shows
    user = ([] if identity_kind == "root" else
            ["/usr/bin/setpriv", f"--reuid={NONROOT_UID}", f"--regid={NONROOT_UID}",
             "--clear-groups"])
    proc = subprocess.run(
        [*user, SYSTEM_PYTHON, "-Es", f"{world_src}/sandbox_driver.py", json.dumps(spec)],
        cwd="/", env=own_runs.env(world_src), capture_output=True, text=True, timeout=60,
        check=False)
    assert proc.returncode == 0, proc.stderr
    outputs = proc.stdout.splitlines()
    assert len(outputs) == 1, "more than one process returned into the caller's code"
    result = json.loads(outputs[0])
    assert str(dangling) in result.get("setup_error", ""), result
    own_runs.assert_clean(writable=[shared_dir])


def _assert_setup_failure(proc: subprocess.CompletedProcess[str], *mentions: str) -> None:
    assert proc.returncode == 125, proc.stderr
    lines = proc.stderr.splitlines()
    tool = [line for line in lines if line.startswith("bwrap: ")]  # bubblewrap's own, first
    lines = lines[len(tool):]
    assert lines and lines[0].startswith("buildjail: sandbox not set up: "), proc.stderr
    for text in mentions:
        assert text in " ".join([*tool, lines[0]]), proc.stderr
    assert "Traceback" not in proc.stderr


@needs_root
def test_cli_missing_writable_path_is_bad_input(own_runs: OwnRuns, shared_dir: Path,
                                                sandbox_backend: str) -> None:
    """A path that does not exist is the caller's mistake: one line, exit 2, no sandbox."""
    missing = shared_dir / "missing"
    proc = buildjail(own_runs, "run", "--backend", sandbox_backend, "--writable",
                     str(missing), "--", "/bin/true", own_runs.marker)
    assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
    assert proc.stderr == f"buildjail: --writable {missing}: no such file or directory\n"
    assert not missing.exists()
    own_runs.assert_clean(writable=[shared_dir])


@needs_root
def test_cli_missing_command_exits_125(own_runs: OwnRuns, shared_dir: Path,
                                       sandbox_backend: str) -> None:
    proc = buildjail(own_runs, "run", "--backend", sandbox_backend, "--writable",
                     str(shared_dir), "--", "/no/such/command", own_runs.marker)
    _assert_setup_failure(proc, "/no/such/command")
    own_runs.assert_clean(writable=[shared_dir])


# A host without user namespaces, simulated: a user namespace (root and the test user mapped)
# whose max_user_namespaces is 0, where the test user then runs `buildjail run`.
WITHOUT_USERNS = """
import ctypes, os, sys
CLONE_NEWUSER = 0x10000000
ready_r, ready_w = os.pipe()
mapped_r, mapped_w = os.pipe()
pid = os.fork()
if pid == 0:
    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWUSER) != 0:
        os._exit(90)
    os.write(ready_w, b"x")
    os.read(mapped_r, 1)
    with open("/proc/sys/user/max_user_namespaces", "w") as stream:
        stream.write("0")
    uid = sys.argv[1]
    os.execv("/usr/bin/setpriv", [
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
        sys.executable, "-s", "-m", "buildjail", "run", "--backend", sys.argv[2], "--",
        "/bin/true", sys.argv[3]])
os.read(ready_r, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as stream:
        stream.write(f"0 0 1\\n{sys.argv[1]} {sys.argv[1]} 1\\n")
os.write(mapped_w, b"x")
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@needs_root
def test_without_user_namespaces_nonroot_run_exits_125(own_runs: OwnRuns,
                                                       world_src: str,
                                                       sandbox_backend: str) -> None:
    proc = subprocess.run([SYSTEM_PYTHON, "-s", "-c", WITHOUT_USERNS, str(NONROOT_UID),
                           sandbox_backend, own_runs.marker],
                          cwd="/", env=own_runs.env(world_src), capture_output=True,
                          text=True, timeout=60, check=False)
    if sandbox_backend == "landlock":  # the backend for exactly such hosts: it runs
        assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
        own_runs.assert_clean()
        return
    _assert_setup_failure(proc, "user", "namespaces")
    assert "max_user_namespaces" in proc.stderr.splitlines()[1], proc.stderr
    own_runs.assert_clean()


SECCOMP_PARENT = """
import json, sys
from buildjail import Sandbox, SandboxSetupError
from buildjail._linux import seccomp
from buildjail.cli import main
seccomp.install_filter(seccomp.build_filter())
try:
    Sandbox("full", backend=sys.argv[1]).run(["/bin/true"], cwd="/")
except SandboxSetupError as error:
    print(json.dumps({"setup_error": error.reason, "fix": error.fix}), flush=True)
sys.exit(main(["run", "--backend", sys.argv[1], "--", "/bin/true"]))
"""


@needs_root
def test_seccomp_filtered_parent_is_a_setup_error(own_runs: OwnRuns,
                                                  sandbox_backend: str) -> None:
    proc = subprocess.run([sys.executable, "-c", SECCOMP_PARENT, sandbox_backend,
                           own_runs.marker], cwd="/", env=own_runs.env(),
                          capture_output=True, text=True, timeout=60, check=False)
    if sandbox_backend == "landlock":  # the backend for exactly such hosts: it runs
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
        own_runs.assert_clean()
        return
    result = json.loads(proc.stdout.splitlines()[0]) if proc.stdout else {}
    assert "namespaces" in result.get("setup_error", ""), (proc.stdout, proc.stderr)
    assert "seccomp" in result["fix"]
    _assert_setup_failure(proc, "namespaces")
    own_runs.assert_clean()


AUTO_UNDER_SECCOMP = """
import json, sys
from buildjail import Sandbox
from buildjail._linux import seccomp
from buildjail.backends import choose_backend

seccomp.install_filter(seccomp.build_filter())  # unshare refused, as Docker's profile does
name, reason = choose_backend()
result = Sandbox("full").run(["/bin/true", sys.argv[1]], cwd="/")
print(json.dumps({"name": name, "reason": reason, "backend": result.backend,
                  "exit_code": result.exit_code, "layers": result.layers}))
"""


@needs_root
def test_auto_picks_landlock_where_namespaces_are_refused(own_runs: OwnRuns) -> None:
    """A caller whose seccomp filter refuses unshare (a default Docker container's): auto
    falls back to the landlock backend, says why, and the run leaves nothing behind."""
    proc = subprocess.run([sys.executable, "-c", AUTO_UNDER_SECCOMP, own_runs.marker],
                          cwd="/", env=own_runs.env(), capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    chosen = json.loads(proc.stdout)
    assert (chosen["name"], chosen["backend"], chosen["exit_code"]) == (
        "landlock", "landlock", 0), chosen
    assert "namespaces are refused here" in chosen["reason"]
    assert "Landlock ABI" in chosen["reason"]
    assert any(layer.startswith("landlock:abi-") for layer in chosen["layers"])
    own_runs.assert_clean()


def test_a_caller_with_thousands_of_descriptors_hands_on_high_numbers(
        sandbox_backend: str) -> None:
    """fromager-sized callers lend descriptors above the sandbox's RLIMIT_NOFILE (1024):
    the init moves them down, or posix_spawn refuses them (EBADF) and the run fails."""
    filler = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(1500)]
    try:
        with tempfile.TemporaryFile() as output:
            assert output.fileno() > 1024
            result = Sandbox("full", backend=sandbox_backend).run(
                ["/bin/echo", "handed on"], cwd="/", stdout=output.fileno())
            output.seek(0)
            assert (result.exit_code, output.read()) == (0, b"handed on\n"), result
    finally:
        for fd in filler:
            os.close(fd)
