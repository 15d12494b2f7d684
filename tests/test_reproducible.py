"""Reproducible outputs: SOURCE_DATE_EPOCH reaches the backend, and a backend that is
reproducible gives the same bytes through buildjail on every run as through pypa/build.

The project is a tiny flit_core one (flit_core from a wheel fetched once, like the other
build requirements of the tests). flit_core writes uid and gid 0 and SOURCE_DATE_EPOCH as
the files' dates into its sdists, so buildjail's per-run identity does not reach them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from buildjail._linux.identity import BUILD_GID, BUILD_UID, PREFERRED_BASE
from conftest import SYSTEM_PYTHON, fetched_wheels, require_backend
from test_build import buildjail

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
EPOCH = "1600000000"


@pytest.fixture(scope="session")
def flit_wheelhouse() -> Path:
    """A directory holding a flit_core wheel, fetched once."""
    return fetched_wheels("wheelhouse-flit", "flit_core>=3.9,<5")


def demo_project(directory: Path, name: str, requires: str, backend: str) -> Path:
    """A one-module project *name* 1.0 of the build backend *backend*."""
    (directory / name).mkdir(parents=True)
    (directory / name / "__init__.py").write_text('"""A demo."""\n')
    (directory / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["{requires}"]\nbuild-backend = "{backend}"\n\n'
        f'[project]\nname = "{name}"\nversion = "1.0"\ndescription = "A demo"\n')
    return directory


def flit_project(directory: Path) -> Path:
    return demo_project(directory, "flitdemo", "flit_core>=3.9,<5", "flit_core.buildapi")


def digests(out: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(out.iterdir())}


def test_flit_outputs_are_the_same_bytes_every_run_and_as_pypa_builds(
        tmp_path: Path, flit_wheelhouse: Path) -> None:
    project = flit_project(tmp_path / "project")
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
    index = ["--no-index", "--find-links", str(flit_wheelhouse)]
    first = buildjail(str(project), "-o", str(tmp_path / "one"), *index, env=env)
    assert first.returncode == 0, first.stderr
    # another run, another installer and another interpreter: the same bytes
    other = ["--installer", "pip", "--python", SYSTEM_PYTHON] if os.path.exists(
        SYSTEM_PYTHON) else []
    second = buildjail(str(project), "-o", str(tmp_path / "two"), *index, *other, env=env)
    assert second.returncode == 0, second.stderr
    ours = digests(tmp_path / "one")
    assert sorted(ours) == ["flitdemo-1.0-py2.py3-none-any.whl", "flitdemo-1.0.tar.gz"]
    assert digests(tmp_path / "two") == ours
    # the wheel of the sdist built, built again from that sdist alone
    again = buildjail(str(tmp_path / "one" / "flitdemo-1.0.tar.gz"), "-o",
                      str(tmp_path / "three"), *index, env=env)
    assert again.returncode == 0, again.stderr
    assert digests(tmp_path / "three") == {"flitdemo-1.0-py2.py3-none-any.whl":
                                           ours["flitdemo-1.0-py2.py3-none-any.whl"]}
    theirs = subprocess.run(
        [sys.executable, "-m", "build", "-o", str(tmp_path / "pypa"), str(project)],
        env={**env, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(flit_wheelhouse)},
        capture_output=True, text=True, timeout=600, check=False)
    assert theirs.returncode == 0, theirs.stdout + theirs.stderr
    assert digests(tmp_path / "pypa") == ours
    with tarfile.open(tmp_path / "one" / "flitdemo-1.0.tar.gz") as sdist:
        files = [member for member in sdist.getmembers() if member.isfile()]
    assert {(m.uid, m.gid, m.uname, m.gname) for m in files} == {(0, 0, "", "")}
    planted = [m for m in files if m.name.endswith(("__init__.py", "pyproject.toml"))]
    assert len(planted) == 2 and {m.mtime for m in planted} == {int(EPOCH)}


def setuptools_project(directory: Path) -> Path:
    return demo_project(directory, "stdemo", "setuptools>=61", "setuptools.build_meta")


def owners(sdist: Path) -> set[tuple[int, int, str, str]]:
    """The owner fields of every member's tar header."""
    with tarfile.open(sdist) as archive:
        return {(m.uid, m.gid, m.uname, m.gname) for m in archive.getmembers()}


@pytest.mark.parametrize("backend", ["native", "bwrap"])
def test_setuptools_sdists_carry_the_same_fixed_owner_every_run(
        tmp_path: Path, wheelhouse: Path, backend: str) -> None:
    """setuptools writes the builder's uid and name into its tar headers: a build sees the
    same fixed ids on every run (a user namespace maps them onto the leased ones)."""
    require_backend(backend)
    project = setuptools_project(tmp_path / "project")
    index = ["--no-index", "--find-links", str(wheelhouse), "--sdist"]
    seen = []
    for run in ("one", "two"):
        done = buildjail(str(project), "-o", str(tmp_path / run), *index, backend=backend)
        assert done.returncode == 0, done.stderr
        seen.append(owners(tmp_path / run / "stdemo-1.0.tar.gz"))
    assert seen[0] == seen[1] == {(BUILD_UID, BUILD_GID, "buildjail", "buildjail")}


def test_control_without_a_user_namespace_each_run_leaves_its_own_uid(
        tmp_path: Path, wheelhouse: Path) -> None:
    """Landlock makes no namespace: the leased uid, another on each run, reaches the headers
    (what every backend did before the fixed ids)."""
    require_backend("landlock")
    project = setuptools_project(tmp_path / "project")
    # an interpreter the leased uid can reach without a mount namespace (not pyenv's /root)
    index = ["--no-index", "--find-links", str(wheelhouse), "--sdist", "--python", SYSTEM_PYTHON]
    seen = []
    for run in ("one", "two", "three"):
        done = buildjail(str(project), "-o", str(tmp_path / run), *index, backend="landlock")
        assert done.returncode == 0, done.stderr
        ids = {uid for uid, _, _, _ in owners(tmp_path / run / "stdemo-1.0.tar.gz")}
        assert len(ids) == 1 and next(iter(ids)) >= PREFERRED_BASE, ids
        seen.append(ids)
    assert len({next(iter(ids)) for ids in seen}) > 1, seen  # ids are leased at random
