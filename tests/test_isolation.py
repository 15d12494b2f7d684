"""Attacks from inside the ``full`` sandbox, as root and as a non-root user."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import pwd
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from buildjail import RunResult, Sandbox
from conftest import (
    NONROOT_UID,
    Listener,
    Runner,
    host_address,
    processes_of_host,
    require_backend,
)

PROBE = (Path(__file__).parent / "probes" / "isolation_probe.py").read_text()
PYTHON = "/usr/bin/python3.11"


@pytest.fixture
def bait(identity_kind: str, shared_dir: Path) -> Iterator[dict[str, Any]]:
    """Plant secrets, listeners and markers on the host; remove them afterwards."""
    uid = 0 if identity_kind == "root" else NONROOT_UID
    home = shared_dir / "caller-home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text("machine pypi.example login me password hunter2\n")
    netrc.chmod(0o600)
    os.chown(home, uid, uid)
    os.chown(netrc, uid, uid)
    other = Path(tempfile.mkdtemp(prefix="bj-other-", dir="/home"))
    (other / ".ssh").mkdir()
    key = other / ".ssh" / "id_ed25519"
    key.write_text("PRIVATE KEY\n")
    key.chmod(0o644)
    other.chmod(0o755)
    secrets_dir = Path("/run/secrets")
    created_secrets = not secrets_dir.exists()
    secrets_dir.mkdir(exist_ok=True)
    secret = secrets_dir / f"bj-token-{os.getpid()}"
    secret.write_text("s3cr3t\n")
    secret.chmod(0o644)
    host_tmp = Path(tempfile.mkstemp(prefix="bj-host-marker-", dir="/tmp")[1])
    host_tmp.chmod(0o644)
    host = host_address()
    listeners = [Listener("0.0.0.0")]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 0))
    udp.settimeout(0.5)
    site_packages = Path("/usr/lib/python3/dist-packages")
    tag = f"bj-{os.getpid()}-{identity_kind}"
    config = {
        "secrets": {"caller_netrc": str(netrc), "other_user_key": str(key),
                    "run_secrets": str(secret), "shadow": "/etc/shadow"},
        "writes": {"site_packages": str(site_packages / f"{tag}.pth"),
                   "etc": f"/etc/{tag}", "caller_home": str(home / ".bashrc"),
                   "world_writable": str(shared_dir / f"{tag}.txt"),
                   "usr_local": f"/usr/local/lib/{tag}"},
        "parent_pid": os.getpid(),
        "listener_port": listeners[0].port,
        "udp_port": udp.getsockname()[1],
        "host_address": host,
        "host_tmp_marker": str(host_tmp),
        "inside_tmp_marker": f"/tmp/{tag}-inside",
        "inside_shm_marker": f"/dev/shm/{tag}-inside",
    }
    yield {"config": config, "home": home, "listeners": listeners, "udp": udp, "tag": tag}
    for listener in listeners:
        listener.close()
    udp.close()
    shutil.rmtree(other)
    secret.unlink()
    if created_secrets:  # unless another run planted its own there meanwhile
        with contextlib.suppress(OSError):
            secrets_dir.rmdir()
    host_tmp.unlink()


@pytest.fixture
def probed(run_sandbox: Runner, bait: dict[str, Any]) -> dict[str, Any]:
    """Run the isolation probe once in the sandbox and return its findings."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(bait["home"]), "CFLAGS": "-O2 -g0",
           "GITHUB_TOKEN": "ghp_secret", "AWS_SECRET_ACCESS_KEY": "aws",
           "PYPI_PASSWORD": "pw", "TWINE_USERNAME": "me", "LANG": "C.UTF-8"}
    result = run_sandbox([PYTHON, "-c", PROBE, json.dumps(bait["config"])], cwd="/", env=env,
                         stdout=None, capture=True)
    assert "setup_error" not in result, result
    assert result["exit_code"] == 0, result
    findings: dict[str, Any] = json.loads(result["stdout"])
    findings["_result"] = result
    return findings


