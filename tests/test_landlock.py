"""The landlock backend: attacks from inside, what it states it cannot give, pinned ABIs.

The engine, build and cleanup tests of the other backends run on it too (the
``sandbox_backend`` fixture); these are the ones whose outcome differs because it has no
namespaces: errors are Landlock's and seccomp's (EACCES, EPERM), not an empty view's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from buildjail import Policy, Sandbox, SandboxSetupError
from buildjail._linux import kernel as k
from buildjail._linux import landlock
from buildjail.backends.landlock import NOT_COVERED, LandlockBackend
from conftest import NONROOT_UID, SYSTEM_PYTHON, Identity, Runner, is_root
from test_checkout import _checkout, _config_digest, _fsmonitor, _git
from test_isolation import PROBE, bait  # noqa: F401 - the shared bait fixture

needs_root = pytest.mark.skipif(not is_root(), reason="needs root (CI runs as root)")
pytestmark = pytest.mark.skipif(landlock.abi_version() < landlock.SCOPE_ABI,
                                reason="the kernel's Landlock is older than ABI 6")


@pytest.fixture
def sandbox_backend() -> str:
    """Every test here runs on the landlock backend (conftest's runners read this)."""
    return "landlock"


@pytest.fixture
def probed(run_sandbox: Runner, bait: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    """The isolation probe of test_isolation, run once under landlock."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(bait["home"]), "CFLAGS": "-O2 -g0",
           "GITHUB_TOKEN": "ghp_secret", "PYPI_PASSWORD": "pw", "LANG": "C.UTF-8"}
    result = run_sandbox([SYSTEM_PYTHON, "-c", PROBE, json.dumps(bait["config"])], cwd="/",
                         env=env, capture=True)
    assert "setup_error" not in result, result
    assert result["exit_code"] == 0, result
    findings: dict[str, Any] = json.loads(result["stdout"])
    findings["_result"] = result
    return findings


@pytest.mark.parametrize("secret", ["caller_netrc", "other_user_key", "run_secrets", "shadow"])
def test_credential_files_cannot_be_read(probed: dict[str, Any], secret: str) -> None:
    assert probed[f"read:{secret}"] == "EACCES"


def test_tokens_stay_out_and_home_is_private(probed: dict[str, Any],
                                             bait: dict[str, Any]) -> None:  # noqa: F811
    env = probed["env"]
    assert "GITHUB_TOKEN" not in env and "PYPI_PASSWORD" not in env
    assert env["CFLAGS"] == "-O2 -g0"
    assert env["HOME"] != str(bait["home"]) and env["HOME"].endswith("/home")
    assert env["TMPDIR"] == str(Path(env["HOME"]).with_name("tmp"))
    assert probed["home_writable"] == "ok"
    assert not Path(env["HOME"]).parent.exists(), "the private home outlived the run"


def test_other_processes_cannot_be_traced_read_or_signalled(probed: dict[str, Any]) -> None:
    assert probed["read:parent_environ"] == "EACCES"  # Landlock scopes ptrace access
    assert probed["kill:parent"] == "EPERM"  # and signals (ABI 6)
    assert probed["ptrace_init"] == "EPERM"
    # What it cannot hide, it says: the command lines of other processes.
    assert probed["read:parent_cmdline"] == "ok"
    assert probed["_result"]["degraded"]["processes"] == NOT_COVERED["processes"]


def test_no_network_at_all(probed: dict[str, Any], bait: dict[str, Any]) -> None:  # noqa: F811
    for attempt in ("tcp:host_loopback", "tcp:host_address", "udp:host_address"):
        assert probed[attempt] == "EPERM", attempt  # no inet socket can be made
    assert probed["dns:pypi.org"] in ("-3", "-2")
    assert probed["loopback"] == "EPERM"  # no loopback either: said so
    assert "loopback" in probed["_result"]["degraded"]
    assert bait["listeners"][0].connections == 0
    with pytest.raises(TimeoutError):
        bait["udp"].recvfrom(16)


@pytest.mark.parametrize("target", ["site_packages", "etc", "caller_home", "world_writable",
                                    "usr_local"])
def test_host_cannot_be_written(probed: dict[str, Any], bait: dict[str, Any],  # noqa: F811
                                target: str) -> None:
    assert probed[f"write:{target}"] == "EACCES"
    assert not Path(bait["config"]["writes"][target]).exists()


def test_tmp_and_shm_are_closed_and_said_to_be(probed: dict[str, Any],
                                                bait: dict[str, Any]) -> None:  # noqa: F811
    assert probed["write:tmp"] == "EACCES"
    assert probed["write:dev_shm"] == "EACCES"
    assert not Path(bait["config"]["inside_tmp_marker"]).exists()
    assert probed["multiprocessing"] == "EACCES"  # its semaphores live in /dev/shm
    degraded = probed["_result"]["degraded"]
    assert "shared memory" in degraded and "tmp" in degraded


def test_a_build_still_works_inside(probed: dict[str, Any], identity_kind: str) -> None:
    assert probed["gcc"] == "hello from C"
    assert probed["cpu_count"] == os.cpu_count()
    assert probed["proc_self_exe"] == os.path.realpath(SYSTEM_PYTHON)
    uid = probed["_result"]["uid"]
    assert uid >= 1000 if identity_kind == "root" else uid == NONROOT_UID
    layers = probed["_result"]["layers"]
    assert f"landlock:abi-{landlock.abi_version()}" in layers
    assert {"scope:signals+abstract-unix", "ptrace:landlock", "processes:subreaper",
            "network:seccomp-unix-pairs-only", "ipc:seccomp"} <= set(layers)


def test_what_a_build_leaves_running_dies_with_it(run_sandbox: Runner, shared_dir: Path) -> None:
    """A detached daemon, and the init killed by the build itself: nothing outlives the run
    (the init adopts orphans, and the supervisor whatever outlives the init)."""
    marker = f"bj-ll-daemon-{os.getpid()}-{shared_dir.name}"
    script = (f"setsid /bin/sh -c 'exec -a {marker} sleep 300' & sleep 0.2; "
              f"kill -9 $PPID; exec -a {marker} sleep 301")
    result = run_sandbox(["/bin/bash", "-c", script], cwd="/")
    assert result["exit_code"] == 128 + signal.SIGKILL, result
    assert not _processes_named(marker)


def _processes_named(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as stream:
                    if stream.read().startswith(marker.encode()):
                        found.append(int(name))
            except OSError:
                continue
    return found


@needs_root
def test_an_interpreter_the_build_cannot_reach_is_refused_up_front(tmp_path: Path) -> None:
    """Root's build runs as an ephemeral uid; a Python under /root (mode 0700) is out of its
    reach and no mount namespace can re-attach it: the run fails with the way out."""
    home = Path("/root")
    assert not home.stat().st_mode & 0o001, "this test needs /root closed to others"
    hidden = Path(sys.base_prefix)
    if not hidden.is_relative_to(home):
        pytest.skip("this test needs the test interpreter under /root (pyenv)")
    with pytest.raises(SandboxSetupError) as raised:
        Sandbox("full", backend="landlock").run([sys.executable, "-c", "pass"], cwd="/")
    assert "/root" in raised.value.reason and "ephemeral uid" in raised.value.reason
    assert "--python" in raised.value.fix


@needs_root
def test_a_declared_tree_the_build_cannot_reach_is_refused(tmp_path: Path) -> None:
    closed = Path("/root") / f"bj-ll-closed-{os.getpid()}"
    closed.mkdir()
    try:
        with pytest.raises(SandboxSetupError) as raised:
            Sandbox("full", backend="landlock").run(["/bin/true"], cwd="/", writable=[closed])
        assert "/root is closed to other users" in raised.value.reason
    finally:
        closed.rmdir()


# --- ABI versions, pinned ------------------------------------------------------------


def test_abi_below_three_is_refused_with_the_kernel_that_serves() -> None:
    with pytest.raises(SandboxSetupError) as raised:
        Sandbox("full", backend=LandlockBackend(abi=1)).run(["/bin/true"], cwd="/")
    assert "Landlock ABI 3 (Linux 6.2)" in raised.value.reason
    assert "ABI 1" in raised.value.reason


@needs_root
def test_abi_three_as_root_runs_and_says_what_is_missing() -> None:
    result = Sandbox("full", backend=LandlockBackend(abi=3)).run(["/bin/true"], cwd="/")
    assert result.exit_code == 0
    assert "landlock:abi-3" in result.layers
    assert "network:landlock-tcp" not in result.layers  # ABI 4's
    assert "scope:signals+abstract-unix" not in result.layers  # ABI 6's
    assert "seccomp alone" in result.degraded["network"]


def test_abi_three_or_five_as_non_root_is_refused(world_src: str) -> None:
    for abi in (3, 5):
        found = _run_as_nonroot(world_src, abi)
        assert "Landlock ABI 6 (Linux 6.12)" in found.get("setup_error", ""), found


def test_abi_six_as_non_root_runs(world_src: str) -> None:
    found = _run_as_nonroot(world_src, 6)
    assert found.get("exit_code") == 0, found
    assert "scope:signals+abstract-unix" in found["layers"]


NONROOT_PINNED = """
import json, sys
from buildjail import Sandbox, SandboxSetupError
from buildjail.backends.landlock import LandlockBackend
try:
    result = Sandbox("full", backend=LandlockBackend(abi=int(sys.argv[1]))).run(
        ["/bin/true"], cwd="/")
    print(json.dumps(result.to_dict()))
except SandboxSetupError as error:
    print(json.dumps({"setup_error": error.reason}))
"""


def _run_as_nonroot(world_src: str, abi: int) -> dict[str, Any]:
    if not is_root():
        command = [sys.executable, "-c", NONROOT_PINNED, str(abi)]
    else:
        command = ["/usr/bin/setpriv", f"--reuid={NONROOT_UID}", f"--regid={NONROOT_UID}",
                   "--clear-groups", SYSTEM_PYTHON, "-s", "-c", NONROOT_PINNED, str(abi)]
    proc = subprocess.run(command, capture_output=True, text=True, cwd="/", timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": world_src}, check=False)
    assert proc.returncode == 0, proc.stderr
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


# --- each layer, attacked, with its control (the same attack, one ABI lower) ----------


def _in_child(plan: landlock.RulesetPlan, attack: Callable[[], object]) -> str:
    """Run *attack* in a forked child restricted to *plan*: "ok" or the errno's name."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - a child that never returns
        outcome = "ok"
        try:
            k.set_no_new_privs()
            landlock.restrict_self(plan)
            attack()
        except OSError as error:
            outcome = os.strerror(error.errno or 0)
        os.write(write_end, outcome.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as stream:
        outcome = stream.read()
    os.waitpid(pid, 0)
    return outcome


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server
    server.close()


def test_tcp_connect_is_denied_from_abi_four(listener: socket.socket) -> None:
    address = listener.getsockname()

    def connect() -> None:
        with socket.create_connection(address, timeout=3):
            pass

    assert _in_child(landlock.RulesetPlan(abi=4, read=("/",), deny_tcp=True), connect) == (
        os.strerror(13))
    assert _in_child(landlock.RulesetPlan(abi=3, read=("/",), deny_tcp=True), connect) == "ok"


def test_signals_are_scoped_from_abi_six() -> None:
    outside = subprocess.Popen(["/bin/sleep", "30"])
    try:
        def signal_it() -> None:
            os.kill(outside.pid, 0)

        scoped = landlock.RulesetPlan(abi=6, read=("/",), scope=True)
        assert _in_child(scoped, signal_it) == os.strerror(1)
        unscoped = landlock.RulesetPlan(abi=5, read=("/",), scope=True)
        assert _in_child(unscoped, signal_it) == "ok"
    finally:
        outside.kill()
        outside.wait()


def test_truncation_is_denied_from_abi_three(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")

    def truncate() -> None:
        os.truncate(victim, 0)

    assert _in_child(landlock.RulesetPlan(abi=3, read=("/",)), truncate) == os.strerror(13)
    assert victim.read_text() == "precious"
    assert _in_child(landlock.RulesetPlan(abi=2, read=("/",)), truncate) == "ok"
    assert victim.read_text() == ""


def test_reading_outside_the_rules_is_denied(tmp_path: Path) -> None:
    (tmp_path / "shown").mkdir()
    (tmp_path / "shown" / "file").write_text("fine")
    (tmp_path / "secret").write_text("no")

    def read(name: str) -> Callable[[], object]:
        return (tmp_path / name).read_text

    plan = landlock.RulesetPlan(abi=landlock.abi_version(), read=(str(tmp_path / "shown"),))
    assert _in_child(plan, read("shown/file")) == "ok"
    assert _in_child(plan, read("secret")) == os.strerror(13)
    network_only = landlock.RulesetPlan(abi=4, filesystem=False, deny_tcp=True)
    assert _in_child(network_only, read("secret")) == "ok"  # the control: files not handled


def test_a_mask_inside_a_shown_tree_stays_hidden(run_sandbox: Runner,
                                                  shared_dir: Path) -> None:
    shown = shared_dir / "tree"
    (shown / "private").mkdir(parents=True)
    (shown / "private" / "key").write_text("secret")
    (shown / "public").write_text("fine")
    for path in (shown, shown / "private", shown / "private" / "key", shown / "public"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    script = f"cat {shown}/public; cat {shown}/private/key 2>&1 | grep -c 'Permission denied'"
    result = run_sandbox(["/bin/sh", "-c", script], cwd="/", readonly=[str(shown)],
                         masked=[str(shown / "private")], capture=True)
    assert result["exit_code"] == 0, result
    assert result["stdout"] == "fine1\n"


def test_the_network_profile_refuses_sockets_but_leaves_files(run_sandbox: Runner,
                                                              listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    probe = (f"import socket\ntry:\n socket.create_connection(('127.0.0.1', {port}), 3)\n"
             " print('connected')\nexcept OSError as e:\n print(e.errno)\n"
             "print(len(open('/etc/hostname').read()) > 0)")
    result = run_sandbox([SYSTEM_PYTHON, "-c", probe], cwd="/", profile="network",
                         capture=True)
    assert result["exit_code"] == 0, result
    assert result["stdout"].split() == ["1", "True"]  # EPERM; files as the policy says


def test_the_control_without_a_sandbox_reaches_all_of_it(listener: socket.socket) -> None:
    """The ``none`` profile on the same backend: the same attacks succeed."""
    port = listener.getsockname()[1]
    probe = (f"import socket, os\nsocket.create_connection(('127.0.0.1', {port}), 3)\n"
             "os.kill(os.getppid(), 0)\nprint('reached')")
    result = Sandbox(Policy.profile("none"), backend="landlock").run(
        [SYSTEM_PYTHON, "-c", probe], cwd="/")
    assert result.exit_code == 0


# --- the audit -----------------------------------------------------------------------

DECLARED = {"proc_parent_cmdline": "processes", "proc_visibility": "processes",
            "hostname": "hostname", "tmp_shared": "tmp"}
"""The vectors the landlock backend says it cannot block, by the layer that says why."""


@pytest.fixture(scope="module")
def audits(world_src: str, nonroot_site: Path,
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """``buildjail audit --backend landlock --json`` of the three profiles, as root (under
    the system Python, as in a container) and as the non-root test user."""
    found = {}
    for who in ("root", "nonroot") if is_root() else ("nonroot",):
        home = Path(tempfile.mkdtemp(prefix="bj-ll-audit-home-", dir="/var/lib/buildjail-tests"))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
               "PYTHONPATH": f"{world_src}:{nonroot_site}", "PIP_CONFIG_FILE": os.devnull}
        prefix: list[str] = []
        if who == "nonroot" and is_root():
            os.chown(home, NONROOT_UID, NONROOT_UID)
            prefix = ["/usr/bin/setpriv", f"--reuid={NONROOT_UID}", f"--regid={NONROOT_UID}",
                      "--clear-groups"]
        try:
            proc = subprocess.run([*prefix, SYSTEM_PYTHON, "-s", "-m", "buildjail", "audit",
                                   "--backend", "landlock", "--json"], env=env, cwd="/",
                                  capture_output=True, text=True, timeout=600, check=False)
        finally:
            subprocess.run(["rm", "-rf", str(home)], check=False)
        assert proc.stdout, proc.stderr[-3000:]
        found[who] = {"exit_code": proc.returncode, **json.loads(proc.stdout)}
    return found


def _cells(audit: dict[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    return {f["vector"]: f for f in audit["findings"] if f["profile"] == profile}


@pytest.mark.parametrize("who", ["root", "nonroot"])
def test_the_audit_blocks_every_vector_it_claims_and_names_the_rest(
        audits: dict[str, dict[str, Any]], who: str) -> None:
    if who not in audits:
        pytest.skip("root's audit needs a root test run (CI runs as root)")
    audit = audits[who]
    full = _cells(audit, "full")
    assert len(full) == len(audit["vectors"])
    for vector, cell in full.items():
        if vector in DECLARED:
            assert cell["verdict"] == "degraded", cell
            sandbox = next(s for s in audit["sandboxes"] if s["profile"] == "full")
            assert sandbox["degraded"][DECLARED[vector]] in cell["evidence"], cell
        else:
            assert cell["verdict"] in ("blocked", "not_applicable"), cell
            assert cell["evidence"], cell
    assert audit["exit_code"] == 0, audit.get("errors")


@pytest.mark.parametrize("who", ["root", "nonroot"])
def test_the_audit_control_every_declared_vector_fires_without_a_sandbox(
        audits: dict[str, dict[str, Any]], who: str) -> None:
    """Under ``none`` on the same backend the probes succeed: the checks above can fail."""
    if who not in audits:
        pytest.skip("root's audit needs a root test run (CI runs as root)")
    none = _cells(audits[who], "none")
    fired = {vector for vector, cell in none.items() if cell["verdict"] == "vulnerable"}
    assert set(DECLARED) <= fired
    assert {"cred_home_netrc", "net_tcp", "daemon", "memory_hog", "fork_bomb"} <= fired


# --- a real build, as root, from a caller whose Python the build cannot reach ----------


@needs_root
def test_root_builds_with_a_reachable_python_as_native_does(wheelhouse: Path,
                                                            shared_dir: Path) -> None:
    """The test's own Python is pyenv's under /root: without --python the build fails
    closed naming the way out; with --python /usr/bin/python3.11 the wheel is the native
    backend's byte for byte, and the sdist holds the same files (setuptools writes the
    build's time and uid into its headers, so no two of its sdists are equal)."""
    project = shared_dir / "simple"
    shutil.copytree(Path(__file__).parent / "projects" / "simple", project)
    common = [str(project), "--no-index", "--find-links", str(wheelhouse)]
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", "PIP_CONFIG_FILE": os.devnull}

    def build(backend: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "buildjail", "build", "--backend",
                               backend, *common, "-o", str(out), *extra], env=env, cwd="/",
                              capture_output=True, text=True, timeout=300, check=False)

    if Path(sys.base_prefix).is_relative_to("/root"):
        refused = build("landlock", shared_dir / "refused")
        assert refused.returncode == 1, refused.stderr
        assert "--python" in refused.stderr and "ephemeral uid" in refused.stderr
        assert not list((shared_dir / "refused").glob("*"))
    ours = build("landlock", shared_dir / "landlock", "--python", SYSTEM_PYTHON)
    assert ours.returncode == 0, ours.stderr
    native = build("native", shared_dir / "native", "--python", SYSTEM_PYTHON)
    assert native.returncode == 0, native.stderr
    built = sorted(path.name for path in (shared_dir / "landlock").iterdir())
    assert built == ["simple-1.0-py3-none-any.whl", "simple-1.0.tar.gz"]
    wheel, sdist = built
    assert (shared_dir / "landlock" / wheel).read_bytes() == (
        shared_dir / "native" / wheel).read_bytes()
    assert _sdist_files(shared_dir / "landlock" / sdist) == _sdist_files(
        shared_dir / "native" / sdist)


def _sdist_files(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as archive:
        return {member.name: archive.extractfile(member).read()  # type: ignore[union-attr]
                for member in archive.getmembers() if member.isfile()}


def test_a_link_left_in_a_tree_with_a_mask_grants_nothing(run_sandbox: Runner,
                                                         shared_dir: Path) -> None:
    """A build's link to / in its writable tree, then a run that masks a secret there: the
    mask's expansion must not turn the link into a rule on its target (found by review)."""
    tree = shared_dir / "proj"
    tree.mkdir()
    tree.chmod(0o777)
    secret = tree / "secret.env"
    secret.write_text("TOKEN=hunter2\n")
    secret.chmod(0o666)
    planted = run_sandbox(["/bin/ln", "-s", "/", str(tree / "zz")], cwd="/",
                          writable=[str(tree)])
    assert planted["exit_code"] == 0, planted
    outside = Path(f"/tmp/bj-ll-link-{os.getpid()}-{shared_dir.name}")
    script = f"cat {secret}; echo x > {outside}; echo x > {tree}/zz{outside}"
    result = run_sandbox(["/bin/sh", "-c", script], cwd="/", writable=[str(tree)],
                         masked=[str(secret)], capture=True)
    try:
        assert "hunter2" not in result.get("stdout", ""), result
        assert not outside.exists()
    finally:
        outside.unlink(missing_ok=True)
    # The control: the same writes without the mask reach the tree, not the host.
    assert run_sandbox(["/bin/sh", "-c", f"cat {secret}"], cwd="/", writable=[str(tree)],
                       capture=True)["stdout"] == "TOKEN=hunter2\n"


@needs_root
def test_a_checkout_is_built_from_a_private_copy(identity: Identity, shared_dir: Path,
                                                 markers: Path) -> None:
    """Landlock cannot keep the checkout's .git read-only inside the writable tree: the
    hooks get a copy. What they change there (git config, a hook) never reaches the user's
    checkout, whose next git command runs nothing of theirs."""
    checkout = _checkout(identity, shared_dir / "work" / "perimeter", {"hooks": {
        "build_sdist": {"git": _fsmonitor(markers)},
        "get_requires_for_build_sdist": {"git": _fsmonitor(markers)}}})
    before = _config_digest(checkout)
    logs = shared_dir / "logs"
    proc = identity.buildjail(str(checkout), "--sdist", "-o", str(shared_dir / "out"),
                              "--logs", str(logs), backend="landlock")
    assert proc.returncode == 0, proc.stderr
    assert [path.name for path in (shared_dir / "out").iterdir()] == ["perimeter-1.0.tar.gz"]
    log = (logs / "perimeter.log").read_text()
    assert "PERIMETER git config: exit 0" in log  # it did change its copy's config
    assert _config_digest(checkout) == before
    _git(identity, checkout, "status")
    assert list(markers.iterdir()) == []
    assert not (checkout / ".git" / "hooks" / "post-checkout").exists()


def test_a_read_only_tree_inside_a_writable_one_is_refused(run_sandbox: Runner,
                                                           shared_dir: Path) -> None:
    """Landlock's rights only add up: asked for, the run fails closed instead of leaving
    the inner tree writable (found by review; native keeps it read-only)."""
    inner = shared_dir / "ro"
    inner.mkdir()
    result = run_sandbox(["/bin/sh", "-c", f"echo x > {inner}/new"], cwd="/",
                         writable=[str(shared_dir)], readonly=[str(inner)])
    assert "cannot keep" in result.get("setup_error", ""), result
    assert not (inner / "new").exists()


STDIN_REOPEN = """
import json, os, sys
from buildjail import Sandbox
fd = os.open(sys.argv[1], os.O_RDONLY)
result = Sandbox("full", backend="landlock").run(
    ["/bin/sh", "-c", "cat /dev/stdin; echo overwritten > /dev/stdin"], cwd="/", stdin=fd)
print(json.dumps(result.exit_code))
"""


def test_a_read_only_stdin_stays_read_only_when_reopened(world_src: str,
                                                         shared_dir: Path) -> None:
    """/dev/stdin reopens the file behind it: only with the access it was opened with."""
    victim = shared_dir / "input"
    victim.write_text("original\n")
    command = [SYSTEM_PYTHON, "-s", "-c", STDIN_REOPEN, str(victim)]
    if is_root():
        os.chown(victim, NONROOT_UID, NONROOT_UID)
        command = ["/usr/bin/setpriv", f"--reuid={NONROOT_UID}", f"--regid={NONROOT_UID}",
                   "--clear-groups", *command]
    proc = subprocess.run(command, capture_output=True, text=True, cwd="/", timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": world_src}, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "original"  # read through /dev/stdin
    assert json.loads(lines[-1]) != 0  # the write was refused
    assert victim.read_text() == "original\n"


def test_a_memfd_as_standard_output_is_fine() -> None:
    """fromager's step runner captures output in a memfd: Landlock takes no rule for a
    file on an internal file system, and none is needed (found by the hooks' work)."""
    fd = os.memfd_create("bj-ll-stdout")
    try:
        result = Sandbox("full", backend="landlock").run(["/bin/echo", "captured"], cwd="/",
                                                          stdout=fd)
        os.lseek(fd, 0, os.SEEK_SET)
        assert (result.exit_code, os.read(fd, 64)) == (0, b"captured\n")
    finally:
        os.close(fd)


@needs_root
def test_a_killed_caller_leaves_no_private_home(shared_dir: Path) -> None:
    """The run's private HOME and TMPDIR directory is removed by the supervisor, which
    outlives a SIGKILLed caller (the caller's own clean-up never runs then)."""
    told = shared_dir / "home-was"
    caller = subprocess.Popen(
        [sys.executable, "-m", "buildjail", "run", "--backend", "landlock", "--writable",
         str(shared_dir), "--", "/bin/sh", "-c", f'echo "$HOME" > {told}; sleep 30'],
        cwd="/", start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (told.exists() and told.read_text().strip()):
            assert time.monotonic() < deadline, "the sandbox never started"
            time.sleep(0.05)
        scratch = Path(told.read_text().strip()).parent
        assert scratch.is_dir() and scratch.name.startswith("buildjail-landlock-")
        os.killpg(caller.pid, signal.SIGKILL)
        caller.wait(timeout=10)
        deadline = time.monotonic() + 20
        while scratch.exists():
            assert time.monotonic() < deadline, f"{scratch} outlived the run"
            time.sleep(0.05)
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
