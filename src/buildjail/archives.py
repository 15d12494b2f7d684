"""Untrusted archives: extract an sdist safely, and check the wheels and sdists a build wrote.

Nothing in an archive is trusted. Every member is checked before the first byte is
written: no absolute path, no ``..``, one top-level directory, no device or fifo, no
link that leads out (following the archive's own links), no path that is two kinds
of thing, and a bounded number of members and bytes. Extraction writes every file
itself: modes ``0o755``/``0o644`` only, never an owner from the archive.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import dataclasses
import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import struct
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from email.parser import HeaderParser
from pathlib import Path
from typing import IO

from packaging.utils import (
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from .errors import BuildjailError

StrPath = str | os.PathLike[str]

MAX_MEMBERS = 200_000
"""Most members an sdist (or a wheel) may have."""
MAX_TOTAL_SIZE = 2 << 30
"""Most bytes an sdist may unpack to (2 GiB)."""
MAX_WHEEL_SIZE = 16 << 30
"""Most bytes a wheel may unpack to (16 GiB: large GPU wheels are several GiB)."""
MAX_LINK_HOPS = 40
"""Most symbolic links followed while resolving one path (the kernel's own limit)."""
MAX_LINK_TARGET = 4096
"""Longest symbolic link target read from a zip member."""
MAX_METADATA = 4 << 20
"""Most bytes read of a wheel's METADATA or WHEEL file (a 1 MiB zip can inflate to 1 GiB)."""
MAX_RECORD = 64 << 20
"""Most bytes read of a wheel's RECORD."""
MAX_HEADER_READ = 16 << 20
"""Largest single read of a tar header (a pax or GNU long-name header is read whole)."""

SDIST_SUFFIXES = {
    ".tar.gz": "r:gz",
    ".tgz": "r:gz",
    ".tar.bz2": "r:bz2",
    ".tbz": "r:bz2",
    ".tar.xz": "r:xz",
    ".txz": "r:xz",
    ".tar": "r:",
    ".zip": "zip",
}
"""Suffixes :func:`extract_sdist` accepts, with the way each is opened."""

_LABELS = {"r:gz": "gzip-compressed tar", "r:bz2": "bzip2-compressed tar",
           "r:xz": "xz-compressed tar", "r:": "tar", "zip": "zip"}
_READ_ERRORS = (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error,
                lzma.LZMAError, NotImplementedError, struct.error, ValueError)
_KIND_NAMES = {"dir": "directory", "file": "file", "symlink": "symbolic link",
               "hardlink": "hard link"}
_SPECIAL = {stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
            stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}
_TAR_SPECIAL = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device",
                tarfile.FIFOTYPE: "fifo"}
_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1 << 20
_FIELD = re.compile(r"[A-Za-z0-9._-]+")
_VERSION_FIELD = re.compile(r"[A-Za-z0-9._!+]+")
_WHEEL_PATTERN = "{distribution}-{version}(-{build})?-{python}-{abi}-{platform}.whl"
_SDIST_PATTERN = "{name}-{version}.tar.gz"
_RECORD_SIGNATURES = ("RECORD.jws", "RECORD.p7s")
_RECORD_HASHES = frozenset({"sha224", "sha256", "sha384", "sha512", "sha3_224", "sha3_256",
                            "sha3_384", "sha3_512", "blake2b", "blake2s"})


class ArchiveError(BuildjailError):
    """An archive is broken or hostile; the message names the archive and the member."""

    def __init__(self, archive: StrPath, reason: str, member: str | None = None) -> None:
        self.archive = os.fspath(archive)
        self.reason = reason
        self.member = member
        where = self.archive if member is None else f"{self.archive}: member {member!r}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[type[ArchiveError], tuple[str, str, str | None]]:
        """Pickle with the constructor's arguments (errors cross process pools)."""
        return (type(self), (self.archive, self.reason, self.member))


@dataclasses.dataclass(frozen=True)
class WheelInfo:
    """A wheel that passed :func:`validate_wheel`: its name, tags, digest and files."""

    name: str
    version: str
    build_tag: str | None
    python_tag: str
    abi_tag: str
    platform_tag: str
    sha256: str
    size: int
    files: tuple[str, ...]

    @property
    def dist_info(self) -> str:
        """Its ``.dist-info`` directory (a checked wheel has exactly one)."""
        return next(name.split("/", 1)[0] for name in self.files
                    if name.split("/", 1)[0].endswith(".dist-info"))


