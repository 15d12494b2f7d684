"""Build environments: a fresh venv per package, its requirements installed from wheels.

The installer runs outside the sandbox, as the caller (it needs the index). Nothing inside
the environment may run there: all of it came from wheels, and a wheel is hostile input (a
``.pth`` file runs whenever the environment's interpreter starts; a script can replace a
file of ``bin``). So no installer is pointed at the environment's interpreter (pip's
``--python`` re-executes pip under it, uv runs it to query it); each runs with a trusted
interpreter — the base installation the venv was made from, which no hook can write —
and installs into the environment's directories:

- uv (the default): ``uv pip install --no-config [--config-file USER_UV_TOML] --python BASE
  --prefix ENV --only-binary :all: -- REQS``, uv found through its Python package;
- pip (``--installer pip``): the caller's own interpreter installs every requirement so far
  with ``--target`` into a fresh directory, moved into the environment.

Each reads the user's index configuration, never a project's (:mod:`.installers`).
Scripts are then pointed at the environment's interpreter. Only wheels are installed; a
requirement that has only an sdist is reported (:class:`MissingWheels`), so the caller can
build its wheel in the sandbox first. The installer never reads configuration from the
directory it runs in (a project's ``pyproject.toml``, a ``uv.toml`` planted in ``/tmp``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from . import trees
from .credentials import redact
from .errors import BuildjailError
from .installers import DEFAULT_INSTALLER, Installer, InstallerError, find_installer
from .interpreters import Interpreter, current
from .logs import BuildLog
from .requirements import as_arguments

MAX_SCRIPT = 1 << 20
"""Scripts larger than this are not rewritten (a generated launcher is a few hundred bytes)."""
MAX_CONSTRAINTS = 1 << 20
"""The most of a ``--build-constraint`` file read to see whether it pins hashes."""
_UV_NEEDS_WHEEL = re.compile(r"Wheels are required for `([^`]+)`")
_PIP_NOT_FOUND = re.compile(r"No matching distribution found for (\S+)")


class BuildEnvironmentError(BuildjailError):
    """A build environment could not be created or its requirements installed."""


class MissingWheels(BuildEnvironmentError):  # noqa: N818 - says what is missing
    """The installer found no wheel for these projects (their wheels must be built first)."""

    def __init__(self, names: Sequence[str], output: str) -> None:
        self.names = list(names)
        self.output = output
        super().__init__(f"no wheel of {', '.join(self.names)}")


@dataclasses.dataclass(frozen=True)
class IndexOptions:
    """Where build requirements come from: buildjail's find-links, index and extra indexes.

    What is not given here comes from the installer's own (the user's) configuration.
    """

    find_links: tuple[str, ...] = ()
    index_url: str | None = None
    no_index: bool = False
    extra_index_urls: tuple[str, ...] = ()
    build_constraint: str | None = None
    """A constraints file for every build requirement (uv checks the hashes it pins)."""

    def arguments(self, extra_find_links: Iterable[str] = ()) -> list[str]:
        """The installer's options (the index URL travels in the environment, see below)."""
        arguments = []
        for link in (*self.find_links, *extra_find_links):
            arguments += ["--find-links", link]
        if self.no_index:
            arguments.append("--no-index")
        return arguments

    def installer(self, name: str = DEFAULT_INSTALLER,
                  environ: Mapping[str, str] | None = None) -> Installer:
        """The installer *name*, these options over the user's configuration in *environ*."""
        return find_installer(name, index_url=self.index_url,
                              extra_index_urls=self.extra_index_urls, no_index=self.no_index,
                              environ=os.environ if environ is None else environ)

    def as_used_by(self, installer: Installer) -> IndexOptions:
        """These find-links with the indexes *installer* will actually ask."""
        return dataclasses.replace(self, index_url=installer.index.url,
                                   extra_index_urls=installer.index.extra,
                                   no_index=installer.index.url is None)

    def describe(self) -> str:
        """Where requirements come from, for the log (credentials redacted)."""
        places = [f"find-links {link}" for link in self.find_links]
        if self.no_index:
            places.append("no index")
        elif self.index_url:
            places.append(f"index {redact(self.index_url)}")
        places += [f"extra index {redact(url)}" for url in self.extra_index_urls]
        return ", ".join(places) or "the default index"


