"""fromager's isolated steps in the sandbox: what each may write, see and leave behind.

fromager runs each step it isolates as ``NETWORK_ISOLATION + CMD`` (see
:mod:`buildjail.fromager`). :class:`StepRunner` runs such a step in the sandbox: in
fromager's own process for ``buildjail fromager``, or from the launcher
(``_launcher.py``, the prefix run as a program) through :func:`run_launched`.

What a step may write:

- a PEP 517 hook (``python .../_in_process.py HOOK CONTROL_DIR``): buildjail's hook
  runner — the source tree, the control directory and the output directories;
- ``uv venv ... PATH``: the new environment ``PATH`` (and, in fromager's process, a uv
  cache only the ``uv venv`` steps of this run share: uv keeps what it learnt of the
  interpreter there, instead of asking it again in every fresh sandbox ``HOME``);
- ``wheel pack DIR --dest-dir D``: the working directory, ``DIR`` (it rewrites
  ``WHEEL``) and ``D``;
- anything else (queries of the build environment): nothing.

After each step, what it left in its writable trees is checked before fromager's own code
(root, outside) touches it: symbolic links leading out of them (but for a ``uv venv``'s
links to its interpreter) and special files are removed, and the step fails (exit 1).

For fromager's proposed hooks (:mod:`.hooks`), the runner is bounded to one package
(:class:`PackageTrees`): every step may also write the package's ``dist``, ``home`` and
``tmp``, a step whose trees lie outside the package's directory is refused, and every step
runs as the package's one leased identity.

The environment follows the policy's allow-list, plus the variables fromager added
itself (per-package settings); the delete patterns (tokens, passwords, ...) apply to all.
A step reads ``/dev/null`` unless fromager gives it an input. Exit code: the step's own,
124 on timeout, 125 when the sandbox could not be set up (the reason in the step's output).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence

from .._linux.filesystem import installation_paths, venv_paths, within_any
from ..backends import Lease
from ..errors import (
    EXIT_SETUP_FAILED,
    EXIT_TRIED,
    BuildjailError,
    SandboxSetupError,
    render_setup_failure,
)
from ..explain import failure_hint
from ..limits import describe_limit
from ..onattempt import AttemptsRefusedError, check_recording, failing, judge
from ..pep517 import (
    HookFailed,
    HookOutputRefusedError,
    SandboxedHookRunner,
    hook_writable,
    interpreter_prefixes,
    parse_hook_command,
    venv_home,
)
from ..policy import Policy
from ..result import RunResult
from ..sandbox import Sandbox
from ..trees import refuse_escaping


@dataclasses.dataclass(frozen=True)
class PackageTrees:
    """One package's directory (``work-dir/{name}-{version}``): its steps write only there."""

    root: str
    writable: tuple[str, ...]
    """The trees of it every step may write (its ``dist``, ``home`` and ``tmp``)."""


EXIT_REFUSED = 1
"""A step that left a link out of its directories, or a special file: it fails."""
LOGGER = logging.getLogger(__name__)
"""Where a step's attempts are said under ``warn``: fromager's own log, with its package."""


