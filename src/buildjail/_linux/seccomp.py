"""Seccomp-BPF deny-list filter for sandboxed build processes.

The filter is built in pure Python as raw ``struct sock_filter`` instructions
and loaded with ``prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ...)``.

Policy, in evaluation order:

1. ``seccomp_data.arch`` must be the native audit arch of the target machine;
   any other ABI (i386 via ``int 0x80`` on x86_64, AArch32 on aarch64) kills
   the whole process (``SECCOMP_RET_KILL_PROCESS``).
2. x86_64 only: any syscall number with the x32 bit (``0x40000000``) set fails
   with ``ENOSYS``, exactly as on a kernel built without x32 support.
3. A syscall that sets a file's mode (:data:`MODE_ARGUMENTS`: ``chmod``, ``fchmod``,
   ``fchmodat``, ``fchmodat2``, ``open``, ``openat``, ``creat``, ``mknod``, ``mknodat``,
   where the machine has them) fails with ``EPERM`` when the low 32 bits of its mode
   argument have a set-id bit (:data:`SET_ID_BITS`): no file the build makes or changes
   is set-uid or set-gid, so a writable tree handed back can never carry one. These are
   compared first: checking their arguments costs them the kernel's per-syscall allow
   cache, and ``openat`` is the syscall a build makes most.
4. Every syscall in :data:`DENIED_SYSCALLS` that exists on the target machine
   fails with ``EPERM`` (``iopl`` and ``ioperm`` exist only on x86_64).
5. ``clone3`` fails with ``ENOSYS``: its flags live in user memory, which BPF
   cannot read, and libc then falls back to ``clone``; so do ``openat2`` (its mode lives
   in a struct in user memory too; glibc and CPython fall back to ``openat``),
   ``io_uring_*``, ``memfd_create``, ``memfd_secret`` and ``vmsplice``.
6. ``setxattr``, ``lsetxattr``, ``fsetxattr`` and ``setxattrat`` fail with ``EOPNOTSUPP``,
   as on a file system without extended attributes (copying tools then go on without
   them): access-control lists and ``security.capability`` grant access and privileges
   that a mode without set-id bits does not show.
7. ``clone`` fails with ``EPERM`` when the low 32 bits of its flags (args[0] on
   both machines) request any new namespace. ``CLONE_NEWTIME`` (0x80) shares
   the exit-signal byte of ``clone``, so that bit only ever rejects invalid
   exit signals (>= 128) that the kernel would refuse anyway.
8. ``ioctl`` fails with ``EPERM`` when the low 32 bits of the request (args[1];
   the kernel takes it as ``unsigned int``) are ``TIOCSTI`` or ``TIOCLINUX``.
9. ``socket`` fails with ``EPERM`` for ``AF_VSOCK``, and with ``ENOPROTOOPT`` for
   ``AF_INET`` and ``AF_INET6`` with ``IPPROTO_MPTCP`` (as where MPTCP is disabled):
   an MPTCP socket's queue is in no /proc/net table, so no monitor could count it.
10. Everything else is allowed.

With ``stand_in`` (the landlock backend, which has no network or IPC namespace), also:
``connect``, ``bind`` and System V IPC fail with ``EPERM``, and ``socket`` and
``socketpair`` do unless the family is ``AF_UNIX`` and the type a stream or seqpacket.

Syscall numbers, checked against the kernel sources:

x86_64 (``arch/x86/entry/syscalls/syscall_64.tbl``)::

    ioctl              16   clone              56   ptrace            101
    syslog            103   vhangup           153   pivot_root        155
    chroot            161   acct              163   mount             165
    umount2           166   swapon            167   swapoff           168
    reboot            169   iopl              172   ioperm            173
    init_module       175   delete_module     176   quotactl          179
    lookup_dcookie    212   kexec_load        246   add_key           248
    request_key       249   keyctl            250   unshare           272
    perf_event_open   298   name_to_handle_at 303   open_by_handle_at 304
    setns             308   process_vm_readv  310   process_vm_writev 311
    kcmp              312   finit_module      313   kexec_file_load   320
    bpf               321   userfaultfd       323   open_tree         428
    move_mount        429   fsopen            430   fsconfig          431
    fsmount           432   fspick            433   clone3            435
    mount_setattr     442   memfd_create      319   memfd_secret      447
    vmsplice          278
    io_uring_setup    425   io_uring_enter    426   io_uring_register 427
    open                2   creat              85   chmod              90
    fchmod             91   mknod             133   setxattr          188
    lsetxattr         189   fsetxattr         190   openat            257
    mknodat           259   fchmodat          268   openat2           437
    fchmodat2         452   setxattrat        463

aarch64 (``include/uapi/asm-generic/unistd.h``; no ``iopl``/``ioperm``)::

    lookup_dcookie     18   ioctl              29   umount2            39
    mount              40   pivot_root         41   chroot             51
    vhangup            58   quotactl           60   acct               89
    unshare            97   kexec_load        104   init_module       105
    delete_module     106   syslog            116   ptrace            117
    reboot            142   add_key           217   request_key       218
    keyctl            219   clone             220   swapon            224
    swapoff           225   perf_event_open   241   name_to_handle_at 264
    open_by_handle_at 265   setns             268   process_vm_readv  270
    process_vm_writev 271   kcmp              272   finit_module      273
    bpf               280   userfaultfd       282   kexec_file_load   294
    open_tree         428   move_mount        429   fsopen            430
    fsconfig          431   fsmount           432   fspick            433
    clone3            435   mount_setattr     442   memfd_create      279
    memfd_secret      447   io_uring_setup    425   io_uring_enter    426
    io_uring_register 427   vmsplice           75   setxattr            5
    lsetxattr           6   fsetxattr           7   mknodat            33
    fchmod             52   fchmodat           53   openat             56
    openat2           437   fchmodat2         452   setxattrat        463

(aarch64 has no ``open``, ``creat``, ``chmod`` or ``mknod``: only the ``*at`` forms.)
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import Final, NamedTuple
else:
    from .._records import NamedTuple

__all__ = [
    "DENIED_SYSCALLS",
    "MODE_ARGUMENTS",
    "RECORDED_CALLS",
    "SET_ID_BITS",
    "SUPPORTED_ARCHES",
    "UnsupportedArchitecture",
    "build_filter",
    "build_recording_filter",
    "install_filter",
    "install_recording_filter",
]

# --- kernel constants ---------------------------------------------------------

_PR_SET_SECCOMP: Final = 22
_SECCOMP_MODE_FILTER: Final = 2

_SECCOMP_RET_KILL_PROCESS: Final = 0x80000000
_SECCOMP_RET_ERRNO: Final = 0x00050000
_SECCOMP_RET_ALLOW: Final = 0x7FFF0000
_SECCOMP_RET_USER_NOTIF: Final = 0x7FC00000
_SECCOMP_SET_MODE_FILTER: Final = 1
_SECCOMP_FILTER_FLAG_NEW_LISTENER: Final = 1 << 3

_BPF_LD_W_ABS: Final = 0x20  # BPF_LD | BPF_W | BPF_ABS
_BPF_JEQ_K: Final = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_BPF_JSET_K: Final = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_BPF_RET_K: Final = 0x06  # BPF_RET | BPF_K
_BPF_MAXINSNS: Final = 4096
_MAX_JUMP: Final = 0xFF

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
# Both supported machines are little-endian, so an argument's low half comes first.
_OFF_NR: Final = 0
_OFF_ARCH: Final = 4
_OFF_ARGS: Final = 16

_AUDIT_ARCH_X86_64: Final = 0xC000003E
_AUDIT_ARCH_AARCH64: Final = 0xC00000B7
_X32_SYSCALL_BIT: Final = 0x40000000

_CLONE_NAMESPACE_FLAGS: Final = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
    | 0x00000080  # CLONE_NEWTIME
)
_DENIED_IOCTLS: Final = (0x5412, 0x541C)  # TIOCSTI, TIOCLINUX

_SOCK_FILTER: Final = struct.Struct("<HBBI")  # u16 code, u8 jt, u8 jf, u32 k

# --- syscall tables -----------------------------------------------------------

_X86_64_SYSCALLS: Final[Mapping[str, int]] = {
    "ioctl": 16, "clone": 56, "ptrace": 101, "syslog": 103, "vhangup": 153,
    "pivot_root": 155, "chroot": 161, "acct": 163, "mount": 165, "umount2": 166,
    "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "lookup_dcookie": 212,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250,
    "unshare": 272, "perf_event_open": 298, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "kexec_file_load": 320,
    "bpf": 321, "userfaultfd": 323, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435, "mount_setattr": 442,
    "socket": 41, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "memfd_create": 319, "memfd_secret": 447, "vmsplice": 278,
    "connect": 42, "bind": 49, "socketpair": 53, "shmget": 29, "shmat": 30, "shmctl": 31,
    "shmdt": 67, "semget": 64, "semop": 65, "semctl": 66, "semtimedop": 220, "msgget": 68,
    "msgsnd": 69, "msgrcv": 70, "msgctl": 71,
    "open": 2, "creat": 85, "chmod": 90, "fchmod": 91, "mknod": 133, "openat": 257,
    "mknodat": 259, "fchmodat": 268, "fchmodat2": 452, "openat2": 437,
    "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "setxattrat": 463,
}  # fmt: skip

_AARCH64_SYSCALLS: Final[Mapping[str, int]] = {
    "lookup_dcookie": 18, "ioctl": 29, "umount2": 39, "mount": 40, "pivot_root": 41,
    "chroot": 51, "vhangup": 58, "quotactl": 60, "acct": 89, "unshare": 97,
    "kexec_load": 104, "init_module": 105, "delete_module": 106, "syslog": 116,
    "ptrace": 117, "reboot": 142, "add_key": 217, "request_key": 218, "keyctl": 219,
    "clone": 220, "swapon": 224, "swapoff": 225, "perf_event_open": 241,
    "name_to_handle_at": 264, "open_by_handle_at": 265, "setns": 268,
    "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272, "finit_module": 273,
    "bpf": 280, "userfaultfd": 282, "kexec_file_load": 294, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "clone3": 435, "mount_setattr": 442, "socket": 198, "io_uring_setup": 425,
    "io_uring_enter": 426, "io_uring_register": 427, "memfd_create": 279, "memfd_secret": 447,
    "vmsplice": 75, "socketpair": 199, "bind": 200, "connect": 203, "msgget": 186,
    "msgctl": 187, "msgrcv": 188, "msgsnd": 189, "semget": 190, "semctl": 191,
    "semtimedop": 192, "semop": 193, "shmget": 194, "shmctl": 195, "shmat": 196, "shmdt": 197,
    "fchmod": 52, "fchmodat": 53, "mknodat": 33, "openat": 56, "fchmodat2": 452,
    "openat2": 437, "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7, "setxattrat": 463,
}  # fmt: skip

_ENOSYS_SYSCALLS: Final = ("clone3", "openat2", "io_uring_setup", "io_uring_enter",
                           "io_uring_register", "memfd_create", "memfd_secret", "vmsplice")
"""Refused as if the kernel lacked them: clone3 and openat2 (libc falls back to clone and
openat, whose flags and mode BPF can read; openat2's ``struct open_how`` is in user
memory), io_uring (a large kernel attack surface that also bypasses seccomp's view of
the operations it performs) and memfds (memory no process maps and no file system of the
sandbox's holds, out of the memory limit's sight; callers fall back to files in /tmp or
/dev/shm, whose tmpfs the limit counts)."""
_EOPNOTSUPP_SYSCALLS: Final = ("setxattr", "lsetxattr", "fsetxattr", "setxattrat")
"""Refused as by a file system without extended attributes: an ACL (``system.posix_acl_*``)
grants other users access, ``security.capability`` privileges (a build without
capabilities cannot set it, but the refusal does not depend on that). ``removexattr``
stays: taking an attribute away grants nothing."""

SET_ID_BITS: Final = 0o6000
"""``S_ISUID | S_ISGID``: a mode argument with either fails with EPERM."""

MODE_ARGUMENTS: Final[Mapping[str, int]] = {
    "chmod": 1, "fchmod": 1, "fchmodat": 2, "fchmodat2": 2,
    "open": 2, "openat": 3, "creat": 1, "mknod": 1, "mknodat": 2,
}  # fmt: skip
"""Syscalls that set a mode, and the index of their mode argument. Only the argument's
low 32 bits count, as for the kernel (``mode_t`` and ``umode_t`` are narrower than a
register). ``open`` and ``openat`` use the mode only with ``O_CREAT`` or ``O_TMPFILE``;
with set-id bits but neither flag they are harmless, and refused all the same (libc
passes 0 as the mode then, so no ordinary caller meets it). ``mkdir`` and ``mkdirat``
are not listed: the kernel keeps only the permission and sticky bits of their mode (a
directory inherits set-gid from its parent, which the build cannot set), and ``bind``
makes sockets ``0777 & ~umask``."""

_AF_VSOCK: Final = 40  # virtual machine sockets: not isolated by the network namespace
_AF_UNIX: Final = 1
_AF_INET: Final = 2
_AF_INET6: Final = 10
_IPPROTO_MPTCP: Final = 262
"""Multipath TCP: an MPTCP socket holds what it received in a queue of its own, which no
/proc/net table shows (its subflows' lines show none of it): the monitor could not count
it. Refused with ``ENOPROTOOPT``, as where ``net.mptcp.enabled`` is 0 (programs then use
TCP)."""
_SOCK_TYPE_MASK: Final = 0xF
_UNIX_TYPES: Final = (1, 5)  # SOCK_STREAM, SOCK_SEQPACKET: no datagram to a host's socket
_BPF_AND_K: Final = 0x54  # BPF_ALU | BPF_AND | BPF_K

STAND_IN_DENIED: Final[tuple[str, ...]] = (
    "connect", "bind",
    "shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semctl", "semtimedop",
    "msgget", "msgsnd", "msgrcv", "msgctl",
)  # fmt: skip
"""Denied too where no network or IPC namespace isolates the sandbox (the landlock
backend): without ``connect`` and ``bind`` no socket reaches or offers anything — a host's
unix sockets (an ssh agent, a container engine's), abstract ones, loopback; System V IPC
is the host's own."""


class _Arch(NamedTuple):
    """What the filter needs to know about one machine."""

    audit_arch: int
    syscalls: Mapping[str, int]
    x32_bit: bool


_ARCHES: Final[Mapping[str, _Arch]] = {
    "x86_64": _Arch(_AUDIT_ARCH_X86_64, _X86_64_SYSCALLS, x32_bit=True),
    "aarch64": _Arch(_AUDIT_ARCH_AARCH64, _AARCH64_SYSCALLS, x32_bit=False),
}

SUPPORTED_ARCHES: Final[frozenset[str]] = frozenset(_ARCHES)
"""Values of ``os.uname().machine`` that :func:`build_filter` supports."""

DENIED_SYSCALLS: Final[tuple[str, ...]] = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "add_key", "request_key", "keyctl",
    "bpf", "perf_event_open", "userfaultfd",
    "unshare", "setns",
    "mount", "umount2", "pivot_root", "chroot",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "lookup_dcookie",
    "iopl", "ioperm", "syslog", "vhangup",
)  # fmt: skip
"""Syscalls that always fail with EPERM (where the machine has them)."""


class UnsupportedArchitecture(ValueError):  # noqa: N818 (public name fixed by the API)
    """No seccomp filter is known for this machine."""


# --- a tiny assembler with forward labels -------------------------------------


class _Insn(NamedTuple):
    """One BPF instruction; jt/jf name a later label (None: the next one)."""

    code: int
    k: int
    jt: str | None = None
    jf: str | None = None


_Item = _Insn | str  # a str defines a label at that position


def _load(offset: int) -> _Insn:
    """Load the 32-bit word at ``offset`` of seccomp_data."""
    return _Insn(_BPF_LD_W_ABS, offset)


def _jeq(k: int, jt: str | None = None, jf: str | None = None) -> _Insn:
    """Jump to jt when A == k, else to jf."""
    return _Insn(_BPF_JEQ_K, k, jt, jf)


def _jset(k: int, jt: str | None = None, jf: str | None = None) -> _Insn:
    """Jump to jt when A & k, else to jf."""
    return _Insn(_BPF_JSET_K, k, jt, jf)


def _ret(action: int) -> _Insn:
    """Return a seccomp action."""
    return _Insn(_BPF_RET_K, action)


def _label_positions(items: Iterable[_Item]) -> dict[str, int]:
    """Map each label to the index of the instruction that follows it."""
    positions: dict[str, int] = {}
    pc = 0
    for item in items:
        if isinstance(item, str):
            positions[item] = pc
        else:
            pc += 1
    return positions


def _offset(pc: int, label: str | None, positions: Mapping[str, int]) -> int:
    """Relative forward jump from ``pc`` to ``label`` (None: fall through)."""
    if label is None:
        return 0
    offset = positions[label] - pc - 1
    if not 0 <= offset <= _MAX_JUMP:
        raise ValueError(f"jump to {label!r} from {pc} does not fit in a u8")
    return offset


def _assemble(items: list[_Item]) -> bytes:
    """Resolve labels and encode the program as struct sock_filter records."""
    positions = _label_positions(items)
    insns = [item for item in items if isinstance(item, _Insn)]
    if len(insns) > _BPF_MAXINSNS:
        raise ValueError(f"seccomp program too long: {len(insns)} instructions")
    out = bytearray()
    for pc, insn in enumerate(insns):
        jt = _offset(pc, insn.jt, positions)
        jf = _offset(pc, insn.jf, positions)
        out += _SOCK_FILTER.pack(insn.code, jt, jf, insn.k)
    return bytes(out)


# --- the policy ---------------------------------------------------------------


def _low_word(index: int) -> int:
    """Offset in seccomp_data of the low 32 bits of args[index] (little-endian machines)."""
    return _OFF_ARGS + 8 * index


def _mode_label(index: int) -> str:
    """The label of the set-id check of argument ``index``."""
    return f"mode_arg{index}"


def _arch_check(arch: _Arch) -> Iterator[_Item]:
    """Kill on a foreign ABI; leave the syscall number in A."""
    yield _load(_OFF_ARCH)
    yield _jeq(arch.audit_arch, jf="kill")
    yield _load(_OFF_NR)
    if arch.x32_bit:
        yield _jset(_X32_SYSCALL_BIT, jt="enosys")


def _dispatch(arch: _Arch, stand_in: bool) -> Iterator[_Item]:
    """Compare the syscall number against every rule; fall back to allow."""
    nrs = arch.syscalls
    for name, index in MODE_ARGUMENTS.items():  # first: see the module's docstring
        if name in nrs:
            yield _jeq(nrs[name], jt=_mode_label(index))
    denied = (*DENIED_SYSCALLS, *STAND_IN_DENIED) if stand_in else DENIED_SYSCALLS
    for name in denied:
        if name in nrs:
            yield _jeq(nrs[name], jt="eperm")
    for name in _ENOSYS_SYSCALLS:
        yield _jeq(nrs[name], jt="enosys")
    for name in _EOPNOTSUPP_SYSCALLS:
        yield _jeq(nrs[name], jt="eopnotsupp")
    if stand_in:
        yield _jeq(nrs["socketpair"], jt="unix_only")
        yield _jeq(nrs["socket"], jt="unix_only")
    else:
        yield _jeq(nrs["socket"], jt="socket")
    yield _jeq(nrs["clone"], jt="clone")
    yield _jeq(nrs["ioctl"], jt="ioctl", jf="allow")


def _mode_checks(arch: _Arch) -> Iterator[_Item]:
    """One set-id check per mode argument index the machine's syscalls use."""
    for index in sorted({i for name, i in MODE_ARGUMENTS.items() if name in arch.syscalls}):
        yield _mode_label(index)
        yield _load(_low_word(index))  # mode_t is 32 bits: the kernel ignores the rest
        yield _jset(SET_ID_BITS, jt="eperm", jf="allow")


def _arg_checks(stand_in: bool) -> Iterator[_Item]:
    """Argument filters: socket (vsock; or all but unix streams), clone (namespace flags),
    ioctl (tty injection)."""
    if stand_in:
        yield "unix_only"
        yield _load(_low_word(0))  # args[0]: the address family
        yield _jeq(_AF_UNIX, jf="eperm")
        yield _load(_low_word(1))  # args[1]: the type, with SOCK_CLOEXEC/NONBLOCK above
        yield _Insn(_BPF_AND_K, _SOCK_TYPE_MASK)
        *others, last = _UNIX_TYPES
        for kind in others:
            yield _jeq(kind, jt="allow")
        yield _jeq(last, jt="allow", jf="eperm")
    else:
        yield "socket"
        yield _load(_low_word(0))  # args[0]: the address family
        yield _jeq(_AF_VSOCK, jt="eperm")
        yield _jeq(_AF_INET, jt="inet")
        yield _jeq(_AF_INET6, jf="allow")
        yield "inet"
        yield _load(_low_word(2))  # args[2]: the protocol
        yield _jeq(_IPPROTO_MPTCP, jt="enoprotoopt", jf="allow")
    yield "clone"
    yield _load(_low_word(0))  # args[0], low 32 bits
    yield _jset(_CLONE_NAMESPACE_FLAGS, jt="eperm", jf="allow")
    yield "ioctl"
    yield _load(_low_word(1))  # args[1], low 32 bits
    *others, last = _DENIED_IOCTLS
    for request in others:
        yield _jeq(request, jt="eperm")
    yield _jeq(last, jt="eperm", jf="allow")


def _returns() -> Iterator[_Item]:
    """The shared return instructions every jump lands on."""
    yield "allow"
    yield _ret(_SECCOMP_RET_ALLOW)
    yield "eperm"
    yield _ret(_SECCOMP_RET_ERRNO | errno.EPERM)
    yield "enosys"
    yield _ret(_SECCOMP_RET_ERRNO | errno.ENOSYS)
    yield "eopnotsupp"
    yield _ret(_SECCOMP_RET_ERRNO | errno.EOPNOTSUPP)
    yield "enoprotoopt"
    yield _ret(_SECCOMP_RET_ERRNO | errno.ENOPROTOOPT)
    yield "kill"
    yield _ret(_SECCOMP_RET_KILL_PROCESS)


def build_filter(machine: str | None = None, *, stand_in: bool = False) -> bytes:
    """Build the raw sock_filter array for ``machine`` (default: this host).

    *stand_in*: the filter also stands in for the network and IPC namespaces a sandbox
    does not have (:data:`STAND_IN_DENIED`; ``socket`` and ``socketpair`` only for unix
    streams and seqpackets).
    """
    name = os.uname().machine if machine is None else machine
    arch = _ARCHES.get(name)
    if arch is None:
        supported = ", ".join(sorted(SUPPORTED_ARCHES))
        raise UnsupportedArchitecture(f"no seccomp filter for {name!r} (supported: {supported})")
    items = [*_arch_check(arch), *_dispatch(arch, stand_in), *_mode_checks(arch),
             *_arg_checks(stand_in), *_returns()]
    return _assemble(items)


# --- the recording filter -----------------------------------------------------

_RECORDING_NUMBERS: Final[Mapping[str, Mapping[str, int]]] = {
    "x86_64": {"execve": 59, "execveat": 322, "connect": 42, "sendto": 44, "sendmsg": 46,
               "sendmmsg": 307, "seccomp": 317},
    "aarch64": {"execve": 221, "execveat": 281, "connect": 203, "sendto": 206, "sendmsg": 211,
                "sendmmsg": 269, "seccomp": 277},
}
"""The numbers of the recorded calls, and of ``seccomp`` itself, per machine (x86_64's
``syscall_64.tbl``; aarch64's ``asm-generic/unistd.h``)."""

RECORDED_CALLS: Final = ("execve", "execveat", "connect", "sendto", "sendmsg", "sendmmsg")
"""What the recording filter hands to its listener: every program started, every address a
socket is connected or sent to (``sendto`` only with an address: BPF sees the pointer, not
what it points to; ``sendmsg``'s address is inside its ``msghdr``, so every one)."""


def recorded_numbers(machine: str | None = None) -> Mapping[str, int]:
    """The syscall numbers of RECORDED_CALLS (and ``seccomp``) on *machine*."""
    name = os.uname().machine if machine is None else machine
    if name not in _RECORDING_NUMBERS:
        supported = ", ".join(sorted(_RECORDING_NUMBERS))
        raise UnsupportedArchitecture(f"no seccomp filter for {name!r} (supported: {supported})")
    return _RECORDING_NUMBERS[name]


def build_recording_filter(machine: str | None = None) -> bytes:
    """A filter that lets everything through, but stops each of RECORDED_CALLS until its
    listener has looked at it (``SECCOMP_RET_USER_NOTIF``).

    It denies nothing: stacked on :func:`build_filter`'s, whose refusals take precedence
    (an ``EPERM`` is never notified), it only shows the recorder what the build asked for.
    A foreign ABI, or an x32 number, passes here: the deny filter kills or refuses it.
    """
    name = os.uname().machine if machine is None else machine
    numbers = recorded_numbers(name)
    arch = _ARCHES[name]
    items: list[_Item] = [_load(_OFF_ARCH), _jeq(arch.audit_arch, jf="allow"), _load(_OFF_NR)]
    for call in RECORDED_CALLS:
        if call != "sendto":
            items.append(_jeq(numbers[call], jt="notify"))
    items += [
        _jeq(numbers["sendto"], jf="allow"),
        _load(_low_word(4)),  # sendto's dest_addr: NULL on a connected socket
        _jeq(0, jf="notify"),
        _load(_low_word(4) + 4),
        _jeq(0, jt="allow", jf="notify"),
        "allow", _ret(_SECCOMP_RET_ALLOW),
        "notify", _ret(_SECCOMP_RET_USER_NOTIF),
    ]
    return _assemble(items)


# --- loading ------------------------------------------------------------------


class _SockFprog(ctypes.Structure):
    """struct sock_fprog."""

    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _load_prctl() -> Callable[..., int]:
    """libc's prctl with a fixed prototype.

    Looked up at import, so that forked sandbox processes do not pay for dlopen/dlsym.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    ulong = ctypes.c_ulong
    prctl.argtypes = (ctypes.c_int, ulong, ctypes.c_void_p, ulong, ulong)
    prctl.restype = ctypes.c_int
    return prctl


_prctl = _load_prctl()
_syscall = ctypes.CDLL(None, use_errno=True).syscall
_syscall.restype = ctypes.c_long


def _instruction_count(program: bytes) -> int:
    """Number of instructions in ``program``; ValueError if malformed."""
    count, rest = divmod(len(program), _SOCK_FILTER.size)
    if rest or not 0 < count <= _BPF_MAXINSNS:
        raise ValueError(f"not a seccomp program: {len(program)} bytes")
    return count


def install_filter(program: bytes) -> None:
    """Load ``program`` as this thread's seccomp filter (no_new_privs must be set)."""
    count = _instruction_count(program)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(count, ctypes.addressof(buffer))
    # ``buffer`` and ``fprog`` stay referenced until the call returns; the
    # kernel copies the program, so nothing needs to outlive it.
    result = _prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0)
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP): {os.strerror(err)}")


def install_recording_filter(program: bytes) -> int:
    """Load ``program`` (:func:`build_recording_filter`) on this thread, stacked on any
    filter it has, and return its listener: the descriptor its notifications are read
    from (close-on-exec)."""
    count = _instruction_count(program)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(count, ctypes.addressof(buffer))
    result = _syscall(ctypes.c_long(recorded_numbers()["seccomp"]),
                      ctypes.c_ulong(_SECCOMP_SET_MODE_FILTER),
                      ctypes.c_ulong(_SECCOMP_FILTER_FLAG_NEW_LISTENER),
                      ctypes.c_void_p(ctypes.addressof(fprog)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER): {os.strerror(err)}")
    return int(result)
