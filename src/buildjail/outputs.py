"""The output directory (``-o``): a build's wheel or sdist, checked, published as a fresh copy.

What a build made is hostile input. It is copied — bounded, never through a symbolic
link — into a new unnamed file in the output directory; that copy is checked (a real
archive of the project being built) and then linked under its name with mode 0644. The
build's own file is never published, so nothing can change between the check and the
publication, and no file already in the directory is replaced unless ``overwrite`` is
set — never one published earlier by the same run, whatever the settings. An output of a
build refused afterwards is withdrawn (:meth:`OutputDirectory.withdraw`), while its name
is still that file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat
import threading

from packaging.utils import (
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from .archives import ArchiveError, validate_sdist, validate_wheel
from .errors import BuildjailError

MAX_OUTPUT = 16 << 30
"""The largest wheel or sdist published (16 GiB: large GPU wheels are several GiB)."""
OUTPUT_MODE = 0o644
_CHUNK = 1 << 20


class OutputRefused(BuildjailError):  # noqa: N818 - says what happened
    """An output that is not the project's, not a valid archive, or would replace a file."""


@dataclasses.dataclass(frozen=True)
class Published:
    """An output in the output directory: its path, digest, project name and version."""

    path: str
    sha256: str
    name: str
    version: str


def project_of(filename: str, kind: str) -> tuple[str, str]:
    """The normalised project name and the version a wheel's or sdist's file name gives."""
    try:
        if kind == "wheel":
            name, version, _, _ = parse_wheel_filename(filename)
        else:
            name, version = parse_sdist_filename(filename)
    except ValueError as error:  # packaging's Invalid*, or a number past int()'s digit limit
        raise OutputRefused(f"{filename}: not a valid {kind} file name ({error})") from None
    return canonicalize_name(name), str(version)