@pytest.mark.parametrize("secret", ["caller_netrc", "other_user_key", "run_secrets", "shadow"])
def test_credential_files_cannot_be_read(probed: dict[str, Any], secret: str) -> None:
    assert probed[f"read:{secret}"] in ("ENOENT", "EACCES"), probed[f"read:{secret}"]


def test_tokens_are_not_passed_but_build_flags_are(probed: dict[str, Any]) -> None:
    env = probed["env"]
    for name in ("GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "PYPI_PASSWORD", "TWINE_USERNAME"):
        assert name not in env
    assert env["CFLAGS"] == "-O2 -g0"
    assert env["LANG"] == "C.UTF-8"
    assert env["HOME"] == "/home/buildjail"


def test_parent_processes_are_invisible(probed: dict[str, Any]) -> None:
    assert probed["read:parent_environ"] == "ENOENT"
    assert probed["read:parent_cmdline"] == "ENOENT"
    assert max(probed["pids"]) < 50, probed["pids"]  # own pid namespace: small pids only
    assert probed["ptrace_init"] == "EPERM"
    if probed["_result"]["backend"] == "native":
        assert probed["read:init_environ"] in ("", "EACCES")
        assert probed["read:init_cmdline"] in ("buildjail-init", "EACCES")
        return
    # bubblewrap's own pid 1 is the build's process: it holds nothing the build lacks.
    own = {f"{key}={value}" for key, value in probed["env"].items()}
    init_environ = probed["read:init_environ"]
    assert set(init_environ.split("\0")) - {""} <= own, init_environ
    assert probed["read:init_cmdline"].split("\0")[0].endswith("/bwrap")  # the policy, no secret


def test_no_network_but_loopback(probed: dict[str, Any], bait: dict[str, Any]) -> None:
    assert probed["tcp:host_loopback"] == "ECONNREFUSED"  # the sandbox's own, empty loopback
    assert probed["tcp:host_address"] == "ENETUNREACH"
    assert probed["udp:host_address"] == "ENETUNREACH"
    assert probed["dns:pypi.org"] in ("-3", "-2")  # EAI_AGAIN / EAI_NONAME: no resolver
    assert probed["loopback"] == "ping"
    assert probed["interfaces"] == ["lo"]
    assert probed["hostname"] == "localhost"
    assert bait["listeners"][0].connections == 0
    with pytest.raises(TimeoutError):
        bait["udp"].recvfrom(16)


@pytest.mark.parametrize("target", ["site_packages", "etc", "caller_home", "world_writable",
                                    "usr_local"])
def test_host_cannot_be_written(probed: dict[str, Any], bait: dict[str, Any],
                                target: str) -> None:
    assert probed[f"write:{target}"] in ("EROFS", "ENOENT", "EACCES"), probed[f"write:{target}"]
    assert not Path(bait["config"]["writes"][target]).exists()


def test_private_tmp_and_shm(probed: dict[str, Any], bait: dict[str, Any]) -> None:
    assert probed["host_tmp_marker_visible"] is False
    assert probed["write:tmp"] == "ok"
    assert probed["write:dev_shm"] == "ok"
    assert not Path(bait["config"]["inside_tmp_marker"]).exists()
    assert not Path(bait["config"]["inside_shm_marker"]).exists()


def test_a_build_still_works_inside(probed: dict[str, Any], identity_kind: str) -> None:
    assert probed["getpwuid"] == "buildjail"
    assert probed["home_writable"] == "ok"
    assert probed["cpu_count"] == os.cpu_count()
    assert probed["multiprocessing"] == sum(value * value for value in range(10))
    assert probed["gcc"] == "hello from C"
    assert probed["proc_self_exe"] == os.path.realpath(PYTHON)
    uid = probed["_result"]["uid"]
    if identity_kind == "root":
        assert uid >= 1000 and uid not in {entry.pw_uid for entry in pwd.getpwall()}
    else:
        assert uid == NONROOT_UID


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
@pytest.mark.parametrize("identity_kind", ["root"])
def test_the_probe_detects_attacks_without_a_sandbox(
    run_sandbox: Runner, bait: dict[str, Any]
) -> None:
    """With the ``none`` profile the same probe succeeds: its checks can fail."""
    config = bait["config"]
    config = {**config, "writes": {"world_writable": config["writes"]["world_writable"]}}
    # Its TMPDIR is the test's own: without a sandbox the probe would compile into /tmp.
    result = run_sandbox([PYTHON, "-c", PROBE, json.dumps(config)], cwd="/", profile="none",
                         env={"PATH": "/usr/bin:/bin", "GITHUB_TOKEN": "x",
                              "TMPDIR": str(bait["home"].parent)}, capture=True)
    findings = json.loads(result["stdout"])
    assert findings["read:caller_netrc"] == "ok"
    assert findings["read:other_user_key"] == "ok"
    assert findings["read:run_secrets"] == "ok"
    assert findings["write:world_writable"] == "ok"
    assert findings["tcp:host_loopback"] == "ok"
    assert findings["read:parent_environ"] == "ok"
    assert findings["host_tmp_marker_visible"] is True
    assert findings["env"]["GITHUB_TOKEN"] == "x"
    assert bait["listeners"][0].connections >= 1
    for path in (*config["writes"].values(), config["inside_tmp_marker"],
                 config["inside_shm_marker"]):
        Path(path).unlink(missing_ok=True)


def test_the_command_inherits_only_its_standard_streams(run_sandbox: Runner) -> None:
    """No descriptor of the sandbox's own (bubblewrap's status pipe, data fds) leaks in."""
    listing = "import os; print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))"
    result = run_sandbox([PYTHON, "-c", listing], cwd="/", capture=True)
    assert result["exit_code"] == 0, result
    assert json.loads(result["stdout"]) == [0, 1, 2, 3]  # 3: the listing's own directory


def test_without_an_ephemeral_identity_capabilities_still_go(run_sandbox: Runner,
                                                             identity_kind: str) -> None:
    """A policy keeping the caller's identity (root: uid 0) still drops every capability."""
    policy = {"extends": "full", "isolation": {"ephemeral_identity": False}}
    script = ("import ctypes, os\n"
              "caps = [l.split()[1] for l in open('/proc/self/status') if l.startswith('Cap')]\n"
              "libc = ctypes.CDLL(None, use_errno=True)\n"
              "print(os.getuid(), set(caps), libc.unshare(0x10000000), ctypes.get_errno())")
    result = run_sandbox([PYTHON, "-c", script], cwd="/", policy=policy, capture=True)
    assert result["exit_code"] == 0, result
    uid, caps, unshared, error = result["stdout"].split(maxsplit=3)
    assert uid == ("0" if identity_kind == "root" else str(NONROOT_UID))
    assert caps == "{'0000000000000000'}", result["stdout"]
    assert (unshared, error.strip()) == ("-1", "1"), result["stdout"]  # EPERM: no new userns


FIXED_IDS_PROBE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def tried(call):
    try:
        call()
        return 'done'
    except OSError as error:
        return error.errno
caps = {l.split()[0]: l.split()[1] for l in open('/proc/self/status') if l.startswith('Cap')}
print(os.getuid(), os.getgid(), os.getgroups(), sorted(set(caps.values())))
print(*open('/proc/self/uid_map').read().split(), open('/proc/self/setgroups').read().strip())
print(tried(lambda: os.setuid(0)), tried(lambda: os.setgroups([0])),
      libc.unshare(0x10000000), ctypes.get_errno())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
@pytest.mark.parametrize("identity_kind", ["root"])
def test_the_fixed_ids_user_namespace_gives_the_build_nothing(
        run_sandbox: Runner, sandbox_backend: str) -> None:
    """Root's build sees itself as 1000/1000 in a user namespace of its own; a new user
    namespace hands every capability back to its maker: none of it reaches the build."""
    if sandbox_backend == "landlock":
        pytest.skip("the landlock backend makes no namespace: the leased uid shows")
    result = run_sandbox([PYTHON, "-c", FIXED_IDS_PROBE], cwd="/", capture=True)
    assert result["exit_code"] == 0, result
    ids, mapping, attempts = result["stdout"].splitlines()
    assert ids == "1000 1000 [] ['0000000000000000']"  # the bounding set too
    inside, outside, count, setgroups = mapping.split()
    assert (inside, count, setgroups) == ("1000", "1", "deny")  # one id, no setgroups
    if sandbox_backend == "native":  # bwrap maps through an intermediate namespace of its own
        assert int(outside) == result["uid"]  # the leased uid, the host's owner of its files
    # EINVAL: uid 0 is not mapped; EPERM: no capability, no setgroups, no nested namespace
    assert attempts == "22 1 -1 1", attempts


NS_GET_OWNER_UID = 0xB704
INOTIFY_LIMIT = "/proc/sys/fs/inotify/max_user_instances"


def _namespace_owner(pid: int) -> int:
    """The uid owning *pid*'s user namespace, as this (the host's) namespace sees it."""
    fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY)
    try:
        owner: int = struct.unpack("I", fcntl.ioctl(fd, NS_GET_OWNER_UID, bytes(4)))[0]
        return owner
    finally:
        os.close(fd)


