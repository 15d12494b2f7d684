"""fromager's proposed sandboxing hooks (its PR #1171), implemented by buildjail.

Once fromager calls them, its global settings name them::

    external_commands:
      setup_sandbox: buildjail.fromager:setup_sandbox
      teardown_sandbox: buildjail.fromager:teardown_sandbox
      run_sandboxed: buildjail.fromager:run_sandboxed
      run_unconfined: buildjail.fromager:run_unconfined

fromager sets the sandbox up per package and version after ``prepare_source``, runs each
step in it through ``run_sandboxed`` and tears it down in ``finally``; see
:mod:`.package` for what one package's sandbox is and :mod:`.configuration` for where the
policy comes from. ``run_unconfined`` runs outside, with the environment fromager's own
``external_commands`` settings filter (:mod:`.unconfined`).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from ..errors import EXIT_TIMEOUT, BuildjailError
from . import package
from .api import (
    Completed,
    OptionalFile,
    RunCommand,
    SandboxLifecycle,
    StrOrBytesPath,
    WorkContext,
)
from .configuration import configured_backend, configured_policy
from .unconfined import unconfined_environment

if TYPE_CHECKING:
    from packaging.requirements import Requirement

CAPTURE_LIMIT = 32 << 20
"""The most of a step's captured output handed to fromager."""

_SETTING_UP = object()
"""What the registry holds for a package while its sandbox is being set up."""
_sandboxes: dict[str, object] = {}
"""The package directories' sandboxes (or ``_SETTING_UP``)."""
_registry = threading.Lock()


def package_directory(ctx: WorkContext, sdist_root_dir: pathlib.Path) -> str:
    """The package's directory (``sdist_root_dir.parent``), resolved; BuildjailError unless
    it is a directory inside fromager's work directory."""
    parent = os.path.abspath(os.fspath(sdist_root_dir)).rstrip("/").rpartition("/")[0]
    work_dir = os.path.realpath(os.fspath(ctx.work_dir))
    if not parent or os.path.islink(parent) or not os.path.isdir(parent):
        raise BuildjailError(f"the package directory {parent or '/'} is not a directory")
    resolved = os.path.realpath(parent)
    if not resolved.startswith(work_dir.rstrip("/") + "/"):
        raise BuildjailError(f"the package directory {resolved} is not inside fromager's "
                             f"work directory {work_dir}")
    return resolved


def setup_sandbox(*, ctx: WorkContext, req: Requirement, sdist_root_dir: pathlib.Path) -> None:
    """Prepare the sandbox of one package and version: its directory, its identity."""
    root = package_directory(ctx, sdist_root_dir)
    policy, backend = configured_policy(os.environ), configured_backend(os.environ)
    with _registry:
        if root in _sandboxes:
            raise BuildjailError(f"the sandbox of {req} in {root} is set up already")
        _sandboxes[root] = _SETTING_UP
    try:
        sandbox = package.set_up(root, policy, backend, os.environ)  # others set up meanwhile
    except BaseException:
        with _registry:
            del _sandboxes[root]
        raise
    with _registry:
        _sandboxes[root] = sandbox


def teardown_sandbox(*, ctx: WorkContext, req: Requirement,
                     sdist_root_dir: pathlib.Path) -> None:
    """Kill what is left of the package's sandbox and release its identity (set up or not)."""
    root = package_directory(ctx, sdist_root_dir)
    with _registry:
        sandbox = _sandboxes.get(root)
        if isinstance(sandbox, package.PackageSandbox):
            del _sandboxes[root]
    if isinstance(sandbox, package.PackageSandbox):
        sandbox.tear_down()


def sandbox_of(ctx: WorkContext, sdist_root_dir: pathlib.Path) -> package.PackageSandbox:
    """The package's sandbox; BuildjailError if ``setup_sandbox`` did not prepare it."""
    root = package_directory(ctx, sdist_root_dir)
    with _registry:
        sandbox = _sandboxes.get(root)
    if not isinstance(sandbox, package.PackageSandbox):
        raise BuildjailError(f"no sandbox is set up for {root}: call setup_sandbox first")
    return sandbox


