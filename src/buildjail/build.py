"""Sandboxed PEP 517 builds: sdists and wheels, with every hook inside the sandbox."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO

from .errors import BuildjailError, SandboxSetupError
from .policy import Policy

DEFAULT_BACKEND = "setuptools.build_meta:__legacy__"
DEFAULT_REQUIRES = ("setuptools>=40.8.0",)


class BuildError(BuildjailError):
    """A package could not be built: names the package and the step."""

    def __init__(self, package: str, step: str, message: str) -> None:
        self.package = package
        self.step = step
        super().__init__(f"{package}: {step} failed: {message}")


@dataclasses.dataclass
class HookRecord:
    """One hook call: its name, wall time and the sandbox's exit code."""

    name: str
    duration: float
    exit_code: int


@dataclasses.dataclass
class PackageReport:
    """What happened to one source: the JSON record of ``--report``."""

    source: str
    name: str | None = None
    version: str | None = None
    backend: str | None = None
    hooks: list[HookRecord] = dataclasses.field(default_factory=list)
    layers: list[str] = dataclasses.field(default_factory=list)
    outputs: list[dict[str, str]] = dataclasses.field(default_factory=list)
    result: str = "pending"
    error: str | None = None
    step: str | None = None
    log: str | None = None
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dictionary."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """How to build: the policy, which distributions, config settings and the index."""

    policy: Policy
    sdist: bool = True
    wheel: bool = True
    config_settings: Mapping[str, str | list[str]] = dataclasses.field(default_factory=dict)
    index_args: tuple[str, ...] = ()
    backend: str = "auto"
    keep_logs: str | None = None
    wheel_from_sdist: bool = True


Progress = Callable[[str, str], None]


def build_source(source: str, outdir: str, options: BuildOptions,
                 progress: Progress | None = None) -> PackageReport:
    """Build one source (a directory or an sdist) into *outdir*; never raises BuildError."""
    report = PackageReport(source=source)
    started = time.monotonic()
    note = progress or (lambda _source, _step: None)
    with tempfile.TemporaryDirectory(prefix="buildjail-") as work:
        report.log = _log_path(source, options)
        try:
            _PackageBuild(source, outdir=outdir, options=options, report=report, work=work,
                          note=note).run()
            report.result = "ok"
        except BuildError as error:
            report.result, report.error, report.step = "error", str(error), error.step
        except SandboxSetupError as error:
            report.result, report.step = "error", "sandbox set-up"
            report.error = f"{_label(source)}: the sandbox could not be set up: {error}"
        except BuildjailError as error:
            report.result, report.error = "error", f"{_label(source)}: {error}"
        if report.result == "ok" and options.keep_logs is None and report.log:
            os.unlink(report.log)  # kept only when asked, or when the build failed
            report.log = None
    report.duration = time.monotonic() - started
    return report


def _logs_dir() -> str:
    """This user's directory for kept logs in the temporary directory, safely made."""
    directory = os.path.join(tempfile.gettempdir(), f"buildjail-logs-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        return tempfile.mkdtemp(prefix="buildjail-logs-")  # someone else's name: not ours
    return directory


def _label(source: str) -> str:
    return os.path.basename(os.path.normpath(source)) or source


def _log_path(source: str, options: BuildOptions) -> str:
    """The build log: in ``--logs DIR`` if given, else in this user's temporary log dir."""
    if options.keep_logs:
        os.makedirs(options.keep_logs, exist_ok=True)
        return os.path.join(options.keep_logs, f"{_label(source)}.log")
    fd, path = tempfile.mkstemp(prefix=f"{_label(source)}-", suffix=".log", dir=_logs_dir())
    os.close(fd)
    return path


@dataclasses.dataclass(frozen=True)
class BuildSystem:
    """The ``[build-system]`` of a project, with PEP 517's defaults filled in."""

    requires: tuple[str, ...]
    backend: str
    backend_path: tuple[str, ...] | None


def read_build_system(project: str, label: str) -> BuildSystem:
    """Read ``pyproject.toml``'s build-system, or the setuptools defaults for ``setup.py``."""
    import tomllib

    path = os.path.join(project, "pyproject.toml")
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(project, "setup.py")):
            return BuildSystem(DEFAULT_REQUIRES, DEFAULT_BACKEND, None)
        raise BuildError(label, "finding the project",
                         "it has neither a pyproject.toml nor a setup.py")
    try:
        with open(path, "rb") as stream:
            table = tomllib.load(stream).get("build-system")
    except tomllib.TOMLDecodeError as error:
        raise BuildError(label, "reading pyproject.toml", f"invalid TOML: {error}") from None
    if table is None:
        return BuildSystem(DEFAULT_REQUIRES, DEFAULT_BACKEND, None)
    requires = table.get("requires")
    if not isinstance(requires, list) or not all(isinstance(item, str) for item in requires):
        raise BuildError(label, "reading pyproject.toml",
                         "[build-system] requires must be a list of strings")
    backend = table.get("build-backend", DEFAULT_BACKEND)
    backend_path = table.get("backend-path")
    if not isinstance(backend, str) or (backend_path is not None and not isinstance(
            backend_path, list)):
        raise BuildError(label, "reading pyproject.toml",
                         "build-backend must be a string and backend-path a list")
    return BuildSystem(tuple(requires), backend,
                       tuple(backend_path) if backend_path is not None else None)