def _pid_of(program: str, marker: str, deadline: float) -> int:
    """The pid of *program* run with *marker* (this test's own) among its arguments;
    not bubblewrap's own processes, whose command lines carry it too."""
    while time.monotonic() < deadline:
        for process in processes_of_host():
            argv = process.cmdline.split(b"\0")
            if argv[0] == program.encode() and marker.encode() in argv:
                return process.pid
        time.sleep(0.05)
    raise AssertionError(f"no process carries {marker}")


HOLD_INOTIFY = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
held = 0
while held < 2000 and libc.inotify_init1(0) >= 0:
    held += 1
print(held, ctypes.get_errno(), flush=True)
open(os.path.join(sys.argv[1], 'holding'), 'w').close()
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
@pytest.mark.parametrize("backend", ["native", "bwrap"])
def test_the_builds_user_namespace_is_owned_by_the_leased_uid_not_root(
        backend: str, tmp_path: Path) -> None:
    """The kernel charges a namespace's inotify instances, queued signals and nested
    namespaces to its owner on the host: a build holding all it may must leave root's
    own quota whole (it exhausted it while the namespace was root's)."""
    require_backend(backend)
    limit = int(Path(INOTIFY_LIMIT).read_text())
    if limit > 900:
        pytest.skip(f"{INOTIFY_LIMIT} is {limit}: more than the sandbox's descriptors reach")
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    marker = f"bj-owner-{uuid.uuid4().hex}"
    results: list[RunResult] = []
    printed = open(tmp_path / "printed", "w+b")  # noqa: SIM115 - closed below
    runner = threading.Thread(target=lambda: results.append(Sandbox("full", backend=backend).run(
        [PYTHON, "-c", HOLD_INOTIFY, str(out), "3", marker], cwd="/", writable=[str(out)],
        stdout=printed.fileno())))
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while not (out / "holding").exists():
            assert time.monotonic() < deadline and runner.is_alive(), results
            time.sleep(0.05)
        owner = _namespace_owner(_pid_of(PYTHON, marker, deadline))
        libc = ctypes.CDLL(None, use_errno=True)
        ours = libc.inotify_init1(0)  # root's own quota, while the build holds all of its
        error = ctypes.get_errno()
        if ours >= 0:
            os.close(ours)
    finally:
        runner.join(60)
        printed.close()
    result = results[0]
    held, build_error = (tmp_path / "printed").read_text().split()
    assert result.exit_code == 0, result
    assert int(held) >= limit - 8 and build_error == str(errno.EMFILE), (held, build_error)
    assert owner == result.uid  # the leased uid, as the host sees it
    assert ours >= 0, os.strerror(error)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