def has_hashes(path: str) -> bool:
    """Whether the requirements file *path* pins hashes (``--hash=sha256:...``)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return "--hash" in stream.read(MAX_CONSTRAINTS)
    except OSError as error:
        raise BuildEnvironmentError(f"cannot read the build constraints {path}: "
                                    f"{error.strerror or error}") from None


class BuildEnvironment:
    """An isolated virtual environment holding one package's build requirements."""

    def __init__(self, path: str, index: IndexOptions | None = None,
                 log: BuildLog | None = None, installer: Installer | None = None,
                 interpreter: Interpreter | None = None) -> None:
        """*interpreter*: the base installation to make it from (default: the caller's)."""
        self.path = path
        self.index = index or IndexOptions()
        self.log = log
        try:
            chosen = installer or self.index.installer()
        except InstallerError as error:
            raise BuildEnvironmentError(str(error)) from None
        # A private cache beside the environment when the user's cannot be written.
        self.installer = chosen.with_cache(os.path.join(os.path.dirname(path), "uv-cache"))
        self.interpreter = interpreter or current()
        self.base = self.interpreter.executable
        self.installed: list[Requirement] = []
        self._create()

    @property
    def python(self) -> str:
        """The environment's interpreter (run only inside the sandbox)."""
        return os.path.join(self.path, "bin", "python")

    @property
    def bin(self) -> str:
        """The environment's scripts directory, put first in the build's PATH."""
        return os.path.join(self.path, "bin")

    @property
    def site_packages(self) -> str:
        """Where the environment's packages go (the layout of a venv of the base)."""
        return self.interpreter.site_packages(self.path)

    @property
    def hook_script(self) -> str:
        """The environment's copy of pyproject_hooks' ``_in_process.py``, which hooks run."""
        return os.path.join(self.path, "buildjail-hooks", "_in_process.py")

    def hook_environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """*base* with this environment's scripts directory first in ``PATH``."""
        return {**base, "PATH": os.pathsep.join([self.bin, base.get("PATH", os.defpath)])}

    def install(self, requirements: Iterable[Requirement],
                find_links: Iterable[str] = ()) -> None:
        """Install *requirements* from wheels, outside the sandbox; raise MissingWheels.

        *find_links*: more directories of wheels (those built for this run).
        """
        wanted = [*self.installed, *requirements]
        if not as_arguments(wanted) or as_arguments(wanted) == as_arguments(self.installed):
            return
        if self.installer.name == "uv":
            self._run_installer(self._uv_command(wanted, find_links), wanted)
        else:
            self._install_with_pip(wanted, find_links)
        self.installed = wanted
        self._point_scripts_here()

    def _uv_command(self, wanted: list[Requirement], find_links: Iterable[str]) -> list[str]:
        return [*self.installer.program, "--python", self.base, "--prefix", self.path,
                "--only-binary", ":all:", *self.index.arguments(find_links),
                *self._constraint_arguments(), "--", *as_arguments(wanted)]

    def _install_with_pip(self, wanted: list[Requirement], find_links: Iterable[str]) -> None:
        stage = tempfile.mkdtemp(prefix="pip-target-", dir=os.path.dirname(self.path))
        try:
            self._run_installer(
                [*self._pip_program(), "--disable-pip-version-check",
                 "--no-input", "--no-warn-script-location", "--target", stage,
                 "--only-binary", ":all:", *self.index.arguments(find_links),
                 *self._constraint_arguments(), "--", *as_arguments(wanted)], wanted)
            self._replace_packages(stage)
        finally:
            trees.remove_tree(stage)

    def _pip_program(self) -> list[str]:
        """pip's command; for another interpreter's environment, run by that one (--python)."""
        program = list(self.installer.program)
        if self.base == current().executable:
            return program
        return [*program[:-1], "--python", self.base, program[-1]]

    def _constraint_arguments(self) -> list[str]:
        """``-c FILE``; with hashes in it, uv checks them and pip cannot (refused)."""
        path = self.index.build_constraint
        if path is None:
            return []
        if not has_hashes(path):
            return ["-c", path]
        if self.installer.name == "uv":
            return ["-c", path, "--verify-hashes"]
        raise BuildEnvironmentError(
            f"the build constraints {path} pin hashes, which pip checks only for requirements "
            "pinned with ==, never for constraints: use --installer uv")

    def _replace_packages(self, stage: str) -> None:
        """Make the pip --target directory *stage* the environment's packages and scripts."""
        site = self.site_packages
        errors = trees.remove_tree(site)
        if errors:
            raise BuildEnvironmentError(f"cannot replace {site}: {errors[0]}")
        scripts = os.path.join(stage, "bin")
        if os.path.isdir(scripts) and not os.path.islink(scripts):
            for name in os.listdir(scripts):
                if name.startswith("python") or name.startswith("activate"):
                    continue  # never a name of the venv's own files
                os.replace(os.path.join(scripts, name), os.path.join(self.bin, name))
            trees.remove_tree(scripts)
        os.chmod(stage, 0o755)  # made by mkdtemp: the build's identity must read it
        os.rename(stage, site)
        os.mkdir(stage)  # removed by the caller

    def _run_installer(self, cmd: list[str], wanted: list[Requirement]) -> None:
        env = self.installer.env(os.environ)
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                              check=False, env=env, cwd=os.path.dirname(self.path),
                              stdin=subprocess.DEVNULL)
        output = redact(proc.stdout + proc.stderr)
        if self.log is not None:
            self.log.write(f"$ {redact(' '.join(cmd))}\n(build requirements from "
                           f"{self.installer.describe()})\n{output}")
        if proc.returncode == 0:
            return
        missing = _missing_wheels(output, wanted)
        if missing:
            raise MissingWheels(missing, output)
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise BuildEnvironmentError(
            f"installing the build requirements {', '.join(as_arguments(wanted))} failed "
            f"(is the index reachable? see --index-url/--find-links/--no-index):\n{tail}")

    def _point_scripts_here(self) -> None:
        """Make the scripts the installer wrote start this environment's interpreter."""
        base = os.path.realpath(self.base)
        for name in os.listdir(self.bin):
            _retarget_script(self.bin, name, base, self.python)

    def _create(self) -> None:
        try:
            if self.base == current().executable:
                _make_venv(self.path)
            elif self.installer.name == "uv":
                subprocess.run([self.installer.program[0], "venv", "--no-config", "--quiet",
                                "--python", self.base, self.path], check=True, capture_output=True,
                               cwd=os.path.dirname(self.path), stdin=subprocess.DEVNULL,
                               env=self.installer.env(os.environ))
            else:
                subprocess.run([self.base, "-I", "-m", "venv", "--without-pip", "--symlinks",
                                self.path], check=True, capture_output=True, cwd="/",
                               stdin=subprocess.DEVNULL)
            os.chmod(self.path, 0o755)  # the build's identity must be able to enter it
            os.makedirs(self.site_packages, exist_ok=True)
            self._copy_hook_script()
        except (OSError, subprocess.CalledProcessError) as error:
            raise BuildEnvironmentError(f"cannot create a build environment in {self.path}: "
                                        f"{error}") from None

    def _copy_hook_script(self) -> None:
        """Put pyproject_hooks' hook script in the environment: nothing of the caller's
        installation is run in the sandbox (its files may be unreadable to the build)."""
        from importlib.resources import files

        script = files("pyproject_hooks._in_process").joinpath("_in_process.py").read_bytes()
        os.mkdir(os.path.dirname(self.hook_script), 0o755)
        with open(self.hook_script, "xb") as stream:
            stream.write(script)
        os.chmod(self.hook_script, 0o644)


