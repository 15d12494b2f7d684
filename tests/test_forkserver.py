"""The fork server: the same sandbox as a direct fork, many at once, a caller killed or
interrupted, a caller that forks, and nothing left (no server, no zombie supervisor)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from buildjail import Sandbox
from buildjail.backends import _forkserver
from conftest import SRC, Runner, every_backend, processes_of_host, read_process

sandbox_backend = pytest.fixture(params=["native", "bwrap", "landlock"])(every_backend)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs sandboxes as root")
MARKER_VARIABLE = "BUILDJAIL_FORKSERVER_TEST"
PROBE = ("id -u; id -g; hostname; umask; ls -a /; echo $HOME $TMPDIR; ls /proc/self/fd; "
         "cat /proc/self/status | grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd):'; exit 3")


def _comparable(result: dict[str, Any]) -> dict[str, Any]:
    """A run's result without what differs between any two runs (time, a leased uid)."""
    uid = str(result.get("uid"))
    result = {key: value for key, value in result.items() if key not in {"duration", "uid"}}
    stdout = result.get("stdout", "").replace(uid, "UID")
    result["stdout"] = re.sub(r"/buildjail-landlock-[^/]+/", "/SCRATCH/", stdout)  # per run
    return result


def test_the_server_gives_the_same_sandbox_as_a_direct_fork(run_sandbox: Runner) -> None:
    results = {fork_server: run_sandbox(["/bin/sh", "-c", PROBE], cwd="/", capture=True,
                                        fork_server=fork_server)
               for fork_server in (False, True)}
    assert results[True].get("exit_code") == 3, results
    assert _comparable(results[True]) == _comparable(results[False])


@needs_root
def test_the_callers_umask_and_descriptors_reach_the_build(sandbox_backend: str,
                                                          tmp_path: Path) -> None:
    outputs = {}
    old = os.umask(0o027)
    try:
        for fork_server in (False, True):
            with tempfile.TemporaryFile() as stdout:
                # stdout and stderr the same descriptor, stdin closed on the way
                result = Sandbox("full", backend=sandbox_backend, fork_server=fork_server).run(
                    ["/bin/sh", "-c", "umask; echo to-stderr >&2"], cwd="/",
                    stdout=stdout.fileno(), stderr=stdout.fileno())
                assert result.exit_code == 0
                stdout.seek(0)
                outputs[fork_server] = stdout.read()
    finally:
        os.umask(old)
    assert outputs[True] == outputs[False] == b"0027\nto-stderr\n"


@needs_root
def test_32_runs_at_once_from_threads(sandbox_backend: str) -> None:
    sandbox = Sandbox("full", backend=sandbox_backend, fork_server=True)
    outputs: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def one(number: int) -> None:
        try:
            with tempfile.TemporaryFile() as stdout:
                result = sandbox.run(["/bin/sh", "-c", f"sleep 0.2; echo {number}"], cwd="/",
                                     stdout=stdout.fileno())
                assert result.exit_code == 0, result
                stdout.seek(0)
                outputs[number] = stdout.read()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=one, args=(number,)) for number in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert outputs == {number: f"{number}\n".encode() for number in range(32)}


