"""Tests for buildjail._linux.seccomp: the program's shape, its logic, and real attacks.

Every attack runs in a forked child that sets no_new_privs, installs the
filter, tries the attack and reports the result to the parent through a pipe.
As root, each attack also runs once *without* the filter, to show that the
errno seen under the filter really comes from the filter.
"""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import json
import mmap
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

if importlib.util.find_spec("buildjail") is None:  # a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from buildjail._linux import seccomp
from buildjail._linux.seccomp import (
    DENIED_SYSCALLS,
    MODE_ARGUMENTS,
    SET_ID_BITS,
    SUPPORTED_ARCHES,
    UnsupportedArchitecture,
    build_filter,
    install_filter,
)

MACHINE = os.uname().machine
IS_ROOT = os.geteuid() == 0

needs_host_support = pytest.mark.skipif(
    MACHINE not in SUPPORTED_ARCHES, reason=f"no seccomp filter for {MACHINE}"
)
needs_root = pytest.mark.skipif(not IS_ROOT, reason="the unfiltered baseline needs root")

# --- constants the tests use, written out independently of the module ----------

PR_SET_NO_NEW_PRIVS = 38
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_ARM = 0x40000028

BPF_LD_W_ABS, BPF_JEQ_K, BPF_JSET_K, BPF_JA, BPF_RET_K = 0x20, 0x15, 0x45, 0x05, 0x06
JUMPS = {BPF_JEQ_K, BPF_JSET_K}

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_NAMESPACES = (
    CLONE_NEWNS, 0x02000000, 0x04000000, 0x08000000, CLONE_NEWUSER, 0x20000000,
    CLONE_NEWNET, 0x80,
)  # fmt: skip
THREAD_CLONE_FLAGS = 0x003D0F00  # what glibc's pthread_create passes
SIGCHLD = 17
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
TIOCSTI, TIOCLINUX, TIOCGWINSZ = 0x5412, 0x541C, 0x5413
KEYCTL_GET_KEYRING_ID, KEY_SPEC_THREAD_KEYRING, KEY_SPEC_SESSION_KEYRING = 0, -1, -3
X32_SYSCALL_BIT = 0x40000000
AT_FDCWD = -100
UPPER_GARBAGE = 0xDEAD_BEEF_0000_0000
"""Bits above a mode_t: the kernel ignores them, so must the filter (both ways)."""

# Numbers of the syscalls the attacks issue directly (no libc wrapper).
NR = {
    "x86_64": {"getpid": 39, "clone": 56, "add_key": 248, "keyctl": 250, "bpf": 321,
               "fsopen": 430, "clone3": 435, "io_uring_setup": 425, "memfd_secret": 447,
               "vmsplice": 278, "fchmodat2": 452, "openat2": 437, "chmod": 90, "creat": 85,
               "open": 2, "mknod": 133, "openat": 257},
    "aarch64": {"getpid": 172, "clone": 220, "add_key": 217, "keyctl": 219, "bpf": 280,
                "fsopen": 430, "clone3": 435, "io_uring_setup": 425, "memfd_secret": 447,
                "vmsplice": 75, "fchmodat2": 452, "openat2": 437, "openat": 56},
}  # fmt: skip

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long

# --- decoding and emulating a program -----------------------------------------

Insn = tuple[int, int, int, int]  # code, jt, jf, k


def decode(program: bytes) -> list[Insn]:
    """Split a program into (code, jt, jf, k) tuples."""
    assert len(program) % 8 == 0
    return list(struct.iter_unpack("<HBBI", program))


def seccomp_data(nr: int, arch: int, args: tuple[int, ...] = ()) -> bytes:
    """Pack a little-endian struct seccomp_data."""
    padded = (*args, *(0,) * (6 - len(args)))
    return struct.pack("<iIQ6Q", nr, arch, 0x1000, *padded)


def run_bpf(program: bytes, data: bytes) -> int:
    """Evaluate a classic-BPF seccomp program (the subset the module emits)."""
    insns = decode(program)
    pc, acc = 0, 0
    for _ in range(len(insns)):
        code, jt, jf, k = insns[pc]
        if code == BPF_RET_K:
            return k
        if code == BPF_LD_W_ABS:
            (acc,) = struct.unpack_from("<I", data, k)
            pc += 1
        elif code == BPF_JEQ_K:
            pc += 1 + (jt if acc == k else jf)
        elif code == BPF_JSET_K:
            pc += 1 + (jt if acc & k else jf)
        elif code == BPF_JA:
            pc += 1 + k
        else:
            raise AssertionError(f"unexpected opcode {code:#x} at {pc}")
    raise AssertionError("program did not return")


def header_numbers(path: Path) -> dict[str, int]:
    """Parse ``#define __NR_name number`` lines of a kernel uapi header."""
    found = re.findall(r"^#define __NR_(\w+)\s+(\d+)\s*$", path.read_text(), re.MULTILINE)
    return {name: int(nr) for name, nr in found}


# --- running code in a filtered child -----------------------------------------