def run_sandboxed(args: Sequence[StrOrBytesPath], *, ctx: WorkContext, req: Requirement,
                  sdist_root_dir: pathlib.Path, stdin: OptionalFile = None,
                  stdout: OptionalFile = None, stderr: OptionalFile = None,
                  cwd: StrOrBytesPath | None = None, timeout: float | None = None,
                  text: bool | None = None, env: Mapping[str, str] | None = None) -> Completed:
    """Run one step in the package's sandbox; its ``CompletedProcess``, also when it failed.

    A step has one output stream: *stderr* is ``subprocess.STDOUT`` (or both are None, the
    caller's own). A step stopped by *timeout* raises ``subprocess.TimeoutExpired``.
    """
    sandbox = sandbox_of(ctx, sdist_root_dir)
    cmd = _command(args)
    directory = os.path.abspath(os.fsdecode(cwd)) if cwd is not None else os.getcwd()
    with _Streams(stdin, stdout, stderr) as streams:
        code = sandbox.run(cmd, cwd=directory, env=os.environ if env is None else env,
                           stdin=streams.stdin, output=streams.output, timeout=timeout)
        output = streams.captured()
    result: Any = output.decode(errors="replace") if text and output is not None else output
    if code == EXIT_TIMEOUT and timeout is not None:
        raise subprocess.TimeoutExpired(cmd, timeout, output=result)
    return subprocess.CompletedProcess(cmd, code, stdout=result)


def run_unconfined(args: Sequence[StrOrBytesPath], *, ctx: WorkContext, req: Requirement,
                   sdist_root_dir: pathlib.Path, stdin: OptionalFile = None,
                   stdout: OptionalFile = None, stderr: OptionalFile = None,
                   cwd: StrOrBytesPath | None = None, timeout: float | None = None,
                   text: bool | None = None, env: Mapping[str, str] | None = None) -> Completed:
    """Run *args* outside the sandbox, its environment filtered by fromager's settings."""
    filtered = unconfined_environment(ctx, os.environ if env is None else env, os.environ,
                                      configured_policy(os.environ))
    return subprocess.run(_command(args), stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd,
                          timeout=timeout, text=text, env=filtered, check=False)


def _command(args: Sequence[StrOrBytesPath]) -> list[str]:
    """*args* as strings; BuildjailError for an empty command or a bare string."""
    if isinstance(args, str | bytes) or not args:
        raise BuildjailError(f"a command is a non-empty list of arguments, not {args!r}")
    return [os.fsdecode(arg) for arg in args]


class _Streams:
    """The step's stdin and its one output stream, from ``subprocess.run``'s arguments."""

    def __init__(self, stdin: OptionalFile, stdout: OptionalFile,
                 stderr: OptionalFile) -> None:
        if not (stderr == subprocess.STDOUT or (stderr is None and stdout is None)):
            raise BuildjailError("a sandboxed step has one output stream: pass "
                                 "stderr=subprocess.STDOUT")
        if stdin == subprocess.PIPE:
            raise BuildjailError("a sandboxed step takes no input through a pipe: pass a "
                                 "file, subprocess.DEVNULL or None")
        self._stdin, self._stdout = stdin, stdout
        self._opened: list[int] = []
        self._capture: IO[bytes] | None = None
        self._captured_fd: int | None = None
        self.stdin: int | None = None
        self.output: int | None = None

    def __enter__(self) -> _Streams:
        if self._stdin not in (None, subprocess.DEVNULL):
            self.stdin = _fileno(self._stdin)
        if self._stdout == subprocess.PIPE:
            # An unnamed regular file, not a memfd: the landlock backend cannot confine a
            # step whose output is a memfd (landlock_add_rule fails with EBADFD).
            self._capture = tempfile.TemporaryFile(prefix="buildjail-step-")
            self._captured_fd = self.output = self._capture.fileno()
        elif self._stdout == subprocess.DEVNULL:
            self.output = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            self._opened.append(self.output)
        elif self._stdout is not None:
            self.output = _fileno(self._stdout)
        return self

    def __exit__(self, *_: object) -> None:
        for fd in self._opened:
            os.close(fd)
        if self._capture is not None:
            self._capture.close()

    def captured(self) -> bytes | None:
        """What the step wrote, when its output was ``subprocess.PIPE``: its last
        CAPTURE_LIMIT bytes (the build chose how much it wrote)."""
        if self._captured_fd is None:
            return None
        size = os.fstat(self._captured_fd).st_size
        start = max(0, size - CAPTURE_LIMIT)
        chunks = [b"[buildjail: %d bytes of output left out]\n" % start] if start else []
        os.lseek(self._captured_fd, start, os.SEEK_SET)
        while chunk := os.read(self._captured_fd, 1 << 20):
            chunks.append(chunk)
            if sum(map(len, chunks)) > CAPTURE_LIMIT + 64:  # it kept writing: stop here
                break
        return b"".join(chunks)


def _fileno(stream: int | IO[Any]) -> int:
    if isinstance(stream, int):
        if stream < 0:
            raise BuildjailError(f"not a file descriptor: {stream}")
        return stream
    return stream.fileno()


if TYPE_CHECKING:  # the hooks have the proposal's signatures (checked by mypy)
    _setup: SandboxLifecycle = setup_sandbox
    _teardown: SandboxLifecycle = teardown_sandbox
    _sandboxed: RunCommand = run_sandboxed
    _unconfined: RunCommand = run_unconfined
