"""Which index build requirements come from: the chosen installer's user configuration,
buildjail's own flags over it, and never a project's configuration.

Loopback PEP 503 indexes each serve another version of the build requirement ``bjdep`` and
record the requests they get: one configured for pip (``PIP_INDEX_URL`` or a ``pip.conf``
through ``PIP_CONFIG_FILE``), one for uv (``UV_INDEX_URL`` or a user-level ``uv.toml``
through ``XDG_CONFIG_HOME``), one named by ``--index-url``, and an attacker's, named by the
project's own ``uv.toml``. Judged by which servers were asked. Then ``--build-constraint``:
versions held, hashes checked by uv (a tampered wheel refused), refused with pip.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from buildjail.installers import uv_binary
from buildjail.interpreters import current as current_interpreter
from conftest import Server, serve_directory
from test_build import buildjail
from wheels import make_project, make_sdist, simple_index, write_wheel

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
SERVERS = ("pip", "uv", "flag", "attacker")


@pytest.fixture
def indexes(tmp_path: Path) -> Iterator[dict[str, Server]]:
    """Four loopback indexes; the Nth serves bjdep N.0 and an sdist of bjsrc N.0."""
    with contextlib.ExitStack() as stack:
        servers = {}
        for number, name in enumerate(SERVERS, start=1):
            files, root = tmp_path / f"files-{name}", tmp_path / f"index-{name}"
            files.mkdir()
            root.mkdir()
            simple_index(root, [write_wheel(files, "bjdep", f"{number}.0"),
                                make_sdist(files, "bjsrc", version=f"{number}.0")])
            servers[name] = stack.enter_context(serve_directory(root))
        yield servers


def _simple(server: Server, secret: bool = False) -> str:
    url = f"{server.url}/simple/"
    return url.replace("http://", "http://user:SECRET@") if secret else url


def user_environment(tmp_path: Path, indexes: dict[str, Server], via: str) -> dict[str, str]:
    """The caller's environment: pip and uv each configured for their own index (*via*
    variables or configuration files), nothing else of the host's pip or uv settings."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PIP_", "UV_"))}
    env["UV_CACHE_DIR"] = str(tmp_path / "uv-cache")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    pip_url, uv_url = _simple(indexes["pip"], secret=True), _simple(indexes["uv"])
    if via == "environment":
        env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=pip_url, UV_INDEX_URL=uv_url)
    else:
        pip_conf = tmp_path / "pip.conf"
        pip_conf.write_text(f"[global]\nindex-url = {pip_url}\n")
        env["PIP_CONFIG_FILE"] = str(pip_conf)
        uv_toml = tmp_path / "xdg" / "uv" / "uv.toml"
        uv_toml.parent.mkdir(parents=True, exist_ok=True)
        uv_toml.write_text(f'index-url = "{uv_url}"\n')
    return env


def _asked(indexes: dict[str, Server]) -> set[str]:
    return {name for name, server in indexes.items() if server.requests}


