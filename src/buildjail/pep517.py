"""A ``pyproject_hooks`` runner that runs every build-backend hook inside the sandbox.

Everything a hook returns or leaves behind is hostile input: its output reaches the log
through a pipe (never the log file itself), ``output.json`` must be a small regular file,
the checkout's VCS metadata is read-only and a hook may create none (:mod:`.checkout`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence

from . import checkout, trees
from ._linux.filesystem import installation_paths
from .backends import Lease
from .errors import BuildjailError
from .limits import describe_limit
from .logs import HookOutput
from .policy import Policy
from .result import RunResult
from .sandbox import Sandbox

Runner = Callable[[Sequence[str], "str | None", "Mapping[str, str] | None"], None]
"""The signature pyproject_hooks expects: ``runner(cmd, cwd=None, extra_environ=None)``."""

_OUTPUT_KWARGS = ("wheel_directory", "sdist_directory", "metadata_directory")
LOG_TAIL_LINES = 40
MAX_OUTPUT_JSON = 1 << 20
"""The largest ``output.json`` pyproject_hooks may read (a hook's return value)."""


class HookFailed(subprocess.CalledProcessError):
    """A hook exited non-zero in the sandbox; carries the tail of its log and the result."""

    def __init__(self, cmd: Sequence[str], result: RunResult, log_path: str | None,
                 log_tail: str) -> None:
        super().__init__(result.exit_code, list(cmd), output=log_tail)
        self.result = result
        self.log_path = log_path
        self.log_tail = log_tail

    def __str__(self) -> str:
        hook = hook_name(self.cmd)
        why = f"was stopped by {describe_limit(self.result.limit_hit)}" if (
            self.result.limit_hit) else f"exited with {self.returncode}"
        where = f" (whole log: {self.log_path})" if self.log_path else ""
        tail = f"\n{self.log_tail}" if self.log_tail else ""
        return f"build hook {hook} {why} in the sandbox{where}{tail}"


class SandboxedHookRunner:
    """Runs pyproject_hooks' ``_in_process`` script in a sandbox; usable as its runner."""

    def __init__(
        self,
        policy: Policy | str = "full",
        *,
        backend: str = "auto",
        log_path: str | os.PathLike[str] | None = None,
        writable: Iterable[str | os.PathLike[str]] = (),
        readonly: Iterable[str | os.PathLike[str]] = (),
        env: Mapping[str, str] | None = None,
        output: int | None = None,
        refuse_escaping: bool = False,
        hook_script: str | None = None,
        private_tree: bool = False,
        lease: Lease | None = None,
    ) -> None:
        """*output*: a file descriptor for the hooks' output, instead of *log_path*.

        *hook_script*: a copy of pyproject_hooks' ``_in_process.py`` (in the build
        environment) to run instead of the caller's installed one.

        With *refuse_escaping*, symbolic links leading out of the hook's writable
        directories and special files are removed after each hook, which then fails: for
        callers whose own code goes on to use those directories (fromager). *lease*: the
        identity every hook runs as (see :class:`~buildjail.sandbox.Sandbox`).

        *private_tree*: the source trees are private copies, thrown away after the build:
        their version-control metadata needs no protection (it is otherwise read-only).
        """
        self.sandbox = Sandbox(policy, backend=backend, lease=lease)
        self.log_path = os.fspath(log_path) if log_path is not None else None
        self.output = output
        self.writable = tuple(os.fspath(path) for path in writable)
        self.readonly = tuple(os.fspath(path) for path in readonly)
        self.env = env
        self.refuse_escaping = refuse_escaping
        self.hook_script = hook_script
        self.private_tree = private_tree
        self.results: list[tuple[str, RunResult]] = []

    def __call__(self, cmd: Sequence[str], cwd: str | None = None,
                 extra_environ: Mapping[str, str] | None = None) -> None:
        """Run one hook: the source tree, the control and output directories are writable.

        The tree's VCS metadata stays read-only, and VCS metadata the hook created is
        removed and refused.
        """
        hook = parse_hook_command(cmd)
        if hook is None:
            raise BuildjailError(f"not pyproject_hooks' command of a hook: {list(cmd)!r}")
        if self.hook_script is not None:
            hook = dataclasses.replace(hook, script=self.hook_script)
            cmd = [hook.python, hook.script, hook.hook, hook.control_dir]
        cwd = os.path.abspath(cwd or os.getcwd())
        env = dict(os.environ if self.env is None else self.env)
        env.update(extra_environ or {})
        writable = [*hook_writable(hook, cwd), *self.writable]
        metadata = [] if self.private_tree else checkout.vcs_metadata(cwd)
        readonly = [*interpreter_prefixes(hook.python),
                    os.path.dirname(os.path.abspath(hook.script)),
                    *self.readonly, *(path for path in metadata
                                      if len(path) < checkout.MAX_BOUND_PATH)]
        result, tail = self._run(cmd, cwd, env, writable, readonly)
        self.results.append((hook.hook, result))
        if self.refuse_escaping:
            refused = trees.refuse_escaping(writable)
            if refused:
                raise HookOutputRefusedError(
                    f"the build hook {hook.hook} left what code outside the sandbox "
                    f"must not follow (removed): {'; '.join(refused[:3])}")
        created = [] if self.private_tree else checkout.refuse_new_vcs_metadata(cwd, metadata)
        if created:
            raise HookOutputRefusedError(
                f"the build hook {hook.hook} created version control metadata, which "
                f"the user's tools would trust (removed): {'; '.join(created[:3])}")
        if result.exit_code != 0:
            raise HookFailed(cmd, result, self.log_path, tail)
        _check_output_json(os.path.abspath(hook.control_dir))

    def _run(self, cmd: Sequence[str], cwd: str, env: dict[str, str], writable: list[str],
             readonly: list[str]) -> tuple[RunResult, str]:
        """Run the hook with its output piped into the log; return the result and its tail."""
        # A hook never reads the caller's terminal: stdin is /dev/null.
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        log = None if self.output is not None else _open_log(self.log_path)
        target = self.output if self.output is not None else log
        try:
            if target is None:
                result = self.sandbox.run(cmd, cwd=cwd, env=env, writable=writable,
                                          readonly=readonly, stdin=null)
                return result, ""
            with HookOutput(target) as output:
                result = self.sandbox.run(cmd, cwd=cwd, env=env, writable=writable,
                                          readonly=readonly, stdin=null,
                                          stdout=output.write_fd, stderr=output.write_fd)
            return result, output.tail(LOG_TAIL_LINES)
        finally:
            os.close(null)
            if log is not None:
                os.close(log)


def _open_log(path: str | None) -> int | None:
    """Open the log a library caller named: appended to, never through a symbolic link."""
    if path is None:
        return None
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                   0o600)


