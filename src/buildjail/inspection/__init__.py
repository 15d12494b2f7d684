"""``buildjail inspect``: import a built wheel inside the sandbox and report what it tried.

Each wheel is hostile input. Outside the sandbox it is copied into a private work
directory and the copy checked by :func:`~buildjail.archives.validate_wheel` (bounded);
what it provides — its top-level modules, its ``console_scripts`` — is read from the
checked copy. Then one sandboxed run per wheel (the policy recording attempts) runs the
driver (``_driver.py``, standard library only, by the base interpreter's absolute path
with ``-I -S``): it makes a fresh virtual environment in the sandbox's private ``/tmp``,
unpacks the wheel (and the dependency wheels ``find_links`` provides) into it, imports
each module and runs each entry point with ``--help``, each in its own process with a
timeout.

The verdict comes only from what the sandbox's init recorded (``RunResult.attempts``):
see :func:`suspicious_attempts`. What the driver prints is information (which import
failed, and why): the code it imports can write there too, so it is read bounded,
parsed line by line, and shown escaped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import attempts as attempts_module
from .. import trees
from ..archives import ArchiveError, WheelInfo, read_wheel_member, validate_wheel
from ..attempts import Attempt
from ..errors import BuildjailError, SandboxSetupError
from ..escaping import escape_controls
from ..interpreters import current
from ..logs import HookOutput
from ..pep517 import interpreter_prefixes
from ..policy import Policy
from ..result import RunResult
from ..sandbox import Sandbox

DEFAULT_TIMEOUT = 60.0
"""Seconds each import and each entry point's ``--help`` may take."""
ENVIRONMENT = "/tmp/buildjail-inspect/env"
"""Where the driver makes the fresh environment: the sandbox's private ``/tmp``."""
MAX_OUTPUT = 1 << 20
"""The most of the driver's output read (the rest is dropped)."""
MAX_MODULES = 500
"""Top-level modules imported per wheel; a wheel with more is reported incomplete. With
MAX_ENTRY_POINTS, what keeps the driver's own processes under the recording's cap of a
kind (``attempts.MAX_ATTEMPTS``): an ``exec`` counted past it would be a finding."""
MAX_ENTRY_POINTS = 200
"""Console entry points run per wheel; a wheel with more is reported incomplete."""
MAX_DEPENDENCIES = 200
"""Dependency wheels installed beside one wheel (from ``find_links``)."""
MAX_NAME = 200
"""Characters of an entry point's name kept."""
MAX_WHEEL_FILE = 16 << 30
"""The largest wheel file copied."""
VERDICTS = ("clean", "suspicious", "incomplete")
"""``incomplete``: the run could not say (not recorded, stopped by a limit, install failed)."""
_DRIVER = Path(__file__).with_name("_driver.py")


class InspectionError(BuildjailError):
    """A wheel that cannot be inspected (missing, not a valid wheel): bad input."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One step the driver said it ran: ``install``, ``import`` or ``entry_point``."""

    kind: str
    name: str
    ok: bool
    detail: str = ""
    """Why it failed, one line (the driver's word: information only)."""
    seconds: float = 0.0


