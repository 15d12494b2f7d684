"""Tests for ``buildjail doctor``: real probes on this host, and hosts simulated for real.

The simulated hosts are built in a forked child with the kernel's own means
(a user namespace whose ``user.max_user_namespaces`` is 0, a seccomp filter
that forbids ``unshare``, a masked ``/proc``, a hidden cgroup filesystem);
the child runs :func:`buildjail.doctor.check_host` there and sends the JSON
report back through a pipe.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from buildjail._linux import diagnosis, seccomp
from buildjail._linux import kernel as k
from buildjail.doctor import LAYERS, check_host
from buildjail.doctor.diagnose import diagnose
from conftest import hide_bubblewrap, require_backend

SRC = Path(__file__).resolve().parent.parent / "src"
NAMESPACE_LAYERS = [layer for layer in LAYERS if layer.startswith("namespace:")]

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the doctor tests run as root (CI does)"),
]

Report = dict[str, Any]


def _doctor(*args: str, cwd: str = "/") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-m", "buildjail", "doctor", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=60,
                          check=False)


def _check(report: Report, layer: str, identity: str) -> dict[str, Any]:
    for check in report["checks"]:
        if check["layer"] == layer and check["identity"] == identity:
            return check  # type: ignore[no-any-return]
    raise AssertionError(f"no {layer} check for {identity}")


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _report_in_child(setup: Callable[[], None],
                     parent_step: Callable[[int], None] | None = None,
                     then: Callable[[], None] | None = None) -> Report:
    """Fork; the child runs *setup*, the parent *parent_step(pid)*, the child *then*.

    The child then runs the doctor's checks and sends back the report as JSON.
    """
    report_r, report_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(report_r)
        os.close(go_w)
        try:
            setup()
            os.write(report_w, b"R")
            os.read(go_r, 1)
            if then is not None:
                then()
            data = json.dumps(check_host().to_dict())
        except BaseException:
            data = json.dumps({"child_error": traceback.format_exc()})
        os.write(report_w, data.encode())
        os._exit(0)
    os.close(report_w)
    os.close(go_r)
    first = os.read(report_r, 1)
    if first == b"R" and parent_step is not None:
        parent_step(pid)
    os.write(go_w, b"G")
    os.close(go_w)
    raw = first.lstrip(b"R") + _read_all(report_r)
    os.waitpid(pid, 0)
    report: Report = json.loads(raw)
    assert "child_error" not in report, report.get("child_error")
    return report


def _private_mount_namespace() -> None:
    k.unshare(k.CLONE_NEWNS)
    k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)


# --- this host ------------------------------------------------------------------------


def test_json_has_every_layer_for_both_identities_all_ok() -> None:
    start = time.monotonic()
    proc = _doctor("--json")
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    host = report["host"]
    assert host["euid"] == 0
    assert host["kernel"] == os.uname().release
    assert host["cgroup_version"] in ("v1", "v2", "hybrid", "none")
    for key in ("arch", "seccomp_mode", "max_user_namespaces", "container",
                "apparmor_restrict_unprivileged_userns"):
        assert key in host
    for identity in ("root", "nonroot"):
        for layer in LAYERS:
            check = _check(report, layer, identity)
            assert check["checked"], check
            if check["required"]:
                assert check["ok"], check
    assert _check(report, "namespace:user", "nonroot")["ok"]
    assert _check(report, "sandbox:full", "root")["ok"]
    assert _check(report, "sandbox:full", "nonroot")["ok"]
    require_backend("bwrap")
    assert report["backends"] == {"native": {"root": True, "nonroot": True},
                                  "bwrap": {"root": True, "nonroot": True},
                                  "landlock": {"root": True, "nonroot": True}}
    for identity in ("root", "nonroot"):  # what landlock cannot give is named, as degraded
        landlock = _check(report, "landlock:sandbox:full", identity)
        assert landlock["ok"] and landlock["degraded"], landlock
        assert "command lines stay visible" in landlock["reason"], landlock
        assert _check(report, "landlock:abi", identity)["detail"].startswith("ABI ")
    assert _check(report, "bwrap:installed", "root")["detail"].startswith("/usr/bin/bwrap 0.")
    assert report["auto"]["backend"] == "native"  # Linux >= 5.12 here
    assert "mount call" in report["auto"]["reason"]
    assert elapsed < 5, f"the doctor took {elapsed:.1f} s"


def test_table_shows_both_backends_and_the_auto_rule() -> None:
    proc = _doctor()
    assert "full profile, native backend: as root: yes; as non-root: yes" in proc.stdout
    assert "full profile, bwrap backend: as root: " in proc.stdout
    assert "--backend auto uses native: Linux " in proc.stdout


def test_missing_bubblewrap_is_named_with_its_fix() -> None:
    """bwrap is looked up by absolute path only: hide it there and the check says so."""
    report = _report_in_child(hide_bubblewrap)
    check = _check(report, "bwrap:installed", "root")
    assert not check["ok"]
    assert "not installed" in check["reason"] and "apt-get install bubblewrap" in check["fix"]
    assert report["backends"]["bwrap"] == {"root": False, "nonroot": False}
    assert report["backends"]["native"] == {"root": True, "nonroot": True}


def test_nonroot_cgroup_limits_fall_back_to_rlimits_and_monitor() -> None:
    report = json.loads(_doctor("--json").stdout)
    check = _check(report, "limits:cgroup", "nonroot")
    assert not check["ok"]
    assert not check["required"]
    assert "rlimits" in check["reason"]
    assert "monitor" in check["reason"]


def test_table_mentions_every_layer() -> None:
    proc = _doctor()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any("root" in line and "non-root" in line for line in lines)
    for layer in LAYERS:
        row = next((line for line in lines if line.split()[:1] == [layer]), None)
        assert row is not None, f"{layer} missing from the table:\n{proc.stdout}"
    assert "full profile" in proc.stdout


def test_as_nonroot_the_root_column_is_not_checked(world_src: str) -> None:
    uid = 4242
    proc = subprocess.run(
        ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
         "/usr/bin/python3.11", "-Es", "-m", "buildjail", "doctor", "--json"],
        capture_output=True, text=True, cwd=world_src, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["host"]["euid"] == uid
    assert report["backends"]["native"] == {"root": None, "nonroot": True}
    for layer in LAYERS:
        root = _check(report, layer, "root")
        assert not root["checked"]
        assert "not checked" in root["detail"]
    assert _check(report, "sandbox:full", "nonroot")["ok"]


DOCTOR_MOUNT_POINTS = frozenset(f"{top}{below}" for top in ("/tmp", "/run", "/mnt", "/dev")
                                for below in ("", "/source", "/target"))
"""Where the doctor's probes mount (in their own mount namespaces): its scratch directories."""


