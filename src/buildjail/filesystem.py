"""The sandbox's view of the filesystem: a plan computed by the caller, applied inside."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import stat

from . import _kernel as k
from .identity import Identity, account_entries, group_text, passwd_text

PRIVATE_TMPFS_MODES = {"/tmp": "1777", "/var/tmp": "1777", "/run": "0755"}
"""The private tmpfs mounts over host directories, and the mode of each."""
PRIVATE_TMPFS = tuple(PRIVATE_TMPFS_MODES)
MASK_TMPFS_SIZE = 1 << 20
"""The size of the empty tmpfs that masks a directory."""
SCRATCH_TMPFS = ("/tmp", "/var/tmp", "/dev/shm")
"""The writable tmpfs mounts besides the home, whose contents are memory the build uses."""
STAGE_DIR = "/run/buildjail"
"""Covered by a tmpfs in the bwrap backend's init, to re-attach trees the build's identity
could not reach on the host (it exists whenever an ephemeral identity is leased)."""
_REPLACED = (*PRIVATE_TMPFS, "/dev", "/proc")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_SYNTHETIC_DIR = "/run/buildjail"
_SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/opt", "/proc", "/run",
    "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/nonexistent",
})


@dataclasses.dataclass(frozen=True)
class MountPlan:
    """Everything the sandbox's mount namespace is built from."""

    readonly: tuple[str, ...]
    writable: tuple[str, ...]
    masked_dirs: tuple[str, ...]
    masked_files: tuple[str, ...]
    identity: Identity
    tmpfs_size: int | None = None

    def split_masks(self) -> tuple[list[str], list[str]]:
        """The masked paths outside every exposed tree, and those inside one (masked last)."""
        exposed = (*self.readonly, *self.writable)
        masks = (*self.masked_dirs, *self.masked_files)
        inside = [path for path in masks if within_any(path, exposed)]
        return [path for path in masks if path not in inside], inside

    def scratch_paths(self) -> tuple[str, ...]:
        """The writable tmpfs mounts, whose contents are memory the build uses."""
        return (*SCRATCH_TMPFS, self.identity.home)


def plan_mounts(
    readonly: tuple[str, ...],
    writable: tuple[str, ...],
    masked: tuple[str, ...],
    identity: Identity,
    *,
    outsider: bool,
    tmpfs_size: int | None = None,
) -> MountPlan:
    """Plan the mounts; *outsider* means the identity owns nothing on the host."""
    exposed = _existing((*readonly, *writable))
    masks = [*masked, *_home_directories()]
    if outsider:
        masks += untraversable_ancestors(exposed)
    masks = [
        path for path in _existing(_outermost(masks))
        if path not in exposed and (not within_any(os.path.realpath(path), _REPLACED)
                                    or within_any(path, exposed))
    ]
    masked_dirs = tuple(path for path in masks if os.path.isdir(path))
    masked_files = tuple(path for path in masks if path not in masked_dirs)
    return MountPlan(
        readonly=tuple(path for path in _existing(readonly) if path not in writable),
        writable=_existing(writable),
        masked_dirs=masked_dirs,
        masked_files=masked_files,
        identity=identity,
        tmpfs_size=tmpfs_size,
    )


def apply_mounts(plan: MountPlan) -> None:
    """Build the sandbox's filesystem; runs inside the new mount namespace, privileged."""
    k.make_mounts_private()
    trees = _clone_trees(plan)
    devices = {name: k.open_tree_clone("/dev/" + name, recursive=False) for name in DEVICES}
    k.set_mount_attributes("/", k.READONLY_ATTRIBUTES)
    _mount_dev(devices, _size(plan))
    k.mount_proc()
    for path, mode in PRIVATE_TMPFS_MODES.items():
        if os.path.isdir(path):
            _tmpfs(path, f"mode={mode}" + _size(plan))
    outside, inside = plan.split_masks()
    _mask(outside)
    _synthetic_accounts(plan.identity)
    _make_home(plan.identity, _size(plan))
    for path, fd, directory in sorted(trees, key=lambda item: item[0].count("/")):
        _ensure_mountpoint(path, directory)
        k.move_mount(fd, path)
        os.close(fd)
    _mask(inside)
    # /run holds only what the sandbox made (the synthetic accounts, the mask file): as
    # non-root it belongs to the build's own uid, and a writable /run is unmetered memory.
    for path in (*plan.masked_dirs, *(["/run"] if os.path.isdir("/run") else [])):
        k.set_mount_attributes(path, k.READONLY_ATTRIBUTES, recursive=False)


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


