"""Choosing a backend: the rule behind ``--backend auto``, and unknown names."""

from __future__ import annotations

import os

import pytest

from buildjail import PolicyError, Sandbox, backends
from buildjail._linux import procfs
from buildjail._linux.userns import namespaces_refused
from buildjail.backends.bwrap import BwrapBackend, find_bwrap
from buildjail.backends.native import NativeBackend
from conftest import require_backend


def test_auto_picks_native_on_this_kernel() -> None:
    """Linux 5.12+ has open_tree, move_mount and mount_setattr: native needs nothing else."""
    name, reason = backends.choose_backend()
    assert backends._kernel_version() >= backends.NATIVE_KERNEL, os.uname().release
    assert name == "native" and "mount call" in reason
    assert isinstance(Sandbox("full").backend, NativeBackend)


def test_auto_falls_back_to_bwrap_on_an_older_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The other branch of the rule, on a kernel this host cannot be: pretend it is 5.10."""
    require_backend("bwrap")
    monkeypatch.setattr(backends, "_kernel_version", lambda: (5, 10))
    name, reason = backends.choose_backend()
    assert name == "bwrap", reason
    assert f"{find_bwrap()} is bubblewrap 0." in reason
    assert isinstance(Sandbox("full").backend, BwrapBackend)


def test_auto_without_bubblewrap_on_an_older_kernel_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "_kernel_version", lambda: (5, 10))
    monkeypatch.setattr("buildjail.backends.bwrap.CANDIDATES", ("/nonexistent/bwrap",))
    name, reason = backends.choose_backend()
    assert name == "native"
    assert "no bubblewrap 0.8+ is installed" in reason


def test_an_unknown_backend_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="choose native, bwrap, landlock or auto"):
        Sandbox("full", backend="firejail")


def test_the_unconfined_root_of_the_host_is_not_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` reads /proc instead of forking the probe where the answer is known: root of
    the host, unconfined. The probe agrees with it here."""
    if not procfs.unconfined_host_root():
        pytest.skip("not the unconfined root of the host: the probe runs")
    assert namespaces_refused() is None
    backends._namespaces_refused.cache_clear()

    def no_fork() -> int:
        raise AssertionError("forked")

    monkeypatch.setattr(os, "fork", no_fork)
    try:
        assert backends.choose_backend()[0] == "native"
    finally:
        backends._namespaces_refused.cache_clear()


@pytest.mark.parametrize("setting", ["Seccomp:\t2", "CapEff:\t0000000000000000", "max_net 0",
                                     "no status", "a label", "non-root"])
def test_anything_short_of_unconfined_root_is_probed(monkeypatch: pytest.MonkeyPatch,
                                                      setting: str) -> None:
    """A seccomp filter, no CAP_SYS_ADMIN, a namespace count of 0, an unreadable status, an
    LSM label, not root: each sends ``auto`` to the probe (the fail-closed path)."""
    status = "CapEff:\t000001ffffffffff\nSeccomp:\t0\n"
    settings: dict[str, str | None] = {"/proc/self/status": status}
    if setting.startswith(("Seccomp", "CapEff")):
        settings["/proc/self/status"] = status + setting  # the later line wins
    elif setting == "no status":
        settings["/proc/self/status"] = None
    elif setting == "max_net 0":
        settings["/proc/sys/user/max_net_namespaces"] = "0"
    monkeypatch.setattr(procfs, "read_setting", lambda path: settings.get(path, "1"))
    monkeypatch.setattr(procfs, "_lsm_label", lambda: "system_u:system_r:container_t:s0"
                        if setting == "a label" else None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000 if setting == "non-root" else 0)
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, **kwargs: os.stat_result(
        (0, procfs.INITIAL_USER_NAMESPACE, 0, 0, 0, 0, 0, 0, 0, 0))
        if path == "/proc/self/ns/user" else real_stat(path, **kwargs))
    assert procfs.unconfined_host_root() is False
    settings.clear()
    settings["/proc/self/status"], setting = status, ""
    assert procfs.unconfined_host_root() is True  # the control: the same host, unconfined