def set_no_new_privs() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS, 1) through ctypes."""
    if LIBC.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0),
                  ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:  # fmt: skip
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def child_main(fd: int, action: Callable[[], object], filtered: bool,
               setup: Callable[[], None] | None) -> NoReturn:  # fmt: skip
    """Body of the forked child: never returns into pytest."""
    code = 1
    try:
        try:
            if setup is not None:
                setup()
            if filtered:
                set_no_new_privs()
                install_filter(build_filter())
            message = {"ok": action()}
            code = 0
        except BaseException:
            message = {"error": traceback.format_exc()}
        with os.fdopen(fd, "w") as pipe:
            json.dump(message, pipe)
    finally:
        os._exit(code)


def in_child(action: Callable[[], object], *, filtered: bool = True,
             setup: Callable[[], None] | None = None) -> object:  # fmt: skip
    """Run ``action`` in a forked (by default filtered) child; return its result."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        child_main(write_fd, action, filtered, setup)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert payload, f"child sent nothing; wait status {status:#x}"
    message = json.loads(payload)
    assert "error" not in message, message["error"]
    assert os.waitstatus_to_exitcode(status) == 0
    return message["ok"]


def call_errno(result: int) -> int:
    """The errno of a libc call that returned ``result`` (0 when it succeeded)."""
    return ctypes.get_errno() if result == -1 else 0


def ulong(value: int) -> ctypes.c_ulong:
    """An unsigned long argument, wrapping negative values."""
    return ctypes.c_ulong(value % (1 << 64))


def raw_syscall(name: str, *args: int | ctypes.c_char_p) -> int:
    """syscall(2) by the host's number for ``name``; return the errno (0: success)."""
    converted = [ulong(a) if isinstance(a, int) else a for a in args]
    ctypes.set_errno(0)
    return call_errno(LIBC.syscall(ulong(NR[MACHINE][name]), *converted))


# --- the attacks ----------------------------------------------------------------


def attack_ptrace() -> int:
    """PTRACE_TRACEME: become traceable by the parent."""
    return call_errno(LIBC.ptrace(ctypes.c_long(0), ctypes.c_long(0), None, None))


def attack_unshare_user() -> int:
    """unshare(CLONE_NEWUSER): gain capabilities in a fresh user namespace."""
    return call_errno(LIBC.unshare(ctypes.c_int(CLONE_NEWUSER)))


def attack_mount_tmpfs() -> int:
    """mount a tmpfs over a fresh directory."""
    target = tempfile.mkdtemp(prefix="buildjail-seccomp-")
    try:
        return call_errno(LIBC.mount(b"none", target.encode(), b"tmpfs", ulong(0), None))
    finally:
        LIBC.umount2(target.encode(), ctypes.c_int(2))  # MNT_DETACH; harmless if not mounted
        os.rmdir(target)


def attack_fsopen() -> int:
    """fsopen("tmpfs"): the new mount API."""
    return raw_syscall("fsopen", ctypes.c_char_p(b"tmpfs"), 0)


def attack_keyctl() -> int:
    """keyctl(KEYCTL_GET_KEYRING_ID, session keyring)."""
    return raw_syscall("keyctl", KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)


def attack_add_key() -> int:
    """add_key of an unknown type (ENODEV unfiltered; nothing is ever added)."""
    key_type = ctypes.c_char_p(b"buildjail-no-such-type")
    desc = ctypes.c_char_p(b"buildjail-test")
    return raw_syscall("add_key", key_type, desc, 0, 0, KEY_SPEC_THREAD_KEYRING)


def attack_bpf() -> int:
    """bpf() with an invalid command (EINVAL unfiltered)."""
    return raw_syscall("bpf", 0xFFFF, 0, 0)


def attack_setns() -> int:
    """setns into a namespace (our own, so harmless unfiltered)."""
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        return call_errno(LIBC.setns(ctypes.c_int(fd), ctypes.c_int(0)))
    finally:
        os.close(fd)


def attack_chroot() -> int:
    """chroot("/")."""
    return call_errno(LIBC.chroot(b"/"))


def tty_ioctl(request: int) -> int:
    """ioctl(slave, request, &'x') on a fresh pty; return the errno."""
    master, slave = os.openpty()
    try:
        char = ctypes.c_char(b"x")
        return call_errno(LIBC.ioctl(ctypes.c_int(slave), ulong(request), ctypes.byref(char)))
    finally:
        os.close(slave)
        os.close(master)


def attack_tiocsti() -> int:
    """TIOCSTI: push a character into a terminal's input queue."""
    return tty_ioctl(TIOCSTI)


def attack_tiocsti_high_bits() -> int:
    """TIOCSTI hidden behind high bits (the kernel truncates the request)."""
    return tty_ioctl(0xDEAD_BEEF_0000_0000 | TIOCSTI)


def attack_tioclinux() -> int:
    """TIOCLINUX (console selection/paste)."""
    return tty_ioctl(TIOCLINUX)


def attack_clone_newnet() -> int:
    """Raw clone(CLONE_NEWNET | SIGCHLD)."""
    pid = LIBC.syscall(ulong(NR[MACHINE]["clone"]), ulong(CLONE_NEWNET | SIGCHLD), ulong(0),
                       ulong(0), ulong(0), ulong(0))  # fmt: skip
    if pid == 0:  # pragma: no cover - the unfiltered baseline's grandchild
        os._exit(0)
    if pid < 0:
        return ctypes.get_errno()
    os.waitpid(pid, 0)
    return 0


def attack_clone3() -> int:
    """clone3(NULL, 0): EINVAL unfiltered, ENOSYS under the filter."""
    return raw_syscall("clone3", 0, 0)


def attack_io_uring() -> int:
    """io_uring_setup(1, NULL): EFAULT unfiltered, ENOSYS under the filter."""
    return raw_syscall("io_uring_setup", 1, 0)


def attack_memfd() -> int:
    """memfd_create: memory no file system of the sandbox's holds (the memory limit's blind
    spot). ENOSYS under the filter; unfiltered the fd comes back."""
    try:
        os.close(os.memfd_create("attack"))
    except OSError as error:
        return error.errno or -1
    return 0


def attack_memfd_secret() -> int:
    """memfd_secret(0): ENOSYS under the filter (unfiltered: an fd, or EPERM/ENOSYS when the
    kernel was not booted with secretmem)."""
    return raw_syscall("memfd_secret", 0)


def attack_vmsplice() -> int:
    """vmsplice of a page into a pipe: it keeps the whole page (a huge one too) alive there,
    mapped by nobody. ENOSYS under the filter; unfiltered it splices."""
    read_end, write_end = os.pipe()
    buffer = ctypes.create_string_buffer(4096)
    iov = (ctypes.c_void_p * 2)(ctypes.addressof(buffer), 4096)
    try:
        return raw_syscall("vmsplice", write_end, ctypes.addressof(iov), 1, 0)
    finally:
        os.close(read_end)
        os.close(write_end)


def attack_vsock() -> int:
    """socket(AF_VSOCK, SOCK_STREAM): a path to the hypervisor the netns does not cut."""
    fd = LIBC.socket(ctypes.c_int(40), ctypes.c_int(socket.SOCK_STREAM), ctypes.c_int(0))
    if fd >= 0:
        os.close(fd)
        return 0
    return ctypes.get_errno()


def attack_mptcp(family: int) -> int:
    """socket(AF_INET[6], SOCK_STREAM, IPPROTO_MPTCP): its queue is in no /proc/net table
    (tests/test_limits.py), so the monitor could not count it."""
    fd = LIBC.socket(ctypes.c_int(family), ctypes.c_int(socket.SOCK_STREAM), ctypes.c_int(262))
    if fd >= 0:
        os.close(fd)
        return 0
    return ctypes.get_errno()


def inet_socket() -> int:
    """An ordinary TCP socket (the loopback is a build's to use)."""
    with socket.socket() as sock:
        return sock.family


def attack_x32() -> int:
    """getpid through the x32 ABI."""
    ctypes.set_errno(0)
    nr = X32_SYSCALL_BIT | NR[MACHINE]["getpid"]
    return call_errno(LIBC.syscall(ulong(nr)))


# --- set-id modes and extended attributes ------------------------------------------


@contextmanager
def scratch_file(mode: int = 0o644) -> Iterator[str]:
    """A fresh file in a fresh temporary directory, both removed afterwards."""
    top = tempfile.mkdtemp(prefix="buildjail-seccomp-")
    try:
        path = os.path.join(top, "file")
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, mode)
        yield path
    finally:
        shutil.rmtree(top)


