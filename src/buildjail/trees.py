"""Trees a build wrote, walked by descriptors: any depth, never following a symbolic link.

Everything a hook leaves behind is hostile input. A build can nest directories far deeper
than ``PATH_MAX`` or Python's recursion limit, plant symbolic links and FIFOs, and name
files anything. These walks open every directory relative to its parent (``openat`` with
``O_NOFOLLOW``), act on entries by name relative to that descriptor, keep a bounded number
of descriptors open however deep the tree, and do not cross into other file systems.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator

MAX_OPEN_DIRECTORIES = 64
"""Directory descriptors one walk keeps open; deeper levels are reopened through ``..``."""
SHOWN_PATH = 240
"""Characters of a path shown in a message (the end of it)."""
SPECIAL_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
                 stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}
"""The kinds of file a build may not leave for code outside the sandbox."""

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Level:
    """A directory on the walk's stack: its descriptor (None while closed) and what is left."""

    __slots__ = ("fd", "identity", "name", "names", "parent")

    def __init__(self, fd: int | None, identity: tuple[int, int], name: str,
                 parent: _Level | None, names: list[str]) -> None:
        self.fd = fd
        self.identity = identity
        self.name = name
        self.parent = parent
        self.names = names

    def shown(self) -> str:
        """The end of this directory's path, for messages (never for system calls)."""
        parts: list[str] = []
        size = 0
        level: _Level | None = self
        while level is not None and size <= SHOWN_PATH:
            parts.append(level.name)
            size += len(level.name) + 1
            level = level.parent
        path = "/".join(reversed(parts))
        return path if level is None else ".../" + path[-SHOWN_PATH:]

    def full(self) -> str:
        """This directory's whole path (it may exceed PATH_MAX: check before using it)."""
        parts: list[str] = []
        level: _Level | None = self
        while level is not None:
            parts.append(level.name)
            level = level.parent
        return "/".join(reversed(parts))


class Entry:
    """One entry of a tree: its name in the directory *dir_fd*, and its ``lstat``.

    *dir_fd* is valid only until the walk moves on.
    """

    __slots__ = ("dir_fd", "info", "name", "parent")

    def __init__(self, dir_fd: int, name: str, info: os.stat_result,
                 parent: _Level | None) -> None:
        self.dir_fd = dir_fd
        self.name = name
        self.info = info
        self.parent = parent

    @property
    def path(self) -> str:
        """The entry's path for messages: shortened, so never pass it to a system call."""
        return self.name if self.parent is None else f"{self.parent.shown()}/{self.name}"

    @property
    def full_path(self) -> str:
        """The entry's whole path (it may exceed PATH_MAX: check before using it)."""
        return self.path if self.parent is None else f"{self.parent.full()}/{self.name}"

    @property
    def proc_path(self) -> str:
        """A short path to the entry through ``/proc/self/fd`` (for xattr calls by name)."""
        return f"/proc/self/fd/{self.dir_fd}/{self.name}"

    @property
    def key(self) -> tuple[int, int]:
        """The entry's device and inode."""
        return self.info.st_dev, self.info.st_ino