@dataclasses.dataclass(frozen=True)
class SdistInfo:
    """An sdist that passed :func:`validate_sdist`: its name, version and digest."""

    name: str
    version: str
    sha256: str
    size: int


@dataclasses.dataclass(frozen=True)
class _WheelName:
    """The fields of a wheel's file name, spelled as the file name spells them."""

    name: str
    version: str
    build: str | None
    python: str
    abi: str
    platform: str


@dataclasses.dataclass(frozen=True)
class _Member:
    """One archive member as the checks see it; ``reader`` opens its data."""

    name: str
    parts: tuple[str, ...]
    kind: str
    size: int
    mode: int
    mtime: float
    target: str = ""
    reader: Callable[[], IO[bytes]] | None = None


def sha256_file(path: StrPath) -> str:
    """Return the hex SHA-256 digest of the file at *path*."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_sdist(archive: StrPath) -> None:
    """Check an untrusted sdist as :func:`extract_sdist` does, writing nothing; ArchiveError."""
    path = Path(archive)
    mode = _sdist_mode(path)
    with _opened(path, mode) as members:
        tree = _scanned_sdist(path, mode, members, Path(_CHECK_ROOT))
        if mode == "zip":  # a tar's data was read through to reach each header
            _read_through(path, tree)


def _read_through(archive: Path, tree: _Tree) -> None:
    """Read every file member's data, discarding it: the zip's CRCs are checked."""
    for member in tree.members:
        if member.kind != "file" or member.reader is None:
            continue
        try:
            with member.reader() as data:
                for _ in _exactly(data, member.size):
                    pass
        except _READ_ERRORS as exc:
            raise ArchiveError(archive, f"cannot be extracted: {exc}", member.name) from exc


_CHECK_ROOT = "/buildjail-check"
"""Where :func:`check_sdist` has tarfile's filter imagine the sdist extracted."""


def _scanned_sdist(path: Path, mode: str, members: Iterator[_Member], dest: Path) -> _Tree:
    """Every member of an sdist checked, as a whole and by tarfile's filter into *dest*."""
    tree = _Tree(path, single_top=True, max_total=MAX_TOTAL_SIZE)
    tree.scan(members)
    if mode != "zip":
        _data_filter_check(path, tree, dest)
    return tree


def _exactly(data: IO[bytes], size: int) -> Iterator[bytes]:
    """The first *size* bytes of *data*, in chunks; EOFError when it has fewer."""
    left = size
    while left > 0:
        chunk = data.read(min(left, _CHUNK))
        if not chunk:
            raise EOFError(f"truncated: {size - left} of {size} bytes")
        left -= len(chunk)
        yield chunk


def extract_sdist(archive: StrPath, destination: StrPath) -> Path:
    """Extract an untrusted sdist into *destination*; return its single top-level directory."""
    path, dest = Path(archive), Path(destination)
    mode = _sdist_mode(path)
    with _opened(path, mode) as members:
        tree = _scanned_sdist(path, mode, members, dest)
        top = dest / tree.top
        if os.path.lexists(top):
            raise ArchiveError(path, f"cannot be extracted: {top} already exists")
        created: list[Path] = []
        try:
            _make_directories(dest, created)
            os.mkdir(top)
            created.append(top)
            _write_tree(path, tree, dest)
        except BaseException as exc:
            _discard(created)
            if isinstance(exc, _READ_ERRORS):
                raise ArchiveError(path, f"cannot be extracted into {dest}: {exc}") from exc
            raise
    return top


