"""The Python interpreter build environments are made from: the caller's, or ``--python``'s.

A chosen interpreter is checked before anything is built: it must exist, be executable and
say (run with ``-I``, so that no environment variable, user site or current directory of
the caller's changes what it reports) that it is CPython or PyPy 3.8 or newer. What it
reports — its base installation, its version, where a virtual environment of it keeps its
packages — is all buildjail needs from it; everything the sandbox then executes (the build
environment's interpreter, the hook runner's script) comes from it and from the build
environment, never from the caller's installation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import sysconfig

from .errors import BuildjailError

MINIMUM = (3, 8)
"""The oldest Python a build environment may be made from."""
MAX_REPORT = 1 << 16
"""The most of the interpreter's report read."""
TIMEOUT = 60.0
"""How long the interpreter may take to report (a hung one is refused)."""
_PLACEHOLDER = "/@buildjail-base@"
_QUERY = f"""\
import json, sys, sysconfig
scheme = "venv" if "venv" in sysconfig.get_scheme_names() else "posix_prefix"
base = {_PLACEHOLDER!r}
print(json.dumps({{
    "version": list(sys.version_info[:3]),
    "implementation": sys.implementation.name,
    "executable": getattr(sys, "_base_executable", None) or sys.executable,
    "purelib": sysconfig.get_path("purelib", scheme, vars={{"base": base, "platbase": base}}),
}}))
"""


class InterpreterError(BuildjailError):
    """A ``--python`` that cannot make build environments: says why in one line."""


@dataclasses.dataclass(frozen=True)
class Interpreter:
    """A base interpreter: its path, version and the venv layout of its packages."""

    executable: str
    """The base installation's interpreter (absolute), which no hook can write."""
    version: tuple[int, int, int]
    purelib: str
    """Where a venv of it keeps its packages, relative to the venv (``lib/python3.X/...``)."""

    def site_packages(self, venv: str) -> str:
        """The packages directory of a virtual environment *venv* made from it."""
        return os.path.join(venv, self.purelib)

    @property
    def version_text(self) -> str:
        """The version as ``3.11.2``."""
        return ".".join(str(part) for part in self.version)


def current() -> Interpreter:
    """The caller's own base interpreter, without running anything."""
    executable = os.path.abspath(getattr(sys, "_base_executable", None) or sys.executable)
    purelib = sysconfig.get_path("purelib", "venv", vars={"base": _PLACEHOLDER,
                                                         "platbase": _PLACEHOLDER})
    major, minor, micro = sys.version_info[:3]
    return Interpreter(executable, (major, minor, micro), _relative(purelib))


def resolve(python: str | None) -> Interpreter:
    """The interpreter *python* names (the caller's when None); InterpreterError if unusable."""
    return current() if python is None else inspect(python)


def inspect(python: str) -> Interpreter:
    """Run *python* (made absolute) once, outside the sandbox, to read what it is."""
    path = os.path.abspath(python)
    option = f"--python {python}"
    if not os.path.exists(path):
        raise InterpreterError(f"{option}: no such file (give the interpreter's path, e.g. "
                               "/usr/bin/python3.11)")
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise InterpreterError(f"{option}: not an executable file")
    try:
        proc = subprocess.run([path, "-I", "-c", _QUERY], capture_output=True, check=False,
                              timeout=TIMEOUT, stdin=subprocess.DEVNULL, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as error:
        raise InterpreterError(f"{option}: cannot run it ({_reason(error)})") from None
    report = _parse(proc.stdout[:MAX_REPORT]) if proc.returncode == 0 else None
    if report is None:
        raise InterpreterError(f"{option}: not a Python interpreter buildjail can use (it "
                               f"did not report its version; exit {proc.returncode})")
    if report.version[:2] < MINIMUM:
        raise InterpreterError(f"{option}: Python {report.version_text} is too old; build "
                               f"environments need Python {'.'.join(map(str, MINIMUM))} "
                               "or newer")
    return report


def _parse(output: bytes) -> Interpreter | None:
    """The interpreter's report, or None when it is not the one the query prints."""
    try:
        data = json.loads(output.decode("utf-8"))
        version = tuple(int(part) for part in data["version"])
        executable, purelib = data["executable"], data["purelib"]
    except (ValueError, KeyError, TypeError):
        return None
    if len(version) != 3 or not isinstance(executable, str) or not isinstance(
            purelib, str) or not os.path.isabs(executable) or not purelib.startswith(
            _PLACEHOLDER + "/"):
        return None
    return Interpreter(executable, (version[0], version[1], version[2]), _relative(purelib))


def _relative(purelib: str) -> str:
    return os.path.relpath(purelib, _PLACEHOLDER)


def _reason(error: BaseException) -> str:
    if isinstance(error, subprocess.TimeoutExpired):
        return f"it did not answer within {TIMEOUT:.0f} s"
    return getattr(error, "strerror", None) or str(error)
