"""The sandbox's view of the filesystem: an allow-list of the host, planned outside, built inside.

The view's root is a fresh tmpfs. On it: the operating system's own trees read-only
(``policy.VIEW_SYSTEM``), the entries of /etc that builds read (``policy.VIEW_ETC``) and
the sandbox's own ``passwd``, ``group`` and ``hosts``; the declared read-only and writable
trees; private tmpfs on /tmp, /var/tmp, /run, /dev/shm and the home; a minimal /dev and a
fresh /proc. Everything else — homes, /var, /srv, /opt, other mounts, every host socket —
is absent, as in Nix's sandbox. Masks apply inside the trees shown.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
import pwd
import re
import stat
import sys

from ..policy import VIEW_ETC, VIEW_SYSTEM
from . import kernel as k
from .identity import Identity, account_entries, group_text, passwd_text

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import BinaryIO, NamedTuple
else:
    from .._records import NamedTuple

PRIVATE_TMPFS_MODES = {"/tmp": "1777", "/var/tmp": "1777", "/run": "0755"}
"""The private tmpfs mounts of the view, and the mode of each."""
PRIVATE_TMPFS = tuple(PRIVATE_TMPFS_MODES)
MASK_TMPFS_SIZE = 1 << 20
"""The size of the empty tmpfs that masks a directory."""
SCRATCH_TMPFS = ("/tmp", "/var/tmp", "/dev/shm")
"""The writable tmpfs mounts besides the home, whose contents are memory the build uses."""
STAGE_DIR = "/run/buildjail"
"""Covered by a tmpfs in the bwrap backend's init, to re-attach trees the build's identity
could not reach on the host (it exists whenever an ephemeral identity is leased)."""
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
HOSTS_TEXT = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
"""The sandbox's /etc/hosts: only its own loopback names (the host's list is the host's)."""
_ROOT_TMPFS_SIZE = 16 << 20
COPY_ENTRIES = 8
COPY_FILE_SIZE = 256 << 10
"""An /etc entry with at most this many entries, none a file bigger than this, is copied into
the view's root instead of mounted (a mount each costs more than writing a few files)."""
_WILDCARDS = frozenset("*?[")
_ETC_NAMES = frozenset(pattern for pattern in VIEW_ETC if not _WILDCARDS & set(pattern))
_ETC_PATTERNS = tuple(re.compile(fnmatch.translate(pattern)) for pattern in VIEW_ETC
                      if _WILDCARDS & set(pattern))
"""VIEW_ETC's names, and its patterns with a wildcard compiled: one regex of every entry cost
every command about a millisecond to compile."""
_ASSEMBLY_POINTS = ("/tmp", "/dev")
"""Where the new root is put together (in the sandbox's own mount namespace only)."""
_SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/opt", "/proc", "/run",
    "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/nonexistent",
})


class Entry(NamedTuple):
    """A directory, file or link the view holds as its own, not a mount of the host's."""

    path: str
    kind: str
    """``dir``, ``file`` or ``link``."""
    mode: int = 0o755
    data: bytes = b""
    """A file's content, a link's target."""


class MountPlan(NamedTuple):
    """Everything the sandbox's mount namespace is built from."""

    system: tuple[str, ...]
    """Host paths shown read-only where they are: the OS's trees, /etc entries, /sys parts."""
    entries: tuple[Entry, ...]
    """What the view's root holds of its own, parents first: the merged-/usr links, small
    /etc entries copied, the sandbox's passwd, group and hosts, /etc/mtab."""
    readonly: tuple[str, ...]
    writable: tuple[str, ...]
    masked_dirs: tuple[str, ...]
    masked_files: tuple[str, ...]
    identity: Identity
    tmpfs_size: int | None = None
    home_entries: tuple[Entry, ...] = ()
    """What the private home holds when the build starts (the credential decoys), parents
    first, owned by the build's identity."""

    @property
    def exposed(self) -> tuple[str, ...]:
        """Every host tree the view shows."""
        return (*self.system, *self.readonly, *self.writable)

    def trees(self) -> list[tuple[str, bool]]:
        """(path, writable) of every tree shown, outermost first (nested ones after)."""
        trees = [(path, False) for path in (*self.system, *self.readonly)]
        trees += [(path, True) for path in self.writable]
        return sorted(trees, key=lambda item: item[0].count("/"))

    def masks(self) -> list[str]:
        """The masked paths, all inside shown trees (they are mounted after the trees)."""
        return [*self.masked_dirs, *self.masked_files]

    @property
    def links(self) -> list[tuple[str, str]]:
        """(path, target) of the view's own links."""
        return [(entry.path, entry.data.decode()) for entry in self.entries
                if entry.kind == "link"]

    def scratch_paths(self) -> tuple[str, ...]:
        """The writable tmpfs mounts, whose contents are memory the build uses."""
        return (*SCRATCH_TMPFS, self.identity.home)