def validate_sdist(
    path: StrPath, expected_name: str | None = None, expected_version: str | None = None,
    *, filename: str | None = None,
) -> SdistInfo:
    """Check an sdist a build wrote: its name, a real gzip tar, one top directory, PKG-INFO.

    *filename*: the name to check, when *path* is not named so (a descriptor's path).
    """
    archive = Path(path)
    shown = Path(filename) if filename else archive
    name, version = _parse_sdist_name(shown)
    if expected_name is not None and canonicalize_name(expected_name) != canonicalize_name(name):
        raise ArchiveError(archive, f"is an sdist of {name!r}, expected {expected_name!r}")
    if expected_version is not None and not _same_version(expected_version, version):
        raise ArchiveError(archive, f"is version {version!r}, expected {expected_version!r}")
    stem = shown.name.removesuffix(".tar.gz")
    with _opened(archive, "r:gz", shown) as members:
        tree = _Tree(shown, single_top=True, max_total=MAX_TOTAL_SIZE)
        tree.scan(members)
    if tree.top != stem:
        raise ArchiveError(shown, f"has top-level directory {tree.top!r}, expected {stem!r}")
    if tree.kinds.get((stem, "PKG-INFO")) != "file":
        raise ArchiveError(shown, f"has no {stem}/PKG-INFO file")
    return SdistInfo(name, version, sha256_file(archive), archive.stat().st_size)


def validate_wheel(path: StrPath, *, filename: str | None = None) -> WheelInfo:
    """Check a wheel a build wrote: its name and tags, a real zip, a RECORD that matches.

    *filename*: the name to check, when *path* is not named so (a descriptor's path).
    Every member read is bounded: a small wheel cannot make the caller inflate a huge one.
    """
    archive = Path(path)
    shown = Path(filename) if filename else archive
    parsed = _parse_wheel_name(shown)
    if not archive.is_file() or not zipfile.is_zipfile(archive):
        raise ArchiveError(shown, "is not a zip file")
    try:
        with zipfile.ZipFile(archive) as wheel:
            files = _check_wheel(shown, wheel, parsed)
    except _READ_ERRORS as exc:
        raise ArchiveError(shown, f"is not a valid zip file: {exc}") from exc
    return WheelInfo(
        name=parsed.name,
        version=parsed.version,
        build_tag=parsed.build,
        python_tag=parsed.python,
        abi_tag=parsed.abi,
        platform_tag=parsed.platform,
        sha256=sha256_file(archive),
        size=archive.stat().st_size,
        files=files,
    )


def read_wheel_member(path: StrPath, name: str, limit: int = MAX_METADATA) -> bytes | None:
    """The data of the member *name* of a wheel :func:`validate_wheel` passed, at most
    *limit* bytes (ArchiveError past it); None when it has no such member."""
    archive = Path(path)
    try:
        with zipfile.ZipFile(archive) as wheel:
            if name not in wheel.NameToInfo:
                return None
            return _read_member(archive, wheel, name, limit)
    except _READ_ERRORS as exc:
        raise ArchiveError(archive, f"is not a valid zip file: {exc}") from exc


