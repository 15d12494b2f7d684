"""Build environments: nothing a requirement installed runs outside; sdist-only ones are built
in the sandbox.

Real wheels and sdists from a local find-links directory, through ``buildjail build`` as
root and as a non-root user, on both backends, with both installers (``--installer uv``,
the default, and ``--installer pip``). Judged from outside: markers a ``.pth`` file or an
sdist's backend would write as whoever runs it, and the requests a loopback server
receives. The controls run the installer as buildjail used to (``--python
ENV/bin/python``) and show the attack.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from buildjail.build import BuildOptions, build_all
from buildjail.buildenv import IndexOptions
from buildjail.policy import Policy
from conftest import UV, Identity, Server
from wheels import make_project, make_sdist, write_wheel

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
needs_uv = pytest.mark.skipif(UV is None, reason="uv is not installed next to this Python")

PTH = ("import os, sys; M = {markers!r}; sys.stderr.write('PTHDROP ran as uid %d\\n' % "
       "os.getuid()); os.access(M, os.W_OK) and open(os.path.join(M, 'pth-ran-as-%d' % "
       "os.getuid()), 'w').close()\n")



def _links(shared_dir: Path, identity: Identity) -> Path:
    links = shared_dir / "links"
    links.mkdir(exist_ok=True)
    return links


def _without_uv_on_path(identity: Identity) -> dict[str, str]:
    """PATH without uv: ``--installer`` alone says which installer runs, never PATH."""
    path = identity.environment()["PATH"]
    return {"PATH": os.pathsep.join(part for part in path.split(os.pathsep)
                                    if part and not (Path(part) / "uv").exists())}


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_pth_file_from_a_requirement_never_runs_outside(
        installer: str, identity: Identity, sandbox_backend: str, shared_dir: Path, *,
        markers: Path) -> None:
    """Installed first, its .pth would run when an installer started the environment's
    interpreter for the hook's extra requirement; it runs only in the sandbox's hooks."""
    links = _links(shared_dir, identity)
    write_wheel(links, "pthdrop", files={"pthdrop.pth": PTH.format(markers=str(markers)).encode(),
                                         "pthdrop_mod.py": b""})
    write_wheel(links, "helper")
    project = make_project(shared_dir / "perimeter", requires=["pthdrop"], attack={
        "requires_wheel": ["helper"], "hooks": {"build_wheel": {"import": ["helper"]}}})
    identity.own(project)
    logs = shared_dir / "logs"
    proc = identity.buildjail(str(project), "--wheel", "-o", str(shared_dir / "out"),
                              "--no-index", "--find-links", str(links), "--logs", str(logs),
                              "--installer", installer, backend=sandbox_backend,
                              env=_without_uv_on_path(identity))
    assert proc.returncode == 0, proc.stderr
    log = (logs / "perimeter.log").read_text()
    assert "PTHDROP ran as uid" in log  # the .pth is live: it ran, in the sandbox's hooks
    assert "PERIMETER imported: helper from " in log  # the second install happened
    assert list(markers.iterdir()) == []  # and never outside
    commands = [line for line in log.splitlines() if line.startswith("$ ")]
    assert len(commands) == 2  # the static requirement, then the hook's
    assert not [command for command in commands if re.search(r"env-wheel-\w+/bin/", command)]


def test_a_build_requirement_with_only_an_sdist_is_built_in_the_sandbox(
        identity: Identity, sandbox_backend: str, shared_dir: Path, *,
        http_server: Server, markers: Path) -> None:
    links = _links(shared_dir, identity)
    outside = {"write": [str(markers / "sdonly-ran")], "fetch": f"{http_server.url}/sdonly"}
    make_sdist(links, "sdonly", attack={"hooks": {
        "get_requires_for_build_wheel": outside, "build_wheel": outside}})
    project = make_project(shared_dir / "perimeter", requires=["sdonly"], attack={
        "hooks": {"build_wheel": {"import": ["sdonly"]}}})
    identity.own(project)
    logs, report = shared_dir / "logs", shared_dir / "report.json"
    identity.own(shared_dir)
    proc = identity.buildjail(str(project), "--wheel", "-o", str(shared_dir / "out"),
                              "--no-index", "--find-links", str(links), "--logs", str(logs),
                              "--report", str(report), backend=sandbox_backend)
    assert proc.returncode == 0, proc.stderr
    [entry] = json.loads(report.read_text())
    [built] = entry["build_requirements"]
    assert built["name"] == "sdonly" and built["version"] == "1.0"
    assert built["report"]["result"] == "ok"
    assert {"seccomp", "namespace:net", "filesystem"} <= set(built["report"]["layers"])
    assert "PERIMETER imported: sdonly from " in (logs / "perimeter.log").read_text()
    nested = (logs / "sdonly-1.0.tar.gz.log").read_text()
    assert "PERIMETER write refused" in nested and "PERIMETER fetch refused" in nested
    assert list(markers.iterdir()) == [] and http_server.requests == []


def test_only_binary_build_deps_refuses_an_sdist_only_requirement(
        identity: Identity, sandbox_backend: str, shared_dir: Path) -> None:
    links = _links(shared_dir, identity)
    make_sdist(links, "sdonly")
    project = make_project(shared_dir / "perimeter", requires=["sdonly"])
    identity.own(project)
    proc = identity.buildjail(str(project), "--wheel", "-o", str(shared_dir / "out"),
                              "--no-index", "--find-links", str(links),
                              "--only-binary-build-deps", backend=sandbox_backend)
    assert proc.returncode == 1
    assert ("perimeter: preparing the wheel build environment failed: the build requirement "
            "sdonly has no wheel for this interpreter, and --only-binary-build-deps refuses "
            "to build one from its sdist") in proc.stderr, proc.stderr


def test_a_cycle_of_sdist_only_requirements_is_refused(
        identity: Identity, sandbox_backend: str, shared_dir: Path) -> None:
    links = _links(shared_dir, identity)
    make_sdist(links, "cyca", requires=["cycb"])
    make_sdist(links, "cycb", requires=["cyca"])
    project = make_project(shared_dir / "perimeter", requires=["cyca"])
    identity.own(project)
    proc = identity.buildjail(str(project), "--wheel", "-o", str(shared_dir / "out"),
                              "--no-index", "--find-links", str(links),
                              backend=sandbox_backend)
    assert proc.returncode == 1
    assert "the build requirements form a cycle: perimeter -> cyca -> cycb -> cyca" in (
        proc.stderr), proc.stderr
    assert "perimeter: building its build requirement cyca from cyca-1.0.tar.gz failed" in (
        proc.stderr)


def test_nested_sdist_only_requirements_stop_at_the_depth_limit(
        shared_dir: Path, sandbox_backend: str) -> None:
    links = _links(shared_dir, Identity("root", "", Path(), shared_dir))
    make_sdist(links, "deep1", requires=["deep2"])
    make_sdist(links, "deep2")
    project = make_project(shared_dir / "perimeter", requires=["deep1"])
    index = IndexOptions(find_links=(str(links),), no_index=True)
    options = BuildOptions(policy=Policy.profile("full"), backend=sandbox_backend,
                           index=index, sdist=False, max_build_depth=1)
    [report] = build_all([str(project)], str(shared_dir / "out"), options)
    assert report.result == "error"
    assert "building deep2 would nest more than 1 builds of build requirements" in str(
        report.error)
    deeper = BuildOptions(policy=Policy.profile("full"), backend=sandbox_backend, index=index,
                          sdist=False, max_build_depth=2)
    [report] = build_all([str(project)], str(shared_dir / "out2"), deeper)
    assert report.result == "ok", report.error
    assert [item["name"] for item in report.build_requirements] == ["deep1"]
    assert [item["name"] for item in report.build_requirements[0]["report"][
        "build_requirements"]] == ["deep2"]


# --- controls: the installer as buildjail used to run it -------------------------------------

def _old_environment(identity: Identity, shared_dir: Path) -> Path:
    env = shared_dir / "old-env"
    done = identity.run([identity.python, "-m", "venv", "--without-pip", str(env)])
    assert done.returncode == 0, done.stderr
    return env


@needs_uv
def test_control_the_old_uv_install_runs_a_pth_of_the_environment_outside(
        identity: Identity, shared_dir: Path, markers: Path) -> None:
    """uv runs the interpreter it installs into (``-I -B -c ...``) to query it: the .pth runs."""
    assert UV is not None
    links = _links(shared_dir, identity)
    write_wheel(links, "pthdrop", files={"pthdrop.pth": PTH.format(markers=str(markers)).encode()})
    write_wheel(links, "helper")
    env = _old_environment(identity, shared_dir)
    python = str(env / "bin" / "python")
    base = ["--no-index", "--find-links", str(links)]
    identity.run([UV, "pip", "install", "--python", python, *base, "pthdrop"])
    cold = identity.scratch / "cold-cache"  # as a fresh cache or a changed interpreter has it
    identity.run([UV, "pip", "install", "--python", python, *base, "helper"],
                 env={"UV_CACHE_DIR": str(cold)})
    assert (markers / f"pth-ran-as-{identity.uid}").exists()


def test_control_the_old_pip_install_runs_a_pth_of_the_environment_outside(
        identity: Identity, shared_dir: Path, markers: Path) -> None:
    """``pip --python ENV/bin/python`` re-executes pip under that interpreter."""
    links = _links(shared_dir, identity)
    write_wheel(links, "pthdrop", files={"pthdrop.pth": PTH.format(markers=str(markers)).encode()})
    write_wheel(links, "helper")
    env = _old_environment(identity, shared_dir)
    pip = [identity.python, "-m", "pip", "--python", str(env / "bin" / "python"), "install",
           "--no-index", "--find-links", str(links)]
    identity.run([*pip, "pthdrop"])
    identity.run([*pip, "helper"])
    assert (markers / f"pth-ran-as-{identity.uid}").exists()


@needs_uv
def test_control_the_old_install_builds_an_sdist_only_requirement_outside(
        identity: Identity, shared_dir: Path, http_server: Server, markers: Path) -> None:
    assert UV is not None
    links = _links(shared_dir, identity)
    outside = {"write": [str(markers / "sdonly-ran")], "fetch": f"{http_server.url}/sdonly"}
    make_sdist(links, "sdonly", attack={"hooks": {"build_wheel": outside}})
    env = _old_environment(identity, shared_dir)
    identity.run([UV, "pip", "install", "--python", str(env / "bin" / "python"), "--no-index",
                  "--find-links", str(links), "sdonly"])
    assert (markers / "sdonly-ran").stat().st_uid == identity.uid
    assert "/sdonly" in http_server.requests


def test_the_environment_of_the_callers_own_interpreter_is_made_without_a_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build environment of buildjail's own interpreter is made in-process, as pypa/build
    makes its own (``uv venv`` cost 15-30 ms a build): no process starts, and the
    environment's interpreter is the base installation's."""
    import subprocess
    import sys

    from buildjail import buildenv
    from buildjail.interpreters import current

    def no_process(*args: object, **_kwargs: object) -> None:
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "run", no_process)
    env = buildenv.BuildEnvironment(str(tmp_path / "env"))
    monkeypatch.undo()
    base = current().executable
    assert os.path.realpath(env.python) == os.path.realpath(base)
    config = (tmp_path / "env" / "pyvenv.cfg").read_text()
    assert f"home = {os.path.dirname(base)}" in config.splitlines()
    assert os.path.isdir(env.site_packages) and os.path.isfile(env.hook_script)
    done = subprocess.run([env.python, "-I", "-c", "import sys; print(sys.prefix)"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(tmp_path / "env")
    assert sys.prefix != done.stdout.strip()