class _Walk:
    """The stack of an iterative walk, with a bounded number of open descriptors.

    The levels from ``first_open`` up are open; those below were closed to stay within
    MAX_OPEN_DIRECTORIES and are reopened through ``..`` on the way back up.
    """

    def __init__(self, errors: list[str]) -> None:
        self.levels: list[_Level] = []
        self.errors = errors
        self.first_open = 0

    @property
    def top(self) -> _Level:
        """The deepest directory."""
        return self.levels[-1]

    def push(self, fd: int, info: os.stat_result, name: str) -> None:
        """Descend into the directory *fd* (already opened; the walk now owns it)."""
        level = _Level(fd, (info.st_dev, info.st_ino), name,
                       self.levels[-1] if self.levels else None, [])
        try:
            level.names = os.listdir(fd)
        except OSError as error:
            self.errors.append(f"{level.shown()}: {error.strerror}")
        self.levels.append(level)
        if len(self.levels) - self.first_open > MAX_OPEN_DIRECTORIES:
            oldest = self.levels[self.first_open]
            assert oldest.fd is not None
            os.close(oldest.fd)
            oldest.fd = None
            self.first_open += 1

    def pop(self) -> _Level:
        """Leave (and close) the deepest directory; reopen its parent if it was closed."""
        level = self.levels.pop()
        assert level.fd is not None
        try:
            if self.levels and self.levels[-1].fd is None:
                parent = self.levels[-1]
                fd = os.open("..", _DIRECTORY_FLAGS, dir_fd=level.fd)
                info = os.fstat(fd)
                if (info.st_dev, info.st_ino) != parent.identity:
                    os.close(fd)
                    raise OSError(errno.ESTALE, f"{parent.shown()} changed during the walk")
                parent.fd = fd
                self.first_open = len(self.levels) - 1
        finally:
            os.close(level.fd)
            level.fd = None
        return level

    def next_child(self) -> Entry | None:
        """The next entry of the deepest directory (None when it has no more)."""
        level = self.top
        while level.names:
            name = level.names.pop()
            assert level.fd is not None
            try:
                info = os.stat(name, dir_fd=level.fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as error:
                self.errors.append(f"{level.shown()}/{name}: {error.strerror}")
                continue
            return Entry(level.fd, name, info, level)
        return None

    def enter(self, entry: Entry) -> bool:
        """Descend into *entry* if it is a directory on the same file system; say whether."""
        if not stat.S_ISDIR(entry.info.st_mode) or (
                self.levels and entry.info.st_dev != self.top.identity[0]):
            return False
        fd = _open_directory(entry, self.errors)
        if fd is None:
            return False
        self.push(fd, entry.info, entry.name if self.levels else entry.path)
        return True

    def close(self) -> None:
        """Close every descriptor still open."""
        for level in self.levels:
            if level.fd is not None:
                os.close(level.fd)
                level.fd = None
        self.levels.clear()


def _open_directory(entry: Entry, errors: list[str]) -> int | None:
    """Open the directory *entry*, if it is still the one ``lstat`` saw."""
    try:
        fd = os.open(entry.name, _DIRECTORY_FLAGS, dir_fd=entry.dir_fd)
    except OSError as error:
        errors.append(f"{entry.path}: {error.strerror}")
        return None
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != entry.key:
        os.close(fd)
        errors.append(f"{entry.path}: replaced during the walk")
        return None
    return fd


def _root_entry(root: str, parent_fd: int, errors: list[str]) -> Entry | None:
    name = os.path.basename(os.path.abspath(root)) or "."
    try:
        info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as error:
        errors.append(f"{root}: {error.strerror}")
        return None
    return _RootEntry(parent_fd, name, info, None, root)


class _RootEntry(Entry):
    """The root of a walk, shown by the path the caller gave."""

    __slots__ = ("given",)

    def __init__(self, dir_fd: int, name: str, info: os.stat_result, parent: _Level | None,
                 given: str = "") -> None:
        super().__init__(dir_fd, name, info, parent)
        self.given = given

    @property
    def path(self) -> str:
        """The path the walk was given."""
        return self.given


def _open_parent(root: str, errors: list[str]) -> int | None:
    try:
        return os.open(os.path.dirname(os.path.abspath(root)) or "/",
                       os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        errors.append(f"{root}: {error.strerror}")
        return None


def walk(root: str, errors: list[str] | None = None, *,
         skip: Iterable[str] = ()) -> Iterator[Entry]:
    """Every entry under *root* (itself first), parents before children.

    Directories on another file system than their parent, and directories named in *skip*,
    are yielded but not entered. Entries that cannot be read are reported in *errors* (a
    line each) and skipped.
    """
    problems = errors if errors is not None else []
    skipped = frozenset(skip)
    parent_fd = _open_parent(root, problems)
    if parent_fd is None:
        return
    walker = _Walk(problems)
    try:
        entry = _root_entry(root, parent_fd, problems)
        if entry is None:
            return
        yield entry
        walker.enter(entry)
        while walker.levels:
            child = walker.next_child()
            if child is None:
                walker.pop()
                continue
            yield child
            if child.name not in skipped:
                walker.enter(child)
    finally:
        walker.close()
        os.close(parent_fd)


def walk_all(roots: Iterable[str], errors: list[str] | None = None) -> Iterator[Entry]:
    """Every entry under each of *roots*, each inode once (nested roots are walked once)."""
    seen: set[tuple[int, int]] = set()
    for root in roots:
        for entry in walk(root, errors):
            if entry.key in seen:
                continue
            seen.add(entry.key)
            yield entry


def remove_tree(root: str) -> list[str]:
    """Remove *root* and everything below it, any depth; return what could not be removed."""
    errors: list[str] = []
    parent_fd = _open_parent(root, errors)
    if parent_fd is None:
        return errors
    walker = _Walk(errors)
    try:
        entry = _root_entry(root, parent_fd, errors)
        if entry is None:
            return errors
        if walker.enter(entry):
            _empty(walker)
        _unlink(entry, errors)
        return errors
    finally:
        walker.close()
        os.close(parent_fd)


def remove_entry(entry: Entry) -> list[str]:
    """Remove an entry met during a walk (a whole tree if a directory); return failures."""
    errors: list[str] = []
    walker = _Walk(errors)
    try:
        if walker.enter(entry):
            _empty(walker)
        _unlink(entry, errors)
    finally:
        walker.close()
    return errors


def _empty(walker: _Walk) -> None:
    """Remove everything below the walk's root, deepest first (the root itself stays)."""
    while walker.levels:
        child = walker.next_child()
        if child is None:
            done = walker.pop()
            if walker.levels:
                parent = walker.top
                assert parent.fd is not None
                _remove(parent.fd, done.name, True, f"{parent.shown()}/{done.name}",
                        walker.errors)
            continue
        if stat.S_ISDIR(child.info.st_mode):
            if child.info.st_mode & 0o700 != 0o700:
                _make_searchable(child)
            if walker.enter(child):
                continue
        _unlink(child, walker.errors)


def _make_searchable(entry: Entry) -> None:
    try:
        os.chmod(entry.name, 0o700, dir_fd=entry.dir_fd)
        entry.info = os.stat(entry.name, dir_fd=entry.dir_fd, follow_symlinks=False)
    except OSError:
        pass


def _unlink(entry: Entry, errors: list[str]) -> None:
    _remove(entry.dir_fd, entry.name, stat.S_ISDIR(entry.info.st_mode), entry.path, errors)


def _remove(dir_fd: int, name: str, directory: bool, shown: str, errors: list[str]) -> None:
    try:
        if directory:
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as error:
        errors.append(f"{shown}: {error.strerror}")


def within(path: str, roots: Iterable[str]) -> bool:
    """Whether *path* is one of *roots* or lies below one (both already resolved)."""
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def refuse_escaping(roots: Iterable[str], allowed: Iterable[str] = ()) -> list[str]:
    """Remove symbolic links that lead outside every root, and special files, under *roots*.

    Links into *allowed* trees are kept too (a venv's link to its interpreter). Returns a
    line per entry removed, saying why. A link is judged by where the caller's own view of
    the file system takes it (``realpath``, as code outside the sandbox would follow it),
    so chains of links and dangling links are judged by where they end; every link is
    judged before any is removed.
    """
    roots = list(roots)
    resolved = [os.path.realpath(root) for root in (*roots, *allowed)]
    reasons: dict[tuple[int, int], str] = {}
    for entry in walk_all(roots):
        why = _refusal(entry, resolved)
        if why:
            reasons[entry.key] = why
    refused: list[str] = []
    if not reasons:
        return refused
    for entry in walk_all(roots):
        why = reasons.get(entry.key)
        if why is None or stat.S_ISDIR(entry.info.st_mode):
            continue
        try:
            os.unlink(entry.name, dir_fd=entry.dir_fd)
        except OSError as error:
            why += f" (and could not be removed: {error.strerror})"
        refused.append(f"{entry.path} {why}")
    return refused


def _refusal(entry: Entry, resolved: list[str]) -> str | None:
    """Why code outside must not use *entry* (None when it may)."""
    kind = stat.S_IFMT(entry.info.st_mode)
    if kind in SPECIAL_KINDS:
        return f"is {SPECIAL_KINDS[kind]}"
    if kind != stat.S_IFLNK:
        return None
    link, target = _link_target(entry)
    if target is not None and within(target, resolved):
        return None
    return f"is a symbolic link to {link!r}, outside the writable directories"


def _link_target(entry: Entry) -> tuple[str, str | None]:
    """A link's text and where it leads in the caller's view (None if that is unknown)."""
    try:
        link = os.readlink(entry.name, dir_fd=entry.dir_fd)
    except OSError:
        return "?", None
    try:
        directory = os.readlink(f"/proc/self/fd/{entry.dir_fd}")  # fails beyond PATH_MAX
    except OSError:
        return link, None
    if not directory.startswith("/"):
        return link, None  # not a path of this view (deleted, or another mount namespace)
    return link, os.path.realpath(os.path.join(directory, link))