class _Tree:
    """The tree an archive would create, checked member by member before anything is written."""

    def __init__(self, archive: Path, *, single_top: bool, max_total: int) -> None:
        self.archive = archive
        self.single_top = single_top
        self.max_total = max_total
        self.top = ""
        self.kinds: dict[tuple[str, ...], str] = {}
        self.sizes: dict[tuple[str, ...], int] = {}
        self.links: dict[tuple[str, ...], str] = {}
        self.members: list[_Member] = []
        self.count = 0
        self.total = 0

    def scan(self, members: Iterator[_Member]) -> None:
        """Add every member, then check the whole."""
        for member in members:
            self.add(member)
        self.finish()

    def finish(self) -> None:
        """Check what needs the whole archive: that it has members, where links lead."""
        if not self.members:
            raise ArchiveError(self.archive, "is empty")
        floor = 1 if self.single_top else 0
        for member in self.members:
            if member.kind == "symlink":
                self._check_link(member, floor)

    def add(self, member: _Member) -> None:
        """Check one member against those before it and record it."""
        self.count += 1
        if self.count > MAX_MEMBERS:
            raise ArchiveError(self.archive, f"has more than {MAX_MEMBERS} members "
                               "(an archive bomb?)", member.name)
        if not member.parts:
            if member.kind == "dir":
                return  # the archive's own root, "./"
            raise ArchiveError(self.archive, "has an empty path", member.name)
        if self.single_top:
            self._check_top(member)
        self._check_parents(member)
        self._check_duplicate(member)
        size = member.size
        if member.kind == "symlink":
            self._check_link_syntax(member)
            self.links[member.parts] = member.target
        elif member.kind == "hardlink":
            size = self._hardlink_size(member)
        self.total += size
        if self.total > self.max_total:
            raise ArchiveError(self.archive, f"unpacks to more than {self.max_total} bytes "
                               "(an archive bomb?)", member.name)
        self.kinds[member.parts] = member.kind
        self.sizes[member.parts] = size
        self.members.append(member)

    def _check_top(self, member: _Member) -> None:
        if not self.top:
            self.top = member.parts[0]
        elif member.parts[0] != self.top:
            raise ArchiveError(self.archive, "is outside the top-level directory "
                               f"{self.top!r} (an sdist has exactly one)", member.name)
        if len(member.parts) == 1 and member.kind != "dir":
            raise ArchiveError(self.archive, "is not inside a top-level directory "
                               f"(it is a {_KIND_NAMES[member.kind]})", member.name)

    def _check_parents(self, member: _Member) -> None:
        for depth in range(1, len(member.parts)):
            parent = member.parts[:depth]
            kind = self.kinds.setdefault(parent, "dir")
            if kind == "symlink":
                raise ArchiveError(self.archive, "lies behind the symbolic link "
                                   f"{'/'.join(parent)!r}", member.name)
            if kind != "dir":
                raise ArchiveError(self.archive, f"needs {'/'.join(parent)!r} to be a "
                                   f"directory, but it is a {_KIND_NAMES[kind]}", member.name)

    def _check_duplicate(self, member: _Member) -> None:
        previous = self.kinds.get(member.parts)
        if previous is None or (previous == member.kind and previous in ("dir", "file")):
            return
        raise ArchiveError(self.archive, f"appears twice, as a {_KIND_NAMES[previous]} and "
                           f"as a {_KIND_NAMES[member.kind]}", member.name)

    def _check_link_syntax(self, member: _Member) -> None:
        if not member.target or "\x00" in member.target:
            raise ArchiveError(self.archive, "is a symbolic link with an empty target",
                               member.name)
        if member.target.startswith("/"):
            raise ArchiveError(self.archive, "is a symbolic link to the absolute path "
                               f"{member.target!r}", member.name)

    def _hardlink_size(self, member: _Member) -> int:
        reason = _unsafe_path(member.target, windows=False)
        target = _split(member.target)
        outside = self.single_top and (not target or target[0] != self.top)
        if reason or outside:
            raise ArchiveError(self.archive, f"is a hard link to {member.target!r}, which "
                               "is outside the archive's tree", member.name)
        if self.kinds.get(target) not in ("file", "hardlink"):
            raise ArchiveError(self.archive, f"is a hard link to {member.target!r}, which is "
                               "not a regular file earlier in the archive", member.name)
        return self.sizes[target]

    def _check_link(self, member: _Member, floor: int) -> None:
        try:
            resolved = _resolve(member.parts[:-1], member.target, self.links, floor)
        except RecursionError:
            raise ArchiveError(self.archive, "is part of a symbolic link loop",
                               member.name) from None
        if resolved is None:
            where = f"the top-level directory {self.top!r}" if floor else "the archive"
            raise ArchiveError(self.archive, f"is a symbolic link to {member.target!r}, "
                               f"which leads outside {where}", member.name)


def _resolve(
    start: tuple[str, ...], target: str, links: dict[tuple[str, ...], str], floor: int
) -> tuple[str, ...] | None:
    """Resolve *target* from directory *start* through the archive's links; None if it leaves."""
    current = list(start)
    pending = target.split("/")
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if len(current) <= floor:
                return None
            current.pop()
            continue
        current.append(part)
        link = links.get(tuple(current))
        if link is not None:
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise RecursionError(target)
            if link.startswith("/"):
                return None
            current.pop()
            pending = link.split("/") + pending
    return tuple(current)


def _unsafe_path(name: str, *, windows: bool) -> str:
    """Return why *name* may not be a member path, or an empty string."""
    if "\x00" in name:
        return "has a NUL byte in its path"
    if name.startswith("/") or (windows and (_DRIVE.match(name) or name.startswith("\\"))):
        return "has an absolute path"
    if windows and "\\" in name:
        return "has a backslash in its path"
    if ".." in name.split("/"):
        return "has a '..' component (path traversal)"
    return ""


def _split(name: str) -> tuple[str, ...]:
    return tuple(part for part in name.split("/") if part not in ("", "."))


