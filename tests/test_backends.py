"""Choosing a backend: the rule behind ``--backend auto``, and unknown names."""

from __future__ import annotations

import os

import pytest

from buildjail import PolicyError, Sandbox, backends
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