class _PackageBuild:
    """The steps of building one source, sharing its options, report and work directory."""

    def __init__(self, source: str, *, outdir: str, options: BuildOptions,
                 report: PackageReport, work: str, note: Progress) -> None:
        self.source, self.outdir, self.options = source, outdir, options
        self.report, self.work, self.note = report, work, note
        self.label = _label(source)

    def run(self) -> None:
        """Build what the options ask: sdist, wheel, or the wheel from the sdist."""
        if os.path.isdir(self.source):
            project, from_sdist = os.path.abspath(self.source), False
        elif os.path.isfile(self.source):
            self.note(self.source, "extracting")
            project = _extract(self.label, self.source, os.path.join(self.work, "src"),
                               "extracting the sdist")
            from_sdist = True
        else:
            raise BuildError(self.label, "reading the source", "no such file or directory")
        os.makedirs(self.outdir, exist_ok=True)
        want_wheel = self.options.wheel or from_sdist
        if self.options.sdist and not from_sdist:
            sdist = self.build(project, "sdist")
            if want_wheel and self.options.wheel_from_sdist:
                # The sdist just built is untrusted too.
                project = _extract(self.label, sdist,
                                   tempfile.mkdtemp(prefix="from-sdist-", dir=self.work),
                                   "extracting the sdist just built")
        if want_wheel:
            self.build(project, "wheel")

    def build(self, project: str, kind: str) -> str:
        """Build the sdist or the wheel of *project* in a fresh environment; return its path."""
        from pyproject_hooks import BuildBackendHookCaller

        from .buildenv import BuildEnvironment, BuildEnvironmentError
        from .pep517 import hook_runner

        report, options = self.report, self.options
        label = report.name or self.label
        system = read_build_system(project, label)
        report.backend = system.backend
        self.note(report.source, f"{kind}: installing build requirements")
        try:
            env = BuildEnvironment(tempfile.mkdtemp(prefix=f"env-{kind}-", dir=self.work),
                                   options.index_args)
            env.install(system.requires, report.log)
        except BuildEnvironmentError as error:
            raise BuildError(label, f"preparing the {kind} build environment",
                             str(error)) from None
        runner = hook_runner(options.policy, backend=options.backend, log_path=report.log,
                             env=env.hook_environment(os.environ))
        caller = BuildBackendHookCaller(project, system.backend,
                                        list(system.backend_path or []) or None,
                                        runner=runner, python_executable=env.python)
        config = dict(options.config_settings) or None
        hooks = _HookCalls(caller, runner, report, label, self.note)
        extra = hooks.call(f"get_requires_for_build_{kind}", config)
        try:
            env.install(extra, report.log)
        except BuildEnvironmentError as error:
            raise BuildError(label, f"installing the {kind}'s extra requirements",
                             str(error)) from None
        staging = tempfile.mkdtemp(prefix=f"out-{kind}-", dir=self.work)
        if kind == "wheel":
            metadata = tempfile.mkdtemp(prefix="metadata-", dir=self.work)
            dist_info = hooks.call("prepare_metadata_for_build_wheel", metadata, config,
                                   _allow_fallback=True)
            _read_metadata(_hook_output(metadata, dist_info, stat.S_ISDIR, label), report)
            filename = hooks.call("build_wheel", staging, config)
        else:
            filename = hooks.call("build_sdist", staging, config)
        output = _hook_output(staging, filename, stat.S_ISREG, label)
        return _publish(output, kind, self.outdir, report, label)