def _safe_parts(archive: Path, name: str, *, windows: bool) -> tuple[str, ...]:
    reason = _unsafe_path(name, windows=windows)
    if reason:
        raise ArchiveError(archive, reason, name)
    return _split(name)


def _sdist_mode(archive: Path) -> str:
    lowered = archive.name.lower()
    for suffix, mode in SDIST_SUFFIXES.items():
        if lowered.endswith(suffix):
            return mode
    raise ArchiveError(archive, "is not an sdist: the name must end with one of "
                       + ", ".join(SDIST_SUFFIXES))


@contextlib.contextmanager
def _opened(archive: Path, mode: str,
            shown: Path | None = None) -> Iterator[Iterator[_Member]]:
    """Open *archive* as a tar (``mode``) or a zip and yield its members, errors made clear.

    *shown* names the archive in messages (default: *archive*).
    """
    label = _LABELS[mode]
    shown = shown or archive
    if not archive.is_file():
        raise ArchiveError(shown, "does not exist or is not a regular file")
    try:
        if mode == "zip":
            if not zipfile.is_zipfile(archive):
                raise ArchiveError(shown, "is not a zip file")
            with zipfile.ZipFile(archive) as zipped:
                yield _zip_members(shown, zipped)
        else:
            with _decompressed(archive, mode) as stream, tarfile.open(
                    fileobj=stream, mode="r:") as tar:
                yield _tar_members(shown, tar)
    except _READ_ERRORS as exc:
        raise ArchiveError(shown, f"is not a valid {label} file (truncated or corrupt?): "
                           f"{exc}") from exc


_MAGIC = {"r:gz": (b"\x1f\x8b", "a gzip"), "r:bz2": (b"BZh", "a bzip2"),
          "r:xz": (b"\xfd7zXZ\x00", "an lzma")}


class _BoundedReads(io.RawIOBase):
    """A decompressed tar stream that refuses any single read larger than MAX_HEADER_READ.

    tarfile reads a pax or GNU long-name header whole: a small archive could otherwise make
    the caller hold gigabytes. Member data is read in chunks far below the bound.
    """

    def __init__(self, stream: IO[bytes] | io.BufferedIOBase) -> None:
        super().__init__()
        self.stream = stream

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > MAX_HEADER_READ:
            raise ValueError(f"a tar header larger than {MAX_HEADER_READ} bytes "
                             "(an archive bomb?)")
        return self.stream.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()


@contextlib.contextmanager
def _decompressed(archive: Path, mode: str) -> Iterator[_BoundedReads]:
    import bz2
    import gzip

    openers: dict[str, Callable[[IO[bytes]], io.BufferedIOBase]] = {
        "r:gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
        "r:bz2": lambda raw: bz2.BZ2File(raw, "rb"),
        "r:xz": lambda raw: lzma.LZMAFile(raw, "rb"),  # noqa: SIM115 - closed below
    }
    magic, kind = _MAGIC.get(mode, (b"", ""))
    with open(archive, "rb") as raw:
        if raw.read(len(magic)) != magic:
            raise tarfile.ReadError(f"not {kind} file")
        raw.seek(0)
        opener = openers.get(mode)
        stream: IO[bytes] | io.BufferedIOBase = opener(raw) if opener else raw
        try:
            yield _BoundedReads(stream)
        finally:
            stream.close()


def _tar_members(archive: Path, tar: tarfile.TarFile) -> Iterator[_Member]:
    while (info := tar.next()) is not None:
        parts = _safe_parts(archive, info.name, windows=False)
        if info.isdir():
            kind = "dir"
        elif info.issym():
            kind = "symlink"
        elif info.islnk():
            kind = "hardlink"
        elif info.isreg():
            kind = "file"
        else:
            what = _TAR_SPECIAL.get(info.type, f"member of type {info.type!r}")
            raise ArchiveError(archive, f"is a {what}; only files, directories and links "
                               "are allowed", info.name)
        yield _Member(info.name, parts, kind, info.size if kind == "file" else 0, info.mode,
                      info.mtime, info.linkname, _tar_reader(tar, info))


def _tar_reader(tar: tarfile.TarFile, info: tarfile.TarInfo) -> Callable[[], IO[bytes]]:
    def read() -> IO[bytes]:
        stream = tar.extractfile(info)
        if stream is None:
            raise tarfile.ReadError(f"no data for {info.name!r}")
        return stream

    return read