@contextmanager
def scratch_dir() -> Iterator[str]:
    """A fresh temporary directory, removed afterwards."""
    top = tempfile.mkdtemp(prefix="buildjail-seccomp-")
    try:
        yield top
    finally:
        shutil.rmtree(top)


def os_errno(call: Callable[[], object]) -> int:
    """Run an os-module call; return its errno (0 when it succeeded)."""
    try:
        call()
    except OSError as error:
        return error.errno or -1
    return 0


def attack_chmod_setuid() -> int:
    """os.chmod(file, 0o4755)."""
    with scratch_file() as path:
        return os_errno(lambda: os.chmod(path, 0o4755))


def attack_fchmod_setgid() -> int:
    """os.fchmod(fd, 0o2755)."""
    with scratch_file() as path:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os_errno(lambda: os.fchmod(fd, 0o2755))
        finally:
            os.close(fd)


def fchmodat2(mode: int) -> int:
    """Raw fchmodat2(AT_FDCWD, file, mode, 0); the errno."""
    with scratch_file() as path:
        return raw_syscall("fchmodat2", AT_FDCWD, ctypes.c_char_p(path.encode()), mode, 0)


def attack_fchmodat2() -> int:
    """fchmodat2 (Linux 6.6, no libc wrapper on this glibc) with 0o4755."""
    return fchmodat2(0o4755)


def attack_fchmodat2_upper_garbage() -> int:
    """0o4755 with garbage above bit 32: the kernel truncates, the filter must not miss it."""
    return fchmodat2(UPPER_GARBAGE | 0o4755)


def fchmodat2_only_upper_garbage() -> int:
    """0o644 with garbage above bit 32 only: what the kernel sees is an ordinary mode."""
    return fchmodat2(UPPER_GARBAGE | 0o644)


def attack_open_creat_setuid() -> int:
    """os.open(new, O_CREAT, 0o4755): a set-uid file made in one call."""
    with scratch_dir() as top:
        return os_errno(lambda: os.close(os.open(f"{top}/new", os.O_CREAT | os.O_WRONLY,
                                                 0o4755)))


