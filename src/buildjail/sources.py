"""The sdist of a build requirement that has no wheel: found and fetched, never run.

When a build requirement exists only as an sdist, buildjail builds its wheel in the
sandbox (see :mod:`buildjail.build`). The sdist is looked up here — in the
``--find-links`` directories and on the indexes the installer uses (PEP 691 JSON or
PEP 503 HTML; the user's configuration, else PyPI) — and downloaded with its hash checked,
its size bounded. Nothing of it is built or run outside the sandbox; installers cannot do
that (``pip download`` prepares an sdist's metadata by running its build backend), so this
module does the fetching itself.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html.parser
import json
import os
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name, parse_sdist_filename
from packaging.version import Version

from .buildenv import IndexOptions
from .credentials import redact
from .errors import BuildjailError
from .installers import PYPI

DEFAULT_INDEX = PYPI
"""The index used when neither ``--index-url`` nor ``--no-index`` is given."""
MAX_PAGE = 16 << 20
"""The largest index page read."""
MAX_SDIST = 1 << 30
"""The largest sdist downloaded."""
TIMEOUT = 60
_ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
_CHUNK = 1 << 20


class SourceNotFound(BuildjailError):  # noqa: N818 - says what happened
    """No usable sdist of a build requirement could be found or fetched."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One sdist of the project: its version, where it is, and its digest when known."""

    filename: str
    version: Version
    location: str
    sha256: str | None = None
    local: bool = False
    index_url: str | None = None
    """The index it was found on (whose credentials its download may carry)."""


def find_sdist(requirement: Requirement, index: IndexOptions, destination: str) -> str:
    """The newest sdist satisfying *requirement*, as a local file (fetched into *destination*)."""
    name = canonicalize_name(requirement.name)
    candidates = [candidate for candidate in _candidates(name, index)
                  if requirement.specifier.contains(candidate.version, prereleases=None)]
    if not candidates:
        raise SourceNotFound(f"no sdist of {requirement} in {index.describe()}")
    best = max(candidates, key=lambda candidate: (candidate.version, candidate.local))
    if best.local:
        return best.location
    return _download(best, index, destination)


def _candidates(name: str, index: IndexOptions) -> Iterator[Candidate]:
    for directory in index.find_links:
        yield from _directory_candidates(name, directory)
    if not index.no_index:
        for index_url in (index.index_url or DEFAULT_INDEX, *index.extra_index_urls):
            yield from _index_candidates(name, index_url)


def _sdist_version(filename: str, name: str) -> Version | None:
    try:
        found, version = parse_sdist_filename(filename)
    except ValueError:  # InvalidSdistFilename, or a version number past int()'s digit limit
        return None
    return version if found == name else None


def _directory_candidates(name: str, directory: str) -> Iterator[Candidate]:
    try:
        filenames = os.listdir(directory)
    except OSError:
        return
    for filename in filenames:
        version = _sdist_version(filename, name)
        path = os.path.join(directory, filename)
        if version is not None and os.path.isfile(path):
            yield Candidate(filename, version, path, local=True)


def _index_candidates(name: str, index_url: str) -> Iterator[Candidate]:
    page_url = urllib.parse.urljoin(index_url.rstrip("/") + "/", f"{name}/")
    try:
        body, content_type, final_url = _fetch_page(page_url, index_url)
    except OSError as error:
        raise SourceNotFound(f"cannot read {redact(page_url)}: {error}") from None
    files = _json_files(body) if "json" in content_type else _html_files(body.decode(
        "utf-8", errors="replace"), final_url)
    python = ".".join(map(str, sys.version_info[:3]))
    for filename, url, sha256, yanked, requires_python in files:
        version = _sdist_version(filename, name)
        if version is None or yanked or not _supports(requires_python, python):
            continue
        yield Candidate(filename, version, url, sha256, index_url=index_url)


def _supports(requires_python: str | None, python: str) -> bool:
    if not requires_python:
        return True
    try:
        return SpecifierSet(requires_python).contains(python, prereleases=True)
    except InvalidSpecifier:
        return False


_File = tuple[str, str, "str | None", bool, "str | None"]