def _zip_members(archive: Path, zipped: zipfile.ZipFile) -> Iterator[_Member]:
    for info in zipped.infolist():
        parts = _safe_parts(archive, info.filename, windows=True)
        kind = _zip_kind(archive, info)
        target = _zip_link_target(archive, zipped, info) if kind == "symlink" else ""
        try:
            mtime = time.mktime((*info.date_time, 0, 0, -1))
        except (OverflowError, ValueError):
            mtime = 0.0
        yield _Member(info.filename, parts, kind, info.file_size if kind == "file" else 0,
                      info.external_attr >> 16, mtime, target, _zip_reader(zipped, info))


def _zip_kind(archive: Path, info: zipfile.ZipInfo) -> str:
    if info.flag_bits & 0x1:
        raise ArchiveError(archive, "is encrypted", info.filename)
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        return "symlink"
    if info.is_dir() or file_type == stat.S_IFDIR:
        return "dir"
    if file_type in (0, stat.S_IFREG):
        return "file"
    what = _SPECIAL.get(file_type, f"file of type {file_type:#o}")
    raise ArchiveError(archive, f"is a {what}; only files, directories and links are allowed",
                       info.filename)


def _zip_link_target(archive: Path, zipped: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    if info.file_size > MAX_LINK_TARGET:
        raise ArchiveError(archive, "is a symbolic link with an overlong target", info.filename)
    return os.fsdecode(zipped.read(info))


def _zip_reader(zipped: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], IO[bytes]]:
    return lambda: zipped.open(info)


def _data_filter_check(archive: Path, tree: _Tree, destination: Path) -> None:
    """Run tarfile's own ``data`` filter too, when this Python has it (defence in depth)."""
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is None:
        return
    for member in tree.members:
        info = tarfile.TarInfo(member.name)
        info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                     "hardlink": tarfile.LNKTYPE}.get(member.kind, tarfile.REGTYPE)
        info.linkname, info.mode, info.size = member.target, member.mode & 0o7777, member.size
        try:
            data_filter(info, os.fspath(destination))
        except tarfile.TarError as exc:
            raise ArchiveError(archive, str(exc), member.name) from exc


def _make_directories(path: Path, created: list[Path]) -> None:
    """Create *path* and its missing parents, appending each to *created*, outermost first."""
    missing: list[Path] = []
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir()
        created.append(directory)


def _discard(created: list[Path]) -> None:
    """Remove what an extraction created: the last one with all it holds, then the others."""
    if created:
        shutil.rmtree(created[-1], ignore_errors=True)
    for directory in reversed(created[:-1]):
        try:
            directory.rmdir()
        except OSError:
            break


def _write_tree(archive: Path, tree: _Tree, root: Path) -> None:
    """Write every checked member under *root*; directories get their modes and times last."""
    dir_times: dict[tuple[str, ...], float] = {}
    for member in tree.members:
        if not member.parts:
            continue
        path = root.joinpath(*member.parts)
        try:
            _write_member(root, path, member)
        except ArchiveError:
            raise
        except _READ_ERRORS as exc:
            raise ArchiveError(archive, f"cannot be extracted: {exc}", member.name) from exc
        if member.kind == "dir":
            dir_times[member.parts] = member.mtime
    directories = [parts for parts, kind in tree.kinds.items() if kind == "dir"]
    for parts in sorted(directories, key=len, reverse=True):
        path = root.joinpath(*parts)
        os.chmod(path, 0o755)
        if parts in dir_times:
            _set_mtime(path, dir_times[parts])