def _build(tmp_path: Path, project: Path, *args: str, env: dict[str, str],
           cwd: str = "/") -> tuple[dict[str, Any], str]:
    """Build *project*'s wheel; return its report entry and its log."""
    report, logs = tmp_path / "report.json", tmp_path / "logs"
    proc = buildjail(str(project), "--wheel", "-o", str(tmp_path / "dist"), "--report",
                     str(report), "--logs", str(logs), *args, env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    [entry] = json.loads(report.read_text())
    return entry, (logs / f"{project.name}.log").read_text()


@pytest.mark.parametrize("via", ["environment", "files"])
@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_each_installer_asks_only_the_index_its_user_configuration_names(
        tmp_path: Path, indexes: dict[str, Server], installer: str, via: str) -> None:
    project = make_project(tmp_path / "perimeter", requires=["bjdep"])
    entry, log = _build(tmp_path, project, "--installer", installer,
                        env=user_environment(tmp_path, indexes, via))
    assert _asked(indexes) == {installer}
    assert "/simple/bjdep/" in indexes[installer].requests
    record = entry["installer"]
    assert record["name"] == installer
    expected_origin = {("pip", "environment"): "PIP_INDEX_URL",
                       ("uv", "environment"): "UV_INDEX_URL",
                       ("pip", "files"): str(tmp_path / "pip.conf"),
                       ("uv", "files"): str(tmp_path / "xdg" / "uv" / "uv.toml")}
    assert record["index_from"] == expected_origin[installer, via]
    shown = _simple(indexes[installer]).replace("http://", "http://user:***@") if (
        installer == "pip") else _simple(indexes[installer])
    assert record["index"] == shown
    assert f"(build requirements from {installer} (" in log and f"index {shown}" in log
    assert "SECRET" not in log and "SECRET" not in json.dumps(entry)


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_index_url_wins_over_both_configurations(
        tmp_path: Path, indexes: dict[str, Server], installer: str) -> None:
    project = make_project(tmp_path / "perimeter", requires=["bjdep"])
    entry, _ = _build(tmp_path, project, "--installer", installer, "--index-url",
                      _simple(indexes["flag"]),
                      env=user_environment(tmp_path, indexes, "environment"))
    assert _asked(indexes) == {"flag"}
    assert entry["installer"]["index_from"] == "--index-url"


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_extra_index_url_is_asked_besides_index_url(
        tmp_path: Path, indexes: dict[str, Server], installer: str) -> None:
    project = make_project(tmp_path / "perimeter", requires=["bjdep"])
    entry, _ = _build(tmp_path, project, "--installer", installer, "--index-url",
                      _simple(indexes["flag"]), "--extra-index-url", _simple(indexes["uv"]),
                      env=user_environment(tmp_path, indexes, "files"))
    # pip asks every index; uv asks the extra index first and stops where it finds the
    # project (its "first-index" strategy, against dependency confusion).
    assert _asked(indexes) == ({"flag", "uv"} if installer == "pip" else {"uv"})
    assert entry["installer"]["extra_indexes"] == [_simple(indexes["uv"])]


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_an_sdist_only_requirement_is_fetched_from_the_installers_index(
        tmp_path: Path, indexes: dict[str, Server], installer: str) -> None:
    """The sdist buildjail fetches itself comes from the same configured index (not PyPI)."""
    project = make_project(tmp_path / "perimeter", requires=["bjsrc"])
    entry, _ = _build(tmp_path, project, "--installer", installer,
                      env=user_environment(tmp_path, indexes, "environment"))
    assert _asked(indexes) == {installer}
    assert f"/files/bjsrc-{SERVERS.index(installer) + 1}.0.tar.gz" in (
        indexes[installer].requests)
    [built] = entry["build_requirements"]
    assert built["name"] == "bjsrc"


def _hostile_project(tmp_path: Path, indexes: dict[str, Server]) -> Path:
    """A project whose own uv configuration (and one planted in a parent of buildjail's
    temporary directory) names the attacker's index."""
    project = make_project(tmp_path / "perimeter", requires=["bjdep"])
    attacker = f'index-url = "{_simple(indexes["attacker"])}"\n'
    (project / "uv.toml").write_text(attacker)
    with (project / "pyproject.toml").open("a") as stream:
        stream.write(f"\n[tool.uv]\n{attacker}")
    (tmp_path / "uv.toml").write_text(attacker)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return project


def test_a_projects_uv_configuration_is_never_read(
        tmp_path: Path, indexes: dict[str, Server]) -> None:
    """``buildjail build .`` in the hostile project, its temporary directory below the
    planted ``uv.toml``: uv reads only the user's ``uv.toml``."""
    project = _hostile_project(tmp_path, indexes)
    env = {**user_environment(tmp_path, indexes, "files"), "TMPDIR": str(tmp_path / "scratch")}
    _, log = _build(tmp_path, project, "--installer", "uv", env=env, cwd=str(project))
    assert _asked(indexes) == {"uv"}
    assert f"--no-config --config-file {tmp_path / 'xdg' / 'uv' / 'uv.toml'}" in log


@pytest.mark.parametrize("cwd", ["project", "temporary"])
def test_control_uv_follows_a_projects_configuration_without_no_config(
        tmp_path: Path, indexes: dict[str, Server], cwd: str) -> None:
    """The same install without ``--no-config``, run in the project or below the planted
    file, asks the attacker's index; with buildjail's flags, the user's."""
    project = _hostile_project(tmp_path, indexes)
    env = user_environment(tmp_path, indexes, "files")
    where = project if cwd == "project" else tmp_path / "scratch"
    command = [uv_binary(), "pip", "install", "--dry-run", "--python",
               current_interpreter().executable, "--prefix", str(tmp_path / "env"),
               "--only-binary", ":all:", "--", "bjdep"]
    subprocess.run(command, cwd=where, env=env, capture_output=True, check=False, timeout=120)
    assert _asked(indexes) == {"attacker"}
    indexes["attacker"].requests.clear()
    protected = [*command[:3], "--no-config", "--config-file",
                 str(tmp_path / "xdg" / "uv" / "uv.toml"), *command[3:]]
    subprocess.run(protected, cwd=where, env=env, capture_output=True, check=False,
                   timeout=120)
    assert _asked(indexes) == {"uv"}


def test_installer_uv_does_not_need_uv_on_path(
        tmp_path: Path, indexes: dict[str, Server]) -> None:
    """uv is found through its Python package: a PATH without it changes nothing."""
    env = user_environment(tmp_path, indexes, "environment")
    env["PATH"] = "/usr/bin:/bin"
    project = make_project(tmp_path / "perimeter", requires=["bjdep"])
    entry, _ = _build(tmp_path, project, env=env)
    assert entry["installer"]["name"] == "uv" and entry["installer"]["path"] == uv_binary()
    assert _asked(indexes) == {"uv"}


def _links_with_two_versions(tmp_path: Path) -> Path:
    links = tmp_path / "links"
    links.mkdir()
    write_wheel(links, "bjdep", "1.0")
    write_wheel(links, "bjdep", "2.0")
    return links


def _offline(tmp_path: Path, links: Path) -> tuple[list[str], dict[str, str]]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, UV_CACHE_DIR=str(tmp_path / "uv-cache"))
    return ["--no-index", "--find-links", str(links)], env


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_build_constraint_holds_every_build_requirement(tmp_path: Path, installer: str) -> None:
    links = _links_with_two_versions(tmp_path)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("bjdep<2\n")
    flags, env = _offline(tmp_path, links)
    project = make_project(tmp_path / "perimeter", requires=["bjdep"])
    _, log = _build(tmp_path, project, "--installer", installer, "--build-constraint",
                    str(constraints), *flags, env=env)
    assert f"-c {constraints}" in log
    assert "bjdep==1.0" in log or "bjdep-1.0" in log
    assert "bjdep==2.0" not in log and "bjdep-2.0" not in log


