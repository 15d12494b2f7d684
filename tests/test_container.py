"""Which container buildjail runs in, and the fix it gives there: containers simulated for real.

Each case runs in a forked child with a private mount namespace, where the runtime's marks
are mounted the way the runtime mounts them (a bind on /run/.containerenv, /etc/hostname
from the engine's storage, over-mounts in /proc); the host itself is never changed. The real
runtimes are exercised by tests/test_containers.py.
"""

from __future__ import annotations

import json
import os
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from buildjail._linux import container
from buildjail._linux import kernel as k

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root (CI runs as root)"),
]


def _in_child(setup: Callable[[], None], probe: Callable[[], Any]) -> Any:
    """Fork; the child sets up a private mount namespace with *setup*, then reports *probe*."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            container.detect.cache_clear()  # this process's view is about to change
            k.unshare(k.CLONE_NEWNS)
            k.make_mounts_private()
            setup()
            data = json.dumps({"value": probe()})
        except BaseException:
            data = json.dumps({"error": traceback.format_exc()})
        os.write(write_fd, data.encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as stream:
        raw = stream.read()
    os.waitpid(pid, 0)
    message = json.loads(raw)
    assert "error" not in message, message["error"]
    return message["value"]


def _detected() -> dict[str, Any] | None:
    found = container.detect.__wrapped__()  # uncached: this child's view
    return None if found is None else {"runtime": found.runtime, "text": found.describe()}


def _private_run() -> None:
    """A tmpfs over this child's /run that keeps the host's /run/buildjail (the id leases)."""
    os.makedirs("/run/buildjail", mode=0o700, exist_ok=True)
    leases = k.open_tree_clone("/run/buildjail")
    k.mount("tmpfs", "/run", "tmpfs", 0, "size=1m")
    os.mkdir("/run/buildjail", 0o700)
    k.move_mount(leases, "/run/buildjail")
    os.close(leases)
    Path("/run/.containerenv").touch()


def _bind_file(target: str, source_dir: str) -> None:
    """Bind a new file from *source_dir* onto *target*, as a runtime binds its files."""
    os.makedirs(source_dir, exist_ok=True)
    source = os.path.join(source_dir, os.path.basename(target))
    Path(source).write_text("bait\n")
    k.mount(source, target, None, k.MS_BIND)


@pytest.fixture
def storage() -> Any:
    """A directory standing in for an engine's storage (/var/lib/<engine>/containers/<id>)."""
    base = Path("/var/lib/buildjail-tests")
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as path:
        yield path


def test_podman_is_recognised_by_its_bound_containerenv(storage: str) -> None:
    def setup() -> None:
        _private_run()
        _bind_file("/run/.containerenv", f"{storage}/overlay-containers/abc/userdata")

    found = _in_child(setup, _detected)
    assert found is not None and found["runtime"] == "podman", found
    assert "root is the host's root" in found["text"], found


def test_a_containerenv_nobody_mounted_is_not_podman() -> None:
    def setup() -> None:
        _private_run()  # a plain /run/.containerenv: podman always binds its own

    found = _in_child(setup, _detected)
    assert found is None or found["runtime"] != "podman", found


@pytest.mark.skipif(not os.path.exists("/.dockerenv"),
                    reason="needs a /.dockerenv on the host (this VM has a stale one)")
def test_docker_needs_its_mounts_beside_a_dockerenv(storage: str) -> None:
    """This host was made from a Docker image: /.dockerenv alone must not count."""
    assert _in_child(lambda: None, _detected) is None
    found = _in_child(lambda: _bind_file("/etc/hostname", f"{storage}/containers/0123"),
                      _detected)
    assert found is not None and found["runtime"] == "docker", found


def test_kubernetes_is_recognised_by_its_service_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    found = _in_child(lambda: None, _detected)
    assert found is not None and found["runtime"] == "kubernetes", found


def test_roots_outside_id_comes_from_the_uid_map() -> None:
    """A user namespace mapping 0 -> 4242, written from outside as rootless podman's is."""
    read_fd, write_fd = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os.close(go_w)
        k.unshare(k.CLONE_NEWUSER)
        os.write(write_fd, b"r")
        os.read(go_r, 1)
        os.write(write_fd, str(container._root_outside()).encode())
        os._exit(0)
    os.close(write_fd)
    os.close(go_r)
    assert os.read(read_fd, 1) == b"r"
    k.write_id_maps(pid, "0 4242 1\n", "0 4242 1\n")
    os.write(go_w, b"g")
    os.close(go_w)
    value = os.read(read_fd, 64)
    os.waitpid(pid, 0)
    assert value == b"4242"


@pytest.mark.parametrize(("runtime", "option"), [
    ("podman", "--security-opt unmask=/proc/*"),
    ("docker", "--security-opt systempaths=unconfined"),
    ("kubernetes", "procMount: Unmasked"),
])
def test_each_runtime_gets_its_own_unmask_option(runtime: str, option: str) -> None:
    fix = container.unmask_proc_fix(container.Container(runtime, "test"))
    assert option in fix, fix


