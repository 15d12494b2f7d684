"""Lend writable trees to an ephemeral identity and hand them back to the caller afterwards.

Both walks run outside the sandbox, after every process of the sandbox is dead, by
descriptors (:mod:`buildjail.trees`): any depth, never following a symbolic link. They never
give away a file that has other hard links: its other names could lie outside the writable
tree, and owning it would let the build write there; nor a set-id or capable file, whose
privileges are given back afterwards only to the content it had.

While lent, a directory passes nothing on: its set-gid bit and default ACL are held back
for the run (the filter refuses a set-gid bit in any mode, so the build could not copy or
``chmod 755`` such a directory; and an inherited ACL would grant another user access).

What the build leaves is hostile input. The hand-back restores what the caller had for
every entry that existed before (owner, mode, access-control lists); what the build made
goes to the caller with a normalised mode (no set-id, sticky, group- or other-write bits),
without ACLs or file capabilities. When some entries cannot be handed back, the writable
tree holding them is made unreachable (mode 000) so that the ephemeral uid, which is then
free for other builds, cannot reach them; only if that fails too is the uid quarantined.

As non-root there is no ephemeral uid, but a build could still leave a set-id file (as the
caller) or a file others may write: :func:`normalize_changed` normalises every entry
changed during the run the same way.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import namedtuple
from collections.abc import Iterable

from .. import trees
from .changetimes import changed_after, horizon

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from hashlib import sha256
    from typing import NamedTuple

    class _Fields(NamedTuple):
        uid: int
        gid: int
        mode: int
        xattrs: tuple[tuple[str, bytes], ...] = ()
        directory: bool = False
        digest: bytes | None = None
else:  # CPython's own sha256: hashlib's loads OpenSSL, a cost every command pays at start-up
    try:
        from _sha256 import sha256  # 3.11
    except ImportError:  # pragma: no cover - another Python
        try:
            from _sha2 import sha256  # 3.12+
        except ImportError:
            from hashlib import sha256
    _Fields = namedtuple("Original", ("uid", "gid", "mode", "xattrs", "directory", "digest"),
                         defaults=((), False, None))  # the same tuple, made without typing

CAPABILITY = "security.capability"
SENSITIVE_XATTRS = ("system.posix_acl_access", "system.posix_acl_default", CAPABILITY)
"""Extended attributes that grant access or privilege: ACLs and file capabilities."""
SAFE_MODE = 0o755
"""The permission bits a handed-back entry the build made may keep."""
CTIME_SLACK_NS = 100_000_000
"""How far before the run an entry's change time may lie and still count as the run's (and
whole seconds further: changetimes.changed_after)."""



class Original(_Fields):
    """What an entry was before the build: owner, permission bits, ACLs and capabilities
    (``uid``, ``gid``, ``mode``, ``xattrs``, ``directory``), and a privileged file's (set-id
    bits, capabilities) content hash, ``digest``: its privileges are given back only to the
    same content.

    A named tuple: one is made for every entry of a lent tree, and a tuple is made in a
    fraction of a frozen dataclass's time.
    """

    __slots__ = ()

    @property
    def privileged(self) -> bool:
        """Whether the entry had set-id bits or file capabilities (a directory has none:
        its set-gid bit only passes its group on to new entries)."""
        if self.directory:
            return False
        return bool(self.mode & (stat.S_ISUID | stat.S_ISGID)) or (bool(self.xattrs) and any(
            name == CAPABILITY for name, _ in self.xattrs))

    def unprivileged(self) -> Original:
        """The same without set-id bits and capabilities."""
        return self._replace(
            mode=self.mode & ~(stat.S_ISUID | stat.S_ISGID),
            xattrs=tuple(item for item in self.xattrs if item[0] != CAPABILITY))


Owners = dict[tuple[int, int], Original]


class HandBackIncomplete(OSError):  # noqa: N818 - an OSError, named for what happened
    """Some entries could not be handed back; they may still belong to the ephemeral uid."""

    def __init__(self, errors: list[str], unreachable: list[str], contained: bool) -> None:
        self.errors = errors
        self.unreachable = unreachable
        """The writable trees made unreachable (mode 000) because of the failures."""
        self.contained = contained
        """Whether every tree holding a failure was made unreachable."""
        super().__init__(0, f"{len(errors)} entries not handed back, e.g. {errors[0]}")


def lend(paths: Iterable[str], uid: int, gid: int) -> Owners:
    """Give every entry under *paths* to ``uid:gid``; return what each entry was."""
    owners: Owners = {}
    errors: list[str] = []
    with _Names() as names:
        for entry in trees.walk_all(_absolute(paths), errors):
            info = entry.info
            directory = stat.S_ISDIR(info.st_mode)
            original = Original(info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode),
                                _sensitive_xattrs(entry, names), directory)
            # A set-id or capable file is never lent: the build could rewrite it, and the
            # hand-back would give the privileges back to the build's content.
            privileged = stat.S_ISREG(info.st_mode) and original.privileged
            if privileged:
                original = original._replace(digest=_digest(entry))
            owners[entry.key] = original
            shared = not directory and info.st_nlink > 1
            if not shared and not privileged and (info.st_uid, info.st_gid) != (uid, gid):
                os.chown(entry.name, uid, gid, dir_fd=entry.dir_fd, follow_symlinks=False)
            if directory:
                _hold_back_inheritance(entry, original, names)
    if errors:
        raise OSError(errno.EIO, f"cannot lend the writable trees: {errors[0]}")
    return owners


DEFAULT_ACL = "system.posix_acl_default"


def _hold_back_inheritance(entry: trees.Entry, original: Original, names: _Names) -> None:
    """Clear what a directory passes on to new entries, for the run: its set-gid bit and
    its default ACL (the hand-back restores both, as recorded in *original*).

    Nothing the build makes then inherits an ACL granting another user access, or the
    set-gid bit — which the filter refuses in any mode, so that ``chmod 755 DIR`` of GNU
    chmod, ``cp -a`` and ``shutil.copytree`` of such a directory would fail.
    """
    if original.mode & stat.S_ISGID:
        os.chmod(entry.name, original.mode & ~stat.S_ISGID, dir_fd=entry.dir_fd)  # lstat: a dir
    if any(name == DEFAULT_ACL for name, _ in original.xattrs):
        os.removexattr(names.of(entry), DEFAULT_ACL, follow_symlinks=False)


def hand_back(paths: Iterable[str], owners: Owners, borrower: int, uid: int, gid: int, *,
              lent_before: int | None = None) -> None:
    """Restore what existed and give what *borrower* created to ``uid:gid``, normalised.

    *lent_before*: a time (ns, :func:`changed_since` taken after the lend) before which an
    entry's change time says the run left its inode alone: its extended attributes are
    then not read again (only the owner and mode, which the ``lstat`` shows, are put
    back). Raises HandBackIncomplete, after trying every entry, when some could not be
    changed; the trees holding them are then made unreachable (see the module's docstring).
    """
    errors: list[str] = []
    failed_roots: list[str] = []
    seen: set[tuple[int, int]] = set()
    with _Names() as names:
        for root in _absolute(paths):
            before = len(errors)
            for entry in trees.walk(root, errors):
                if entry.key in seen:
                    continue
                seen.add(entry.key)
                try:
                    _hand_back_entry(entry, owners.get(entry.key), borrower, (uid, gid),
                                     lent_before=lent_before, names=names)
                except OSError as error:
                    errors.append(f"{entry.path}: {error.strerror}")
            if len(errors) > before:
                failed_roots.append(root)
    if errors:
        unreachable = [root for root in failed_roots if _make_unreachable(root)]
        raise HandBackIncomplete(errors, unreachable, len(unreachable) == len(failed_roots))


def _hand_back_entry(entry: trees.Entry, original: Original | None, borrower: int,
                     owner: tuple[int, int], *, lent_before: int | None,
                     names: _Names) -> None:
    """Give one entry back: what it was if it existed, else *owner*'s, normalised."""
    info = entry.info
    if original is None and borrower not in (info.st_uid, info.st_gid):
        return
    wanted = original or Original(*owner, stat.S_IMODE(info.st_mode) & SAFE_MODE)
    if wanted.directory != stat.S_ISDIR(info.st_mode):
        # Not what was lent (its inode number reused): no set-gid bit of a directory's for
        # a file.
        wanted = wanted.unprivileged()._replace(directory=False)
    if wanted.privileged and not _same_content(entry, wanted):
        wanted = wanted.unprivileged()  # the build changed it: no privileges
    # Left alone since the lend (its change time is older), an entry without sensitive
    # attributes has none now: nothing but a change of its inode could have set one.
    untouched = (original is not None and not original.xattrs and lent_before is not None
                 and not changed_after(info.st_ctime_ns, lent_before))
    _restore(entry, wanted, names, xattrs=not untouched)


def changed_since(paths: Iterable[str] = ()) -> int:
    """A time (ns) before anything a run starts now could change under *paths*: pass to
    normalize_changed, or to hand_back once the lend is over (changetimes.horizon: the
    file systems' own clocks are asked too)."""
    return horizon(_absolute(paths), CTIME_SLACK_NS)


def normalize_changed(paths: Iterable[str], since_ns: int) -> None:
    """Normalise every entry under *paths* changed after *since_ns* (the non-root hand-back).

    Strips set-id, sticky, group- and other-write bits, ACLs and file capabilities from the
    caller's entries (only their owner, the caller, can have changed their modes), but
    not a directory's set-gid bit (new entries inherit its group, one of the caller's:
    a directory the caller made set-gid keeps it); raises HandBackIncomplete when some
    entries could not be changed.
    """
    errors: list[str] = []
    uid = os.geteuid()
    # Directories the caller cannot read are skipped: the build (as the caller) could not
    # have made anything there either.
    with _Names() as names:
        for entry in trees.walk_all(_absolute(paths), []):
            info = entry.info
            if (stat.S_ISLNK(info.st_mode) or info.st_uid != uid
                    or not changed_after(info.st_ctime_ns, since_ns)):
                continue
            kept = SAFE_MODE | (stat.S_ISGID if stat.S_ISDIR(info.st_mode) else 0)
            try:
                _restore(entry, Original(info.st_uid, info.st_gid,
                                         stat.S_IMODE(info.st_mode) & kept), names)
            except OSError as error:
                errors.append(f"{entry.path}: {error.strerror}")
    if errors:
        raise HandBackIncomplete(errors, [], contained=True)


def _restore(entry: trees.Entry, wanted: Original, names: _Names, *, xattrs: bool = True) -> None:
    """Give *entry* the owner, mode and (if *xattrs*) sensitive xattrs of *wanted*, the owner
    first."""
    info = entry.info
    if (info.st_uid, info.st_gid) != (wanted.uid, wanted.gid):
        os.chown(entry.name, wanted.uid, wanted.gid, dir_fd=entry.dir_fd,
                 follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):
        return
    mode = stat.S_IMODE(info.st_mode)
    if mode & (stat.S_ISUID | stat.S_ISGID):  # chown may have cleared them: look again
        mode = stat.S_IMODE(os.stat(entry.name, dir_fd=entry.dir_fd,
                                    follow_symlinks=False).st_mode)
    if mode != wanted.mode:
        os.chmod(entry.name, wanted.mode, dir_fd=entry.dir_fd)  # not a link (lstat above)
    if not xattrs:
        return
    name = names.of(entry)
    current = dict(_sensitive_xattrs(entry, names))
    target = dict(wanted.xattrs)
    for attribute in current.keys() - target.keys():
        os.removexattr(name, attribute, follow_symlinks=False)
    for attribute, value in target.items():
        if current.get(attribute) != value:
            os.setxattr(name, attribute, value, follow_symlinks=False)


DIGEST_LIMIT = 1 << 30
"""The largest privileged file hashed; a bigger one never gets its privileges back."""


def _digest(entry: trees.Entry) -> bytes | None:
    """The sha256 of a regular file's content, read by descriptor (None if unreadable)."""
    if entry.info.st_size > DIGEST_LIMIT:
        return None
    try:
        fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=entry.dir_fd)
    except OSError:
        return None
    digest = sha256()
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.digest()