class HookOutputRefusedError(BuildjailError):
    """The hook left something other than a small regular file as its ``output.json``."""


def _check_output_json(control: str) -> None:
    """pyproject_hooks reads ``output.json`` as the caller: it must be a small regular file.

    A symlink to a FIFO would hang the caller, one to ``/dev/zero`` exhaust its memory.
    """
    path = os.path.join(control, "output.json")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return  # pyproject_hooks reports the missing file itself
    regular = stat.S_ISREG(info.st_mode)
    if not regular or info.st_size > MAX_OUTPUT_JSON:
        os.unlink(path)
        what = f"a file of {info.st_size} bytes" if regular else "a symlink or special file"
        raise HookOutputRefusedError(
            f"the build hook left {path} as {what}: refused (pyproject_hooks would read it "
            "outside the sandbox)")


@dataclasses.dataclass(frozen=True)
class HookCommand:
    """pyproject_hooks' ``python _in_process.py HOOK CONTROL_DIR``, decoded."""

    python: str
    script: str
    hook: str
    control_dir: str


def parse_hook_command(cmd: Sequence[str]) -> HookCommand | None:
    """Decode pyproject_hooks' command that runs one hook; None for any other command."""
    if len(cmd) != 4 or not os.path.basename(cmd[1]).endswith("_in_process.py"):
        return None
    return HookCommand(*cmd)


def hook_name(cmd: Sequence[str]) -> str:
    """The hook *cmd* runs (``hook`` when it is not pyproject_hooks' hook command)."""
    hook = parse_hook_command(cmd)
    return hook.hook if hook else "hook"


def hook_runner(
    policy: Policy | str = "full",
    *,
    backend: str = "auto",
    log_path: str | os.PathLike[str] | None = None,
    writable: Iterable[str | os.PathLike[str]] = (),
    readonly: Iterable[str | os.PathLike[str]] = (),
    env: Mapping[str, str] | None = None,
    output: int | None = None,
    refuse_escaping: bool = False,
    hook_script: str | None = None,
    private_tree: bool = False,
) -> SandboxedHookRunner:
    """Return a runner for ``pyproject_hooks.BuildBackendHookCaller(..., runner=...)``."""
    return SandboxedHookRunner(policy, backend=backend, log_path=log_path, writable=writable,
                               readonly=readonly, env=env, output=output,
                               refuse_escaping=refuse_escaping, hook_script=hook_script,
                               private_tree=private_tree)


def hook_writable(hook: HookCommand, cwd: str) -> list[str]:
    """What a hook may write: its source tree *cwd*, the control and output directories."""
    control = os.path.abspath(hook.control_dir)
    return [cwd, control, *_output_directories(control)]


def _output_directories(control: str) -> list[str]:
    """The output directories pyproject_hooks passes only inside ``input.json``."""
    try:
        with open(os.path.join(control, "input.json")) as stream:
            kwargs = json.load(stream).get("kwargs", {})
    except (OSError, ValueError):
        return []
    directories = []
    for key in _OUTPUT_KWARGS:
        value = kwargs.get(key)
        if isinstance(value, str) and os.path.isdir(value):
            directories.append(os.path.abspath(value))
    return directories


def interpreter_prefixes(python: str) -> list[str]:
    """What running *python* needs: its build environment whole, its installation's files.

    A virtual environment's prefix (it has a ``pyvenv.cfg``) is the build's own and shown
    whole (its ``bin`` holds the build requirements' tools); of the installation behind it,
    found through the interpreter's real path and the ``home`` of ``pyvenv.cfg``, only its
    lib, include and bin/python*.
    """
    prefix = os.path.dirname(os.path.dirname(os.path.abspath(python)))
    real = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    home = venv_home(prefix) if prefix != "/" else None
    own = [prefix] if home is not None else []
    bases = [real, prefix] if home is None else [real, os.path.dirname(home)]
    return [*own, *installation_paths(*(base for base in bases if base not in own))]


def venv_home(prefix: str) -> str | None:
    """The ``home`` in *prefix*'s ``pyvenv.cfg`` ("" when it has none); None without one."""
    try:
        with open(os.path.join(prefix, "pyvenv.cfg"), "rb") as stream:
            text = stream.read(1 << 16).decode(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home" and os.path.isabs(value.strip()):
            return value.strip()
    return ""
