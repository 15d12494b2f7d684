"""Nothing is left on the host: after many runs at once, a killed caller, failed set-ups."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from buildjail import Sandbox
from buildjail._linux import identity
from conftest import NONROOT_UID, SRC, SYSTEM_PYTHON, Runner, host_processes

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
EPHEMERAL_BASE = identity.PREFERRED_BASE


# --- the state of the host ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HostState:
    """What a sandbox could leave behind on the host."""

    processes: frozenset[tuple[int, int, bytes]]  # pid, uid, cmdline
    mounts: frozenset[str]
    locks: frozenset[str]
    cgroups: frozenset[str]

    @classmethod
    def now(cls) -> HostState:
        return cls(_sandbox_processes(), _mounts(), _identity_locks(), _cgroup_dirs())

    def new_since(self, before: HostState) -> dict[str, list[Any]]:
        """What appeared since *before* (mounts: also what disappeared)."""
        found: dict[str, list[Any]] = {
            "processes": sorted(self.processes - before.processes),
            "mounts": sorted(self.mounts ^ before.mounts),
            "identity locks": sorted(self.locks - before.locks),
            "cgroups": sorted(self.cgroups - before.cgroups),
        }
        return {kind: items for kind, items in found.items() if items}


def _sandbox_processes(marker: str = "") -> frozenset[tuple[int, int, bytes]]:
    """Processes running with an ephemeral uid, or with *marker* in their command line."""
    return frozenset(
        (pid, max(uids), cmdline) for pid, uids, cmdline in host_processes()
        if max(uids) >= EPHEMERAL_BASE or (marker and marker.encode() in cmdline)
    )


def _mounts() -> frozenset[str]:
    with open("/proc/self/mountinfo") as stream:
        return frozenset(stream.read().splitlines())


def _identity_locks() -> frozenset[str]:
    """The OFD locks held on the identity lock file (one per leased identity)."""
    try:
        info = os.stat(os.path.join(identity.LOCK_DIR, identity.LOCK_FILE))
    except FileNotFoundError:
        return frozenset()
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    with open("/proc/locks") as stream:
        return frozenset(line.split(":", 1)[1].strip() for line in stream
                         if "->" not in line and device in line.split())


def _cgroup_dirs() -> frozenset[str]:
    """Sandbox cgroups, in the memory and pids hierarchies (v1) or the unified one."""
    return frozenset(os.path.join(directory, name)
                     for directory, subdirs, _ in os.walk("/sys/fs/cgroup")
                     for name in subdirs if name.startswith("buildjail-"))


def _ephemeral_files(paths: Iterable[Path]) -> list[tuple[str, int, int]]:
    found = []
    for top in paths:
        for directory, subdirs, files in os.walk(top):
            for name in (".", *subdirs, *files):
                info = os.lstat(os.path.join(directory, name))
                if info.st_uid >= EPHEMERAL_BASE or info.st_gid >= EPHEMERAL_BASE:
                    found.append((os.path.join(directory, name), info.st_uid, info.st_gid))
    return found


def assert_no_leftovers(before: HostState, writable: Iterable[Path] = (),
                        within: float = 5.0) -> None:
    """Require the host to be back to *before* (waiting up to *within* s for it)."""
    deadline = time.monotonic() + within
    while (new := HostState.now().new_since(before)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not new, f"left on the host: {new}"
    assert not _ephemeral_files(writable), "files still owned by an ephemeral identity"


@pytest.fixture
def host_before() -> HostState:
    return HostState.now()


# --- helpers to run sandboxes ---------------------------------------------------------


def python_env(path: str = str(SRC)) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": path}


def buildjail(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildjail", *args], cwd="/",
                          env=python_env(), capture_output=True, text=True, timeout=120,
                          check=False, **kwargs)


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
def test_fifty_concurrent_sandboxes_leave_nothing(host_before: HostState, shared_dir: Path,
                                                  sandbox_backend: str) -> None:
    writable = _writable_dirs(shared_dir, 50)

    def run(path: Path) -> tuple[int, int | None, str]:
        # Each waits (up to a minute) until all 50 run at once: only sandboxes alive at the
        # same time must have distinct identities (a finished one's uid is free again).
        script = (f"id -u; echo made > {path}/made; n=0; while [ ! -e {path}/go ] && "
                  "[ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done")
        with tempfile.TemporaryFile() as output:
            result = Sandbox("full", backend=sandbox_backend).run(
                ["/bin/sh", "-c", script], cwd="/", writable=[path], stdout=output.fileno())
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
    assert [int(output) for _, _, output in outcomes] == uids
    assert all((path / "made").stat().st_uid == 0 for path in writable)
    assert_no_leftovers(host_before, writable=writable)


@needs_root
def test_ten_concurrent_nonroot_sandboxes_leave_nothing(
    host_before: HostState, shared_dir: Path, world_src: str, sandbox_backend: str
) -> None:
    marker = f"bj-many-{uuid.uuid4().hex}"
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
            cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for proc in runs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    assert [result.get("exit_code") for result in results] == [0] * 10, results
    assert [result["stdout"] for result in results] == [f"{NONROOT_UID}\n"] * 10
    assert all((path / "made").stat().st_uid == NONROOT_UID for path in writable)
    assert not _sandbox_processes(marker) - host_before.processes
    assert_no_leftovers(host_before, writable=writable)


# --- the caller killed ----------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("limits", ["monitor", "cgroup"])
@pytest.mark.parametrize("kill", ["process", "process-group"])
def test_killed_caller_leaves_nothing(host_before: HostState, shared_dir: Path,
                                      kill: str, limits: str, sandbox_backend: str) -> None:
    started = shared_dir / "f"
    policy = shared_dir.parent / f"{shared_dir.name}.toml"
    policy.write_text(f"[isolation]\ncgroup_limits = {str(limits == 'cgroup').lower()}\n")
    caller = subprocess.Popen(
        [sys.executable, "-m", "buildjail", "run", "--policy", str(policy),
         "--backend", sandbox_backend, "--writable", str(shared_dir), "--", "/bin/sh", "-c",
         f"touch {started}; sleep 30"],
        cwd="/", env=python_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(started)
        uid = started.stat().st_uid
        assert uid >= EPHEMERAL_BASE
        cgroup_made = any(path.endswith(f"/buildjail-{uid}") for path in _cgroup_dirs())
        assert cgroup_made == (limits == "cgroup")
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
    assert_no_leftovers(host_before, writable=[shared_dir])
    assert (started.stat().st_uid, started.stat().st_gid) == (0, 0)
    assert not any(uid == owner for _, owner, _ in _sandbox_processes())


# --- failed set-ups -------------------------------------------------------------------


def test_missing_writable_path_is_a_setup_error(run_sandbox: Runner, host_before: HostState,
                                                shared_dir: Path) -> None:
    missing = shared_dir / "no" / "such" / "dir"
    result = run_sandbox(["/bin/true"], cwd="/", writable=[str(shared_dir), str(missing)])
    assert str(missing) in result["setup_error"], result
    assert_no_leftovers(host_before, writable=[shared_dir])


def test_missing_command_is_a_setup_error(run_sandbox: Runner, host_before: HostState,
                                          shared_dir: Path) -> None:
    missing = "/no/such/command"
    result = run_sandbox([missing, "arg"], cwd="/", writable=[str(shared_dir)],
                         capture_stderr=True)  # a file: bwrap's own message is then read back
    assert missing in result["setup_error"], result
    assert_no_leftovers(host_before, writable=[shared_dir])


def test_setup_failure_inside_is_reported_when_buildjail_is_hidden_there(
    identity_kind: str, world_src: str, host_before: HostState, shared_dir: Path
) -> None:
    """The init fails after its mounts, and buildjail itself lives in the host's /tmp.

    world_src is under /tmp, which the sandbox replaces: the init must still report the
    reason (and never unwind into the caller's code) although it cannot import anything.
    """
    assert world_src.startswith("/tmp/")
    dangling = shared_dir / "dangling"
    dangling.symlink_to("/no/such/target")  # masking it fails once the mounts are under way
    spec = {"cmd": ["/bin/true"], "cwd": "/", "masked": [str(dangling)],
            "writable": [str(shared_dir)]}  # a mask counts inside a tree the view shows
    user = ([] if identity_kind == "root" else
            ["/usr/bin/setpriv", f"--reuid={NONROOT_UID}", f"--regid={NONROOT_UID}",
             "--clear-groups"])
    proc = subprocess.run(
        [*user, SYSTEM_PYTHON, "-Es", f"{world_src}/sandbox_driver.py", json.dumps(spec)],
        cwd="/", capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    outputs = proc.stdout.splitlines()
    assert len(outputs) == 1, "more than one process returned into the caller's code"
    result = json.loads(outputs[0])
    assert str(dangling) in result.get("setup_error", ""), result
    assert_no_leftovers(host_before, writable=[shared_dir])


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
def test_cli_missing_writable_path_is_bad_input(host_before: HostState, shared_dir: Path,
                                                sandbox_backend: str) -> None:
    """A path that does not exist is the caller's mistake: one line, exit 2, no sandbox."""
    missing = shared_dir / "missing"
    proc = buildjail("run", "--backend", sandbox_backend, "--writable", str(missing), "--",
                     "/bin/true")
    assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
    assert proc.stderr == f"buildjail: --writable {missing}: no such file or directory\n"
    assert not missing.exists()
    assert_no_leftovers(host_before, writable=[shared_dir])


@needs_root
def test_cli_missing_command_exits_125(host_before: HostState, shared_dir: Path,
                                       sandbox_backend: str) -> None:
    proc = buildjail("run", "--backend", sandbox_backend, "--writable", str(shared_dir), "--",
                     "/no/such/command")
    _assert_setup_failure(proc, "/no/such/command")
    assert_no_leftovers(host_before, writable=[shared_dir])


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
        "/bin/true"])