def _mask(paths: list[str]) -> None:
    """Cover directories with an empty tmpfs and files with an empty, unreadable file."""
    for path in paths:
        if os.path.isdir(path):
            _tmpfs(path, f"mode=0755,size={MASK_TMPFS_SIZE}")
        else:
            k.mount(_void_file(), path, None, k.MS_BIND | k.MS_RDONLY)


def _void_file() -> str:
    path = os.path.join(_SYNTHETIC_DIR, "masked")
    if not os.path.exists(path):
        os.makedirs(_SYNTHETIC_DIR, mode=0o755, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0))
        os.chmod(path, 0)
    return path


def within_any(path: str, trees: tuple[str, ...]) -> bool:
    """Whether *path* is one of *trees* or lies below one."""
    return any(path == tree or path.startswith(tree.rstrip("/") + "/") for tree in trees)


def _clone_trees(plan: MountPlan) -> list[tuple[str, int, bool]]:
    """Detached copies of the exposed trees: (path, tree fd, whether it is a directory)."""
    trees = []
    for path in plan.readonly:
        fd = k.open_tree_clone(path)
        k.set_mount_attributes(fd, k.READONLY_ATTRIBUTES)
        trees.append((path, fd, os.path.isdir(path)))
    for path in plan.writable:
        fd = k.open_tree_clone(path)
        k.set_mount_attributes(fd, k.MOUNT_ATTR_NOSUID | k.MOUNT_ATTR_NODEV)
        trees.append((path, fd, os.path.isdir(path)))
    return trees


def _size(plan: MountPlan) -> str:
    """Bound a writable tmpfs by the memory limit: its contents are memory."""
    return f",size={plan.tmpfs_size}" if plan.tmpfs_size else ""


def _mount_dev(devices: dict[str, int], size: str) -> None:
    _tmpfs("/dev", "mode=0755,size=64k", k.MS_NOSUID | k.MS_NOEXEC)
    for name, fd in devices.items():
        path = "/dev/" + name
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o666))
        k.move_mount(fd, path)
        os.close(fd)
    os.mkdir("/dev/shm", 0o1777)
    _tmpfs("/dev/shm", "mode=1777" + size)
    os.mkdir("/dev/pts", 0o755)
    k.mount("devpts", "/dev/pts", "devpts", k.MS_NOSUID | k.MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=620")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("ptmx", "pts/ptmx")):
        os.symlink(target, "/dev/" + name)
    k.set_mount_attributes("/dev", k.READONLY_ATTRIBUTES & ~k.MOUNT_ATTR_NODEV, recursive=False)


def _tmpfs(path: str, options: str, flags: int = k.MS_NOSUID | k.MS_NODEV) -> None:
    k.mount("tmpfs", path, "tmpfs", flags, options)


def _synthetic_accounts(identity: Identity) -> None:
    os.makedirs(_SYNTHETIC_DIR, mode=0o755, exist_ok=True)
    for name, text in (("passwd", passwd_text(identity)), ("group", group_text(identity))):
        source = os.path.join(_SYNTHETIC_DIR, name)
        with open(source, "w") as stream:
            stream.write(text)
        os.chmod(source, 0o644)
        target = "/etc/" + name
        if os.path.exists(target):
            k.mount(source, target, None, k.MS_BIND)
            k.mount(None, target, None, k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY | k.MS_NOSUID
                    | k.MS_NODEV)


def _make_home(identity: Identity, size: str) -> None:
    os.makedirs(identity.home, mode=0o700, exist_ok=True)
    _tmpfs(identity.home, f"mode=0700,uid={identity.uid},gid={identity.gid}{size}")


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
