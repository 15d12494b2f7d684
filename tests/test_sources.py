"""The sdist of a build requirement with no wheel: found on an index or in find-links, fetched
with its hash checked, and only ever built in the sandbox."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from buildjail.buildenv import IndexOptions
from buildjail.sources import SourceNotFound, find_sdist
from conftest import Identity, Server, every_backend
from wheels import make_project, make_sdist

sandbox_backend = pytest.fixture(params=["native", "bwrap", "landlock"])(every_backend)
"""These tests hold for every backend, the landlock one included."""


def _page(server: Server, project: str, links: list[str]) -> None:
    page = server.root / "simple" / project
    page.mkdir(parents=True)
    (page / "index.html").write_text("<html><body>" + "".join(links) + "</body></html>\n")


def _served(server: Server, sdist: Path, host: str | None = None) -> str:
    """A link to *sdist* served by *server*: relative, or on *host* (the same server)."""
    (server.root / "files").mkdir(exist_ok=True)
    sdist.rename(server.root / "files" / sdist.name)
    digest = hashlib.sha256((server.root / "files" / sdist.name).read_bytes()).hexdigest()
    where = "../.." if host is None else server.url.replace("127.0.0.1", host)
    return f"{where}/files/{sdist.name}#sha256={digest}"


def test_the_newest_matching_sdist_is_fetched_with_its_hash_checked(
        tmp_path: Path, http_server: Server) -> None:
    links = [f'<a href="{_served(http_server, make_sdist(tmp_path, "dep", version=version), host)}"'
             f'{extra}>dep-{version}.tar.gz</a>'
             for version, extra, host in (
                 ("1.0", "", None), ("2.0", "", "localhost"), ("3.0", " data-yanked=''", None),
                 ("4.0", ' data-requires-python="&lt;3"', None))]
    _page(http_server, "dep", links)
    index = IndexOptions(index_url=http_server.url.replace("http://", "http://user:SECRET@")
                         + "/simple/")
    destination = tmp_path / "fetched"
    destination.mkdir()
    path = find_sdist(Requirement("dep"), index, str(destination))
    assert Path(path).name == "dep-2.0.tar.gz"  # 3.0 is yanked, 4.0 needs Python < 3
    secret = "Basic " + base64.b64encode(b"user:SECRET").decode()
    # The index page got the credentials; the file on another host did not.
    assert http_server.authorizations == [secret, None]
    assert find_sdist(Requirement("dep<2"), index, str(tmp_path)) == str(
        tmp_path / "dep-1.0.tar.gz")
    assert http_server.authorizations[-1] == secret  # a file on the index's own host


def test_a_sdist_that_does_not_match_the_index_hash_is_refused(
        tmp_path: Path, http_server: Server) -> None:
    link = _served(http_server, make_sdist(tmp_path, "dep"))
    _page(http_server, "dep", [f'<a href="{link[:-4]}0000">dep-1.0.tar.gz</a>'])
    with pytest.raises(SourceNotFound, match="does not match the sha256 the index gave"):
        find_sdist(Requirement("dep"), IndexOptions(index_url=f"{http_server.url}/simple/"),
                   str(tmp_path))
    assert not (tmp_path / "dep-1.0.tar.gz").exists()


def test_nothing_found_is_said_clearly(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound, match=f"no sdist of dep>=1 in find-links {tmp_path}"):
        find_sdist(Requirement("dep>=1"), IndexOptions(find_links=(str(tmp_path),),
                                                       no_index=True), str(tmp_path))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
def test_an_sdist_only_requirement_from_an_index_is_built_in_the_sandbox(
        identity: Identity, sandbox_backend: str, shared_dir: Path, *, http_server: Server,
        markers: Path) -> None:
    outside = {"write": [str(markers / "dep-ran")]}
    link = _served(http_server, make_sdist(shared_dir, "dep", attack={"hooks": {
        "build_wheel": outside, "get_requires_for_build_wheel": outside}}))
    _page(http_server, "dep", [f'<a href="{link}">dep-1.0.tar.gz</a>'])
    project = make_project(shared_dir / "perimeter", requires=["dep"], attack={
        "hooks": {"build_wheel": {"import": ["dep"]}}})
    logs = shared_dir / "logs"
    identity.own(shared_dir)
    proc = identity.buildjail(str(project), "--wheel", "-o", str(shared_dir / "out"),
                              "--index-url", f"{http_server.url}/simple/", "--logs", str(logs),
                              backend=sandbox_backend)
    assert proc.returncode == 0, proc.stderr
    assert "PERIMETER imported: dep from " in (logs / "perimeter.log").read_text()
    assert "PERIMETER write refused" in (logs / "dep-1.0.tar.gz.log").read_text()
    assert list(markers.iterdir()) == []


def test_an_index_entry_whose_version_no_parser_can_hold_is_skipped(
        tmp_path: Path, http_server: Server) -> None:
    """A hostile index lists a version of 5000 digits (past int()'s limit): not a traceback."""
    huge = f"dep-{'1' * 5000}.tar.gz"
    link = _served(http_server, make_sdist(tmp_path, "dep"))
    _page(http_server, "dep", [f'<a href="../../files/{huge}">{huge}</a>',
                               f'<a href="{link}">dep-1.0.tar.gz</a>'])
    destination = tmp_path / "fetched"
    destination.mkdir()
    path = find_sdist(Requirement("dep"), IndexOptions(index_url=f"{http_server.url}/simple/"),
                      str(destination))
    assert Path(path).name == "dep-1.0.tar.gz"