def plan_mounts(
    readonly: tuple[str, ...],
    writable: tuple[str, ...],
    masked: tuple[str, ...],
    identity: Identity,
    *,
    tmpfs_size: int | None = None,
) -> MountPlan:
    """Plan the view: the system trees and /etc entries, the declared trees, their masks."""
    system, entries = _system_view()
    entries += _own_files(identity)
    declared = _existing((*readonly, *writable))
    system = tuple(path for path in system if path not in declared)
    exposed = (*system, *declared)
    candidates = [*masked, *_home_directories()]
    masks = [
        path for path in _existing(_outermost(candidates))
        if path not in exposed and within_any(path, exposed)
    ]
    masked_dirs = tuple(path for path in masks if os.path.isdir(path))
    return MountPlan(
        system=system,
        entries=entries,
        readonly=tuple(path for path in _existing(readonly) if path not in writable),
        writable=_existing(writable),
        masked_dirs=masked_dirs,
        masked_files=tuple(path for path in masks if path not in masked_dirs),
        identity=identity,
        tmpfs_size=tmpfs_size,
    )


def with_decoys(plan: MountPlan, contents: dict[str, bytes], directories: tuple[str, ...],
                resolv_conf: bytes | None = None) -> MountPlan:
    """*plan* with decoy files in the home (*contents*, relative to it, in *directories*
    made first) and, given *resolv_conf*, the view's own /etc/resolv.conf."""
    home = plan.identity.home.rstrip("/")
    entries = [Entry(f"{home}/{name}", "dir", 0o700) for name in directories]
    entries += [Entry(f"{home}/{name}", "file", 0o600, data) for name, data in contents.items()]
    own = plan.entries
    if resolv_conf is not None:
        own = (*own, Entry("/etc/resolv.conf", "file", 0o644, resolv_conf))
    return plan._replace(entries=own, home_entries=tuple(entries))


def _system_view() -> tuple[tuple[str, ...], tuple[Entry, ...]]:
    """The host's system trees and /etc entries: those mounted, and those copied or linked.

    Worked out once per process and state of /etc (its entries' and its own change times):
    every run plans the view, and reading /etc costs more than a run's other planning.
    """
    paths = [path for path in VIEW_SYSTEM if os.path.lexists(path)]
    with contextlib.suppress(OSError):
        paths += sorted(f"/etc/{name}" for name in os.listdir("/etc") if _etc_shown(name))
    return _system_view_of(tuple(paths), tuple(_stamp(path) for path in ("/etc", *paths)))


def _etc_shown(name: str) -> bool:
    """Whether the view shows the entry /etc/*name* (it matches a VIEW_ETC pattern)."""
    return name in _ETC_NAMES or any(pattern.match(name) for pattern in _ETC_PATTERNS)


def _stamp(path: str) -> tuple[int, int, int]:
    try:
        info = os.lstat(path)
    except OSError:
        return (0, 0, 0)
    return (info.st_ino, info.st_mtime_ns, info.st_ctime_ns)