@pytest.mark.parametrize("tampered", [False, True])
def test_build_constraint_hashes_are_checked_by_uv(tmp_path: Path, tampered: bool) -> None:
    """A wheel replaced on the index (here: a hash that is not its own) is refused; the
    control, its real hash, installs."""
    links = _links_with_two_versions(tmp_path)
    wheel = links / "bjdep-1.0-py3-none-any.whl"
    digest = hashlib.sha256(b"another wheel" if tampered else wheel.read_bytes()).hexdigest()
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"bjdep==1.0 --hash=sha256:{digest}\n")
    flags, env = _offline(tmp_path, links)
    project = make_project(tmp_path / "perimeter", requires=["bjdep"])
    proc = buildjail(str(project), "--wheel", "-o", str(tmp_path / "dist"), "--installer", "uv",
                     "--build-constraint", str(constraints), *flags, env=env)
    if tampered:
        assert proc.returncode == 1 and "hash" in proc.stderr.lower(), proc.stderr
        assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())
    else:
        assert proc.returncode == 0, proc.stderr


def test_build_constraint_hashes_with_pip_are_refused(tmp_path: Path) -> None:
    """pip checks hashes only of pinned requirements: refused, not silently unchecked."""
    links = _links_with_two_versions(tmp_path)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"bjdep==1.0 --hash=sha256:{'0' * 64}\n")
    flags, env = _offline(tmp_path, links)
    project = make_project(tmp_path / "perimeter", requires=["bjdep"])
    proc = buildjail(str(project), "--wheel", "-o", str(tmp_path / "dist"), "--installer",
                     "pip", "--build-constraint", str(constraints), *flags, env=env)
    assert proc.returncode == 1
    assert "pip checks only for requirements pinned with ==" in proc.stderr
