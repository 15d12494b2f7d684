"""Build requirements are hostile input: refused unless plain PEP 508 requirements on a name.

The attacks run for real through ``buildjail build`` (root and non-root, both backends): a
hook returns a URL, a path, an installer option; judged from outside (a marker the payload
would write as whoever builds it, the requests a loopback server receives, ``-o``). Each
control runs the installer the way buildjail used to, showing the same attack succeeds.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from buildjail.requirements import RequirementRefused, parse_requirement, parse_requirements
from conftest import UV, Identity, Server, every_backend
from wheels import make_project

sandbox_backend = pytest.fixture(params=["native", "bwrap", "landlock"])(every_backend)
"""These tests hold for every backend, the landlock one included."""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
needs_uv = pytest.mark.skipif(UV is None, reason="uv is not installed next to this Python")


@pytest.mark.parametrize(("value", "why"), [
    ("x @ file:///tmp/payload", "a direct reference to 'file:///tmp/payload'"),
    ("x@https://example.org/x.whl", "a direct reference"),
    ("/tmp/payload", "not a PEP 508 requirement"),
    ("./payload", "not a PEP 508 requirement"),
    ("--index-url=http://attacker/", "an installer option"),
    ("-e .", "an installer option"),
    ("--log=/etc/x", "an installer option"),
    ('; python_version > "3"', "not a PEP 508 requirement"),
    ("setuptools >= ", "not a PEP 508 requirement"),
    (1, "not a string"),
    ("x" * 2000, "longer than"),
])
def test_anything_but_a_requirement_on_a_name_is_refused(value: object, why: str) -> None:
    with pytest.raises(RequirementRefused) as caught:
        parse_requirement(value, "the get_requires_for_build_wheel hook")
    assert str(caught.value).startswith("the get_requires_for_build_wheel hook asked for ")
    assert why in str(caught.value)


def test_plain_requirements_pass_normalised_and_markers_are_evaluated() -> None:
    parsed = parse_requirements(["setuptools >=61", 'wheel; python_version < "3"',
                                 "Cython[x]==3.0"], "pyproject.toml")
    assert [str(requirement) for requirement in parsed] == ["setuptools>=61", "Cython[x]==3.0"]
    with pytest.raises(RequirementRefused, match="instead of a list"):
        parse_requirements("setuptools", "the hook")



def _payload(directory: Path, markers: Path) -> Path:
    """A project that, whenever any of its hooks runs, writes a marker naming the uid."""
    write = {"write": [str(markers / "payload-ran")]}
    return make_project(directory, "payload", attack={"hooks": {
        "get_requires_for_build_wheel": write, "prepare_metadata_for_build_wheel": write,
        "build_wheel": write}})


def _attacked(identity: Identity, shared_dir: Path, name: str, requirement: object) -> Path:
    project = make_project(shared_dir / name, "perimeter",
                           attack={"requires_wheel": [requirement]})
    identity.own(project)
    return project


REFUSED = {
    "url": ("payload @ file://{payload}", "a direct reference to 'file://{payload}'"),
    "path": ("{payload}", "not a PEP 508 requirement"),
    "index-option": ("--index-url={server}/stolen-{secret}/", "an installer option"),
    "log-option": ("--log={markers}/installer.log", "an installer option"),
    "not-a-string": (1, "which is not a string"),
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_a_hook_cannot_hand_the_installer_a_url_a_path_or_an_option(
        kind: str, identity: Identity, sandbox_backend: str, shared_dir: Path, *,
        http_server: Server, markers: Path) -> None:
    payload = _payload(shared_dir / "payload", markers)
    identity.own(payload)
    template, why = REFUSED[kind]
    values = {"payload": payload, "server": http_server.url, "secret": "73656372657421",
              "markers": markers}
    requirement: Any = template.format(**values) if isinstance(template, str) else template
    project = _attacked(identity, shared_dir, "project", requirement)
    out = shared_dir / "out"
    proc = identity.buildjail(str(project), "--wheel", "-o", str(out), "--no-index",
                              backend=sandbox_backend)
    assert proc.returncode == 1, proc.stderr
    expected = (f"perimeter: checking the build requirements failed: the "
                f"get_requires_for_build_wheel hook asked for {requirement!r}")
    assert expected in proc.stderr, proc.stderr
    assert why.format(**values) in proc.stderr
    assert list(markers.iterdir()) == []  # no payload ran, no installer wrote a log
    assert http_server.requests == []  # no installer asked the "index"
    assert not out.exists() or list(out.iterdir()) == []


def test_a_url_in_pyproject_requires_is_refused_naming_the_file(
        identity: Identity, sandbox_backend: str, shared_dir: Path, markers: Path) -> None:
    payload = _payload(shared_dir / "payload", markers)
    project = make_project(shared_dir / "perimeter", requires=[f"payload @ file://{payload}"])
    identity.own(project, payload)
    proc = identity.buildjail(str(project), "--wheel", "-o", str(shared_dir / "out"),
                              "--no-index", backend=sandbox_backend)
    assert proc.returncode == 1
    assert ("perimeter: reading pyproject.toml failed: [build-system] requires asked for "
            f"'payload @ file://{payload}': a direct reference") in proc.stderr, proc.stderr
    assert list(markers.iterdir()) == []


# --- controls: the installer as buildjail used to run it -------------------------------------

def _old_environment(identity: Identity, shared_dir: Path) -> Path:
    env = shared_dir / "old-env"
    assert UV is not None
    done = identity.run([UV, "venv", "--python", identity.python, str(env)])
    assert done.returncode == 0, done.stderr
    return env


def _old_uv_install(identity: Identity, env: Path, *arguments: str,
                    cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    """What buildjail ran before: ``uv pip install --python ENV/bin/python ARGS``."""
    assert UV is not None
    extra = {"UV_CACHE_DIR": str(cache)} if cache else None
    return identity.run([UV, "pip", "install", "--python", str(env / "bin" / "python"),
                         *arguments], env=extra)


@needs_uv
def test_control_the_old_installer_builds_a_url_requirement_outside(
        identity: Identity, shared_dir: Path, markers: Path) -> None:
    payload = _payload(shared_dir / "payload", markers)
    identity.own(payload)
    env = _old_environment(identity, shared_dir)
    _old_uv_install(identity, env, "--no-index", f"payload @ file://{payload}")
    assert (markers / "payload-ran").read_text() == "planted by the build\n"
    assert (markers / "payload-ran").stat().st_uid == identity.uid  # ran as the caller


@needs_uv
def test_control_the_old_installer_obeys_an_index_option_from_a_hook(
        identity: Identity, shared_dir: Path, http_server: Server) -> None:
    env = _old_environment(identity, shared_dir)
    _old_uv_install(identity, env, f"--index-url={http_server.url}/stolen-7365/", "setuptools")
    assert any(path.startswith("/stolen-7365/") for path in http_server.requests)


def test_control_the_old_pip_writes_a_log_where_a_hook_says(
        identity: Identity, shared_dir: Path, markers: Path) -> None:
    env = shared_dir / "old-env"
    assert identity.run([identity.python, "-m", "venv", "--without-pip", str(env)]
                        ).returncode == 0
    identity.run([identity.python, "-m", "pip", "--python", str(env / "bin" / "python"),
                  "install", "--no-index", f"--log={markers}/installer.log", "setuptools"])
    log = markers / "installer.log"
    assert log.exists() and log.stat().st_uid == identity.uid
    assert stat.S_ISREG(log.stat().st_mode) and json.dumps(log.read_text())