@needs_root
def test_no_zombie_supervisors_after_many_runs() -> None:
    sandbox = Sandbox("full", backend="native", fork_server=True)
    for _ in range(30):
        assert sandbox.run(["/bin/true"], cwd="/").exit_code == 0
    server = _forkserver.server_pid()
    assert server is not None
    deadline = time.monotonic() + 5
    while (left := _children(server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"the server's children not reaped: {left}"


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as stream:
            found += [int(child) for child in stream.read().split()]
    return found


@needs_root
def test_a_caller_that_forks_uses_a_server_of_its_own() -> None:
    sandbox = Sandbox("full", backend="native", fork_server=True)
    assert sandbox.run(["/bin/true"], cwd="/").exit_code == 0
    parents = _forkserver.server_pid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # never back into pytest
        code = 1
        try:
            os.close(read)
            assert _forkserver.server_pid() is None  # the parent's is not the child's
            exit_code = sandbox.run(["/bin/sh", "-c", "exit 7"], cwd="/").exit_code
            os.write(write, json.dumps([exit_code, _forkserver.server_pid()]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as stream:
        reported = stream.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    exit_code, childs = json.loads(reported)
    assert exit_code == 7
    assert childs is not None and childs != parents
    _wait_gone(childs)  # its caller exited
    assert sandbox.run(["/bin/true"], cwd="/").exit_code == 0  # the parent's still serves
    assert _forkserver.server_pid() == parents


def _gone(pid: int) -> bool:
    """Whether *pid* has exited (a zombie that nobody reaps counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            return stream.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        assert time.monotonic() < deadline, f"process {pid} still running"
        time.sleep(0.05)


# --- a caller killed, interrupted, or gone --------------------------------------------

_CALLER = textwrap.dedent("""
    import json, sys
    from buildjail import Sandbox
    from buildjail.backends import _forkserver
    spec = json.loads(sys.argv[1])
    sandbox = Sandbox("full", backend=spec["backend"], fork_server=True)
    sandbox.run(["/bin/true"], cwd="/")
    print(_forkserver.server_pid(), flush=True)
    if spec["cmd"]:
        sandbox.run(spec["cmd"], cwd="/", writable=spec["writable"])
""")


def _start_caller(marker: str, backend: str, cmd: list[str],
                  writable: list[str]) -> tuple[subprocess.Popen[str], int]:
    spec = {"backend": backend, "cmd": cmd, "writable": writable}
    caller = subprocess.Popen(
        [sys.executable, "-c", _CALLER, json.dumps(spec)], cwd="/", text=True,
        env={**os.environ, "PYTHONPATH": str(SRC), MARKER_VARIABLE: marker},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    assert caller.stdout is not None
    server = int(caller.stdout.readline())
    return caller, server


def _planted(marker: str) -> list[tuple[int, bytes]]:
    """The processes the test started (its marker in their command line or environment)."""
    return [(process.pid, process.cmdline) for process in processes_of_host()
            if process.carries(marker.encode()) and not _gone(process.pid)]


def _assert_none_left(marker: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (left := _planted(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"left running: {left}"


@needs_root
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_a_killed_or_interrupted_caller_kills_the_build(sandbox_backend: str, how: str,
                                                        shared_dir: Path) -> None:
    marker = f"bj-forkserver-{uuid.uuid4().hex}"
    tree = shared_dir
    started = tree / "started"
    caller, server = _start_caller(
        marker, sandbox_backend, ["/bin/sh", "-c", f"touch {started}; sleep 60", marker],
        [str(tree)])
    try:
        deadline = time.monotonic() + 20
        while not started.exists():
            assert time.monotonic() < deadline, "the build never started"
            time.sleep(0.05)
        build = [pid for pid, cmdline in _planted(marker) if b"sleep 60" in cmdline]
        assert build, "the build is not seen running"
        os.kill(caller.pid, getattr(signal, how))
        caller.wait(timeout=20)
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
    _assert_none_left(marker)  # the build, its supervisor and the server
    assert all(read_process(pid) is None or _gone(pid) for pid in (*build, server))
    assert started.stat().st_uid == 0  # handed back


@needs_root
def test_the_server_exits_with_its_caller() -> None:
    marker = f"bj-forkserver-{uuid.uuid4().hex}"
    caller, server = _start_caller(marker, "native", [], [])
    assert caller.wait(timeout=20) == 0
    _wait_gone(server)
    _assert_none_left(marker)


@needs_root
def test_a_dead_server_is_started_again() -> None:
    sandbox = Sandbox("full", backend="native", fork_server=True)
    assert sandbox.run(["/bin/true"], cwd="/").exit_code == 0
    first = _forkserver.server_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    _wait_gone(first)
    assert sandbox.run(["/bin/sh", "-c", "exit 4"], cwd="/").exit_code == 4  # EPIPE: again
    assert _forkserver.server_pid() not in (None, first)


_TIGHTENED = textwrap.dedent("""
    import ctypes, json, resource, sys
    from buildjail import Sandbox
    from buildjail.backends import _forkserver
    CHECKS = {"no_new_privs": "grep -q '^NoNewPrivs:[[:space:]]*1$' /proc/self/status",
              "rlimit": "test \\"$(ulimit -Hn)\\" = 777"}
    sandbox = Sandbox("none", backend="native", fork_server=True)
    def holds():
        return sandbox.run(["/bin/sh", "-c", CHECKS[sys.argv[1]]], cwd="/").exit_code == 0
    before, first = holds(), _forkserver.server_pid()
    if sys.argv[1] == "no_new_privs":
        assert ctypes.CDLL(None).prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    else:
        resource.setrlimit(resource.RLIMIT_NOFILE, (777, 777))
    after, second = holds(), _forkserver.server_pid()
    print(json.dumps([before, after, first, second]))
""")


@needs_root
@pytest.mark.parametrize("tightening", ["no_new_privs", "rlimit"])
def test_a_caller_that_confines_itself_gets_a_server_as_confined(tightening: str) -> None:
    """A server started before the caller set no_new_privs or lowered a limit would start
    runs with more than the caller has: it is replaced, and the run has the caller's."""
    proc = subprocess.run([sys.executable, "-c", _TIGHTENED, tightening], cwd="/", text=True,
                          env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    before, after, first, second = json.loads(proc.stdout)
    assert (before, after) == (False, True)  # the control: before, the command had neither
    assert None not in (first, second) and first != second
    _wait_gone(first)  # the old server saw EOF


_CHOOSER = textwrap.dedent("""
    import sys
    from buildjail import Sandbox
    from buildjail.backends import _forkserver, _supervisor
    held = bytearray(int(sys.argv[1]) * _supervisor.FORK_SERVER_RSS)
    held[::4096] = b"\\1" * len(range(0, len(held), 4096))
    assert Sandbox("full", backend="native").run(["/bin/true"], cwd="/").exit_code == 0
    print(_forkserver.server_pid() is not None)
""")


@needs_root
@pytest.mark.parametrize(("size", "through_server"), [(0, False), (2, True)])
def test_by_default_only_a_large_caller_uses_the_server(size: int,
                                                       through_server: bool) -> None:
    proc = subprocess.run([sys.executable, "-c", _CHOOSER, str(size)], cwd="/", text=True,
                          env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(through_server)
