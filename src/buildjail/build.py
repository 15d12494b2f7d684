"""Sandboxed PEP 517 builds: sdists and wheels, with every hook inside the sandbox.

The rule: everything a hook returns or leaves behind is hostile input, and no code the
build could have influenced runs outside the sandbox.

- Build requirements, from ``pyproject.toml`` or a ``get_requires_for_build_*`` hook, are
  parsed as PEP 508 requirements (:mod:`.requirements`): URLs, paths, installer options and
  anything unparsable are refused. They are installed from wheels only, by a trusted
  interpreter, never by the environment's own (:mod:`.buildenv`). A requirement with only
  an sdist has its wheel built first, here, in the sandbox, under the same policy — all
  the way down, with cycle detection and a depth limit — or, with
  ``only_binary_build_deps``, is refused.
- Outputs must be named for the project being built, are checked and published as fresh
  0644 copies, and never replace a file in the output directory (:mod:`.outputs`). An
  output directory inside the source tree is read-only to every hook.
- Hooks write to a pipe copied into the log; logs are private files with credentials
  redacted; what is printed of them is bounded and escaped (:mod:`.logs`).
- The checkout's VCS metadata is read-only to every hook (:mod:`.checkout`).
- The batch's work directory, and the temporary directory it lies in, are hidden from
  hooks (only each build's own directories are exposed), so parallel builds of the same
  user cannot read each other's trees.
- One bad package fails alone, with a one-line reason; the others still build.
- Under ``on_attempt = "fail"`` (:mod:`.onattempt`) every hook call is judged before its
  output is published: one that tried the network or a decoy, or went unrecorded, fails
  its package, and what the package published before is withdrawn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO

from packaging.requirements import Requirement
from packaging.utils import (
    canonicalize_name,
    parse_sdist_filename,
)

from . import attempts, trees
from ._linux.filesystem import PRIVATE_TMPFS, within_any
from .backends import SEARCHABLE, shows_host_paths
from .buildenv import BuildEnvironment, BuildEnvironmentError, IndexOptions, MissingWheels
from .environment import filter_environment
from .errors import BuildjailError, SandboxSetupError
from .installers import DEFAULT_INSTALLER
from .interpreters import Interpreter, resolve
from .logs import BuildLog, default_directory, private_directory
from .onattempt import AttemptsRefusedError, AttemptsUnrecordedError, check_recording, judge
from .outputs import OutputDirectory, OutputRefused
from .policy import Policy
from .requirements import RequirementRefused, parse_requirements
from .result import RunResult

DEFAULT_BACKEND = "setuptools.build_meta:__legacy__"
DEFAULT_REQUIRES = ("setuptools>=40.8.0",)
MAX_BUILD_DEPTH = 8
"""How deep builds of sdist-only build requirements may nest (a requirement of a requirement
of ... of the package)."""
MAX_INSTALL_ROUNDS = 32
"""How often one installation is retried after building wheels it was missing."""
MAX_PYPROJECT = 4 << 20
"""The largest ``pyproject.toml`` read."""


class BuildError(BuildjailError):
    """A package could not be built: names the package and the step."""

    def __init__(self, package: str, step: str, message: str) -> None:
        self.package = package
        self.step = step
        super().__init__(f"{package}: {step} failed: {message}")


class AttemptsBuildError(BuildError):
    """A hook tried the network or a decoy, and ``on_attempt`` is ``fail``."""


@dataclasses.dataclass
class HookRecord:
    """One hook call: its name, wall time, the sandbox's exit code and the limit it hit."""

    name: str
    duration: float
    exit_code: int
    limit_hit: str | None = None
    attempts: list[dict[str, str]] = dataclasses.field(default_factory=list)
    """What the hook tried that the sandbox recorded (``RunResult.attempts``)."""
    attempts_omitted: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PackageReport:
    """What happened to one source: the JSON record of ``--report``."""

    source: str
    name: str | None = None
    version: str | None = None
    backend: str | None = None
    hooks: list[HookRecord] = dataclasses.field(default_factory=list)
    layers: list[str] = dataclasses.field(default_factory=list)
    degraded: dict[str, str] = dataclasses.field(default_factory=dict)
    """Layers the sandbox gave weaker than the policy asks (the runtime's, or the backend's
    limits): why."""
    outputs: list[dict[str, str]] = dataclasses.field(default_factory=list)
    build_requirements: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Build requirements that had only an sdist, with the report of their wheel's build."""
    installer: dict[str, Any] | None = None
    """The installer of the build requirements and the index it used (redacted)."""
    result: str = "pending"
    error: str | None = None
    causes: list[str] = dataclasses.field(default_factory=list)
    """What the sandbox denied that probably made a hook fail, each with its flag."""
    step: str | None = None
    log: str | None = None
    build_tree: str | None = None
    """Where the package's work tree was kept (``keep_build_tree``)."""
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dictionary."""
        return dataclasses.asdict(self)

    def attempts_summary(self) -> str:
        """One line of what this package's hooks tried: ``tried: DNS pypi.org; ...``."""
        found = attempts.from_json([item for hook in self.hooks for item in hook.attempts])
        return attempts.summary(found, attempts.merged_omitted(
            hook.attempts_omitted for hook in self.hooks))


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """How to build: the policy, which distributions, settings, the index and the limits."""

    policy: Policy
    sdist: bool = True
    wheel: bool = True
    config_settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Passed to every hook as ``config_settings``: JSON values (``-C`` gives strings and
    lists of strings, ``--config-json`` any JSON)."""
    index: IndexOptions = dataclasses.field(default_factory=IndexOptions)
    installer: str = DEFAULT_INSTALLER
    """Which installer puts the build requirements in place: ``uv`` or ``pip``."""
    backend: str = "auto"
    keep_logs: str | None = None
    wheel_from_sdist: bool = True
    only_binary_build_deps: bool = False
    """Refuse build requirements that have no wheel, instead of building their wheels."""
    overwrite: bool = False
    """Replace files already in the output directory (never one this run published)."""
    max_build_depth: int = MAX_BUILD_DEPTH
    python: str | None = None
    """The interpreter build environments are made from (default: the caller's base)."""
    keep_build_tree: bool = False
    """Keep each package's work tree (extracted sources, build environments) afterwards."""


Progress = Callable[[str, str], None]


class _Batch:
    """What the builds of one run share: the output and log directories, the work
    directory, the wheels built for sdist-only build requirements."""

    def __init__(self, outdir: str, options: BuildOptions) -> None:
        check_recording(options.policy.recording_attempts(), options.backend)
        self.options = options
        self.interpreter: Interpreter = resolve(options.python)
        self.installer = options.index.installer(options.installer)
        self.index = options.index.as_used_by(self.installer)
        """Where sdists of build requirements are looked up: the installer's indexes."""
        self.output = OutputDirectory(outdir, overwrite=options.overwrite)
        self.work = ""
        self.log_fd = -1
        try:
            if options.keep_logs:
                self.log_dir = os.path.abspath(options.keep_logs)
                self.log_fd = private_directory(self.log_dir)
            else:
                self.log_fd, self.log_dir = default_directory()
            self.work = tempfile.mkdtemp(prefix="buildjail-")
            self.searchable = shows_host_paths(options.backend)
            if self.searchable:
                os.chmod(self.work, SEARCHABLE)
            self.wheelhouse_dir = os.path.join(self.work, "build-requirements")
            os.mkdir(self.wheelhouse_dir, 0o755)
            self.wheelhouse = OutputDirectory(self.wheelhouse_dir)
        except BaseException:
            self.close()
            raise
        self.requirements_lock = threading.RLock()
        """Held while building a build requirement's wheel: one at a time, reentrant for
        nested ones (per-name locks could deadlock two builds needing each other's)."""
        self.built: dict[str, dict[str, Any]] = {}
        self.hidden = _hidden_directories(self.work)

    def close(self) -> None:
        """Close the directories and remove the work directory."""
        self.output.close()
        if hasattr(self, "wheelhouse"):
            self.wheelhouse.close()
        if self.log_fd >= 0:
            os.close(self.log_fd)
            self.log_fd = -1
        if self.work:
            trees.remove_tree(self.work)
            self.work = ""


def _hidden_directories(work: str) -> list[str]:
    """What hooks must not see: the batch's work directory and the temporary directory.

    Other builds of the same user (``-j``, or other runs) keep their extracted sources and
    control directories there; as non-root a hook would read them. Each build's own
    directories are exposed on top. The sandbox's ``/tmp`` and ``/var/tmp`` are private.
    """
    hidden = [work]
    temporary = os.path.realpath(tempfile.gettempdir())
    if temporary != "/" and not within_any(temporary, (*PRIVATE_TMPFS, "/dev/shm")):
        hidden.append(temporary)
    return hidden


def build_source(source: str, outdir: str, options: BuildOptions,
                 progress: Progress | None = None) -> PackageReport:
    """Build one source (a directory or an sdist) into *outdir*; never raises BuildError."""
    try:
        batch = _Batch(outdir, options)
    except (OSError, BuildjailError) as error:
        return PackageReport(source=source, result="error", error=f"{_label(source)}: {error}")
    try:
        return _build_in_batch(source, batch, progress)
    finally:
        batch.close()


def _build_in_batch(source: str, batch: _Batch, progress: Progress | None, *,
                    chain: tuple[str, ...] = (), expected: str | None = None,
                    output: OutputDirectory | None = None,
                    options: BuildOptions | None = None) -> PackageReport:
    """Build *source* with what the batch shares; every failure goes into the report."""
    options = options or batch.options
    report = PackageReport(source=source, installer=batch.installer.to_dict())
    started = time.monotonic()
    note = progress or (lambda _source, _step: None)
    label = _label(source)
    log: BuildLog | None = None
    work = tempfile.mkdtemp(prefix="package-", dir=batch.work)
    if batch.searchable:
        os.chmod(work, SEARCHABLE)
    try:
        log = BuildLog.create(batch.log_fd, batch.log_dir, label)
        report.log = log.path
        _PackageBuild(source, batch=batch, options=options, report=report, work=work,
                      note=note, log=log, chain=chain, expected=expected,
                      output=output or batch.output).run()
        report.result = "ok"
    except BuildError as error:
        report.result, report.error, report.step = "error", str(error), error.step
    except SandboxSetupError as error:
        report.result, report.step = "error", "sandbox set-up"
        report.error = f"{label}: the sandbox could not be set up: {error}"
    except (BuildjailError, OSError) as error:
        report.result, report.error = "error", f"{label}: {error}"
    except Exception as error:  # a bug or an unforeseen input: this package fails alone
        report.result = "error"
        report.error = f"{label}: unexpected error: {type(error).__name__}: {error}"
        if log is not None:
            log.write("buildjail: unexpected error\n" + traceback.format_exc())
    finally:
        if options.keep_build_tree:
            report.build_tree = _keep_tree(work)
        else:
            trees.remove_tree(work)
        if log is not None:
            log.close()
    if report.result == "ok" and options.keep_logs is None and report.log:
        with contextlib.suppress(OSError):
            os.unlink(os.path.basename(report.log), dir_fd=batch.log_fd)
        report.log = None  # kept only when asked, or when the build failed
    report.duration = time.monotonic() - started
    return report


def _keep_tree(work: str) -> str | None:
    """Move a package's work tree out of the batch's (removed) into a fresh temporary
    directory beside it; return where (None, and the tree removed, if it cannot move)."""
    kept = tempfile.mkdtemp(prefix="buildjail-tree-")
    try:
        os.rename(work, kept)  # onto the empty directory: same file system, one step
    except OSError:
        os.rmdir(kept)
        trees.remove_tree(work)
        return None
    return kept


def _epoch_note(policy: Policy) -> str:
    """The log's line on ``SOURCE_DATE_EPOCH``: the caller's value, and whether it passes."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None:
        return ("buildjail: SOURCE_DATE_EPOCH is not set: the archives' dates are the "
                "backends' choice")
    if not filter_environment({"SOURCE_DATE_EPOCH": value}, policy.env_keep,
                              policy.env_delete):
        return (f"buildjail: SOURCE_DATE_EPOCH={value} is set, but the policy "
                f"{policy.name} does not pass it to the hooks")
    return f"buildjail: SOURCE_DATE_EPOCH={value} (the caller's, passed to the hooks)"


def _label(source: str) -> str:
    return os.path.basename(os.path.normpath(source)) or source


@dataclasses.dataclass(frozen=True)
class BuildSystem:
    """The ``[build-system]`` of a project, with PEP 517's defaults filled in."""

    requires: tuple[Requirement, ...]
    backend: str
    backend_path: tuple[str, ...] | None
    project_name: str | None = None
    """``[project] name``, when the project states it."""


def read_build_system(project: str, label: str) -> BuildSystem:
    """Read ``pyproject.toml``'s build-system, or the setuptools defaults for ``setup.py``.

    The file is hostile input: any malformed part is a BuildError naming it.
    """
    path = os.path.join(project, "pyproject.toml")
    step = "reading pyproject.toml"
    table = _pyproject(path, label)
    if table is None:
        if os.path.isfile(os.path.join(project, "setup.py")):
            return _default_system(None)
        raise BuildError(label, "finding the project",
                         "it has neither a pyproject.toml nor a setup.py")
    name = _project_name(table)
    label = name or label
    system = table.get("build-system")
    if system is None:
        return _default_system(name)
    if not isinstance(system, dict):
        raise BuildError(label, step, "[build-system] must be a table")
    try:
        requires = parse_requirements(system.get("requires"), "[build-system] requires")
    except RequirementRefused as error:
        raise BuildError(label, step, str(error)) from None
    backend = system.get("build-backend", DEFAULT_BACKEND)
    backend_path = system.get("backend-path")
    if not isinstance(backend, str) or (backend_path is not None and not (
            isinstance(backend_path, list) and all(isinstance(item, str)
                                                   for item in backend_path))):
        raise BuildError(label, step,
                         "build-backend must be a string and backend-path a list of strings")
    return BuildSystem(tuple(requires), backend,
                       tuple(backend_path) if backend_path is not None else None, name)


def _default_system(name: str | None) -> BuildSystem:
    return BuildSystem(tuple(Requirement(text) for text in DEFAULT_REQUIRES), DEFAULT_BACKEND,
                       None, name)


def _pyproject(path: str, label: str) -> dict[str, Any] | None:
    """The parsed ``pyproject.toml`` (None when there is none), read bounded, never a FIFO."""
    import tomllib

    step = "reading pyproject.toml"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise BuildError(label, step, error.strerror or str(error)) from None
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BuildError(label, step, "not a regular file")
        data = stream.read(MAX_PYPROJECT + 1)
    if len(data) > MAX_PYPROJECT:
        raise BuildError(label, step, f"larger than {MAX_PYPROJECT} bytes")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise BuildError(label, step, f"not valid UTF-8 ({error.reason} at byte "
                         f"{error.start})") from None
    except tomllib.TOMLDecodeError as error:
        raise BuildError(label, step, f"invalid TOML: {error}") from None


def _project_name(table: dict[str, Any]) -> str | None:
    project = table.get("project")
    name = project.get("name") if isinstance(project, dict) else None
    return canonicalize_name(name) if isinstance(name, str) and name else None


def _sdist_project(path: str) -> str | None:
    try:
        return canonicalize_name(parse_sdist_filename(os.path.basename(path))[0])
    except ValueError:  # InvalidSdistFilename, or a version number past int()'s digit limit
        return None


class _PackageBuild:
    """The steps of building one source, sharing its options, report and work directory."""

    def __init__(self, source: str, *, batch: _Batch, options: BuildOptions,
                 report: PackageReport, work: str, note: Progress, log: BuildLog,
                 chain: tuple[str, ...], expected: str | None,
                 output: OutputDirectory) -> None:
        self.source, self.batch, self.options = source, batch, options
        self.private_tree = False
        """The hooks build a private copy of the source tree (see _private_copy)."""
        self.report, self.work, self.note, self.log = report, work, note, log
        self.label = _label(source)
        self.chain = chain
        self.expected = expected
        self.output = output


    def _private_copy(self, project: str) -> str:
        """A copy of the source tree for the hooks, where the backend cannot keep parts of a
        writable tree read-only (landlock): the user's checkout and its version-control
        metadata stay out of their reach; the copy is thrown away with the work."""
        self.note(self.source, "copying the source tree")
        copy = os.path.join(self._directory(prefix="tree-"), os.path.basename(project))
        try:
            shutil.copytree(project, copy, symlinks=True, ignore=_special_files)
        except (OSError, shutil.Error) as error:
            raise BuildError(self.label, "copying the source tree", str(error)) from None
        self.private_tree = True
        return copy

    def _directory(self, prefix: str) -> str:
        """A fresh directory of this package's work; searchable where the backend shows
        trees only at their host paths (see ``backends.shows_host_paths``)."""
        path = tempfile.mkdtemp(prefix=prefix, dir=self.work)
        if self.batch.searchable:
            os.chmod(path, SEARCHABLE)
        return path

    def run(self) -> None:
        """Build what the options ask; refused for what a hook tried (or for its attempts
        going unrecorded), deliver nothing: what was published before is withdrawn."""
        try:
            self._run()
        except (AttemptsBuildError, AttemptsUnrecordedError):
            self._withdraw()
            raise

    def _withdraw(self) -> None:
        """Take this package's published outputs out of the output directory."""
        for item in self.report.outputs:
            self.output.withdraw(item["path"])
        self.report.outputs = []

    def _run(self) -> None:
        """Build what the options ask: sdist, wheel, or the wheel from the sdist."""
        if os.path.isdir(self.source):
            project, from_sdist = os.path.abspath(self.source), False
            if self.batch.searchable:
                project = self._private_copy(project)
        elif os.path.isfile(self.source):
            self.expected = self.expected or _sdist_project(self.source)
            self.note(self.source, "extracting")
            project = _extract(self.label, self.source, os.path.join(self.work, "src"),
                               "extracting the sdist")
            from_sdist = True
        else:
            raise BuildError(self.label, "reading the source", "no such file or directory")
        want_wheel = self.options.wheel or from_sdist
        if self.options.sdist and not from_sdist:
            sdist = self.build(project, "sdist")
            if want_wheel and self.options.wheel_from_sdist:
                # The sdist just built is untrusted too.
                project = _extract(self.label, sdist,
                                   self._directory(prefix="from-sdist-"),
                                   "extracting the sdist just built")
                from_sdist = True
        if want_wheel:
            self.build(project, "wheel", in_tree=not from_sdist)

    def build(self, project: str, kind: str, *, in_tree: bool = True) -> str:
        """Build the sdist or the wheel of *project* in a fresh environment; return its path."""
        from pyproject_hooks import BuildBackendHookCaller

        from .pep517 import hook_runner

        report, options = self.report, self.options
        system = read_build_system(project, report.name or self.label)
        self.label = report.name or system.project_name or self.label
        label = self.label
        self.expected = self.expected or system.project_name
        if not self.chain and self.expected:
            self.chain = (self.expected,)
        report.backend = system.backend
        self.note(report.source, f"{kind}: installing build requirements")
        try:
            env = BuildEnvironment(self._directory(prefix=f"env-{kind}-"),
                                   options.index, self.log, self.batch.installer,
                                   self.batch.interpreter)
        except BuildEnvironmentError as error:
            raise BuildError(label, f"preparing the {kind} build environment",
                             str(error)) from None
        self.log.write(f"buildjail: the {kind}'s build environment: Python "
                       f"{self.batch.interpreter.version_text} "
                       f"({self.batch.interpreter.executable})\n{_epoch_note(options.policy)}\n")
        self._install(env, system.requires, f"preparing the {kind} build environment")
        runner = hook_runner(options.policy.recording_attempts().with_paths(
                                 masked=self.batch.hidden),
                             backend=options.backend, log_path=self.log.path,
                             output=self.log.fd, env=env.hook_environment(os.environ),
                             readonly=self._read_only_outputs(project) if in_tree else (),
                             hook_script=env.hook_script, private_tree=self.private_tree)
        caller = BuildBackendHookCaller(project, system.backend,
                                        list(system.backend_path or []) or None,
                                        runner=runner, python_executable=env.python)
        config = dict(options.config_settings)  # {} when none, as pypa/build passes
        hooks = _HookCalls(caller, runner, report, label, note=self.note, log=self.log)
        hook = f"get_requires_for_build_{kind}"
        try:
            extra = parse_requirements(hooks.call(hook, config), f"the {hook} hook")
        except RequirementRefused as error:
            raise BuildError(label, "checking the build requirements", str(error)) from None
        try:
            self._install(env, extra, f"installing the {kind}'s extra requirements")
        except BuildError:
            # A backend asking for what it did not find (maturin for puccinialin, a Rust
            # installer, without cargo): the tools the view hides are the likely cause.
            hooks.name_causes("")
            raise
        staging = self._directory(prefix=f"out-{kind}-")
        # No prepare_metadata_for_build_wheel first (as pypa/build): it costs a hook call,
        # and pyproject_hooks' fallback for a backend without it (meson-python,
        # scikit-build-core) builds the whole wheel. What it would say comes from the same
        # backend as the wheel; the wheel's METADATA is held to its file name, and the file
        # name to the project being built (:meth:`_publish`).
        filename = hooks.call(f"build_{kind}", staging, config)
        output = _hook_output(staging, filename, stat.S_ISREG, label)
        return self._publish(output, kind, label)

    def _read_only_outputs(self, project: str) -> list[str]:
        """The output directory, when it lies in a tree hooks may write: read-only there.

        An output directory that is itself such a tree cannot be protected: refused.
        """
        writable = (project, *self.options.policy.writable)
        if self.output.path in writable:
            raise BuildError(self.label, "checking the output directory",
                             f"{self.output.path} is a directory the hooks may write to (the "
                             "source tree): they could leave files there; choose another -o")
        return [self.output.path] if within_any(self.output.path, writable) else []

    def _install(self, env: BuildEnvironment, requirements: Sequence[Requirement],
                 step: str) -> None:
        """Install *requirements*, building the wheels of those that have only an sdist."""
        built: set[str] = set()
        for _ in range(MAX_INSTALL_ROUNDS):
            try:
                env.install(requirements, find_links=[self.batch.wheelhouse_dir])
                return
            except MissingWheels as missing:
                again = [name for name in missing.names if name in built]
                if again:
                    tail = "\n".join(missing.output.strip().splitlines()[-10:])
                    raise BuildError(self.label, step, f"no usable wheel of "
                                     f"{', '.join(again)}, even after building one:\n{tail}"
                                     ) from None
                for name in missing.names:
                    self._build_requirement(name, [*env.installed, *requirements], step)
                    built.add(name)
            except BuildEnvironmentError as error:
                raise BuildError(self.label, step, str(error)) from None
        raise BuildError(self.label, step, f"still missing wheels after {MAX_INSTALL_ROUNDS} "
                         "rounds of building them")

    def _build_requirement(self, name: str, requested: list[Requirement], step: str) -> None:
        """Build the wheel of the build requirement *name* from its sdist, in the sandbox."""
        from .sources import SourceNotFound, find_sdist

        options, label = self.options, self.label
        if options.only_binary_build_deps:
            raise BuildError(label, step, f"the build requirement {name} has no wheel for "
                             "this interpreter, and --only-binary-build-deps refuses to build "
                             "one from its sdist")
        if name in self.chain:
            raise BuildError(label, step, "the build requirements form a cycle: "
                             + " -> ".join((*self.chain, name)))
        if len(self.chain) > options.max_build_depth:
            raise BuildError(label, step, f"building {name} would nest more than "
                             f"{options.max_build_depth} builds of build requirements")
        requirement = next((item for item in requested
                            if canonicalize_name(item.name) == name), Requirement(name))
        with self.batch.requirements_lock:
            if name in self.batch.built:
                self.report.build_requirements.append(self.batch.built[name])
                return
            self.note(self.report.source, f"building the build requirement {name}")
            try:
                sdist = find_sdist(requirement, self.batch.index, self.work)
            except SourceNotFound as error:
                raise BuildError(label, step, f"no wheel of the build requirement {name} "
                                 "was found (is the index reachable? see --index-url/"
                                 f"--find-links/--no-index), and {error}") from None
            child_options = dataclasses.replace(options, sdist=False, wheel=True,
                                                config_settings={}, wheel_from_sdist=False)
            child = _build_in_batch(sdist, self.batch, self.note, chain=(*self.chain, name),
                                    expected=name, output=self.batch.wheelhouse,
                                    options=child_options)
            if child.result != "ok":
                raise BuildError(label, f"building its build requirement {name} from "
                                 f"{os.path.basename(sdist)}", child.error or "failed")
            record = {"name": name, "version": child.version,
                      "wheels": [output["path"] for output in child.outputs],
                      "report": child.to_dict()}
            self.batch.built[name] = record
            self.report.build_requirements.append(record)

    def _publish(self, path: str, kind: str, label: str) -> str:
        """Publish a checked copy of an output of the sandbox; return its path."""
        report = self.report
        try:
            published = self.output.publish(path, kind, self.expected)
        except OutputRefused as error:
            raise BuildError(label, f"checking the {kind}", str(error)) from None
        if kind == "sdist":
            self.expected = self.expected or published.name
        # The name and version are those of the checked output.
        report.name = report.name or published.name
        report.version = report.version or published.version
        report.outputs.append({"kind": kind, "path": published.path,
                               "sha256": published.sha256})
        return published.path


class _HookCalls:
    """Calls hooks through pyproject_hooks, records them, turns failures into BuildError."""

    def __init__(self, caller: Any, runner: Any, report: PackageReport, label: str, *,
                 note: Progress, log: BuildLog) -> None:
        self.caller, self.runner, self.report, self.label, self.note = (
            caller, runner, report, label, note)
        self.log = log

    def call(self, hook: str, *args: Any, **kwargs: Any) -> Any:
        """Call *hook*; return what it returned (untrusted)."""
        from pyproject_hooks import HookMissing, UnsupportedOperation

        try:
            return self._call(hook, *args, **kwargs)
        except (HookMissing, UnsupportedOperation) as error:
            raise BuildError(self.label, f"the {hook} hook",
                             f"the backend does not support it ({error!r})") from None

    def call_if_defined(self, hook: str, *args: Any) -> tuple[bool, Any]:
        """Call an optional hook, never pyproject_hooks' fallback for it: (defined, result)."""
        from pyproject_hooks import HookMissing

        try:
            return True, self._call(hook, *args, _allow_fallback=False)
        except HookMissing:
            return False, None

    def _call(self, hook: str, *args: Any, **kwargs: Any) -> Any:
        from pyproject_hooks import BackendUnavailable

        from .pep517 import HookFailed, HookOutputRefusedError

        self.note(self.report.source, hook)
        before = len(self.runner.results)
        _current_log.log = self.log
        try:
            return getattr(self.caller, hook)(*args, **kwargs)
        except HookFailed as error:
            if not error.result.limit_hit:
                self.name_causes(error.log_tail)
            raise BuildError(self.label, f"the {hook} hook", str(error)) from None
        except HookOutputRefusedError as error:
            raise BuildError(self.label, f"the {hook} hook", str(error)) from None
        except BackendUnavailable as error:
            tail = "\n".join(error.traceback.strip().splitlines()[-6:])
            raise BuildError(self.label, "importing the build backend",
                             f"{error.backend_name or 'the backend'} cannot be imported "
                             f"in its build environment:\n{tail}") from None
        except (ValueError, TypeError, KeyError) as error:
            # pyproject_hooks reading a hostile output.json, or a backend-path it refuses.
            raise BuildError(self.label, f"the {hook} hook",
                             f"unusable result: {type(error).__name__}: {error}") from None
        finally:
            _current_log.log = None
            self._record(self.runner.results[before:])

    def _record(self, results: Sequence[tuple[str, RunResult]]) -> None:
        """Put the hook calls' *results* in the report; then, under ``on_attempt = "fail"``,
        fail for what they tried, or for its not being recorded (the hook's own failure
        then only in the log: this is the reason)."""
        for name, result in results:
            self.report.hooks.append(HookRecord(
                name, result.duration, result.exit_code, result.limit_hit,
                attempts=[item.to_dict() for item in result.attempts],
                attempts_omitted=dict(result.attempts_omitted)))
            self.report.layers = list(result.layers)
            self.report.degraded = dict(result.degraded)
        for name, result in results:
            try:
                judge(result, self.runner.sandbox.policy, f"the {name} hook")
            except AttemptsRefusedError as error:
                raise AttemptsBuildError(self.label, f"the {name} hook", f"it {error.why}"
                                         ) from None

    def name_causes(self, tail: str) -> None:
        """Put what the sandbox denied that a failure (*tail*: a hook's output) shows in
        the report and the log."""
        from .causes import likely_causes

        causes = likely_causes(self.runner.sandbox.policy, os.environ.get("PATH", ""), tail)
        self.report.causes = causes
        for cause in causes:
            self.log.write(f"buildjail: likely cause: {cause}\n")


def _special_files(directory: str, names: list[str]) -> set[str]:
    """The names in *directory* that are neither files, directories nor links (a FIFO
    would block the copy, a socket or device cannot be copied)."""
    skipped = set()
    for name in names:
        try:
            mode = os.lstat(os.path.join(directory, name)).st_mode
        except OSError:
            skipped.add(name)
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            skipped.add(name)
    return skipped


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


def _extract(label: str, sdist: str, destination: str, step: str) -> str:
    """Extract an sdist without trusting it; a refusal is a BuildError of *step*."""
    from .archives import ArchiveError, extract_sdist

    try:
        return str(extract_sdist(sdist, destination))
    except ArchiveError as error:
        raise BuildError(label, step, str(error)) from None


def build_all(sources: Sequence[str], outdir: str, options: BuildOptions, jobs: int = 1,
              progress: Progress | None = None, *,
              done: Callable[[PackageReport], None] | None = None) -> list[PackageReport]:
    """Build every source, *jobs* at a time; return one report per source, in order.

    *progress* hears each step of each build, *done* each report as its build ends.
    Raises BuildjailError only when the output or log directory or the interpreter of
    ``options.python`` cannot be used; a source
    that fails, however, fails alone in its report.
    """
    batch = _Batch(outdir, options)

    def build_one(source: str) -> PackageReport:
        report = _build_in_batch(source, batch, progress)
        if done is not None:
            done(report)
        return report

    try:
        with _backend_warnings_to_logs():
            if jobs <= 1 or len(sources) <= 1:
                return [build_one(source) for source in sources]
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=jobs) as pool:
                return list(pool.map(build_one, sources))
    finally:
        batch.close()


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
        log = getattr(_current_log, "log", None)
        if log is None or not issubclass(category, BuildBackendWarning):
            original(message, category, filename, lineno, file, line)
            return
        log.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original