@dataclasses.dataclass
class WheelReport:
    """What inspecting one wheel found: the steps, the attempts, the suspicious ones."""

    wheel: str
    name: str = ""
    version: str = ""
    sha256: str = ""
    dependencies: list[str] = dataclasses.field(default_factory=list)
    """The dependency wheels installed beside it (file names)."""
    modules: list[str] = dataclasses.field(default_factory=list)
    entry_points: list[str] = dataclasses.field(default_factory=list)
    """``name = module:attr``, as ``console_scripts`` declares them."""
    steps: list[Step] = dataclasses.field(default_factory=list)
    attempts: list[dict[str, str]] = dataclasses.field(default_factory=list)
    """Everything the sandbox recorded (``RunResult.attempts``)."""
    findings: list[dict[str, str]] = dataclasses.field(default_factory=list)
    """The suspicious attempts (:func:`suspicious_attempts`)."""
    attempts_omitted: dict[str, int] = dataclasses.field(default_factory=dict)
    unrecorded: dict[str, str] = dataclasses.field(default_factory=dict)
    """Kinds of attempts the sandbox could not record: why."""
    incomplete: list[str] = dataclasses.field(default_factory=list)
    """Why the inspection could not look at everything."""
    exit_code: int | None = None
    limit_hit: str | None = None
    backend: str = ""
    layers: list[str] = dataclasses.field(default_factory=list)
    degraded: dict[str, str] = dataclasses.field(default_factory=dict)
    duration: float = 0.0

    @property
    def verdict(self) -> str:
        """``suspicious`` when anything suspicious was tried (or its count omitted), else
        ``incomplete`` when the run could not see everything, else ``clean``."""
        if self.findings or self.attempts_omitted:
            return "suspicious"
        return "incomplete" if self.incomplete or self.unrecorded else "clean"

    def summary(self) -> str:
        """The findings in one line: ``tried: read decoy ~/.netrc; DNS exfil.example``."""
        return attempts_module.summary(attempts_module.from_json(self.findings),
                                       self.attempts_omitted)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON, with its verdict."""
        return {"verdict": self.verdict, **dataclasses.asdict(self)}


def suspicious_attempts(recorded: Iterable[Attempt],
                        started: Iterable[Sequence[str]]) -> tuple[Attempt, ...]:
    """The recorded attempts that are suspicious: all but an ``exec`` of a command the
    inspection itself started (*started*, compared by argv).

    Any other kind is suspicious whatever it is — a DNS name, a decoy opened, a
    connection — so a kind recorded later counts without a change here. An ``exec``
    whose argv cannot be read is suspicious too. Stricter than
    :func:`buildjail.attempts.suspicious`, which holds every ``exec`` harmless
    (``attempts.HARMLESS``: builds run compilers); an import runs nothing of its own.
    """
    ours = {tuple(argv) for argv in started}
    return tuple(item for item in recorded
                 if item.kind != "exec" or not any(
                     argv in ours or is_library_lookup(argv) for argv in exec_argv(item)))


LIBRARY_LOOKUP = ("/sbin/ldconfig", "-p")
"""What ``ctypes.util.find_library`` runs first on Linux, at many a module's import (a
wrapper of a C library looking for it): the library cache, listed. Nothing else of it is
let pass — its fallbacks run a compiler, which starts programs of its own."""


def is_library_lookup(argv: Sequence[str]) -> bool:
    """Whether *argv* is exactly the standard library's lookup of a C library by name."""
    return tuple(argv) == LIBRARY_LOOKUP


def exec_argv(item: Attempt) -> set[tuple[str, ...]]:
    """The argv an ``exec`` attempt stands for: its ``argv`` field, which the recorder
    writes as ``shlex.join`` of the arguments; empty without one, or when it does not
    parse (a cut one)."""
    value = dict(item.fields).get("argv")
    if value is None:
        return set()
    try:
        return {tuple(shlex.split(value))}
    except ValueError:
        return set()


def provided_modules(files: Iterable[str]) -> list[str]:
    """The top-level modules a wheel's *files* install: packages (a directory holding
    Python files, with or without ``__init__.py``), modules and extension modules."""
    found: set[str] = set()
    for path in files:
        parts = path.split("/")
        if parts[0].endswith(".dist-info"):
            continue
        if parts[0].endswith(".data"):
            if len(parts) < 4 or parts[1] not in ("purelib", "platlib"):
                continue
            parts = parts[2:]
        name = _module_name(parts)
        if name is not None:
            found.add(name)
    return sorted(found)


def _module_name(parts: list[str]) -> str | None:
    """The top-level module of an installed file's path, or None (data, scripts)."""
    last = parts[-1]
    if not last.endswith((".py", ".pyc", ".pyd", ".so")):
        return None
    name = parts[0] if len(parts) > 1 else last.split(".", 1)[0]
    return name if name.isidentifier() and name != "__pycache__" else None


