"""The audit's terminal probe attacks a pty of the audit's own, never the user's terminal."""

from __future__ import annotations

import importlib.util
import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from buildjail.audit.runner import PROBE_PROJECT, _verdict
from buildjail.audit.terminal import MARKER, AuditTerminal, describe_received
from test_audit import _context

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")

PROFILES = ("none", "network", "full")
AUDIT = [sys.executable, "-m", "buildjail", "audit", "--json",
         *(arg for profile in PROFILES for arg in ("--profile", profile))]


def _read_all(master: int) -> bytes:
    """Everything the terminal showed until its other side closed."""
    data = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed and drained
            return data
        if not chunk:
            return data
        data += chunk


def _on_a_terminal(argv: list[str], out: Path) -> tuple[int, bytes]:
    """Run *argv* with a pty as its controlling terminal, stdin and stderr; stdout to *out*."""
    pid, master = pty.fork()
    if pid == 0:  # the child: exec at once
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.execv(argv[0], argv)
    shown = _read_all(master)
    _, status = os.waitpid(pid, 0)
    os.close(master)
    return os.waitstatus_to_exitcode(status), shown


def _tiocsti(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["profile"]: f for f in data["findings"] if f["vector"] == "tiocsti"}


def test_an_audit_on_a_terminal_injects_nothing_into_it(tmp_path: Path) -> None:
    """The attack: the audit runs on a real terminal under every profile. Nothing the probe
    injects reaches it, and the verdicts are those of a run without a terminal. The control:
    under ``none`` and ``network`` the probe does inject into the pty the audit gave it,
    seen from that pty's master side."""
    code, shown = _on_a_terminal(AUDIT, tmp_path / "tty.json")
    assert code == 0, shown[-3000:]
    assert MARKER not in shown, shown[-3000:]
    on_tty = _tiocsti(json.loads((tmp_path / "tty.json").read_text()))
    plain = subprocess.run(AUDIT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=600, check=False, cwd="/", start_new_session=True)
    assert plain.returncode == 0, plain.stderr[-3000:]
    without = _tiocsti(json.loads(plain.stdout))
    assert {p: f["verdict"] for p, f in on_tty.items()} == {
        p: f["verdict"] for p, f in without.items()}
    for findings in (on_tty, without):
        for profile in ("none", "network"):  # the control: the audit's own pty is reached
            assert findings[profile]["verdict"] == "vulnerable", findings[profile]
            assert "the audit's terminal received the injected" in findings[profile]["evidence"]
        assert findings["full"]["verdict"] == "blocked", findings["full"]


def _probes() -> ModuleType:
    spec = importlib.util.spec_from_file_location("probes", PROBE_PROJECT / "probes.py")
    assert spec is not None and spec.loader is not None
    probes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probes)
    return probes


PROBE_ON_TERMINAL = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import probes
try:
    print(json.dumps(probes.probe_tiocsti({"terminal": json.loads(sys.argv[2])})))
except probes.NotApplicableError as exc:
    print(json.dumps(["not_applicable", str(exc)]))
"""


@pytest.mark.parametrize("signed", [True, False])
def test_the_probe_injects_only_into_the_terminal_it_was_given(tmp_path: Path,
                                                               signed: bool) -> None:
    """No sandbox: the probe's controlling terminal is a pty. With the audit's signature
    on its window (the control) the marker arrives on the master; without it (a user's
    terminal) the probe leaves it alone."""
    assert _probes().TERMINAL_MARKER == MARKER
    with AuditTerminal() as terminal:
        signature = terminal.signature if signed else [*terminal.signature[:2], 1, 2]
        out = tmp_path / "out.json"
        script = (f"import os, fcntl, termios; os.setsid(); fcntl.ioctl({terminal.slave}, "
                  f"termios.TIOCSCTTY, 0); os.dup2({terminal.slave}, 0)\n"
                  + PROBE_ON_TERMINAL)
        with out.open("w") as stdout:
            proc = subprocess.run(
                [sys.executable, "-c", script, str(PROBE_PROJECT), json.dumps(signature)],
                pass_fds=(terminal.slave,), stdout=stdout, stderr=subprocess.PIPE,
                text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        outcome, detail = json.loads(out.read_text())
        received = terminal.received()
    if signed:
        assert outcome == "succeeded", detail
        assert MARKER in received, received
    else:
        assert outcome == "not_applicable", detail
        assert "not the audit's, left alone" in detail
        assert MARKER not in received, received


@pytest.mark.parametrize(("outcome", "received", "verdict"), [
    ("succeeded", MARKER, "vulnerable"),
    ("failed", MARKER, "vulnerable"),  # the outside decides
    ("succeeded", b"", "blocked"),
    ("failed", b"", "blocked"),
])
def test_the_terminal_verdict_is_what_the_master_side_read(outcome: str, received: bytes,
                                                           verdict: str) -> None:
    probe = {"vector": "tiocsti", "outcome": outcome, "detail": "TIOCSTI on /dev/tty"}
    outside = describe_received(received)
    assert _verdict("tiocsti", probe, outside, _context())[0] == verdict


def test_a_terminal_probe_that_did_not_run_is_an_error_not_blocked() -> None:
    outside = describe_received(b"")
    assert _verdict("tiocsti", None, outside, _context())[0] == "error"