@functools.lru_cache(maxsize=4)
def _system_view_of(paths: tuple[str, ...], _stamps: tuple[tuple[int, int, int], ...]
                    ) -> tuple[tuple[str, ...], tuple[Entry, ...]]:
    mounted: list[str] = []
    entries: list[Entry] = []
    for path in paths:
        copied = _copied(path) if path.startswith("/etc/") or os.path.islink(path) else None
        if copied is None:
            mounted.append(path)
        else:
            entries += copied
    return tuple(mounted), tuple(entries)


def _own_files(identity: Identity) -> tuple[Entry, ...]:
    """The sandbox's own accounts and hosts, and /etc/mtab."""
    return (Entry("/etc/passwd", "file", 0o644, passwd_text(identity).encode()),
            Entry("/etc/group", "file", 0o644, group_text(identity).encode()),
            Entry("/etc/hosts", "file", 0o644, HOSTS_TEXT.encode()),
            Entry("/etc/mtab", "link", data=b"/proc/self/mounts"))


def _copied(path: str) -> list[Entry] | None:
    """*path* as entries of the view's own, or None when it is better mounted (too big).

    Only what anyone may read is copied (a file others cannot read, a directory they cannot
    enter, is left out: absent rather than exposed); links are copied as links.
    """
    found: list[Entry] = []
    pending = [path]
    while pending:
        current = pending.pop()
        try:
            info = os.lstat(current)
        except OSError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode):
            found.append(Entry(current, "link", data=os.fsencode(os.readlink(current))))
        elif stat.S_ISREG(info.st_mode) and mode & 0o004:
            if info.st_size > COPY_FILE_SIZE:
                return None
            with open(current, "rb") as stream:
                found.append(Entry(current, "file", mode, _read_bounded(stream, info.st_size)))
        elif stat.S_ISDIR(info.st_mode) and mode & 0o005 == 0o005:
            found.append(Entry(current, "dir", mode))
            with contextlib.suppress(OSError):
                pending += sorted((os.path.join(current, name) for name in os.listdir(current)),
                                  reverse=True)
        if len(found) > COPY_ENTRIES:
            return None
    return found


def _read_bounded(stream: BinaryIO, size: int) -> bytes:
    """At most ``COPY_FILE_SIZE + 1`` bytes of *stream*, a file *size* bytes long when it was
    looked at: read by that size first (a read of the whole bound allocates 256 KiB for each
    file, a few tenths of a millisecond in every run's planning), then, if it has grown
    since, on to the bound."""
    data = stream.read(min(size, COPY_FILE_SIZE) + 1)
    if len(data) == size + 1 and len(data) <= COPY_FILE_SIZE:
        data += stream.read(COPY_FILE_SIZE + 1 - len(data))
    return data


def interpreter_paths() -> tuple[str, ...]:
    """The base interpreter's own files, shown read-only: its lib, include and bin/python*.

    Not a virtual environment (a venv's pip.conf, uv.toml or activate scripts), and nothing
    when the interpreter lives in the view's system trees (/usr) anyway.
    """
    real = os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))
    return installation_paths(sys.base_prefix, real)


def installation_paths(*prefixes: str) -> tuple[str, ...]:
    """An interpreter installation's own files under each prefix: lib, include, bin/python*.

    Nothing for a prefix in the view's system trees (/usr), which it shows anyway.
    """
    paths: list[str] = []
    for prefix in dict.fromkeys(prefixes):
        if not prefix or prefix == "/" or within_any(prefix, VIEW_SYSTEM):
            continue
        paths += [os.path.join(prefix, "lib"), os.path.join(prefix, "include")]
        paths += _pythons(prefix)
    return tuple(path for path in dict.fromkeys(paths) if os.path.lexists(path))


def venv_paths(prefix: str) -> tuple[str, ...]:
    """A virtual environment's interpreter files: pyvenv.cfg, lib and bin/python*.

    Not its other scripts (``activate*``), nor its root's ``pip.conf`` or ``uv.toml``.
    """
    paths = [os.path.join(prefix, "pyvenv.cfg"), os.path.join(prefix, "lib")]
    paths += _pythons(prefix)
    return tuple(path for path in paths if os.path.lexists(path))