def _doctor_mounts() -> list[str]:
    """The mount table's lines for the doctor's mount points (only those: the rest of a
    shared host mounts and unmounts at any time)."""
    with open("/proc/self/mountinfo") as stream:
        return sorted(line for line in stream if line.split()[4] in DOCTOR_MOUNT_POINTS)


def _doctor_cgroups(pids: set[int]) -> list[str]:
    """The cgroups a doctor probe of one of *pids* names for itself."""
    names = {f"buildjail-doctor-{pid}" for pid in pids}
    return sorted(os.path.join(top, name) for top, dirs, _ in os.walk("/sys/fs/cgroup")
                  for name in dirs if name in names)


def test_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    forked = {os.getpid()}  # the probes' children: each names its cgroup for its pid
    fork = os.fork

    def recording_fork() -> int:
        pid = fork()
        if pid:
            forked.add(pid)
        return pid

    monkeypatch.setattr(os, "fork", recording_fork)
    mounts = _doctor_mounts()
    report = check_host()
    assert report.can_enforce("root")
    assert len(forked) > 1
    assert _doctor_mounts() == mounts
    assert _doctor_cgroups(forked) == []
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


# --- simulated hosts ----------------------------------------------------------------------


def _map_ids(pid: int) -> None:
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as stream:
            stream.write("0 0 65536\n")


def test_no_user_namespaces_reports_the_sysctl() -> None:
    """In a user namespace of its own (ids 0-65535 mapped), root sets the limit to 0."""

    def disable_user_namespaces() -> None:
        with open("/proc/self/uid_map") as stream:
            assert stream.read().split() == ["0", "0", "65536"]
        with open("/proc/sys/user/max_user_namespaces", "w") as stream:
            stream.write("0")

    report = _report_in_child(lambda: k.unshare(k.CLONE_NEWUSER), _map_ids,
                              disable_user_namespaces)
    assert report["host"]["max_user_namespaces"] == 0
    user = _check(report, "namespace:user", "nonroot")
    assert not user["ok"]
    assert "max_user_namespaces" in user["reason"]
    assert "max_user_namespaces" in user["fix"]
    for layer in NAMESPACE_LAYERS:  # the non-root path needs the user namespace first
        assert not _check(report, layer, "nonroot")["ok"]
    assert not _check(report, "sandbox:full", "nonroot")["ok"]
    assert report["backends"]["native"]["nonroot"] is False
    assert _check(report, "namespace:mount", "root")["ok"]  # root needs no user namespace


def test_seccomp_forbidding_unshare_is_named() -> None:
    """A Docker-like seccomp filter (buildjail's own) forbids unshare for this process."""

    def setup() -> None:
        k.set_no_new_privs()
        seccomp.install_filter(seccomp.build_filter())

    report = _report_in_child(setup)
    assert report["host"]["seccomp_mode"] == 2
    for identity in ("root", "nonroot"):
        for layer in NAMESPACE_LAYERS:
            check = _check(report, layer, identity)
            assert not check["ok"], check
            assert "seccomp" in check["reason"], check
            assert "seccomp" in check["fix"], check
        assert not _check(report, "sandbox:full", identity)["ok"]
    assert _check(report, "no_new_privs", "root")["ok"]
    assert report["backends"]["native"] == {"root": False, "nonroot": False}