class OutputDirectory:
    """A directory outputs are published into, by descriptor, never replacing a file."""

    def __init__(self, path: str, *, overwrite: bool = False) -> None:
        self.path = os.path.abspath(path)
        self.overwrite = overwrite
        os.makedirs(self.path, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._published: dict[str, tuple[int, int]] = {}
        """The names this run published, with their files' device and inode."""
        self._replaced: dict[str, str] = {}
        """The names this run published over a file (``overwrite``): where that file is kept
        until the run ends, so that a withdrawn output gives its name back to it."""
        self._lock = threading.Lock()

    def close(self) -> None:
        """Drop the files replaced outputs kept aside, and close the directory."""
        if self.fd >= 0:
            for kept in self._replaced.values():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(kept, dir_fd=self.fd)
            self._replaced.clear()
            os.close(self.fd)
            self.fd = -1

    def publish(self, source: str, kind: str, expected: str | None) -> Published:
        """Check a copy of *source* (a ``wheel`` or ``sdist``) and publish it; or refuse.

        *expected*: the project being built; the output must be named for it.
        """
        filename = os.path.basename(source)
        name, version = project_of(filename, kind)
        if expected is not None and name != canonicalize_name(expected):
            raise OutputRefused(f"{filename} is a {kind} of {name!r}, but "
                                f"{canonicalize_name(expected)!r} is being built")
        fd, temporary = self._copy(source)
        try:
            sha256 = self._check(fd, filename, kind)
            os.fchmod(fd, OUTPUT_MODE)
            self._link(fd, temporary, filename)
        finally:
            os.close(fd)
            if temporary is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary, dir_fd=self.fd)
        return Published(os.path.join(self.path, filename), sha256, name, version)

    def _copy(self, source: str) -> tuple[int, str | None]:
        """A new file in the directory holding *source*'s bytes (a regular file, bounded)."""
        src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            info = os.fstat(src)
            if not stat.S_ISREG(info.st_mode):
                raise OutputRefused(f"{os.path.basename(source)} is not a regular file")
            if info.st_size > MAX_OUTPUT:
                raise OutputRefused(f"{os.path.basename(source)} is larger than "
                                    f"{MAX_OUTPUT} bytes")
            fd, temporary = self._new_file()
            try:
                copied = 0
                while chunk := os.read(src, _CHUNK):
                    copied += len(chunk)
                    if copied > MAX_OUTPUT:
                        raise OutputRefused(f"{os.path.basename(source)} grew past "
                                            f"{MAX_OUTPUT} bytes")
                    _write_all(fd, chunk)
            except BaseException:
                os.close(fd)
                if temporary is not None:
                    os.unlink(temporary, dir_fd=self.fd)
                raise
            return fd, temporary
        finally:
            os.close(src)

    def _new_file(self) -> tuple[int, str | None]:
        """A new file in the directory: unnamed (O_TMPFILE), else a private temporary name."""
        try:
            return os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600,
                           dir_fd=self.fd), None
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
        name = f".buildjail-{os.getpid()}-{threading.get_ident()}.tmp"
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=self.fd)
        return fd, name

    def _check(self, fd: int, filename: str, kind: str) -> str:
        """Validate the copy; return its sha256."""
        path = f"/proc/self/fd/{fd}"
        try:
            if kind == "wheel":
                return validate_wheel(path, filename=filename).sha256
            return validate_sdist(path, filename=filename).sha256
        except ArchiveError as error:
            raise OutputRefused(error.reason if error.member is None else
                                f"member {error.member!r}: {error.reason}") from None

    def _link(self, fd: int, temporary: str | None, filename: str) -> None:
        """Name the copy: never over an output of this run, nor (by default) over any file."""
        with self._lock:
            if filename in self._published:
                raise OutputRefused(f"{filename} was already published by this run: an output "
                                    "of another build has the same name (not replaced)")
            try:
                self._link_as(fd, temporary, filename)
            except FileExistsError:
                if not self.overwrite:
                    raise OutputRefused(
                        f"{os.path.join(self.path, filename)} already exists (not replaced; "
                        "remove it, or pass --overwrite)") from None
                aside = f".{filename}.buildjail-{os.getpid()}"
                self._link_as(fd, temporary, aside)
                self._keep_replaced(filename)
                os.replace(aside, filename, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            info = os.fstat(fd)
            self._published[filename] = (info.st_dev, info.st_ino)

    def _keep_replaced(self, filename: str) -> None:
        """Keep the file about to be replaced under a second name, for :meth:`withdraw`
        (not where it cannot be linked: a directory, which the replace refuses anyway)."""
        kept = f".{filename}.buildjail-replaced-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(kept, dir_fd=self.fd)  # one a killed run of this pid left
        try:
            os.link(filename, kept, src_dir_fd=self.fd, dst_dir_fd=self.fd,
                    follow_symlinks=False)
        except OSError:
            return
        self._replaced[filename] = kept

    def withdraw(self, path: str) -> None:
        """Remove the output *path* this run published (a failed build delivers nothing),
        giving its name back to the file it replaced, if any: only while its name is still
        that output; a name freed may be published again."""
        filename = os.path.basename(path)
        with self._lock:
            if filename not in self._published:
                return
            kept = self._replaced.pop(filename, None)
            with contextlib.suppress(FileNotFoundError):
                info = os.stat(filename, dir_fd=self.fd, follow_symlinks=False)
                if (info.st_dev, info.st_ino) == self._published[filename]:
                    if kept is None:
                        os.unlink(filename, dir_fd=self.fd)
                    else:
                        os.replace(kept, filename, src_dir_fd=self.fd, dst_dir_fd=self.fd)
                        kept = None
            if kept is not None:  # its name was taken since: the old file is not put back
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(kept, dir_fd=self.fd)
            del self._published[filename]

    def _link_as(self, fd: int, temporary: str | None, name: str) -> None:
        if temporary is None:
            os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=self.fd, follow_symlinks=True)
        else:
            os.link(temporary, name, src_dir_fd=self.fd, dst_dir_fd=self.fd,
                    follow_symlinks=False)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