def test_control_a_namespace_root_makes_is_roots() -> None:
    """What the owner check tells apart: root's unshare makes a namespace owned by uid 0."""
    marker = f"bj-owner-{uuid.uuid4().hex}"
    made = subprocess.Popen(["/usr/bin/unshare", "--user", PYTHON, "-c",
                             "import time; time.sleep(5)", marker])
    try:
        assert _namespace_owner(_pid_of(PYTHON, marker, time.monotonic() + 30)) == 0
    finally:
        made.kill()
        made.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
def test_control_a_new_user_namespace_gives_its_maker_every_capability() -> None:
    """Why the init drops the bounding set again after making its last namespace."""
    done = subprocess.run(["/usr/bin/unshare", "--user", "--map-user=1000", "--map-group=1000",
                           PYTHON, "-c", "print(open('/proc/self/status').read())"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    bounding = next(line.split()[1] for line in done.stdout.splitlines()
                    if line.startswith("CapBnd"))
    assert int(bounding, 16) != 0


@pytest.mark.parametrize("sandbox_backend", ["bwrap"])  # native has its seccomp filter only
def test_bwrap_disables_nested_user_namespaces_without_seccomp(run_sandbox: Runner,
                                                               sandbox_backend: str) -> None:
    """bubblewrap's --disable-userns is a layer of its own: seccomp off, unshare still fails."""
    require_backend(sandbox_backend)
    policy = {"extends": "full", "isolation": {"seccomp": False}}
    script = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
              "print(libc.unshare(0x10000000), ctypes.get_errno())")
    result = run_sandbox([PYTHON, "-c", script], cwd="/", policy=policy, capture=True)
    assert result["exit_code"] == 0, result
    assert "seccomp" not in result["layers"]
    assert result["stdout"].split() == ["-1", "28"]  # ENOSPC: max_user_namespaces is 0


WRITE_SANDBOX_FILES = """
import os
def attempt(label, action):
    try:
        action()
        print(label, "SUCCEEDED")
    except OSError as error:
        print(label, errno.errorcode[error.errno])
import errno
attempt("dev", lambda: open("/dev/bj-hog", "wb").write(b"x"))
attempt("run", lambda: open("/run/bj-hog", "wb").write(b"x"))
attempt("proc_init_mem", lambda: open("/proc/1/mem", "r+b").close())
attempt("console", lambda: os.close(os.open("/dev/console", os.O_RDONLY | os.O_NOCTTY)))
attempt("tty", lambda: os.close(os.open("/dev/tty", os.O_RDONLY)))
"""


def test_dev_run_proc_and_the_terminal_are_out_of_reach(run_sandbox: Runner) -> None:
    """Unmetered tmpfs (/dev, /run), pid 1's memory and the caller's terminal: all refused.

    stdout is a terminal here, which bubblewrap would otherwise show as /dev/console.
    """
    result = run_sandbox([PYTHON, "-c", WRITE_SANDBOX_FILES], cwd="/", terminal=True)
    assert result["exit_code"] == 0, result
    outcome = dict(line.split() for line in result["stdout"].splitlines() if line.strip())
    assert outcome["dev"] in ("EROFS", "EACCES"), outcome
    assert outcome["run"] in ("EROFS", "EACCES"), outcome
    assert outcome["proc_init_mem"] in ("EROFS", "EACCES", "ENOENT"), outcome
    assert outcome["console"] in ("ENOENT", "EACCES"), outcome
    assert outcome["tty"] == "ENXIO", outcome  # a new session: no controlling terminal


def test_a_writable_file_under_a_private_directory(run_sandbox: Runner, identity_kind: str,
                                                   shared_dir: Path) -> None:
    """A single file declared writable, inside a 0700 directory the build cannot enter."""
    owner = 0 if identity_kind == "root" else NONROOT_UID
    private = shared_dir / "private"
    private.mkdir(mode=0o700)
    target = private / "out.txt"
    target.write_text("before\n")
    for path in (private, target):
        os.chown(path, owner, owner)
    result = run_sandbox(["/bin/sh", "-c", f"echo inside >> {target}; ls {private}"], cwd="/",
                         writable=[str(target)], capture=True)
    assert result["exit_code"] == 0, result
    assert target.read_text() == "before\ninside\n"
    assert result["stdout"].split() == ["out.txt"]  # nothing else of the directory shows
    assert target.stat().st_uid == owner  # handed back