def _same_content(entry: trees.Entry, original: Original) -> bool:
    """Whether *entry* is still a regular file with the content *original* recorded."""
    if not stat.S_ISREG(entry.info.st_mode) or original.digest is None:
        return False
    return _digest(entry) == original.digest


def _sensitive_xattrs(entry: trees.Entry, names: _Names) -> tuple[tuple[str, bytes], ...]:
    """The ACLs and capabilities of *entry*, by name and value (none for links)."""
    if stat.S_ISLNK(entry.info.st_mode):
        return ()
    name = names.of(entry)
    try:
        listed = os.listxattr(name, follow_symlinks=False)
    except OSError as error:
        if error.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return ()
        raise
    found = []
    for attribute in listed:
        if attribute in SENSITIVE_XATTRS:
            try:
                found.append((attribute, os.getxattr(name, attribute, follow_symlinks=False)))
            except OSError as error:
                if error.errno != errno.ENODATA:
                    raise
    return tuple(found)


def _absolute(paths: Iterable[str]) -> list[str]:
    """*paths* made absolute now, before a walk moves the working directory (_Names)."""
    return [os.path.abspath(path) for path in paths]


class _Names:
    """Entries named for the calls that take no directory descriptor (the xattr calls):
    by their name alone, in a working directory moved to the directory they are in.

    Cheaper than a ``/proc/self/fd/N/NAME`` path (0.9 against 3.3 us a call here), and as
    safe: the name is one component, never followed if it is a link. The working
    directory is given back on leaving.
    """

    def __init__(self) -> None:
        self._home = -1
        self._level: object = None

    def __enter__(self) -> _Names:
        self._home = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return self

    def __exit__(self, *_: object) -> None:
        try:
            os.fchdir(self._home)
        finally:
            os.close(self._home)

    def of(self, entry: trees.Entry) -> str:
        """*entry*'s name, the working directory moved to its directory if need be."""
        # Keyed by the walk's level, never by descriptor number (numbers are reused); the
        # root of a walk has none, and is named from its parent's descriptor each time.
        if entry.parent is None or entry.parent is not self._level:
            os.fchdir(entry.dir_fd)
            self._level = entry.parent
        return entry.name


def _make_unreachable(root: str) -> bool:
    """Close *root* to everyone but root (mode 000); say whether that worked."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.fchmod(fd, 0)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