def _option(cmd: Sequence[str], name: str) -> str | None:
    for index, arg in enumerate(cmd[:-1]):
        if arg == name:
            return cmd[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def step_paths(cmd: Sequence[str], cwd: str,
               env: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """The writable and read-only paths of one non-hook step (programs found on env's PATH).

    Only what the step runs: the program's file, and of a virtual environment it comes
    from (fromager's own) the interpreter's files, never the whole environment.
    """
    writable: list[str] = []
    readonly: list[str] = []
    search = (os.environ if env is None else env).get("PATH")
    program = os.path.basename(cmd[0])
    if program == "uv" and cmd[1:2] == ["venv"]:
        target = os.path.abspath(os.path.join(cwd, cmd[-1]))
        os.makedirs(target, exist_ok=True)
        writable.append(target)
        readonly += _program_paths(cmd[0], search)
        python = _option(cmd, "--python")
        if python and os.path.isabs(python):
            readonly += _tool_interpreter_paths(python)
    elif program == "wheel" and cmd[1:2] == ["pack"]:
        writable.append(cwd)
        destination = _option(cmd, "--dest-dir") or _option(cmd, "-d")
        if destination:
            writable.append(os.path.abspath(os.path.join(cwd, destination)))
        if len(cmd) > 2 and not cmd[2].startswith("-"):
            # wheel pack rewrites DIR/*.dist-info/WHEEL (the build number).
            writable.append(os.path.abspath(os.path.join(cwd, cmd[2])))
        readonly += _program_paths(cmd[0], search)
    elif os.path.isabs(cmd[0]):
        # <build env>/bin/python -c ...: the build environment and its base installation.
        readonly += interpreter_prefixes(cmd[0])
    return writable, [path for path in dict.fromkeys(readonly) if path != "/"]


def _program_paths(program: str, search: str | None) -> list[str]:
    """The file of *program* (found on *search*) and the interpreter its script runs with."""
    found = program if os.path.isabs(program) else shutil.which(program, path=search)
    if not found:
        return []
    path = os.path.abspath(found)
    prefix = os.path.dirname(os.path.dirname(path))
    if os.path.isfile(os.path.join(prefix, "pyvenv.cfg")):  # a venv's script or binary
        return [path, *_tool_interpreter_paths(os.path.join(prefix, "bin", "python"))]
    return [path]


def _tool_interpreter_paths(python: str) -> list[str]:
    """A tool's interpreter (fromager's own venv): its files, not the environment's root."""
    prefix = os.path.dirname(os.path.dirname(os.path.abspath(python)))
    real = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    home = venv_home(prefix)
    if home is None:
        return list(installation_paths(prefix, real))
    return [*venv_paths(prefix), *installation_paths(real, os.path.dirname(home))]


def step_directory(cwd: str, writable: Sequence[str], readonly: Sequence[str]) -> str:
    """Where a step runs: *cwd* when it is one of its own trees, else ``/``.

    A step fromager starts without a working directory gets fromager's own, the work
    directory with every package's trees, its settings and its log: never shown.
    """
    return cwd if within_any(cwd, (*writable, *readonly)) else "/"


class StepRunner:
    """Runs fromager's isolated steps in the sandbox: hooks through buildjail's hook runner."""

    def __init__(self, policy: Policy, backend: str, launched_with: Iterable[str], *,
                 share_uv_cache: bool = False, lease: Lease | None = None,
                 package: PackageTrees | None = None) -> None:
        """*launched_with*: the names of the environment buildjail was started with.

        With *share_uv_cache*, the ``uv venv`` steps share a uv cache, one at a time;
        :meth:`close` removes it. *lease*: the identity every step runs as (one step at a
        time); *package*: the one package whose directory bounds what steps may write.
        """
        self.policy = policy.recording_attempts()
        check_recording(self.policy, backend)
        self.backend = backend
        self.launched_with = frozenset(launched_with)
        self.share_uv_cache = share_uv_cache
        self.lease = lease
        self.package = package
        self.uv_cache: str | None = None
        self._uv_lock = threading.Lock()

    def close(self) -> None:
        """Remove the shared uv cache, if one was made."""
        with self._uv_lock:
            if self.uv_cache is not None:
                shutil.rmtree(self.uv_cache, ignore_errors=True)
                self.uv_cache = None

    def execute(self, cmd: Sequence[str], *, cwd: str, env: Mapping[str, str],
                stdin: int | None = None, output: int | None = None) -> int:
        """Run one step; return its exit code; raise BuildjailError if it cannot be run.

        *output* receives the step's stdout and stderr (default: this process's).
        """
        # Keep what fromager added (its per-package variables), besides what the policy
        # allows; the variables buildjail was started with follow the allow-list, and the
        # delete patterns (tokens, passwords) apply to everything.
        policy = self.policy.with_env(
            keep=[name for name in env if name not in self.launched_with])
        hook = parse_hook_command(cmd)
        if hook is not None:
            extra = self._package_writable(hook_writable(hook, os.path.abspath(cwd)))
            runner = SandboxedHookRunner(policy, backend=self.backend, env=env, output=output,
                                         refuse_escaping=True, lease=self.lease,
                                         writable=extra)
            code = self._hook(runner, cmd, cwd, env, output)
            return _judged(code, [result for _, result in runner.results], policy,
                           f"the {hook.hook} hook", output)
        writable, readonly = step_paths(cmd, cwd, env)
        writable += self._package_writable(writable)
        cwd = step_directory(cwd, writable, readonly)
        shared = self.share_uv_cache and os.path.basename(cmd[0]) == "uv" and (
            cmd[1:2] == ["venv"])
        # One at a time: a writable tree is lent to one sandbox's uid.
        exclusive = self._uv_lock if shared else contextlib.nullcontext()
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) if stdin is None else None
        try:
            with exclusive:
                if shared:
                    if self.uv_cache is None:
                        self.uv_cache = tempfile.mkdtemp(prefix="buildjail-uv-cache-")
                    env = {**env, "UV_CACHE_DIR": self.uv_cache}
                    policy = policy.with_env(keep=["UV_CACHE_DIR"])
                    writable.append(self.uv_cache)
                result = Sandbox(policy, backend=self.backend, lease=self.lease).run(
                    cmd, cwd=cwd, env=env, writable=writable, readonly=readonly,
                    stdin=stdin if null is None else null, stdout=output, stderr=output)
        finally:
            if null is not None:
                os.close(null)
        refused = refuse_escaping(writable, allowed=readonly)
        if refused:
            _say(output, f"buildjail: {os.path.basename(cmd[0])} left what fromager must not "
                         f"follow outside the sandbox (removed): {'; '.join(refused[:3])}")
            return EXIT_REFUSED
        if result.limit_hit:
            _say(output, f"buildjail: {os.path.basename(cmd[0])} was stopped by "
                         f"{describe_limit(result.limit_hit)} in the sandbox")
        return _judged(result.exit_code, [result], policy, os.path.basename(cmd[0]), output)

    @staticmethod
    def _hook(runner: SandboxedHookRunner, cmd: Sequence[str], cwd: str,
              env: Mapping[str, str], output: int | None) -> int:
        """Run one hook step through *runner*; its exit code, its failure said in *output*."""
        try:
            runner(cmd, cwd=cwd)
        except HookFailed as failure:
            if failure.result.limit_hit:  # the hook's own output cannot say why
                _say(output, f"buildjail: {failure}")
            else:
                _hint_hidden_tools(runner.sandbox.policy, env, output)
            return failure.returncode
        except HookOutputRefusedError as error:
            _say(output, f"buildjail: {error}")
            return EXIT_REFUSED
        return 0

    def _package_writable(self, writable: Sequence[str]) -> list[str]:
        """The package's own trees every step may write; BuildjailError if *writable* leaves
        the package's directory (nothing when no package bounds the steps)."""
        if self.package is None:
            return []
        outside = [path for path in writable if not within_any(path, (self.package.root,))]
        if outside:
            raise BuildjailError(
                f"the step would write outside its package's directory "
                f"{self.package.root}: {', '.join(outside[:3])}")
        return list(self.package.writable)

    def run(self, cmd: Sequence[str], *, cwd: str, env: Mapping[str, str],
            stdin: int | None = None, output: int | None = None) -> int:
        """Run one step; return its exit code, 125 (the reason in *output*) if it cannot run."""
        try:
            return self.execute(cmd, cwd=cwd, env=env, stdin=stdin, output=output)
        except SandboxSetupError as error:
            _say(output, render_setup_failure(error))
        except BuildjailError as error:
            _say(output, f"buildjail: {error}")
        return EXIT_SETUP_FAILED


def _judged(code: int, results: Sequence[RunResult], policy: Policy, what: str,
            output: int | None) -> int:
    """*code*, or under ``on_attempt = "fail"`` EXIT_TRIED (said in *output*) when a run of
    the step tried the network or a decoy; AttemptsUnrecordedError where that was not recorded.
    Under ``warn``, what it tried is a warning of fromager's log, the step's output unchanged."""
    if not failing(policy):
        _warn_tried(results, what)
    for result in results:
        try:
            judge(result, policy, what)
        except AttemptsRefusedError as error:
            _say(output, f"buildjail: {error}")
            return code or EXIT_TRIED
    return code


def _warn_tried(results: Sequence[RunResult], what: str) -> None:
    """Log, as a warning, what each run of a step tried (the ``tried:`` line, escaped)."""
    from ..escaping import escape_controls

    for result in results:
        tried = result.attempts_summary
        if tried:
            LOGGER.warning("buildjail: %s %s", what, escape_controls(tried).replace("\n", " "))


def _hint_hidden_tools(policy: Policy, env: Mapping[str, str], output: int | None) -> None:
    """After a failed hook: name the PATH directories the sandbox does not show."""
    hint = failure_hint(policy, env.get("PATH", ""))
    if hint:
        _say(output, f"buildjail: hint: {hint}")


def _say(output: int | None, text: str) -> None:
    data = (text + "\n").encode(errors="replace")
    fd = 2 if output is None else output
    while data:
        data = data[os.write(fd, data):]


def run_launched(policy: str, backend: str, launched_with: Iterable[str],
                 cmd: Sequence[str]) -> int:
    """The launcher's step: *cmd* here, in *policy* (its JSON); its exit code, or 125."""
    try:
        steps = StepRunner(Policy.from_json(policy), backend, launched_with)
    except SandboxSetupError as error:
        _say(None, render_setup_failure(error))
        return EXIT_SETUP_FAILED
    except BuildjailError as error:
        _say(None, f"buildjail: {error}")
        return EXIT_SETUP_FAILED
    return steps.run(cmd, cwd=os.getcwd(), env=os.environ)
