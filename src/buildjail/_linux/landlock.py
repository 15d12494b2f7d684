"""Landlock: the kernel's unprivileged access control, as the landlock backend uses it.

A :class:`RulesetPlan` names what the sandbox may reach — trees it may read and execute,
trees it may change, single files (devices, its standard streams) it may read and write —
and, by ABI version, whether TCP is refused and whether signals and abstract unix sockets
are scoped to the sandbox. :func:`restrict_self` turns it into a ruleset and enforces it on
the calling process and everything it starts; nothing it does not name can be opened.

ABI versions (``landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)``):
1 (Linux 5.13) the file system; 2 (5.19) ``REFER``, moving and linking between
directories; 3 (6.2) ``TRUNCATE``; 4 (6.7) TCP ``bind``/``connect``; 5 (6.10) ``IOCTL_DEV``;
6 (6.12) scoped signals and abstract unix sockets; 7 (6.15) audit logging.

Looked up at import, like the rest of ``_linux``: the init that calls it is forked.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from .._records import NamedTuple

SYS_CREATE_RULESET = 444
SYS_ADD_RULE = 445
SYS_RESTRICT_SELF = 446
"""The same numbers on x86_64 and aarch64 (the generic syscall table)."""
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13
TRUNCATE = 1 << 14
IOCTL_DEV = 1 << 15
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

READ = EXECUTE | READ_FILE | READ_DIR
"""What a read-only tree grants: read, list and execute."""
FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
"""The rights that apply to a file that is not a directory."""
DEVICE = READ_FILE | WRITE_FILE | TRUNCATE
"""What a device such as /dev/null grants: read, write, open with O_TRUNC; no ioctl."""

FIRST_KERNEL = {1: "5.13", 2: "5.19", 3: "6.2", 4: "6.7", 5: "6.10", 6: "6.12", 7: "6.15"}
"""The first Linux release with each Landlock ABI version."""
TCP_ABI = 4
IOCTL_ABI = 5
SCOPE_ABI = 6

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    """struct landlock_ruleset_attr (ABI 6's size; the kernel accepts zeroed tails)."""

    _fields_ = (("handled_access_fs", ctypes.c_uint64),
                ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64))


class _PathBeneathAttr(ctypes.Structure):
    """struct landlock_path_beneath_attr (packed)."""

    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def abi_version() -> int:
    """The Landlock ABI version this kernel supports; 0 when Landlock is off or absent."""
    result = _syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                      ctypes.c_uint32(_CREATE_RULESET_VERSION))
    if result < 0:
        return 0
    return int(result)


def unavailable_reason() -> str:
    """Why Landlock cannot be used here (for a kernel without it, or with it off)."""
    result = _syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                      ctypes.c_uint32(_CREATE_RULESET_VERSION))
    if result >= 0:
        return ""
    err = ctypes.get_errno()
    if err == errno.EOPNOTSUPP:
        return "Landlock is built into this kernel but not enabled (the lsm= boot list)"
    if err == errno.ENOSYS:
        return ("this kernel has no Landlock (it needs Linux 5.13 or newer, built with "
                "CONFIG_SECURITY_LANDLOCK)")
    return f"landlock_create_ruleset failed: {os.strerror(err)}"


def fs_rights(abi: int) -> int:
    """Every file-system right ABI *abi* knows: the ones a ruleset of that ABI handles."""
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= IOCTL_ABI:
        rights |= IOCTL_DEV
    return rights