def _pythons(prefix: str) -> list[str]:
    """*prefix*'s ``bin/python*``, sorted: what ``glob.glob`` of that finds (the names of the
    directory matching the pattern), without importing glob on the start-up of ``run``."""
    directory = os.path.join(prefix, "bin")
    try:
        names = os.listdir(directory)
    except OSError:  # none, or not a directory: glob finds nothing
        return []
    return sorted(os.path.join(directory, name) for name in fnmatch.filter(names, "python*"))


def apply_mounts(plan: MountPlan) -> None:
    """Build the view and make it the root; runs inside the new mount namespace, privileged.

    Every host tree is cloned first, while the host's tree is still there; the new root
    is then put together on a tmpfs and pivoted into, and the host's root detached.
    """
    k.make_mounts_private()
    trees = [(path, _clone(path, writable), os.path.isdir(path))
             for path, writable in plan.trees()]
    devices = {name: k.open_tree_clone("/dev/" + name, recursive=False) for name in DEVICES}
    root = next(path for path in _ASSEMBLY_POINTS if os.path.isdir(path))
    _tmpfs(root, f"mode=0755,size={_ROOT_TMPFS_SIZE}")
    for entry in plan.entries:
        _make_entry(root, entry)
    os.makedirs(root + "/dev", 0o755)
    _mount_dev(root + "/dev", devices, _size(plan))
    os.makedirs(root + "/proc", 0o555)
    k.mount_proc(root + "/proc")
    for path, mode in PRIVATE_TMPFS_MODES.items():
        os.makedirs(root + path, 0o755, exist_ok=True)
        _tmpfs(root + path, f"mode={mode}" + _size(plan))
    _make_home(root, plan.identity, _size(plan))
    for entry in plan.home_entries:
        _make_entry(root, entry)
        os.lchown(root + entry.path, plan.identity.uid, plan.identity.gid)
    for path, fd, directory in trees:
        _ensure_mountpoint(root + path, directory)
        k.move_mount(fd, root + path)
        os.close(fd)
    _mask([root + path for path in plan.masks()], root)
    for path in ("", "/run", *plan.masked_dirs):  # the root and /run: only what we made
        k.set_mount_attributes(root + path, k.READONLY_ATTRIBUTES, recursive=False)
    os.chdir(root)
    k.pivot_root_here()


def _clone(path: str, writable: bool) -> int:
    fd = k.open_tree_clone(path)
    attributes = k.MOUNT_ATTR_NOSUID | k.MOUNT_ATTR_NODEV
    k.set_mount_attributes(fd, attributes if writable else k.READONLY_ATTRIBUTES)
    return fd


def stage_trees(trees: tuple[tuple[str, str, bool], ...]) -> None:
    """Re-attach (source, target, writable) trees under a fresh tmpfs on STAGE_DIR; privileged."""
    if not trees:
        return
    _tmpfs(STAGE_DIR, "mode=0755,size=64k")
    for source, target, writable in trees:
        fd = k.open_tree_clone(source)
        attributes = k.MOUNT_ATTR_NOSUID | k.MOUNT_ATTR_NODEV
        k.set_mount_attributes(fd, attributes if writable else k.READONLY_ATTRIBUTES)
        if os.path.isdir(source):
            os.mkdir(target, 0o755)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        k.move_mount(fd, target)
        os.close(fd)


def _mask(paths: list[str], root: str) -> None:
    """Cover directories with an empty tmpfs and files with an empty, unreadable file."""
    void = None
    for path in paths:
        if os.path.isdir(path):
            _tmpfs(path, f"mode=0755,size={MASK_TMPFS_SIZE}")
            continue
        if void is None:
            void = os.path.join(root + STAGE_DIR, "masked")
            os.makedirs(os.path.dirname(void), mode=0o755, exist_ok=True)
            os.close(os.open(void, os.O_CREAT | os.O_WRONLY, 0))
            os.chmod(void, 0)
        k.mount(void, path, None, k.MS_BIND | k.MS_RDONLY)
        k.set_mount_attributes(path, k.READONLY_ATTRIBUTES, recursive=False)


