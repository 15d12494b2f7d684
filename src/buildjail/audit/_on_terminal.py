"""The terminal probe's session: run by ``terminal.run_on_terminal`` as its own process.

``python -m buildjail.audit._on_terminal SPEC`` leads a new session (the auditor started
it so) whose stdin is the audit's pty slave. It makes that pty its controlling terminal —
the place of the user's terminal for a build started from a shell — calls the probe
project's ``tiocsti`` hook in the sandbox, and prints one JSON line: ``errors`` and
``setup_error``.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import termios
from collections.abc import Callable

from .runner import SELECT_SETTING, TERMINAL_VECTORS, audit_policy, call_probes, probe_caller
from .terminal import TerminalSpec


def main(spec_path: str) -> int:
    """Take the pty on stdin as the controlling terminal, run the probe, print the report."""
    with open(spec_path) as stream:
        spec = TerminalSpec(**json.load(stream))
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # the terminal stays the session's; nothing of ours reads it
    os.close(null)
    runner, caller = probe_caller(spec.project, spec.python, audit_policy(spec.profile),
                                  backend=spec.backend, log=spec.log, env=spec.env)
    calls: list[tuple[str, Callable[[], object]]] = [
        ("the terminal probe", lambda: caller.get_requires_for_build_wheel(
            config_settings={SELECT_SETTING: list(TERMINAL_VECTORS)}))]
    errors: list[str] = []
    run = call_probes(calls, runner, spec.profile, spec.backend, errors)
    print(json.dumps({"errors": errors, "setup_error": run.setup_error}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
