"""Run inside the sandbox by ``buildjail inspect``: standard library only, run by path.

``python -I -S _driver.py PLAN`` makes a fresh virtual environment at the plan's path (the
sandbox's private ``/tmp``), installs the plan's wheels into it with the standard library
(no installer, no network, nothing executed), then imports each module and runs each
console entry point with ``--help``, each in a process of its own
(``ENV/bin/python -I _driver.py import NAME``, ``... entry-point NAME VALUE``) with a
timeout, and prints one JSON line per step.

Those lines are information only: the code imported runs as the same user and can write
to this process's output too. What decides the verdict is what the sandbox recorded.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import traceback
import venv
import zipfile
from typing import Any

MAX_DETAIL = 400
"""Characters kept of a step's one-line reason."""
TAIL = 8192
"""Bytes read of a step's output to find that reason."""
_SCHEME_KEYS = {"purelib": "purelib", "platlib": "platlib", "headers": "include",
                "data": "data"}
"""Where each ``.data`` directory goes; ``scripts`` nowhere: the entry points are run by
this driver, and nothing may replace the environment's own ``bin/python``."""
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def main(argv: list[str]) -> int:
    """Dispatch: a plan file, or one ``import`` / ``entry-point`` step."""
    if argv[:1] == ["import"] and len(argv) == 2:
        return _import(argv[1])
    if argv[:1] == ["entry-point"] and len(argv) == 3:
        return _entry_point(argv[1], argv[2])
    if len(argv) != 1:
        print("usage: _driver.py PLAN | import NAME | entry-point NAME VALUE", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as stream:
        plan = json.load(stream)
    return _inspect(plan)


def _inspect(plan: dict[str, Any]) -> int:
    """Install, then run every step of *plan*; exit 0 once every step has run."""
    env = str(plan["env"])
    started = time.monotonic()
    try:
        venv.EnvBuilder(symlinks=True, with_pip=False).create(env)
        paths = sysconfig.get_paths("venv", vars={"base": env, "platbase": env})
        for wheel in plan["wheels"]:
            _install(str(wheel), paths)
    except Exception as error:  # the wheel or the scratch space: say why, in one line
        _say("install", "", False, _one_line(f"{type(error).__name__}: {error}"), started)
        return 3
    _say("install", "", True, "", started)
    python = os.path.join(env, "bin", "python")
    timeout = float(plan["timeout"])
    for name in plan["modules"]:
        _step("import", str(name), [python, "-I", __file__, "import", str(name)], timeout)
    for name, value in plan["entry_points"]:
        _step("entry_point", str(name),
              [python, "-I", __file__, "entry-point", str(name), str(value)], timeout)
    return 0


def _install(wheel: str, paths: dict[str, str]) -> None:
    """Unpack *wheel* where an installer would put it (checked outside already); a file
    that exists (the environment's own, or another member's) is refused, not replaced."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            parts = info.filename.split("/")
            root, rest = paths["purelib"], parts
            if parts[0].endswith(".data") and len(parts) > 2:
                key = _SCHEME_KEYS.get(parts[1])
                if key is None:
                    continue
                root, rest = paths[key], parts[2:]
            target = os.path.join(root, *rest)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            executable = (info.external_attr >> 16) & 0o111
            fd = os.open(target, _CREATE, 0o755 if executable else 0o644)
            with archive.open(info) as source, os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(source, out)


def _step(kind: str, name: str, cmd: list[str], timeout: float) -> None:
    """Run one step in its own session, its output in a file; kill its group on timeout."""
    started = time.monotonic()
    with open(os.path.join(os.path.dirname(os.path.dirname(cmd[0])), f"{os.getpid()}.out"),
              "w+b") as output:
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=output, cwd="/", start_new_session=True)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        _kill_group(process.pid)
        process.wait()
        output.seek(max(0, output.seek(0, os.SEEK_END) - TAIL))
        tail = output.read(TAIL).decode("utf-8", "replace")
        output.truncate(0)
    if code is None:
        _say(kind, name, False, f"timed out after {timeout:g} s", started)
        return
    reason = "" if code == 0 else _last_line(tail) or f"exit status {code}"
    _say(kind, name, code == 0, reason, started)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(OSError):  # gone already
        os.killpg(pid, signal.SIGKILL)


def _import(name: str) -> int:
    """Import *name*; on failure, its exception in the last line of stderr."""
    try:
        importlib.import_module(name)
    except BaseException as error:  # SystemExit and KeyboardInterrupt too: a failure
        traceback.print_exc()
        print(_one_line(f"{type(error).__name__}: {error}"), file=sys.stderr)
        return 1
    return 0


def _entry_point(name: str, value: str) -> int:
    """Call the entry point *value* (``module:attr``) as ``NAME --help``; its exit code."""
    module, _, attribute = value.partition(":")
    sys.argv = [name, "--help"]
    try:
        target: Any = importlib.import_module(module.strip())
        for part in attribute.strip().split("."):
            if part:
                target = getattr(target, part)
        result = target()
    except SystemExit as leaving:
        result = leaving.code
    except BaseException as error:
        traceback.print_exc()
        print(_one_line(f"{type(error).__name__}: {error}"), file=sys.stderr)
        return 1
    if result is None or result == 0:
        return 0
    if isinstance(result, int):
        return result
    print(result, file=sys.stderr)
    return 1


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return _one_line(lines[-1]) if lines else ""


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL - 3] + "..."


def _say(kind: str, name: str, ok: bool, detail: str, started: float) -> None:
    record = {"step": kind, "name": name, "ok": ok, "detail": detail,
              "seconds": round(time.monotonic() - started, 3)}
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
