"""Run fromager with every network-isolated step (all PEP 517 hooks) in the sandbox.

fromager runs each step it isolates — every build-backend hook, ``uv venv``, the
queries of the build environment, ``wheel pack`` — through one function,
``fromager.external_commands.run(..., network_isolation=True)``, which puts the list
``fromager.external_commands.NETWORK_ISOLATION`` (read through ``network_isolation_cmd()``)
in front of the command and starts it with ``subprocess.run``. That module is the one hook
point, used in two places:

- ``NETWORK_ISOLATION`` holds buildjail's launcher, ``python -I _launcher.py OPTIONS --``
  (:mod:`._launcher`), which runs a command in the sandbox from a new process;
- the module's name ``subprocess`` is an :class:`IsolatedSubprocess`: a command that starts
  with that launcher runs in fromager's own process instead (the same step runner,
  :class:`.steps.StepRunner`, without a new interpreter per step); every other command goes
  to the real ``subprocess``.

Downloads, build-dependency installation, git and patching are not isolated by fromager
and stay outside. For a fromager with the sandboxing hooks it proposes (PR #1171), this
module also provides them: :func:`setup_sandbox`, :func:`run_sandboxed`,
:func:`teardown_sandbox`, :func:`run_unconfined` (see :mod:`.hooks`); both ways, each step
runs through the same :class:`.steps.StepRunner`.

The hook point is checked at start-up, statically and by running ``true`` through
``run()``; a fromager without it is refused (exit 125). fromager's files are not
changed.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import EXIT_SETUP_FAILED, SandboxSetupError, parse_setup_failure
from ..policy import Policy
from .hooks import run_sandboxed, run_unconfined, setup_sandbox, teardown_sandbox
from .steps import StepRunner

LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_launcher.py")
"""The launcher fromager runs in front of each isolated command (by absolute path)."""

RUN_PARAMETERS = ("cmd", "cwd", "extra_environ", "network_isolation", "log_filename")
"""The parameters of ``fromager.external_commands.run`` the integration relies on."""

IN_PROCESS_ARGUMENTS = frozenset({"cwd", "env", "stdin", "stdout", "stderr"})
"""The ``subprocess.run`` arguments of fromager's isolated steps that run in-process."""

INSTALL_FIX = "pip install 'buildjail[fromager]' (Python >= 3.12)"

logger = logging.getLogger(__name__)


def _version() -> str:
    try:
        from importlib.metadata import version

        return f"fromager {version('fromager')}"
    except Exception:
        return "the installed fromager"


def _refuse(version: str, what: str) -> SandboxSetupError:
    return SandboxSetupError(
        f"{version} is not supported: {what}; buildjail cannot sandbox its build steps",
        f"install a tested fromager: {INSTALL_FIX}")


def check_hook_point(external_commands: Any, version: str = "fromager") -> None:
    """Raise SandboxSetupError unless *external_commands* has the hook point buildjail uses."""
    import inspect

    isolation = getattr(external_commands, "NETWORK_ISOLATION", None)
    if not isinstance(isolation, list):
        raise _refuse(version, "fromager.external_commands.NETWORK_ISOLATION is not a list")
    if not callable(getattr(external_commands, "network_isolation_cmd", None)):
        raise _refuse(version, "fromager.external_commands.network_isolation_cmd() is missing")
    starter = getattr(external_commands, "subprocess", None)
    if starter is not subprocess and not isinstance(starter, IsolatedSubprocess):
        raise _refuse(version, "fromager.external_commands no longer imports subprocess")
    run = getattr(external_commands, "run", None)
    code = getattr(run, "__code__", None)
    if not callable(run) or code is None:
        raise _refuse(version, "fromager.external_commands.run() is missing")
    if "network_isolation_cmd" not in code.co_names:
        raise _refuse(version,
                      "fromager.external_commands.run() no longer calls network_isolation_cmd()")
    if not {"subprocess", "run"} <= set(code.co_names):
        raise _refuse(version,
                      "fromager.external_commands.run() no longer calls subprocess.run()")
    try:
        parameters = inspect.signature(run).parameters
    except (TypeError, ValueError):
        raise _refuse(version, "the signature of fromager.external_commands.run() is "
                      "unreadable") from None
    missing = [name for name in RUN_PARAMETERS if name not in parameters]
    if missing:
        raise _refuse(version,
                      f"fromager.external_commands.run() has no parameter {', '.join(missing)}")