class RulesetPlan(NamedTuple):
    """What a Landlock ruleset of one sandbox allows; everything else it handles is denied."""

    abi: int
    """The ABI version the ruleset is written for (at most the kernel's)."""
    read: tuple[str, ...] = ()
    """Trees (or files) that may be read, listed and executed."""
    write: tuple[str, ...] = ()
    """Trees in which everything the ABI handles is allowed."""
    devices: tuple[str, ...] = ()
    """Device files that may be opened for reading and writing (no ioctl)."""
    reopen_stdio: bool = False
    """The files behind the command's standard streams (a terminal's ``/dev/pts/N``, a log
    file) may be reopened, as ``/dev/stdout`` and the like do."""
    filesystem: bool = True
    """Handle the file system at all (False: a ruleset for the network alone)."""
    deny_tcp: bool = False
    """Refuse every TCP bind and connect (ABI 4)."""
    scope: bool = False
    """Scope signals and abstract unix sockets to the sandbox (ABI 6)."""

    @property
    def handled_fs(self) -> int:
        """The file-system rights the ruleset handles."""
        return fs_rights(self.abi) if self.filesystem else 0

    @property
    def handled_net(self) -> int:
        """The network rights the ruleset handles (none before ABI 4)."""
        return NET_BIND_TCP | NET_CONNECT_TCP if self.deny_tcp and self.abi >= TCP_ABI else 0

    @property
    def scoped(self) -> int:
        """What the ruleset scopes to the sandbox (nothing before ABI 6)."""
        if self.scope and self.abi >= SCOPE_ABI:
            return SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        return 0

    def rules(self, stdio: tuple[int, ...] = ()) -> list[tuple[str | int, int]]:
        """(path or descriptor, rights) of every rule, the rights within what is handled;
        *stdio* are the command's standard streams as the init holds them."""
        handled = self.handled_fs
        if not handled:
            return []
        found: list[tuple[str | int, int]] = [(path, READ & handled) for path in self.read]
        found += [(path, handled) for path in self.write]
        found += [(path, DEVICE & handled) for path in self.devices]
        if self.reopen_stdio:
            found += [(fd, _reopen_rights(fd) & handled) for fd in stdio if _reopenable(fd)]
        return found


def _reopen_rights(fd: int) -> int:
    """What reopening *fd* may give: its own access mode, no more (a stdin opened for
    reading stays read-only through /dev/stdin)."""
    try:
        mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except OSError:
        return 0
    rights = READ_FILE if mode in (os.O_RDONLY, os.O_RDWR) else 0
    if mode in (os.O_WRONLY, os.O_RDWR):
        rights |= WRITE_FILE | TRUNCATE
    return rights


def _reopenable(fd: int) -> bool:
    """Whether *fd* is a file or a terminal (a pipe or socket needs no rule, and takes none)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISCHR(mode)


def create_ruleset(plan: RulesetPlan, stdio: tuple[int, ...] = ()) -> int:
    """Build *plan*'s ruleset and return its descriptor, to :func:`enforce` later.

    The rules' paths are opened now, with this process's rights (before it drops them),
    never following a link; a path that no longer exists or is a link is skipped: a rule
    for it could only allow more.
    """
    attr = _RulesetAttr(plan.handled_fs, plan.handled_net, plan.scoped)
    ruleset = _check(_syscall(SYS_CREATE_RULESET, ctypes.byref(attr),
                              ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0)),
                     "landlock_create_ruleset")
    try:
        for target, rights in plan.rules(stdio):
            _add_rule(ruleset, target, rights)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def enforce(ruleset: int) -> None:
    """Restrict this process (and all it starts) to *ruleset*; no_new_privs must be set."""
    try:
        _check(_syscall(SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)),
               "landlock_restrict_self")
    finally:
        os.close(ruleset)


def restrict_self(plan: RulesetPlan) -> None:
    """Enforce *plan* on this process and its future children (no_new_privs must be set)."""
    enforce(create_ruleset(plan))


def _add_rule(ruleset: int, target: str | int, rights: int) -> None:
    if isinstance(target, int):
        fd = target
        owned = False
    else:
        try:
            fd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        owned = True
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode):  # made a link since it was planned: no rule, allow less
            return
        if not stat.S_ISDIR(mode):
            rights &= FILE_ONLY
        if not rights:
            return
        attr = _PathBeneathAttr(rights, fd)
        result = _syscall(SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                          ctypes.byref(attr), ctypes.c_uint32(0))
        if result < 0 and not owned and ctypes.get_errno() == errno.EBADFD:
            return  # a stream on an internal file system (a memfd): nothing to reopen
        _check(result, f"landlock_add_rule({target})")
    finally:
        if owned:
            os.close(fd)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return int(result)