def attack_mknod_setuid() -> int:
    """os.mknod(new, S_IFREG | 0o4755)."""
    with scratch_dir() as top:
        return os_errno(lambda: os.mknod(f"{top}/new", stat.S_IFREG | 0o4755))


def legacy_syscall(name: str, mode: int) -> int:
    """x86_64's path-only syscalls (glibc calls the ``*at`` forms) with *mode*, raw."""
    with scratch_file() as path:
        name_arg = ctypes.c_char_p(path.encode())
        new_arg = ctypes.c_char_p(f"{path}.new".encode())
        if name == "chmod":
            return raw_syscall("chmod", name_arg, mode)
        if name == "creat":
            return raw_syscall("creat", new_arg, mode)
        if name == "open":
            return raw_syscall("open", new_arg, os.O_CREAT | os.O_WRONLY, mode)
        if name == "openat":
            return raw_syscall("openat", AT_FDCWD, new_arg, os.O_CREAT | os.O_WRONLY, mode)
        return raw_syscall("mknod", new_arg, stat.S_IFREG | mode, 0)


def attack_openat_without_creat() -> int:
    """openat(existing, O_RDONLY, 0o4755): harmless, and refused all the same."""
    with scratch_file() as path:
        return raw_syscall("openat", AT_FDCWD, ctypes.c_char_p(path.encode()), os.O_RDONLY,
                           0o4755)


def attack_openat2() -> int:
    """openat2 with O_CREAT and 0o4755 in its struct open_how, which BPF cannot read."""
    with scratch_dir() as top:
        how = struct.pack("<QQQ", os.O_CREAT | os.O_WRONLY, 0o4755, 0)
        buffer = ctypes.create_string_buffer(how, len(how))
        return raw_syscall("openat2", AT_FDCWD, ctypes.c_char_p(f"{top}/new".encode()),
                           ctypes.addressof(buffer), len(how))


def attack_chmod_through_proc_fd() -> int:
    """chmod("/proc/self/fd/N", 0o4755): another path, the same syscall."""
    with scratch_file() as path:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os_errno(lambda: os.chmod(f"/proc/self/fd/{fd}", 0o4755))
        finally:
            os.close(fd)


def attack_o_tmpfile_setuid() -> int:
    """An O_TMPFILE made 0o4755 (it could be linked into the tree afterwards)."""
    with scratch_dir() as top:
        return os_errno(lambda: os.close(os.open(top, os.O_TMPFILE | os.O_WRONLY, 0o4755)))


def attack_mkfifo_setuid() -> int:
    """mkfifo with 0o4755: mknodat of another file type, the same mode check."""
    with scratch_dir() as top:
        return os_errno(lambda: os.mkfifo(f"{top}/fifo", 0o4755))


ACL_MINIMAL = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in ((0x01, 7), (0x04, 5), (0x20, 5)))
"""A POSIX ACL in the kernel's xattr format: user::rwx group::r-x other::r-x."""


def attack_setxattr_acl() -> int:
    """os.setxattr(file, system.posix_acl_access, an ACL)."""
    with scratch_file() as path:
        return os_errno(lambda: os.setxattr(path, "system.posix_acl_access", ACL_MINIMAL))


def attack_fsetxattr_user() -> int:
    """fsetxattr of a user.* attribute: every setxattr is refused, whatever the name."""
    with scratch_file() as path:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os_errno(lambda: os.setxattr(fd, "user.buildjail", b"1"))
        finally:
            os.close(fd)