def console_scripts(text: str) -> list[tuple[str, str]]:
    """The ``[console_scripts]`` of an ``entry_points.txt``: (name, ``module:attr``), extras
    dropped; an entry that is not a plain object reference is left out."""
    import configparser
    import re

    parser = configparser.RawConfigParser(delimiters=("=",), interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error:
        return []
    if not parser.has_section("console_scripts"):
        return []
    reference = re.compile(r"^\s*([\w.]+)\s*(?::\s*([\w.]+))?\s*(?:\[[^\]]*\])?\s*$")
    found = []
    for name, value in parser.items("console_scripts"):
        match = reference.match(value)
        if match and name.strip() and name.isprintable():  # an argv word: no NUL
            target = match[1] + (f":{match[2]}" if match[2] else "")
            found.append((attempts_module.bounded(name.strip(), MAX_NAME), target))
    return found


@dataclasses.dataclass(frozen=True)
class _Staged:
    """One wheel copied into the work directory and checked: what the sandbox is given."""

    given: str
    path: str
    info: WheelInfo
    dependencies: tuple[str, ...]
    modules: tuple[str, ...]
    entry_points: tuple[tuple[str, str], ...]


def inspect_wheels(wheels: Sequence[str | os.PathLike[str]], *, policy: Policy | None = None,
                   backend: str = "auto", find_links: Sequence[str | os.PathLike[str]] = (),
                   timeout: float = DEFAULT_TIMEOUT) -> list[WheelReport]:
    """Inspect each wheel in a sandbox of its own; one report per wheel, in order.

    Every wheel (and dependency wheel) is checked before any sandbox runs: a missing or
    invalid one raises InspectionError, and nothing is left behind. *find_links*:
    directories of dependency wheels (without them nothing but the wheel is installed).
    Raises SandboxSetupError when the sandbox cannot be set up or would record nothing.
    """
    chosen = _recording(policy or Policy.profile("full"), backend)
    for directory in find_links:
        if not os.path.isdir(directory):
            raise InspectionError(f"--find-links {os.fspath(directory)}: not a directory")
    with _work_directory() as work:
        driver = _copy_driver(work)
        staged = [_stage(work, os.fspath(wheel), index, [os.fspath(d) for d in find_links])
                  for index, wheel in enumerate(wheels)]
        return [_inspect(item, driver, chosen, backend, timeout) for item in staged]


def _recording(policy: Policy, backend: str) -> Policy:
    """*policy* recording attempts; SandboxSetupError where it could record none."""
    from ..backends import resolved

    recording = policy.recording_attempts()
    if resolved(backend) == "landlock":
        raise SandboxSetupError(
            "inspect needs a sandbox that records what the wheel tries, and the landlock "
            "backend records no attempts (no network namespace, no decoys)",
            "run it where namespaces can be made, with --backend native or bwrap")
    if recording.record_attempts is not True:
        raise SandboxSetupError(
            f"inspect needs a sandbox that records what the wheel tries, and the policy "
            f"{policy.name} records none (it needs a filesystem view and a network "
            "namespace, and record_attempts not false)", "use --profile full")
    return recording


@contextlib.contextmanager
def _work_directory() -> Iterator[str]:
    """A private work directory (0700: the sandbox is shown single files of it)."""
    work = tempfile.mkdtemp(prefix="buildjail-inspect-")
    try:
        yield work
    finally:
        trees.remove_tree(work)


def _copy_driver(work: str) -> str:
    """The driver, copied where the sandbox's identity can read it (0644)."""
    path = os.path.join(work, "_driver.py")
    with open(path, "xb") as stream:
        stream.write(_DRIVER.read_bytes())
    os.chmod(path, 0o644)
    return path


def _stage(work: str, wheel: str, index: int, find_links: list[str]) -> _Staged:
    """Copy *wheel* (and its dependency wheels) into *work*, check the copies, read what
    it provides; InspectionError for anything unusable."""
    directory = os.path.join(work, f"wheel-{index}")
    os.mkdir(directory, 0o700)
    path, info = _checked_copy(wheel, directory)
    dist_info = info.dist_info
    entry_points = _entry_points(path, dist_info)
    modules = provided_modules(info.files)
    dependencies = _dependencies(path, dist_info, find_links, directory)
    return _Staged(wheel, path, info, tuple(dependencies), tuple(modules), tuple(entry_points))


def _checked_copy(wheel: str, directory: str) -> tuple[str, WheelInfo]:
    """A 0644 copy of *wheel* in *directory*, checked: never a FIFO or a device read."""
    name = os.path.basename(wheel)
    target = os.path.join(directory, name)
    try:
        fd = os.open(wheel, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise InspectionError(f"{wheel}: {error.strerror or error}") from None
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InspectionError(f"{wheel}: not a regular file")
        if info.st_size > MAX_WHEEL_FILE:
            raise InspectionError(f"{wheel}: larger than {MAX_WHEEL_FILE} bytes")
        with open(target, "xb") as out:
            shutil.copyfileobj(source, out)
    os.chmod(target, 0o644)
    try:
        return target, validate_wheel(target, filename=wheel)
    except ArchiveError as error:
        raise InspectionError(str(error)) from None


def _entry_points(path: str, dist_info: str) -> list[tuple[str, str]]:
    try:
        data = read_wheel_member(path, f"{dist_info}/entry_points.txt")
    except ArchiveError as error:
        raise InspectionError(str(error)) from None
    return console_scripts(data.decode("utf-8", "replace")) if data else []


def _dependencies(path: str, dist_info: str, find_links: list[str],
                  directory: str) -> list[str]:
    """The dependency wheels of *find_links* to install beside the wheel, copied and
    checked into *directory*: for each requirement (and theirs) that applies here, the
    highest compatible version that satisfies it. Nothing without *find_links*."""
    if not find_links:
        return []
    from .dependencies import resolve

    return resolve(path, dist_info, find_links, directory=directory, limit=MAX_DEPENDENCIES,
                   copy=_checked_copy)


def _started(staged: _Staged, driver: str, python: str, plan: str) -> list[list[str]]:
    """The argv of every process the inspection itself starts in the sandbox."""
    env_python = os.path.join(ENVIRONMENT, "bin", "python")
    return [[python, "-I", "-S", driver, plan],
            *([env_python, "-I", driver, "import", name] for name in staged.modules),
            *([env_python, "-I", driver, "entry-point", name, value]
              for name, value in staged.entry_points)]


def _inspect(staged: _Staged, driver: str, policy: Policy, backend: str,
             timeout: float) -> WheelReport:
    """Run the driver for one staged wheel and judge what the sandbox recorded."""
    report = _report_of(staged)
    if not _installable(staged.path):
        report.incomplete.append(f"its tags are none that this Python "
                                 f"({current().version_text}) installs: its code may not run")
    python = current().executable
    modules, entry_points = staged.modules[:MAX_MODULES], staged.entry_points[:MAX_ENTRY_POINTS]
    plan = os.path.join(os.path.dirname(staged.path), "plan.json")
    _write_plan(plan, staged, modules, entry_points, timeout)
    steps = len(modules) + len(entry_points)
    wall = (timeout + 5) * (steps + 1) + 60
    if policy.limits.wall_time is not None:
        wall = min(wall, policy.limits.wall_time)
    sandbox = Sandbox(policy.with_limits(wall_time=wall), backend=backend)
    readonly = [driver, plan, staged.path, *staged.dependencies, *interpreter_prefixes(python)]
    started = _started(staged, driver, python, plan)
    result, output = _run(sandbox, started[0], readonly)
    _judge(report, result, started)
    report.steps = parse_steps(output)
    _note_incomplete(report, result, len(modules) < len(staged.modules),
                     len(entry_points) < len(staged.entry_points))
    return report


def _installable(path: str) -> bool:
    """Whether the interpreter the sandbox runs accepts the checked wheel's tags."""
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    return bool(parse_wheel_filename(os.path.basename(path))[3] & set(sys_tags()))


def _report_of(staged: _Staged) -> WheelReport:
    info = staged.info
    return WheelReport(
        wheel=staged.given, name=info.name, version=info.version, sha256=info.sha256,
        dependencies=[os.path.basename(path) for path in staged.dependencies],
        modules=list(staged.modules),
        entry_points=[f"{name} = {value}" for name, value in staged.entry_points])


def _write_plan(path: str, staged: _Staged, modules: Sequence[str],
                entry_points: Sequence[tuple[str, str]], timeout: float) -> None:
    plan = {"env": ENVIRONMENT, "wheels": [*staged.dependencies, staged.path],
            "modules": list(modules), "entry_points": [list(item) for item in entry_points],
            "timeout": timeout}
    with open(path, "x", encoding="utf-8") as stream:
        json.dump(plan, stream)
    os.chmod(path, 0o644)


def _run(sandbox: Sandbox, cmd: list[str], readonly: list[str]) -> tuple[RunResult, bytes]:
    """Run *cmd* with its output copied (at most MAX_OUTPUT bytes) into a private file."""
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with tempfile.TemporaryFile() as kept:
            with HookOutput(kept.fileno(), limit=MAX_OUTPUT) as output:
                result = sandbox.run(cmd, cwd="/", readonly=readonly, stdin=null,
                                     stdout=output.write_fd, stderr=output.write_fd)
            kept.seek(0)
            return result, kept.read(MAX_OUTPUT)
    finally:
        os.close(null)


def _judge(report: WheelReport, result: RunResult, started: list[list[str]]) -> None:
    report.exit_code, report.limit_hit = result.exit_code, result.limit_hit
    report.backend, report.duration = result.backend, result.duration
    report.layers, report.degraded = list(result.layers), dict(result.degraded)
    report.attempts = attempts_module.to_json(result.attempts)
    report.findings = attempts_module.to_json(suspicious_attempts(result.attempts, started))
    report.attempts_omitted = dict(result.attempts_omitted)
    report.unrecorded = {**attempts_module.unrecorded(result.layers, result.degraded),
                         **{key: value for key, value in result.degraded.items()
                            if key.startswith("attempts:")}}


def _note_incomplete(report: WheelReport, result: RunResult, modules_cut: bool,
                     entry_points_cut: bool) -> None:
    """Say why the run could not look at everything the wheel provides."""
    from ..limits import describe_limit

    why = report.incomplete
    if result.limit_hit:
        why.append(f"stopped by {describe_limit(result.limit_hit)}")
    elif result.exit_code != 0:
        why.append(f"the driver exited with {result.exit_code}")
    if modules_cut:
        why.append(f"only the first {MAX_MODULES} modules were imported")
    if entry_points_cut:
        why.append(f"only the first {MAX_ENTRY_POINTS} entry points were run")
    installed = [step for step in report.steps if step.kind == "install"]
    if not any(step.ok for step in installed):
        reason = next((step.detail for step in installed if step.detail), "")
        why.append("the wheel was not installed" + (f": {reason}" if reason else ""))


def parse_steps(output: bytes) -> list[Step]:
    """The steps the driver printed (JSON lines; anything else is skipped), escaped."""
    steps = []
    for line in output.decode("utf-8", "replace").splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, Mapping) or data.get("step") not in (
                "install", "import", "entry_point"):
            continue
        seconds = data.get("seconds")
        steps.append(Step(
            kind=str(data["step"]), name=_shown(data.get("name")),
            ok=data.get("ok") is True, detail=_shown(data.get("detail")),
            seconds=float(seconds) if isinstance(seconds, int | float) else 0.0))
    return steps


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else ""
    return escape_controls(attempts_module.bounded(" ".join(text.split()), 400))


__all__ = ["DEFAULT_TIMEOUT", "InspectionError", "Step", "WheelReport", "console_scripts",
           "exec_argv", "inspect_wheels", "parse_steps", "provided_modules",
           "suspicious_attempts"]