def test_masked_proc_blocks_a_fresh_proc_for_nonroot() -> None:
    """Like a container's masked paths: a file over-mounted in /proc, locked in a user ns."""
    masked = "/proc/kcore" if os.path.exists("/proc/kcore") else "/proc/uptime"

    def setup() -> None:
        _private_mount_namespace()
        k.mount("/dev/null", masked, None, k.MS_BIND)

    report = _report_in_child(setup)
    assert masked in report["host"]["proc_overmounts"]
    nonroot = _check(report, "filesystem:proc", "nonroot")
    assert not nonroot["ok"]
    assert "/proc" in nonroot["reason"]
    assert "masked" in nonroot["reason"]
    assert "unmask" in nonroot["fix"]
    assert _check(report, "filesystem:proc", "root")["ok"]  # real root may mount it anyway


def test_no_cgroup_filesystem_falls_back_to_rlimits_and_monitor() -> None:
    def setup() -> None:
        _private_mount_namespace()
        k.mount("tmpfs", "/sys/fs/cgroup", "tmpfs", 0, "size=16k")

    report = _report_in_child(setup)
    assert report["host"]["cgroup_version"] == "none"
    check = _check(report, "limits:cgroup", "root")
    assert not check["ok"]
    assert not check["required"]
    assert "rlimits" in check["reason"]
    assert "monitor" in check["reason"]
    assert _check(report, "sandbox:full", "root")["ok"]  # limits fall back, the run works
    assert report["backends"]["native"]["root"] is True


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32))


def _drop_cap_sys_admin() -> None:
    """Lose CAP_SYS_ADMIN (bit 21) for good, as root in a default Docker container."""
    cap_sys_admin = 21
    k.prctl(k.PR_CAPBSET_DROP, cap_sys_admin)
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()
    assert libc.capget(ctypes.byref(header), data) == 0
    data[0].effective &= ~(1 << cap_sys_admin)
    data[0].permitted &= ~(1 << cap_sys_admin)
    assert libc.capset(ctypes.byref(header), data) == 0


def test_root_without_cap_sys_admin_starts_in_a_user_namespace() -> None:
    """Root of a default container: every layer through a user namespace mapping every id."""
    report = _report_in_child(_drop_cap_sys_admin)
    user = _check(report, "namespace:user", "root")
    assert user["required"], user
    assert user["ok"] and "every id" in user["detail"], user
    for layer in NAMESPACE_LAYERS:
        assert _check(report, layer, "root")["ok"], _check(report, layer, "root")
    assert _check(report, "identity", "root")["ok"]
    assert _check(report, "sandbox:full", "root")["ok"]
    assert _check(report, "sandbox:full", "nonroot")["ok"]
    assert report["backends"]["native"] == {"root": True, "nonroot": True}


def test_root_without_cap_sys_admin_and_no_user_namespaces_names_both() -> None:
    """The control: without user namespaces too, root's namespaces fail, saying why."""

    def setup() -> None:
        k.unshare(k.CLONE_NEWUSER)

    def then() -> None:
        with open("/proc/sys/user/max_user_namespaces", "w") as stream:
            stream.write("0")
        _drop_cap_sys_admin()

    report = _report_in_child(setup, _map_ids, then)
    for layer in NAMESPACE_LAYERS:
        check = _check(report, layer, "root")
        assert not check["ok"], check
        assert "max_user_namespaces" in check["reason"], check
    assert report["backends"]["native"]["root"] is False


@pytest.mark.parametrize(("settings", "code", "cause", "fix"), [
    ({"max_user_namespaces": "0"}, errno.ENOSPC, "is 0", "max_user_namespaces=15000 (it is 0"),
    ({"max_user_namespaces": "9"}, errno.ENOSPC, "limit is reached", "raise the limit"),
    ({"apparmor_restrict_unprivileged_userns": "1"}, errno.EPERM, "AppArmor", "AppArmor"),
    ({"unprivileged_userns_clone": "0"}, errno.EPERM, "userns_clone is 0", "userns_clone=1"),
    ({}, errno.EINVAL, "CONFIG_USER_NS", "enable unprivileged user namespaces"),
])
def test_doctor_and_set_up_errors_give_one_user_namespace_fix(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, str], code: int, cause: str, fix: str,
) -> None:
    """The doctor's reason and fix, and a failed sandbox's fix, come from userns_refusal."""
    files = {f"/proc/sys/{'user' if 'max' in key else 'kernel'}/{key}": value
             for key, value in settings.items()}
    monkeypatch.setattr(diagnosis, "read_setting", files.get)
    monkeypatch.setattr(diagnosis, "seccomp_mode", lambda: 0)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reason, doctor_fix = diagnose("namespace:user", "nonroot",
                                  {"stage": "unshare user", "errno": code, "error": ""}, "v2")
    assert cause in reason, reason
    assert fix in (doctor_fix or ""), doctor_fix
    failure = diagnosis.explain("unshare user", OSError(code, os.strerror(code)))
    assert failure.reason.startswith("cannot create namespaces"), failure.reason
    assert failure.fix == doctor_fix