def private_mount_namespace() -> None:
    """As root, isolate the child's mounts so an unfiltered mount cannot leak."""
    if not IS_ROOT:
        return
    if LIBC.unshare(ctypes.c_int(CLONE_NEWNS)) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    if LIBC.mount(b"none", b"/", None, ulong(MS_REC | MS_PRIVATE), None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rprivate /")


@dataclass(frozen=True)
class Attack:
    """One attack: what it does, what the filter answers, and whether a baseline is safe."""

    run: Callable[[], int]
    expected: int = errno.EPERM
    setup: Callable[[], None] | None = None
    baseline: bool = True
    only_on: str | None = None


ATTACKS = {
    "ptrace": Attack(attack_ptrace, baseline=False),  # unfiltered, pytest would become a tracer
    "unshare-user": Attack(attack_unshare_user),
    "mount-tmpfs": Attack(attack_mount_tmpfs, setup=private_mount_namespace),
    "fsopen": Attack(attack_fsopen),
    "keyctl": Attack(attack_keyctl),
    "add_key": Attack(attack_add_key),
    "bpf": Attack(attack_bpf),
    "setns": Attack(attack_setns),
    "chroot": Attack(attack_chroot),
    "tiocsti": Attack(attack_tiocsti),
    "tiocsti-high-bits": Attack(attack_tiocsti_high_bits),
    "tioclinux": Attack(attack_tioclinux),
    "clone-newnet": Attack(attack_clone_newnet),
    "clone3": Attack(attack_clone3, expected=errno.ENOSYS),
    "io_uring": Attack(attack_io_uring, expected=errno.ENOSYS),
    "memfd_create": Attack(attack_memfd, expected=errno.ENOSYS),
    "memfd_secret": Attack(attack_memfd_secret, expected=errno.ENOSYS, baseline=False),
    "vmsplice": Attack(attack_vmsplice, expected=errno.ENOSYS),
    "vsock": Attack(attack_vsock),
    "mptcp": Attack(lambda: attack_mptcp(socket.AF_INET), expected=errno.ENOPROTOOPT),
    "mptcp6": Attack(lambda: attack_mptcp(socket.AF_INET6), expected=errno.ENOPROTOOPT),
    "x32": Attack(attack_x32, expected=errno.ENOSYS, baseline=False, only_on="x86_64"),
    "chmod-4755": Attack(attack_chmod_setuid),
    "fchmod-2755": Attack(attack_fchmod_setgid),
    "fchmodat2-4755": Attack(attack_fchmodat2),
    "fchmodat2-4755-upper-garbage": Attack(attack_fchmodat2_upper_garbage),
    "open-creat-4755": Attack(attack_open_creat_setuid),
    "mknod-4755": Attack(attack_mknod_setuid),
    "openat-without-creat-4755": Attack(attack_openat_without_creat),
    "raw-openat-6755": Attack(lambda: legacy_syscall("openat", 0o6755)),
    "raw-chmod-4755": Attack(lambda: legacy_syscall("chmod", 0o4755), only_on="x86_64"),
    "raw-creat-2755": Attack(lambda: legacy_syscall("creat", 0o2755), only_on="x86_64"),
    "raw-open-4755": Attack(lambda: legacy_syscall("open", 0o4755), only_on="x86_64"),
    "raw-mknod-4755": Attack(lambda: legacy_syscall("mknod", 0o4755), only_on="x86_64"),
    "chmod-proc-fd-4755": Attack(attack_chmod_through_proc_fd),
    "o_tmpfile-4755": Attack(attack_o_tmpfile_setuid),
    "mkfifo-4755": Attack(attack_mkfifo_setuid),
    "openat2": Attack(attack_openat2, expected=errno.ENOSYS),
    "setxattr-acl": Attack(attack_setxattr_acl, expected=errno.EOPNOTSUPP),
    "fsetxattr-user": Attack(attack_fsetxattr_user, expected=errno.EOPNOTSUPP),
}


def skip_if_other_machine(attack: Attack) -> None:
    """Skip an attack that only applies to another machine."""
    if attack.only_on is not None and attack.only_on != MACHINE:
        pytest.skip(f"only meaningful on {attack.only_on}")


@needs_host_support
@pytest.mark.parametrize("name", ATTACKS)
def test_attack_is_refused(name: str) -> None:
    """Under the filter each attack fails with the documented errno."""
    attack = ATTACKS[name]
    skip_if_other_machine(attack)
    assert in_child(attack.run, setup=attack.setup) == attack.expected


@needs_host_support
@needs_root
@pytest.mark.parametrize("name", [n for n, a in ATTACKS.items() if a.baseline])
def test_attack_baseline_without_filter(name: str) -> None:
    """Without the filter the same call does not fail with that errno."""
    attack = ATTACKS[name]
    skip_if_other_machine(attack)
    assert in_child(attack.run, filtered=False, setup=attack.setup) != attack.expected


@needs_host_support
@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare(1)")
def test_filter_survives_exec() -> None:
    """A program exec'd under the filter is still refused (unshare -U)."""

    def run_unshare() -> int:
        cmd = ["unshare", "--user", "true"]
        return subprocess.run(cmd, capture_output=True, check=False).returncode

    assert in_child(run_unshare) != 0


@needs_host_support
@pytest.mark.skipif(MACHINE != "x86_64", reason="int 0x80 is x86's")
def test_the_i386_abi_kills_the_process() -> None:
    """``int 0x80`` (i386 getpid, as an ia32 chmod would be) from a 64-bit process: the
    arch check kills it with SIGSYS before any rule is consulted."""
    if int80_status(filtered=False) != 0:
        pytest.skip("this kernel has no i386 emulation (ia32_emulation=0)")
    status = int80_status(filtered=True)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS, hex(status)


def int80_status(*, filtered: bool) -> int:
    """The wait status of a child that makes an i386 getpid through ``int 0x80``."""
    code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax, 20; int 0x80; ret
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            if filtered:
                set_no_new_privs()
                install_filter(build_filter())
            page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            page.write(code)
            ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return status


# --- what must keep working -------------------------------------------------------


def seccomp_mode() -> str:
    """The Seccomp: field of /proc/self/status (reading a file)."""
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^Seccomp:\s*(\d+)$", status, re.MULTILINE)
    assert match is not None
    return match.group(1)


def fork_and_wait() -> int:
    """os.fork a child that exits 7; return its exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - grandchild
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def run_thread() -> str:
    """Start and join a threading.Thread."""
    box: list[str] = []
    thread = threading.Thread(target=box.append, args=("ran",))
    thread.start()
    thread.join()
    return box[0]


def run_true() -> int:
    """subprocess.run(["/bin/true"])."""
    return subprocess.run(["/bin/true"], check=False).returncode


def read_this_file() -> bool:
    """Read a regular file."""
    return Path(__file__).read_bytes().startswith(b'"""Tests for buildjail._linux.seccomp')


def window_size_ioctl() -> int:
    """TIOCGWINSZ on a pty (a harmless ioctl)."""
    master, slave = os.openpty()
    try:
        winsize = ctypes.create_string_buffer(8)
        return call_errno(LIBC.ioctl(ctypes.c_int(slave), ulong(TIOCGWINSZ), winsize))
    finally:
        os.close(slave)
        os.close(master)


def created_mode(mode: int) -> int:
    """os.open(new, O_CREAT, mode) under umask 022; the mode the file got."""
    os.umask(0o022)
    with scratch_dir() as top:
        os.close(os.open(f"{top}/new", os.O_CREAT | os.O_WRONLY, mode))
        return stat.S_IMODE(os.stat(f"{top}/new").st_mode)


def chmod_mode(mode: int) -> int:
    """os.chmod(file, mode); the mode it then has."""
    with scratch_file() as path:
        os.chmod(path, mode)
        return stat.S_IMODE(os.stat(path).st_mode)


def mkdir_mode() -> int:
    """os.mkdir(new, 0o2775) under umask 022 in a directory without set-gid."""
    os.umask(0o022)
    with scratch_dir() as top:
        os.mkdir(f"{top}/new", 0o2775)
        return stat.S_IMODE(os.stat(f"{top}/new").st_mode)


KEEPS_WORKING: dict[str, tuple[Callable[[], object], object]] = {
    "filter-active": (seccomp_mode, "2"),
    "fork": (fork_and_wait, 7),
    "thread": (run_thread, "ran"),
    "subprocess": (run_true, 0),
    "read-file": (read_this_file, True),
    "tiocgwinsz": (window_size_ioctl, 0),
    "inet-socket": (inet_socket, socket.AF_INET),
    "create-0666": (lambda: created_mode(0o666), 0o644),  # umask 022
    "create-0777": (lambda: created_mode(0o777), 0o755),
    "chmod-0755": (lambda: chmod_mode(0o755), 0o755),
    "chmod-1777": (lambda: chmod_mode(0o1777), 0o1777),  # sticky is no privilege
    "fchmodat2-upper-garbage-only": (fchmodat2_only_upper_garbage, 0),
    "mkdir-2775": (mkdir_mode, 0o755),  # mkdir is not filtered: the kernel drops set-gid
}


@needs_host_support
@needs_root
@pytest.mark.parametrize("name", ["create-0666", "chmod-1777", "mkdir-2775"])
def test_still_works_baseline_without_filter(name: str) -> None:
    """Unfiltered the same calls give the same results: the filter changes nothing there."""
    action, expected = KEEPS_WORKING[name]
    assert in_child(action, filtered=False) == expected


@needs_host_support
@pytest.mark.parametrize("name", KEEPS_WORKING)
def test_still_works_under_filter(name: str) -> None:
    """Ordinary build activity is not disturbed by the filter."""
    action, expected = KEEPS_WORKING[name]
    assert in_child(action) == expected


@needs_host_support
@pytest.mark.parametrize("filtered", [True, False], ids=["filtered", "unfiltered"])
def test_copy2_copies_a_file_with_an_attribute(tmp_path: Path, filtered: bool) -> None:
    """shutil.copy2 of a 0755 file with a user.* attribute works under the filter: the
    content and mode are copied, the attribute is not (copy2 passes over EOPNOTSUPP, as on
    a file system without attributes); unfiltered it is copied too."""
    if not filtered and not IS_ROOT:
        pytest.skip("the unfiltered baseline runs as root")
    source = tmp_path / "source"
    source.write_bytes(b"#!/bin/sh\n")
    source.chmod(0o755)
    os.setxattr(source, "user.buildjail", b"1")

    def copy() -> list[object]:
        copied = Path(shutil.copy2(source, tmp_path / "copy"))
        return [copied.read_bytes() == source.read_bytes(), stat.S_IMODE(copied.stat().st_mode),
                "user.buildjail" in os.listxattr(copied)]

    assert in_child(copy, filtered=filtered) == [True, 0o755, not filtered]


@needs_host_support
def test_install_rejects_malformed_program() -> None:
    """A byte string that is not whole instructions is refused before prctl."""
    with pytest.raises(ValueError, match="not a seccomp program"):
        install_filter(b"\x00" * 12)
    with pytest.raises(ValueError, match="not a seccomp program"):
        install_filter(b"")


@needs_host_support
def test_install_reports_kernel_errors_as_oserror() -> None:
    """A program the kernel rejects raises OSError carrying the errno."""

    def load_garbage() -> object:
        set_no_new_privs()
        try:
            install_filter(struct.pack("<HBBI", 0xFFFF, 0, 0, 0))  # invalid opcode
        except OSError as exc:
            return exc.errno
        return None

    assert in_child(load_garbage, filtered=False) == errno.EINVAL


# --- the program's shape ----------------------------------------------------------


@pytest.mark.parametrize("machine", sorted(SUPPORTED_ARCHES))
def test_program_is_well_formed(machine: str) -> None:
    """Every jump lands inside the program and every path ends in a return."""
    insns = decode(build_filter(machine))
    count = len(insns)
    assert 0 < count <= 4096 and count < 1 << 16
    assert insns[-1][0] == BPF_RET_K
    for pc, (code, jt, jf, k) in enumerate(insns):
        assert code in {BPF_LD_W_ABS, BPF_RET_K, BPF_JA, *JUMPS}, f"opcode at {pc}"
        if code in JUMPS:
            assert pc + 1 + max(jt, jf) < count, f"jump out of range at {pc}"
        elif code == BPF_JA:
            assert pc + 1 + k < count, f"ja out of range at {pc}"
        else:
            assert jt == jf == 0
        if code == BPF_LD_W_ABS:
            assert k % 4 == 0 and k < 64, f"load outside seccomp_data at {pc}"


def test_supported_arches() -> None:
    """Exactly x86_64 and aarch64 are supported."""
    assert frozenset({"x86_64", "aarch64"}) == SUPPORTED_ARCHES


@pytest.mark.parametrize("machine", ["riscv64", "i686", "armv7l", "aarch64_be", "", "X86_64"])
def test_unknown_machine_raises(machine: str) -> None:
    """Other machines raise UnsupportedArchitecture, a ValueError."""
    with pytest.raises(UnsupportedArchitecture):
        build_filter(machine)
    assert issubclass(UnsupportedArchitecture, ValueError)


@needs_host_support
def test_default_machine_is_host() -> None:
    """Without an argument the host's filter is built."""
    assert build_filter() == build_filter(MACHINE)


def test_denied_syscalls_listed_once() -> None:
    """DENIED_SYSCALLS has no duplicates and covers the documented list."""
    assert len(set(DENIED_SYSCALLS)) == len(DENIED_SYSCALLS)
    assert {"ptrace", "bpf", "keyctl", "unshare", "setns", "mount", "iopl"} <= set(DENIED_SYSCALLS)
    assert not {"clone", "clone3", "ioctl", "personality"} & set(DENIED_SYSCALLS)


# --- the program's logic, emulated for both machines --------------------------------


def syscall_table(machine: str) -> dict[str, int]:
    """The module's syscall numbers for ``machine``."""
    return dict(seccomp._ARCHES[machine].syscalls)


HEADERS = {
    "x86_64": [Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
               Path("/usr/include/asm/unistd_64.h")],
    "aarch64": [Path("/usr/include/asm-generic/unistd.h")],
}  # fmt: skip


@pytest.mark.parametrize("machine", sorted(SUPPORTED_ARCHES))
def test_numbers_match_kernel_headers(machine: str) -> None:
    """Cross-check the tables against the installed kernel uapi headers."""
    header = next((p for p in HEADERS[machine] if p.exists()), None)
    if header is None:
        pytest.skip(f"no uapi syscall header for {machine}")
    expected = {**NEWER_THAN_HEADERS, **header_numbers(header)}
    table = syscall_table(machine)
    for name in [*DENIED_SYSCALLS, "clone", "clone3", "ioctl", *MODE_ARGUMENTS, *XATTR_SETTERS,
                 "openat2"]:
        assert table.get(name) == expected.get(name), name


NEWER_THAN_HEADERS = {"fchmodat2": 452, "setxattrat": 463}
"""Syscalls younger than Debian 12's uapi headers (Linux 6.6 and 6.13): the same number on
both machines (the kernel's unified table for new syscalls)."""
XATTR_SETTERS = ("setxattr", "lsetxattr", "fsetxattr", "setxattrat")


def test_mode_tables_per_machine() -> None:
    """aarch64 has only the *at forms (and fchmod); x86_64 the legacy path calls too."""
    legacy = {"chmod", "open", "creat", "mknod"}
    assert set(MODE_ARGUMENTS) <= set(syscall_table("x86_64"))
    assert set(MODE_ARGUMENTS) - legacy <= set(syscall_table("aarch64"))
    assert not legacy & set(syscall_table("aarch64"))
    assert SET_ID_BITS == stat.S_ISUID | stat.S_ISGID


def decisions(machine: str) -> Iterator[tuple[str, bytes, int]]:
    """(description, seccomp_data, expected action) cases for ``machine``."""
    arch = AUDIT_ARCH[machine]
    table = syscall_table(machine)
    eperm, enosys = SECCOMP_RET_ERRNO | errno.EPERM, SECCOMP_RET_ERRNO | errno.ENOSYS
    for name, nr in table.items():
        if name in DENIED_SYSCALLS:
            yield name, seccomp_data(nr, arch), eperm
    yield "clone3", seccomp_data(table["clone3"], arch), enosys
    for flag in CLONE_NAMESPACES:
        yield f"clone {flag:#x}", seccomp_data(table["clone"], arch, (flag | SIGCHLD,)), eperm
    yield "fork", seccomp_data(table["clone"], arch, (SIGCHLD,)), SECCOMP_RET_ALLOW
    yield "thread", seccomp_data(table["clone"], arch, (THREAD_CLONE_FLAGS,)), SECCOMP_RET_ALLOW
    for request in (TIOCSTI, TIOCLINUX, 0xFFFF_FFFF_0000_0000 | TIOCSTI):
        yield f"ioctl {request:#x}", seccomp_data(table["ioctl"], arch, (0, request)), eperm
    yield "TIOCGWINSZ", seccomp_data(table["ioctl"], arch, (0, TIOCGWINSZ)), SECCOMP_RET_ALLOW
    yield "TIOCSTI in arg0", seccomp_data(table["ioctl"], arch, (TIOCSTI, 0)), SECCOMP_RET_ALLOW
    yield from mode_decisions(machine)
    for nr in (0, 1, 2, 59, 63, 64, 93, 221, 257, 1000):
        if nr not in table.values():
            yield f"nr {nr}", seccomp_data(nr, arch), SECCOMP_RET_ALLOW
    for foreign in {AUDIT_ARCH_I386, AUDIT_ARCH_ARM, *AUDIT_ARCH.values()} - {arch}:
        kill = SECCOMP_RET_KILL_PROCESS
        yield f"arch {foreign:#x}", seccomp_data(table["ptrace"], foreign), kill
        yield f"arch {foreign:#x} read", seccomp_data(0, foreign), kill


SET_ID_MODES = (0o4755, 0o2755, 0o6000, 0o4000, 0o2000, 0o7777, 0xFFFF_FFFF,
                UPPER_GARBAGE | 0o4755, 0xFFFF_FFFF_FFFF_FFFF)
ORDINARY_MODES = (0, 0o644, 0o755, 0o777, 0o1777, stat.S_IFREG | 0o644, stat.S_IFDIR | 0o1777,
                  UPPER_GARBAGE | 0o644, 0xFFFF_FFFF_0000_0000, 0o7777 & ~0o6000)


def mode_decisions(machine: str) -> Iterator[tuple[str, bytes, int]]:
    """The set-id rule: each mode argument of each machine, both ways; xattrs; openat2."""
    arch = AUDIT_ARCH[machine]
    table = syscall_table(machine)
    eperm = SECCOMP_RET_ERRNO | errno.EPERM
    for name, index in MODE_ARGUMENTS.items():
        if name not in table:
            continue
        for mode in (*SET_ID_MODES, *ORDINARY_MODES):
            args = tuple(mode if i == index else 0 for i in range(6))
            verdict = eperm if mode & SET_ID_BITS else SECCOMP_RET_ALLOW
            yield f"{name} mode {mode:#o}", seccomp_data(table[name], arch, args), verdict
        elsewhere = tuple(0 if i == index else 0o6000 for i in range(6))  # flags, fds, ...
        yield f"{name} set-id bits elsewhere", seccomp_data(table[name], arch, elsewhere), \
            SECCOMP_RET_ALLOW
    for name in XATTR_SETTERS:
        yield name, seccomp_data(table[name], arch), SECCOMP_RET_ERRNO | errno.EOPNOTSUPP
    yield "openat2", seccomp_data(table["openat2"], arch), SECCOMP_RET_ERRNO | errno.ENOSYS
    for name, nr in NOT_MODE_FILTERED[machine].items():
        yield f"{name} 0o6777", seccomp_data(nr, arch, (0, 0, 0o6777)), SECCOMP_RET_ALLOW


NOT_MODE_FILTERED = {"x86_64": {"mkdirat": 258, "removexattr": 197},
                     "aarch64": {"mkdirat": 34, "removexattr": 14}}
"""Left alone: mkdirat keeps no set-id bit of its mode; removing an attribute grants nothing."""


@pytest.mark.parametrize("machine", sorted(SUPPORTED_ARCHES))
@pytest.mark.parametrize("stand_in", [False, True], ids=["namespaces", "stand-in"])
def test_emulated_mode_decisions(machine: str, stand_in: bool) -> None:
    """The set-id rule holds in both programs (the landlock backend's stand-in too)."""
    program = build_filter(machine, stand_in=stand_in)
    for description, data, expected in mode_decisions(machine):
        assert run_bpf(program, data) == expected, description


@pytest.mark.parametrize("machine", sorted(SUPPORTED_ARCHES))
def test_emulated_decisions(machine: str) -> None:
    """Run the program on synthetic seccomp_data and check every verdict."""
    program = build_filter(machine)
    cases = list(decisions(machine))
    assert len(cases) > 50
    for description, data, expected in cases:
        assert run_bpf(program, data) == expected, description


def test_iopl_only_on_x86_64() -> None:
    """iopl/ioperm are filtered on x86_64 and simply absent on aarch64."""
    assert {"iopl", "ioperm"} <= set(syscall_table("x86_64"))
    assert not {"iopl", "ioperm"} & set(syscall_table("aarch64"))


def test_x32_refused_with_enosys_on_x86_64_only() -> None:
    """x32 numbers get ENOSYS on x86_64; aarch64 has no such bit to check."""
    x86 = build_filter("x86_64")
    getpid_x32 = seccomp_data(X32_SYSCALL_BIT | 39, AUDIT_ARCH["x86_64"])
    assert run_bpf(x86, getpid_x32) == SECCOMP_RET_ERRNO | errno.ENOSYS
    arm = build_filter("aarch64")
    big = seccomp_data(X32_SYSCALL_BIT | 172, AUDIT_ARCH["aarch64"])
    assert run_bpf(arm, big) == SECCOMP_RET_ALLOW