os.read(ready_r, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as stream:
        stream.write(f"0 0 1\\n{sys.argv[1]} {sys.argv[1]} 1\\n")
os.write(mapped_w, b"x")
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@needs_root
def test_without_user_namespaces_nonroot_run_exits_125(host_before: HostState,
                                                       world_src: str,
                                                       sandbox_backend: str) -> None:
    proc = subprocess.run([SYSTEM_PYTHON, "-s", "-c", WITHOUT_USERNS, str(NONROOT_UID),
                           sandbox_backend],
                          cwd="/", env=python_env(world_src), capture_output=True,
                          text=True, timeout=60, check=False)
    _assert_setup_failure(proc, "user", "namespaces")
    assert "max_user_namespaces" in proc.stderr.splitlines()[1], proc.stderr
    assert_no_leftovers(host_before)


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
def test_seccomp_filtered_parent_is_a_setup_error(host_before: HostState,
                                                  sandbox_backend: str) -> None:
    proc = subprocess.run([sys.executable, "-c", SECCOMP_PARENT, sandbox_backend], cwd="/",
                          env=python_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    result = json.loads(proc.stdout.splitlines()[0]) if proc.stdout else {}
    assert "namespaces" in result.get("setup_error", ""), (proc.stdout, proc.stderr)
    assert "seccomp" in result["fix"]
    _assert_setup_failure(proc, "namespaces")
    assert_no_leftovers(host_before)


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