def within_any(path: str, trees: tuple[str, ...]) -> bool:
    """Whether *path* is one of *trees* or lies below one."""
    return any(path == tree or path.startswith(tree.rstrip("/") + "/") for tree in trees)


def _size(plan: MountPlan) -> str:
    """Bound a writable tmpfs by the memory limit: its contents, inodes and xattrs are memory."""
    if not plan.tmpfs_size:
        return ""
    return f",size={plan.tmpfs_size},nr_inodes={max(plan.tmpfs_size // 1024, 4096)}"


def _mount_dev(dev: str, devices: dict[str, int], size: str) -> None:
    _tmpfs(dev, "mode=0755,size=64k", k.MS_NOSUID | k.MS_NOEXEC)
    for name, fd in devices.items():
        path = f"{dev}/{name}"
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o666))
        k.move_mount(fd, path)
        os.close(fd)
    os.mkdir(f"{dev}/shm", 0o1777)
    _tmpfs(f"{dev}/shm", "mode=1777" + size)
    os.mkdir(f"{dev}/pts", 0o755)
    k.mount("devpts", f"{dev}/pts", "devpts", k.MS_NOSUID | k.MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=620")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("ptmx", "pts/ptmx")):
        os.symlink(target, f"{dev}/{name}")
    k.set_mount_attributes(dev, k.READONLY_ATTRIBUTES & ~k.MOUNT_ATTR_NODEV, recursive=False)


def _tmpfs(path: str, options: str, flags: int = k.MS_NOSUID | k.MS_NODEV) -> None:
    k.mount("tmpfs", path, "tmpfs", flags, options)


def _make_entry(root: str, entry: Entry) -> None:
    path = root + entry.path
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):  # entries come parents first: only a top needs this
        _ensure_mountpoint(parent)
    if entry.kind == "dir":
        os.mkdir(path, entry.mode)
        os.chmod(path, entry.mode)
    elif entry.kind == "link":
        os.symlink(entry.data, path)
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, entry.mode)
        try:
            os.write(fd, entry.data)
            os.fchmod(fd, entry.mode)
        finally:
            os.close(fd)


def _make_home(root: str, identity: Identity, size: str) -> None:
    os.makedirs(root + identity.home, mode=0o700, exist_ok=True)
    _tmpfs(root + identity.home, f"mode=0700,uid={identity.uid},gid={identity.gid}{size}")


def _ensure_mountpoint(path: str, directory: bool = True) -> None:
    """Create *path* (a directory, or an empty file for a file's tree) and its parents."""
    if os.path.lexists(path):
        return
    _ensure_mountpoint(os.path.dirname(path))
    if directory:
        os.mkdir(path, 0o755)
    else:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def _existing(paths: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(path for path in paths if os.path.lexists(path)))


def _outermost(paths: list[str]) -> list[str]:
    ordered = sorted(dict.fromkeys(os.path.normpath(path) for path in paths))
    kept: list[str] = []
    for path in ordered:
        if not any(path == top or path.startswith(top.rstrip("/") + "/") for top in kept):
            kept.append(path)
    return kept


def _home_directories() -> list[str]:
    """The caller's home and every login account's home on the host."""
    homes = [os.path.expanduser("~")]
    with contextlib.suppress(KeyError):
        homes.append(pwd.getpwuid(os.getuid()).pw_dir)
    for parts in account_entries("/etc/passwd"):
        if len(parts) > 5 and parts[2].isdigit() and (
            int(parts[2]) == 0 or 1000 <= int(parts[2]) < 65534
        ) and parts[5].startswith("/") and parts[5] != "/":
            homes.append(parts[5])
    return [home for home in homes if os.path.normpath(home) not in _SYSTEM_DIRS]


def untraversable_ancestors(paths: tuple[str, ...]) -> list[str]:
    """Directories above *paths* that an unknown user could not enter: mask them."""
    found = []
    for path in paths:
        parent = os.path.dirname(os.path.abspath(path))
        outermost = None
        while parent != "/":
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                outermost = parent
            parent = os.path.dirname(parent)
        if outermost:
            found.append(outermost)
    return found