def _write_member(root: Path, path: Path, member: _Member) -> None:
    if member.kind == "dir":
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if member.kind == "symlink":
        os.symlink(member.target, path)
        _set_mtime(path, member.mtime)
        return
    if os.path.lexists(path):
        os.unlink(path)  # a file given twice: the last one wins, as with tar
    if member.kind == "hardlink":
        source = root.joinpath(*_split(member.target))
        size = os.lstat(source).st_size
        with open(os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as data:
            _write_file(path, data, size, member)
    else:
        assert member.reader is not None
        with member.reader() as data:
            _write_file(path, data, member.size, member)
    _set_mtime(path, member.mtime)


def _write_file(path: Path, data: IO[bytes], size: int, member: _Member) -> None:
    """Copy exactly *size* bytes into a new file: never follows a link, never keeps set-id bits."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with open(os.open(path, flags, 0o600), "wb") as out:
        for chunk in _exactly(data, size):
            out.write(chunk)
        os.fchmod(out.fileno(), 0o755 if member.mode & 0o111 else 0o644)


def _set_mtime(path: Path, mtime: float) -> None:
    with contextlib.suppress(OverflowError, ValueError, OSError):
        os.utime(path, (mtime, mtime), follow_symlinks=False)


def _plain(name: str, version: str, *fields: str) -> bool:
    """Whether a file name's fields are plain ASCII, its name alphanumeric at both ends."""
    return (_FIELD.fullmatch(name) is not None and name[0].isalnum() and name[-1].isalnum()
            and _VERSION_FIELD.fullmatch(version) is not None
            and all(_FIELD.fullmatch(field) for field in fields))


def _packaging_accepts(parse: Callable[[str], object], filename: str) -> bool:
    """Whether packaging's file name parser *parse* accepts *filename*."""
    try:
        parse(filename)
    except ValueError:  # packaging's Invalid* errors, and int()'s refusal of a huge number
        return False
    return True


def _parse_sdist_name(archive: Path) -> tuple[str, str]:
    """The project name and version an sdist's file name spells."""
    name, _, version = archive.name.removesuffix(".tar.gz").rpartition("-")
    if not (archive.name.endswith(".tar.gz") and _plain(name, version)
            and _packaging_accepts(parse_sdist_filename, archive.name)):
        raise ArchiveError(archive, f"is not named {_SDIST_PATTERN}")
    return name, version


def _parse_wheel_name(archive: Path) -> _WheelName:
    """The fields of a wheel's file name, spelled as it spells them."""
    fields = archive.name.removesuffix(".whl").split("-")
    if not (len(fields) in (5, 6) and _plain(*fields)
            and _packaging_accepts(parse_wheel_filename, archive.name)):
        raise ArchiveError(archive, f"is not named {_WHEEL_PATTERN}")
    build = fields[2] if len(fields) == 6 else None
    return _WheelName(fields[0], fields[1], build, *fields[-3:])


def _same_version(first: str, second: str) -> bool:
    """Whether two versions are equal under PEP 440; one that is not a version equals none."""
    try:
        return Version(first) == Version(second)
    except ValueError:  # InvalidVersion, or a number past int()'s digit limit
        return False


def _check_wheel(archive: Path, wheel: zipfile.ZipFile, parsed: _WheelName) -> tuple[str, ...]:
    """Check a wheel's members, dist-info and RECORD; return its files."""
    tree = _Tree(archive, single_top=False, max_total=MAX_WHEEL_SIZE)
    seen: set[tuple[str, ...]] = set()
    for member in _zip_members(archive, wheel):
        if member.parts in seen:
            raise ArchiveError(archive, "appears twice", member.name)
        seen.add(member.parts)
        tree.add(member)
    tree.finish()
    files = tuple(member.name for member in tree.members if member.kind != "dir")
    dist_info = _dist_info(archive, tree, parsed)
    for required in ("WHEEL", "METADATA", "RECORD"):
        if tree.kinds.get((dist_info, required)) != "file":
            raise ArchiveError(archive, f"has no {dist_info}/{required} file")
    _check_wheel_file(archive, wheel, dist_info, parsed)
    _check_metadata(archive, wheel, dist_info, parsed)
    _check_record(archive, wheel, dist_info, files)
    return files


def _dist_info(archive: Path, tree: _Tree, parsed: _WheelName) -> str:
    found = sorted({parts[0] for parts in tree.kinds if parts[0].endswith(".dist-info")})
    if len(found) != 1:
        what = "no .dist-info directory" if not found else f"several: {', '.join(found)}"
        raise ArchiveError(archive, f"must have exactly one .dist-info directory, it has {what}")
    name, _, version = found[0].removesuffix(".dist-info").rpartition("-")
    if canonicalize_name(name) != canonicalize_name(parsed.name) or not _same_version(
        version, parsed.version
    ):
        raise ArchiveError(archive, "does not match the file name "
                           f"({parsed.name} {parsed.version})", found[0])
    return found[0]


def _read_member(archive: Path, wheel: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """A member's data, refusing it when it inflates past *limit* bytes."""
    with wheel.open(name) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise ArchiveError(archive, f"inflates to more than {limit} bytes (an archive bomb?)",
                           name)
    return data


def _headers(archive: Path, wheel: zipfile.ZipFile, name: str) -> dict[str, list[str]]:
    text = _read_member(archive, wheel, name, MAX_METADATA).decode("utf-8", errors="replace")
    message = HeaderParser().parsestr(text)
    headers: dict[str, list[str]] = {}
    for key, value in message.items():
        headers.setdefault(key.lower(), []).append(str(value).strip())
    return headers


def _check_wheel_file(
    archive: Path, wheel: zipfile.ZipFile, dist_info: str, parsed: _WheelName
) -> None:
    name = f"{dist_info}/WHEEL"
    headers = _headers(archive, wheel, name)
    if not headers.get("wheel-version", [""])[0].startswith("1."):
        raise ArchiveError(archive, "has no Wheel-Version 1.x", name)
    tags = {f"{python}-{abi}-{platform}" for python in parsed.python.split(".")
            for abi in parsed.abi.split(".") for platform in parsed.platform.split(".")}
    declared = set(headers.get("tag", []))
    if declared and declared != tags:
        raise ArchiveError(archive, f"declares tags {sorted(declared)}, but the file name "
                           f"says {sorted(tags)}", name)


def _check_metadata(
    archive: Path, wheel: zipfile.ZipFile, dist_info: str, parsed: _WheelName
) -> None:
    name = f"{dist_info}/METADATA"
    headers = _headers(archive, wheel, name)
    project = headers.get("name", [""])[0]
    version = headers.get("version", [""])[0]
    if canonicalize_name(project) != canonicalize_name(parsed.name):
        raise ArchiveError(archive, f"names the project {project!r}, but the file name says "
                           f"{parsed.name!r}", name)
    if not _same_version(version, parsed.version):
        raise ArchiveError(archive, f"has version {version!r}, but the file name says "
                           f"{parsed.version!r}", name)


def _check_record(
    archive: Path, wheel: zipfile.ZipFile, dist_info: str, files: tuple[str, ...]
) -> None:
    """Every file is listed in RECORD with its hash and size, and RECORD lists nothing else."""
    record_name = f"{dist_info}/RECORD"
    record = _read_record(archive, wheel, record_name)
    unsigned = {record_name, *(f"{dist_info}/{name}" for name in _RECORD_SIGNATURES)}
    extra = sorted(set(record) - set(files))
    if extra:
        raise ArchiveError(archive, f"lists {extra[0]!r}, which is not in the wheel", record_name)
    for name in files:
        if name in unsigned:
            continue
        if name not in record or not record[name][0]:
            raise ArchiveError(archive, f"is not listed in {record_name} with a hash", name)
        algorithm, expected, size = record[name]
        digest, actual = _hash_member(wheel, name, algorithm)
        if digest != expected or (size and int(size) != actual):
            raise ArchiveError(archive, f"does not match its hash or size in {record_name}", name)


def _read_record(
    archive: Path, wheel: zipfile.ZipFile, record_name: str
) -> dict[str, tuple[str, str, str]]:
    text = _read_member(archive, wheel, record_name, MAX_RECORD).decode("utf-8",
                                                                      errors="replace")
    record: dict[str, tuple[str, str, str]] = {}
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        if len(row) != 3:
            raise ArchiveError(archive, f"has a malformed row {row!r}", record_name)
        name, hashed, size = row
        algorithm, _, digest = hashed.partition("=")
        bad_hash = bool(hashed) and (algorithm not in _RECORD_HASHES or not digest)
        if bad_hash or (size and not size.isdigit()):
            raise ArchiveError(archive, f"has a malformed or weak hash in row {row!r}",
                               record_name)
        record[name] = (algorithm, digest, size)
    return record


def _hash_member(wheel: zipfile.ZipFile, name: str, algorithm: str) -> tuple[str, int]:
    """Hash a member (reading it checks its CRC, as ``testzip`` does); return digest, size."""
    digest = hashlib.new(algorithm)
    size = 0
    with wheel.open(name) as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii"), size
