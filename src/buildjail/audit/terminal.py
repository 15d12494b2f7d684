"""The terminal the ``tiocsti`` probe attacks: a pseudo-terminal the audit makes, never the user's.

The auditor opens a pty pair, gives its window a random signature, and runs the terminal
probe's hook from a helper process (``_on_terminal``) that leads a new session whose
controlling terminal is the pty's slave — where the user's terminal would be for a build
started from a shell. The probe injects only into a terminal carrying the signature; the
verdict comes from outside: the master side reads the echo of whatever reached the input
queue. The user's terminal is never in that session, so nothing reaches it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import secrets
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

MARKER = b"BUILDJAIL-TIOCSTI"
"""What the probe injects (its copy: ``probes.TERMINAL_MARKER``)."""
_READ_LIMIT = 1 << 16
_HELPER_TIMEOUT = 300.0


@dataclasses.dataclass(frozen=True)
class TerminalSpec:
    """What the helper needs to call the terminal probe's hook in the sandbox."""

    project: str
    python: str
    env: dict[str, str]
    profile: str
    backend: str
    log: str


class AuditTerminal:
    """A pty pair with a signed window; ``received()`` reads what arrived on its master."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.signature = [24, 80, 1000 + secrets.randbelow(60000), 1000 + secrets.randbelow(60000)]
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", *self.signature))
        attributes = termios.tcgetattr(self.slave)
        attributes[3] |= termios.ECHO  # what is injected is echoed to the master
        termios.tcsetattr(self.slave, termios.TCSANOW, attributes)
        os.set_blocking(self.master, False)

    def received(self) -> bytes:
        """Everything the master side can read now (bounded)."""
        data = b""
        while len(data) < _READ_LIMIT:
            try:
                chunk = os.read(self.master, _READ_LIMIT - len(data))
            except (BlockingIOError, OSError):  # EAGAIN: drained; EIO: slave side gone
                break
            if not chunk:
                break
            data += chunk
        return data

    def close(self) -> None:
        """Close both sides."""
        for fd in (self.master, self.slave):
            os.close(fd)

    def __enter__(self) -> AuditTerminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe_received(data: bytes) -> str:
    """The outside's evidence: whether the probe's marker reached the audit's terminal."""
    if MARKER in data:
        return f"the audit's terminal received the injected {MARKER.decode()!r}"
    return f"the audit's terminal received {len(data)} byte(s), not the probe's marker"


def run_on_terminal(spec: TerminalSpec, terminal: AuditTerminal, workdir: Path) -> dict[str, Any]:
    """Run the terminal probe's hook from a session whose terminal is *terminal*'s slave.

    Returns the helper's report (``errors``, ``setup_error``); a helper that crashed or
    printed no report is an error there, so the probe counts as not run.
    """
    spec_file = workdir / "terminal-spec.json"
    spec_file.write_text(json.dumps(dataclasses.asdict(spec)))
    spec_file.chmod(0o600)
    helper = subprocess.Popen(
        [sys.executable, "-m", "buildjail.audit._on_terminal", str(spec_file)],
        stdin=terminal.slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, cwd=str(workdir))
    try:
        out, err = helper.communicate(timeout=_HELPER_TIMEOUT)
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait()
    return _helper_report(helper.returncode, out, err)


def _helper_report(returncode: int, out: bytes, err: bytes) -> dict[str, Any]:
    """The helper's JSON report, or an error naming how it ended."""
    try:
        report = json.loads(out.decode(errors="replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        report = None
    if returncode == 0 and isinstance(report, dict):
        return report
    tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    return {"errors": [f"the terminal probe's helper exited {returncode}: {tail[0]}"],
            "setup_error": None}