def _json_files(body: bytes) -> list[_File]:
    try:
        data = json.loads(body)
    except ValueError:
        return []
    files = data.get("files", []) if isinstance(data, dict) else []
    found: list[_File] = []
    for item in files if isinstance(files, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("filename"), str) or (
                not isinstance(item.get("url"), str)):
            continue
        hashes = item.get("hashes")
        sha256 = hashes.get("sha256") if isinstance(hashes, dict) else None
        sha256 = sha256 if isinstance(sha256, str) else None
        requires = item.get("requires-python")
        found.append((item["filename"], item["url"], sha256, bool(item.get("yanked")),
                      requires if isinstance(requires, str) else None))
    return found


class _Anchors(html.parser.HTMLParser):
    """The links of a PEP 503 page with their attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs))


def _html_files(text: str, base_url: str) -> list[_File]:
    parser = _Anchors()
    parser.feed(text)
    found: list[_File] = []
    for link in parser.links:
        href = link.get("href")
        if not href:
            continue
        url = urllib.parse.urljoin(base_url, href)
        parsed = urllib.parse.urlsplit(url)
        filename = urllib.parse.unquote(parsed.path.rsplit("/", 1)[-1])
        fragment = urllib.parse.parse_qs(parsed.fragment)
        sha256 = fragment.get("sha256", [None])[0]
        found.append((filename, url, sha256, "data-yanked" in link,
                      link.get("data-requires-python")))
    return found


def _request(url: str, index_url: str) -> urllib.request.Request:
    """A request for *url*: with the index's credentials only if it is on the index's host."""
    index = urllib.parse.urlsplit(index_url)
    target = urllib.parse.urlsplit(url)
    request = urllib.request.Request(_clean_url(url), headers={"Accept": _ACCEPT})
    owner = target if target.username is not None else index
    if owner.username is not None and (target.hostname, target.port) == (owner.hostname,
                                                                         owner.port):
        secret = (f"{urllib.parse.unquote(owner.username)}:"
                  f"{urllib.parse.unquote(owner.password or '')}")
        request.add_unredirected_header(
            "Authorization", "Basic " + base64.b64encode(secret.encode()).decode())
    return request


def _clean_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username is None or parts.hostname is None:
        return url
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _fetch_page(url: str, index_url: str) -> tuple[bytes, str, str]:
    if url.startswith("file:"):
        path = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
        page = os.path.join(path, "index.html") if os.path.isdir(path) else path
        with open(page, "rb") as stream:
            return stream.read(MAX_PAGE), "text/html", urllib.parse.urljoin(url, "index.html")
    with urllib.request.urlopen(_request(url, index_url), timeout=TIMEOUT) as response:
        body = response.read(MAX_PAGE + 1)
        if len(body) > MAX_PAGE:
            raise OSError(f"the index page is larger than {MAX_PAGE} bytes")
        return body, response.headers.get("Content-Type", ""), _clean_url(response.geturl())


def _download(candidate: Candidate, index: IndexOptions, destination: str) -> str:
    """Fetch *candidate* into *destination*, bounded, its hash checked when the index gave one."""
    path = os.path.join(destination, candidate.filename)
    digest = hashlib.sha256()
    size = 0
    try:
        if candidate.location.startswith("file:"):
            source = open(urllib.request.url2pathname(  # noqa: SIM115 - closed below
                urllib.parse.urlsplit(candidate.location).path), "rb")
        else:
            source = urllib.request.urlopen(
                _request(candidate.location,
                         candidate.index_url or index.index_url or DEFAULT_INDEX),
                timeout=TIMEOUT)
        with source, open(path, "xb") as out:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                if size > MAX_SDIST:
                    raise OSError(f"larger than {MAX_SDIST} bytes")
                digest.update(chunk)
                out.write(chunk)
    except OSError as error:
        raise SourceNotFound(f"cannot download {redact(candidate.location)}: {error}") from None
    if candidate.sha256 and digest.hexdigest() != candidate.sha256.lower():
        os.unlink(path)
        raise SourceNotFound(f"{candidate.filename} does not match the sha256 the index gave")
    return path