def test_dockers_namespace_fix_adds_an_unmasked_proc_only_where_proc_is_masked() -> None:
    docker = container.Container("docker", "test")

    def mask_proc() -> None:
        k.mount("/dev/null", "/proc/keys", None, k.MS_BIND)

    unmasked = _in_child(lambda: None, lambda: container.namespaces_fix(docker))
    masked = _in_child(mask_proc, lambda: container.namespaces_fix(docker))
    assert "--security-opt seccomp=unconfined" in unmasked
    assert "systempaths" not in unmasked
    assert "--security-opt seccomp=unconfined --security-opt systempaths=unconfined" in masked
    assert container.namespaces_fix(container.Container("podman", "test")) is None


def _drop_cap_sys_admin() -> None:
    """Become root without CAP_SYS_ADMIN, as in a default container."""
    import ctypes

    k.prctl(k.PR_CAPBSET_DROP, k.CAP_SYS_ADMIN)
    caps = k.effective_capabilities() & ~(1 << k.CAP_SYS_ADMIN)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)(caps & 0xFFFFFFFF, caps & 0xFFFFFFFF, 0,
                                 caps >> 32, caps >> 32, 0)
    assert ctypes.CDLL(None, use_errno=True).capset(header, data) == 0


def _run_full() -> dict[str, str]:
    from buildjail import Sandbox, SandboxSetupError

    try:
        # native's own behaviour there; auto's choice is a test of its own (and caches)
        result = Sandbox("full", backend="native").run(["/bin/true"], cwd="/")
    except SandboxSetupError as error:
        return {"reason": error.reason, "fix": error.fix}
    return {"exit": str(result.exit_code), "layers": " ".join(result.layers)}


def test_root_of_a_podman_container_starts_in_a_user_namespace(storage: str) -> None:
    """Root without CAP_SYS_ADMIN: the sandbox works, through a user namespace."""

    def setup() -> None:
        _private_run()
        _bind_file("/run/.containerenv", f"{storage}/overlay-containers/abc/userdata")
        _drop_cap_sys_admin()

    outcome = _in_child(setup, _run_full)
    assert outcome.get("exit") == "0", outcome
    assert "namespace:user" in outcome["layers"] and "identity:ephemeral" in outcome["layers"]


def test_a_masked_proc_in_podman_fails_closed_with_podmans_fix(storage: str) -> None:
    def setup() -> None:
        _private_run()
        _bind_file("/run/.containerenv", f"{storage}/overlay-containers/abc/userdata")
        k.mount("/dev/null", "/proc/keys", None, k.MS_BIND)  # as podman masks it
        _drop_cap_sys_admin()

    outcome = _in_child(setup, _run_full)
    assert "cannot mount a fresh /proc" in outcome.get("reason", ""), outcome
    assert "Podman masks parts of /proc" in outcome["reason"], outcome
    assert "/proc/keys" in outcome["reason"]
    assert outcome["fix"].startswith("run the container with --security-opt unmask=/proc/*")


def test_auto_takes_the_landlock_backend_where_podman_masks_proc(storage: str) -> None:
    """Where /proc cannot be mounted afresh, ``auto`` does not fail: it chooses landlock,
    which needs no fresh /proc, and says why."""
    from buildjail.backends import _namespaces_refused, choose_backend

    def setup() -> None:
        _private_run()
        _bind_file("/run/.containerenv", f"{storage}/overlay-containers/abc/userdata")
        k.mount("/dev/null", "/proc/keys", None, k.MS_BIND)  # as podman masks it
        _drop_cap_sys_admin()
        _namespaces_refused.cache_clear()  # the parent's answer was about the host

    name, why = _in_child(setup, choose_backend)
    assert name == "landlock", why
    assert "namespaces are refused here" in why and "mount proc" in why, why


def _refuse_sethostname() -> None:
    """A seccomp filter refusing sethostname alone (as Podman's default profile does)."""
    import errno
    import struct

    from buildjail._linux import seccomp

    number = {"x86_64": 170, "aarch64": 161}[os.uname().machine]
    program = b"".join(struct.pack("<HBBI", *insn) for insn in (
        (0x20, 0, 0, 0),  # A = seccomp_data.nr
        (0x15, 0, 1, number),  # sethostname?
        (0x06, 0, 0, 0x00050000 | errno.EPERM),  # refuse it
        (0x06, 0, 0, 0x7FFF0000),  # allow everything else
    ))
    k.set_no_new_privs()
    seccomp.install_filter(program)


def test_a_container_sharing_the_hosts_uts_keeps_no_hostname(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--uts=host or hostNetwork: the container's name is the host's, so a refused
    sethostname fails closed instead of being reported as a degraded layer."""
    from buildjail._linux import hostname

    assert hostname.in_the_hosts_uts_namespace(), "this test runs in the host's UTS namespace"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")  # a pod's mark

    def probe() -> dict[str, str]:
        hostname.sethostname_refused.cache_clear()
        return _run_full()

    outcome = _in_child(_refuse_sethostname, probe)
    assert "shares the host's" in outcome.get("reason", ""), outcome
    assert "hostNetwork" in outcome["fix"], outcome


def test_a_container_with_its_own_uts_keeps_its_hostname_degraded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: in a UTS namespace of its own the same refusal is a degraded layer."""
    from buildjail._linux import hostname

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")

    def setup() -> None:
        k.unshare(k.CLONE_NEWUTS)
        _refuse_sethostname()

    def probe() -> dict[str, str]:
        hostname.sethostname_refused.cache_clear()
        return _run_full()

    outcome = _in_child(setup, probe)
    assert outcome.get("exit") == "0", outcome
    assert "hostname:degraded" in outcome["layers"].split(), outcome
