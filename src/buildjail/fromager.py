"""Run fromager with every network-isolated step (all PEP 517 hooks) in the sandbox.

fromager runs each step it isolates — every build-backend hook, ``uv venv``, the
queries of the build environment, ``wheel pack`` — through one function,
``fromager.external_commands.run(..., network_isolation=True)``, which puts the
list ``fromager.external_commands.NETWORK_ISOLATION`` (read through
``network_isolation_cmd()``) in front of the command. That list is the one hook
point: buildjail replaces its content with ``python -I _fromager_isolate.py
OPTIONS --``, a launcher that runs the command in the sandbox. Downloads,
build-dependency installation, git and patching are not isolated by fromager
and stay outside. The hook point is checked at start-up; a fromager without it
is refused (exit 125).
"""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from .errors import EXIT_SETUP_FAILED, SandboxSetupError
from .policy import Policy

ISOLATE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fromager_isolate.py")
"""The launcher fromager runs in front of each isolated command (by absolute path)."""

RUN_PARAMETERS = ("cmd", "cwd", "extra_environ", "network_isolation", "log_filename")
"""The parameters of ``fromager.external_commands.run`` the integration relies on."""

INSTALL_FIX = "pip install 'buildjail[fromager]' (Python >= 3.12)"


def _version() -> str:
    try:
        from importlib.metadata import version

        return f"fromager {version('fromager')}"
    except Exception:
        return "the installed fromager"


def check_hook_point(external_commands: Any, version: str = "fromager") -> None:
    """Raise SandboxSetupError unless *external_commands* has the hook point buildjail uses."""

    def refuse(what: str) -> SandboxSetupError:
        return SandboxSetupError(
            f"{version} is not supported: {what}; buildjail cannot sandbox its build steps",
            f"install a tested fromager: {INSTALL_FIX}")

    isolation = getattr(external_commands, "NETWORK_ISOLATION", None)
    if not isinstance(isolation, list):
        raise refuse("fromager.external_commands.NETWORK_ISOLATION is not a list")
    if not callable(getattr(external_commands, "network_isolation_cmd", None)):
        raise refuse("fromager.external_commands.network_isolation_cmd() is missing")
    run = getattr(external_commands, "run", None)
    code = getattr(run, "__code__", None)
    if not callable(run) or code is None:
        raise refuse("fromager.external_commands.run() is missing")
    if "network_isolation_cmd" not in code.co_names:
        raise refuse("fromager.external_commands.run() no longer calls network_isolation_cmd()")
    try:
        parameters = inspect.signature(run).parameters
    except (TypeError, ValueError):
        raise refuse("the signature of fromager.external_commands.run() is unreadable") from None
    missing = [name for name in RUN_PARAMETERS if name not in parameters]
    if missing:
        raise refuse(f"fromager.external_commands.run() has no parameter {', '.join(missing)}")


def isolation_prefix(profile: str, policy_file: str | None, backend: str) -> list[str]:
    """The command fromager puts in front of every isolated step: all absolute paths.

    ``--launch-env`` names the variables of the environment buildjail was started with:
    the launcher passes only those the policy allows, plus whatever fromager added itself
    (its per-package settings), so the allow-list stays an allow-list.
    """
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    prefix = [os.path.abspath(sys.executable), "-I", ISOLATE_SCRIPT, "--profile", profile]
    if policy_file:
        prefix += ["--policy", os.path.abspath(policy_file)]
    return [*prefix, "--backend", backend, "--sys-path", package_parent,
            "--launch-env", ",".join(sorted(os.environ)), "--"]


def check_arguments(args: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """Refuse a fromager run without network isolation; return the args that force it on."""
    if "--no-network-isolation" in args:
        raise SandboxSetupError(
            "--no-network-isolation would run the build hooks outside the sandbox",
            "drop --no-network-isolation")
    if environ.get("FROMAGER_NETWORK_ISOLATION", "").strip().lower() in (
            "0", "false", "no", "off", "n", "f"):
        raise SandboxSetupError(
            "FROMAGER_NETWORK_ISOLATION turns network isolation off, which would run the "
            "build hooks outside the sandbox", "unset FROMAGER_NETWORK_ISOLATION")
    return ["--network-isolation", *args]


def install(profile: str = "full", policy_file: str | None = None,
            backend: str = "auto") -> ModuleType:
    """Import fromager, check its hook point and route its isolated steps to the sandbox."""
    try:
        external_commands = importlib.import_module("fromager.external_commands")
    except ImportError:
        raise SandboxSetupError("fromager is not installed", INSTALL_FIX) from None
    check_hook_point(external_commands, _version())
    prefix = isolation_prefix(profile, policy_file, backend)
    external_commands.NETWORK_ISOLATION[:] = prefix
    if list(external_commands.network_isolation_cmd()) != prefix:
        raise SandboxSetupError(
            f"{_version()}: network_isolation_cmd() does not return the sandbox launcher",
            f"install a tested fromager: {INSTALL_FIX}")
    return external_commands


def check_launcher(prefix: Sequence[str]) -> None:
    """Run ``true`` through the launcher, as fromager's own detection does, but keep the reason.

    fromager reports a failing detection only as "network isolation is not available".
    """
    done = subprocess.run([*prefix, "true"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        lines = [line.removeprefix("buildjail: ") for line in done.stderr.strip().splitlines()]
        reason = lines[0].removeprefix("sandbox not set up: ") if lines else (
            f"the sandbox launcher exited with {done.returncode}")
        fix = next((line.strip().removeprefix("fix: ") for line in lines[1:]
                    if line.strip().startswith("fix:")), "run `buildjail doctor`")
        raise SandboxSetupError(f"fromager's build steps cannot run in the sandbox: {reason}",
                                fix)


def run_fromager(args: Sequence[str], *, profile: str = "full", policy_file: str | None = None,
                 backend: str = "auto") -> int:
    """Run ``fromager ARGS`` with every network-isolated step in the sandbox; return its code."""
    # A bad profile or policy file fails here, once, not in every build step.
    Policy.from_toml(policy_file) if policy_file else Policy.profile(profile)
    arguments = check_arguments(args, os.environ)
    install(profile, policy_file, backend)
    # Importing fromager's CLI runs its own check of the launcher (``true`` through it).
    fromager_main = importlib.import_module("fromager.__main__")
    if not getattr(fromager_main, "SUPPORTS_NETWORK_ISOLATION", True):
        check_launcher(isolation_prefix(profile, policy_file, backend))  # raises, with why

    saved = sys.argv
    sys.argv = ["fromager", *arguments]
    try:
        fromager_main.invoke_main()
    except SystemExit as exit_:
        code = exit_.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0


__all__ = ["EXIT_SETUP_FAILED", "check_hook_point", "install", "isolation_prefix",
           "run_fromager"]