def isolation_prefix(policy: Policy, backend: str) -> list[str]:
    """The command fromager puts in front of every isolated step: all absolute paths.

    ``--policy`` carries *policy* whole, as JSON. ``--launch-env`` names the variables of
    the environment buildjail was started with: the launcher passes only those the policy
    allows, plus whatever fromager added itself (its per-package settings), so the
    allow-list stays an allow-list.
    """
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return [os.path.abspath(sys.executable), "-I", LAUNCHER, "--policy", policy.to_json(),
            "--backend", backend, "--sys-path", package_parent,
            "--launch-env", ",".join(sorted(os.environ)), "--"]


def _fileno(stream: Any) -> int:
    return stream if isinstance(stream, int) else int(stream.fileno())


class IsolatedSubprocess:
    """``subprocess`` as ``fromager.external_commands`` sees it: isolated steps run in-process.

    A command that starts with the launcher *prefix* and is started the way fromager starts
    its steps runs through *steps* in this process; anything else, unchanged, through the
    real ``subprocess`` (a prefixed command then runs the launcher: still in the sandbox).
    """

    def __init__(self, prefix: Sequence[str], steps: StepRunner) -> None:
        """*prefix*: the launcher command; *steps*: what runs the steps it names."""
        self.prefix = list(prefix)
        self.steps = steps
        self.served = 0
        """How many isolated steps ran in this process."""
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        """Everything but ``run`` and ``check_output`` is the real ``subprocess`` module's."""
        return getattr(subprocess, name)

    def run(self, args: Any, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """``subprocess.run``, except that an isolated step of fromager runs in-process."""
        step = self._step(args, kwargs)
        if step is None:  # the caller's own arguments, check= included, unchanged
            return subprocess.run(args, **kwargs)  # noqa: PLW1510
        code, output = self._run_step(step, kwargs)
        return subprocess.CompletedProcess(args, code, stdout=output)

    def check_output(self, args: Any, **kwargs: Any) -> Any:
        """``subprocess.check_output``, except that an isolated step runs in-process."""
        step = self._step(args, {**kwargs, "stdout": subprocess.PIPE})
        if step is None:
            return subprocess.check_output(args, **kwargs)
        code, output = self._run_step(step, {**kwargs, "stdout": subprocess.PIPE})
        if code != 0:
            raise subprocess.CalledProcessError(code, args, output)
        return output

    def _step(self, args: Any, kwargs: Mapping[str, Any]) -> list[str] | None:
        """The command after the launcher prefix, if this call is one fromager makes."""
        if not isinstance(args, list | tuple) or not all(isinstance(a, str) for a in args):
            return None
        size = len(self.prefix)
        if len(args) <= size or list(args[:size]) != self.prefix:
            return None
        if not set(kwargs) <= IN_PROCESS_ARGUMENTS or kwargs.get("stderr") != subprocess.STDOUT:
            return None
        stdout, stdin = kwargs.get("stdout"), kwargs.get("stdin")
        if stdout is None or (stdout != subprocess.PIPE and not _has_fd(stdout)):
            return None
        if stdin is not None and stdin != subprocess.DEVNULL and not _has_fd(stdin):
            return None
        return list(args[size:])

    def _run_step(self, step: list[str], kwargs: Mapping[str, Any]) -> tuple[int, bytes | None]:
        stdout, stdin = kwargs["stdout"], kwargs.get("stdin")
        captured = stdout == subprocess.PIPE
        output = os.memfd_create("buildjail-step", os.MFD_CLOEXEC) if captured else _fileno(
            stdout)
        env = kwargs.get("env")
        cwd = kwargs.get("cwd")
        start = time.monotonic()
        try:
            code = self.steps.run(
                step, cwd=os.path.abspath(os.fspath(cwd) if cwd is not None else os.getcwd()),
                env=os.environ if env is None else env,
                stdin=None if stdin in (None, subprocess.DEVNULL) else _fileno(stdin),
                output=output)
            text = _read_all(output) if captured else None
        finally:
            if captured:
                os.close(output)
        with self._lock:
            self.served += 1
        logger.debug("buildjail: %s ran in the sandbox in-process: exit code %d, %.3f s",
                     os.path.basename(step[0]), code, time.monotonic() - start)
        return code, text


def _has_fd(stream: Any) -> bool:
    if isinstance(stream, int):
        return stream >= 0
    try:
        return isinstance(stream.fileno(), int)
    except (AttributeError, OSError, ValueError):
        return False


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


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


def install(policy: Policy, backend: str = "auto", external_commands: Any = None) -> Any:
    """Import fromager, check its hook point and route its isolated steps to the sandbox.

    Returns ``fromager.external_commands`` (or *external_commands*, a stand-in for it).
    """
    version = _version()
    if external_commands is None:
        try:
            external_commands = importlib.import_module("fromager.external_commands")
        except ImportError:
            raise SandboxSetupError("fromager is not installed", INSTALL_FIX) from None
    check_hook_point(external_commands, version)
    prefix = isolation_prefix(policy, backend)
    external_commands.NETWORK_ISOLATION[:] = prefix
    if list(external_commands.network_isolation_cmd()) != prefix:
        raise _refuse(version, "network_isolation_cmd() does not return the sandbox launcher")
    external_commands.subprocess = IsolatedSubprocess(
        prefix, StepRunner(policy, backend, launched_with=os.environ, share_uv_cache=True))
    return external_commands


def check_installed(external_commands: Any, version: str = "fromager") -> None:
    """Run ``true`` in the sandbox, then through fromager's ``run()``: it must run in-process.

    The first shows why the sandbox cannot start here (exit 125, with the reason); the
    second, that the hook point still works as :func:`install` expects.
    """
    starter = getattr(external_commands, "subprocess", None)
    if not isinstance(starter, IsolatedSubprocess):
        raise _refuse(version, "buildjail's hook is not installed in fromager.external_commands")
    with open(os.devnull, "wb") as null:
        try:
            starter.steps.execute(["true"], cwd=os.getcwd(), env=os.environ,
                                  output=null.fileno())
        except SandboxSetupError as error:
            raise SandboxSetupError(
                f"fromager's build steps cannot run in the sandbox: {error.reason}",
                error.fix) from None
    before = starter.served
    try:
        external_commands.run(["true"], network_isolation=True)
    except subprocess.CalledProcessError as error:
        raise _refuse(version, f"an isolated `true` failed through fromager.external_commands."
                      f"run() (exit {error.returncode})") from None
    if starter.served == before:
        raise _refuse(version, "fromager.external_commands.run() did not start its isolated "
                      "step through the module's subprocess.run()")


def check_launcher(prefix: Sequence[str]) -> None:
    """Run ``true`` through the launcher, as fromager's own detection does, but keep the reason.

    fromager reports a failing detection only as "network isolation is not available".
    """
    done = subprocess.run([*prefix, "true"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        reason, fix = parse_setup_failure(done.stderr)
        raise SandboxSetupError(
            "fromager's build steps cannot run in the sandbox: "
            f"{reason or f'the sandbox launcher exited with {done.returncode}'}",
            fix or "run `buildjail doctor`")


def run_fromager(args: Sequence[str], policy: Policy, backend: str = "auto", *,
                 inspect: bool = False) -> int:
    """Run ``fromager ARGS`` with every network-isolated step in the sandbox; return its code.

    *inspect*: inspect every wheel fromager builds (:mod:`.inspection`), failing the
    package of one that tried anything.
    """
    from . import inspection

    arguments = check_arguments(args, os.environ)
    external_commands = install(policy, backend)
    if inspect:
        inspection.enable(policy, backend)
    try:
        return _run_installed(external_commands, arguments)
    finally:
        inspection.disable()
        external_commands.subprocess.steps.close()


def _run_installed(external_commands: Any, arguments: list[str]) -> int:
    check_installed(external_commands, _version())
    # Importing fromager's CLI runs its own check of the isolation (``true`` through it).
    fromager_main = importlib.import_module("fromager.__main__")
    if not getattr(fromager_main, "SUPPORTS_NETWORK_ISOLATION", True):
        check_launcher(external_commands.subprocess.prefix)  # raises, with why

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


__all__ = ["EXIT_SETUP_FAILED", "IsolatedSubprocess", "check_hook_point", "check_installed",
           "install", "isolation_prefix", "run_fromager", "run_sandboxed", "run_unconfined",
           "setup_sandbox", "teardown_sandbox"]