def _make_venv(path: str) -> None:
    """A venv of this process's own base interpreter, made here (as pypa/build does): no
    process started (``uv venv`` took 15-30 ms, ``python -m venv`` more)."""
    import venv

    venv.EnvBuilder(symlinks=True, with_pip=False).create(path)


def _missing_wheels(output: str, wanted: list[Requirement]) -> list[str]:
    """The projects the installer's failure says have no wheel (uv), or were not found (pip)."""
    names = _UV_NEEDS_WHEEL.findall(output)
    for text in _PIP_NOT_FOUND.findall(output):
        try:
            names.append(Requirement(text).name)
        except InvalidRequirement:
            continue
    return list(dict.fromkeys(canonicalize_name(name) for name in names))


def _retarget_script(directory: str, name: str, base: str, python: str) -> None:
    """Rewrite the ``#!`` line of *name* from the base interpreter to *python*."""
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return  # a symbolic link (the venv's interpreters) or gone
    with os.fdopen(fd, "rb") as stream:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SCRIPT:
            return
        data = stream.read(MAX_SCRIPT + 1)
    first, newline, rest = data.partition(b"\n")
    if not first.startswith(b"#!") or not newline:
        return
    interpreter, _, arguments = first[2:].strip().partition(b" ")
    if os.path.realpath(os.fsdecode(interpreter)) != base:
        return
    line = f"#!{python}".encode() + (b" " + arguments if arguments else b"")
    if len(line) > 127:  # the kernel's limit: start it through sh, as installers do
        line = b"#!/bin/sh\n'''exec' " + os.fsencode(python) + b' "$0" "$@"\n' + b"' '''"
    temporary = f"{path}.buildjail-{os.getpid()}"
    with open(temporary, "xb") as out:
        out.write(line + b"\n" + rest)
        os.fchmod(out.fileno(), stat.S_IMODE(info.st_mode))
    os.replace(temporary, path)