class _HookCalls:
    """Calls hooks through pyproject_hooks, records them, turns failures into BuildError."""

    def __init__(self, caller: Any, runner: Any, report: PackageReport, label: str,
                 note: Progress) -> None:
        self.caller, self.runner, self.report, self.label, self.note = (
            caller, runner, report, label, note)

    def call(self, hook: str, *args: Any, **kwargs: Any) -> Any:
        from pyproject_hooks import BackendUnavailable, HookMissing, UnsupportedOperation

        from .pep517 import HookFailed

        self.note(self.report.source, hook)
        before = len(self.runner.results)
        _current_log.path = self.report.log
        try:
            return getattr(self.caller, hook)(*args, **kwargs)
        except HookFailed as error:
            raise BuildError(self.label, f"the {hook} hook", str(error)) from None
        except BackendUnavailable as error:
            tail = "\n".join(error.traceback.strip().splitlines()[-6:])
            raise BuildError(self.label, "importing the build backend",
                             f"{error.backend_name or 'the backend'} cannot be imported "
                             f"in its build environment:\n{tail}") from None
        except (HookMissing, UnsupportedOperation) as error:
            raise BuildError(self.label, f"the {hook} hook",
                             f"the backend does not support it ({error!r})") from None
        finally:
            for name, result in self.runner.results[before:]:
                self.report.hooks.append(HookRecord(name, result.duration, result.exit_code))
                self.report.layers = list(result.layers)


def _hook_output(directory: str, name: object, kind: Callable[[int], bool], label: str) -> str:
    """The path of a file or directory a hook says it made: a plain name, of the right type.

    The hook's return value is untrusted: an absolute path or ``..`` would make the caller
    (root) check and move a file of the host; a symlink or a FIFO would make it read one.
    """
    if not isinstance(name, str) or not name or os.path.basename(name) != name or name in (
            ".", ".."):
        raise BuildError(label, "checking the hook's output", f"not a plain file name: {name!r}")
    path = os.path.join(directory, name)
    try:
        mode = os.lstat(path).st_mode
    except OSError as error:
        raise BuildError(label, "checking the hook's output",
                         f"{name}: {error.strerror}") from None
    if not kind(mode):
        raise BuildError(label, "checking the hook's output", f"{name}: not a regular "
                         f"{'directory' if kind is stat.S_ISDIR else 'file'}")
    return path


def _read_metadata(dist_info: str, report: PackageReport) -> None:
    from email.parser import HeaderParser

    fd = os.open(os.path.join(dist_info, "METADATA"), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BuildError(_label(report.source), "reading the metadata",
                             "METADATA is not a file")
        text = stream.read(1 << 20).decode("utf-8", errors="replace")
    headers = HeaderParser().parsestr(text)
    report.name, report.version = headers.get("Name"), headers.get("Version")


def _publish(path: str, kind: str, outdir: str, report: PackageReport, label: str) -> str:
    """Check an output of the sandbox before handing it on, then move it to *outdir*."""
    from .archives import ArchiveError, validate_sdist, validate_wheel

    try:
        if kind == "wheel":
            sha256 = validate_wheel(path).sha256
        else:
            info = validate_sdist(path)
            sha256 = info.sha256
            report.name = report.name or info.name
            report.version = report.version or info.version
    except ArchiveError as error:
        raise BuildError(label, f"checking the {kind}", str(error)) from None
    destination = os.path.join(os.path.abspath(outdir), os.path.basename(path))
    shutil.move(path, destination)
    report.outputs.append({"kind": kind, "path": destination, "sha256": sha256})
    return destination


def _extract(label: str, sdist: str, destination: str, step: str) -> str:
    """Extract an sdist without trusting it; a refusal is a BuildError of *step*."""
    from .archives import ArchiveError, extract_sdist

    try:
        return str(extract_sdist(sdist, destination))
    except ArchiveError as error:
        raise BuildError(label, step, str(error)) from None


def build_all(sources: Sequence[str], outdir: str, options: BuildOptions, jobs: int = 1,
              progress: Progress | None = None) -> list[PackageReport]:
    """Build every source, *jobs* at a time; return one report per source, in order."""
    with _backend_warnings_to_logs():
        if jobs <= 1 or len(sources) <= 1:
            return [build_source(source, outdir, options, progress) for source in sources]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(
                lambda source: build_source(source, outdir, options, progress), sources))


_current_log = threading.local()


@contextlib.contextmanager
def _backend_warnings_to_logs() -> Iterator[None]:
    """Write the backends' warnings (pyproject_hooks re-emits them) to each package's log."""
    from pyproject_hooks import BuildBackendWarning

    original = warnings.showwarning

    def show(  # noqa: PLR0917 - the signature of warnings.showwarning
        message: Warning | str, category: type[Warning], filename: str, lineno: int,
        file: TextIO | None = None, line: str | None = None,
    ) -> None:
        log = getattr(_current_log, "path", None)
        if log is None or not issubclass(category, BuildBackendWarning):
            original(message, category, filename, lineno, file, line)
            return
        with open(log, "a") as stream:
            stream.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original
