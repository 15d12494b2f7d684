"""The forked supervisor and init import nothing (docs/architecture.md, "What must be imported
before a fork"): what they run is imported at module level of ``_supervisor`` and
``_sandbox_init``, before the fork, so that start-up work moved out of the caller's imports
(issue 15) cannot have moved an import into a child."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import require_backend

WATCHED_RUNS = """
import mmap, os, sys
from buildjail import Policy, Sandbox

CALLER = os.getpid()
SEEN = mmap.mmap(-1, 1 << 16)  # anonymous and shared: every fork writes into the same pages


class Watch:
    def find_spec(self, name, path=None, target=None):
        if os.getpid() != CALLER:  # a module not yet imported, asked for in a forked child
            end = SEEN.find(b"\\0")
            line = f"{os.getpid()} {name}\\n".encode()
            SEEN[end:end + len(line)] = line
        return None


backend = sys.argv[1]
python = os.path.realpath(sys.executable)
connect = "import socket; socket.socket().connect_ex(('192.0.2.1', 80))"
full = Policy.load("full")
runs = [
    (full, ["/bin/true"]),
    (full, ["/bin/sh", "-c", "exit 3"]),
    (full.recording_attempts(), [python, "-I", "-c", connect]),
    (full.with_limits(wall_time=0.3), ["/bin/sleep", "5"]),
    (Policy.load("none"), ["/bin/true"]),
]
sys.meta_path.insert(0, Watch())
codes = [Sandbox(policy, backend=backend).run(argv, cwd="/").exit_code for policy, argv in runs]
print(codes)
print(SEEN[:].rstrip(b"\\0").decode() or "nothing")
child = os.fork()
if child == 0:  # the control: a child that does import is seen
    import colorsys  # noqa
    os._exit(0)
os.waitpid(child, 0)
print(SEEN[:].rstrip(b"\\0").decode().split()[-1])
"""


@pytest.mark.parametrize("backend", ["native", "bwrap"])
def test_the_supervisor_and_the_init_import_nothing(backend: str) -> None:
    """Runs that exit, fail, record an attempt, hit the wall time and run under ``none``:
    no module is asked for in any process forked from the caller; a forked child that
    imports is seen (the control)."""
    require_backend(backend)
    proc = subprocess.run([sys.executable, "-I", "-c", WATCHED_RUNS, backend], cwd="/",
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.stdout.splitlines() == ["[0, 3, 0, 124, 0]", "nothing", "colorsys"], (
        proc.stdout + proc.stderr)
