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

from conftest import SYSTEM_PYTHON, fetched_wheels
from test_build import buildjail

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
EPOCH = "1600000000"


@pytest.fixture(scope="session")
def flit_wheelhouse() -> Path:
    """A directory holding a flit_core wheel, fetched once."""
    return fetched_wheels("wheelhouse-flit", "flit_core>=3.9,<5")


def flit_project(directory: Path) -> Path:
    (directory / "flitdemo").mkdir(parents=True)
    (directory / "flitdemo" / "__init__.py").write_text('"""A demo."""\n')
    (directory / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["flit_core>=3.9,<5"]\n'
        'build-backend = "flit_core.buildapi"\n\n'
        '[project]\nname = "flitdemo"\nversion = "1.0"\ndescription = "A demo"\n')
    return directory


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
