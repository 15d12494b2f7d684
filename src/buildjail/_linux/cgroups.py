"""Memory, process and CPU-time limits through a cgroup per sandbox (v2, or v1 controllers)."""

from __future__ import annotations

import contextlib
import errno
import os
import time

ROOT = "/sys/fs/cgroup"


class Cgroup:
    """A cgroup (one per controller on v1) holding one sandbox, with its limits."""

    def __init__(self, paths: dict[str, str], version: int,
                 cpu_limit: float | None = None) -> None:
        self.paths = paths
        self.version = version
        self.cpu_limit = cpu_limit
        self._counters: dict[str, int] = {}
        """The counter files :meth:`limit_hit` reads, by path: each opened on its first read
        and read again through its descriptor (the supervisor asks on every tick)."""

    @property
    def counts_cpu(self) -> bool:
        """Whether this cgroup adds up its processes' CPU time (v2 always; v1 with cpuacct)."""
        return "cpu" in self.paths

    def cpu_seconds(self) -> float:
        """CPU time of every process that was in the cgroup, the ones gone included."""
        if self.version == 2:
            return self._count(self.paths["cpu"], "cpu.stat", "usage_usec") / 1e6
        try:
            with open(os.path.join(self.paths["cpu"], "cpuacct.usage")) as stream:
                return int(stream.read()) / 1e9
        except (OSError, ValueError):
            return 0.0

    def open_usage(self) -> int:
        """A descriptor on the cgroup's memory usage (bytes), for a monitor to read."""
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        return os.open(os.path.join(self.paths["memory"], name), os.O_RDONLY | os.O_CLOEXEC)

    def add(self, pid: int) -> None:
        """Move process *pid* into the cgroup."""
        for path in dict.fromkeys(self.paths.values()):
            _write(os.path.join(path, "cgroup.procs"), str(pid))

    @property
    def joined_from_inside(self) -> bool:
        """Whether a process moves itself in (:func:`join`: v1), not moved by another
        (:func:`place`: v2, where a thread cannot leave its process's domain).

        Moving another process takes the kernel's global lock on every thread group, and
        taking it waits out an RCU grace period after an idle spell (6-16 ms here); one
        thread moving itself through v1's ``tasks`` file skips that lock."""
        return self.version == 1

    def open_moves(self) -> tuple[int, ...]:
        """Descriptors to move a process in (one per hierarchy): on ``tasks`` for
        :func:`join` where it is :attr:`joined_from_inside`, else on ``cgroup.procs`` for
        :func:`place`. The kernel checks a move with the credentials and the cgroup
        namespace the file was opened with, so they may be opened before the opener (or
        the process it passes them to) enters namespaces of its own."""
        name = "tasks" if self.joined_from_inside else "cgroup.procs"
        fds: list[int] = []
        try:
            for path in dict.fromkeys(self.paths.values()):
                fds.append(os.open(os.path.join(path, name), os.O_WRONLY | os.O_CLOEXEC))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return tuple(fds)

    def leave(self, pid: int) -> None:
        """Move process *pid* back to the parent cgroup(s)."""
        for path in dict.fromkeys(self.paths.values()):
            _write(os.path.join(os.path.dirname(path), "cgroup.procs"), str(pid))

    def limit_hit(self) -> str | None:
        """Return ``memory`` or ``processes`` when the kernel enforced that limit."""
        if self.version == 2:
            if self._count(self.paths["memory"], "memory.events", "oom_kill") > 0:
                return "memory"
        elif self._count(self.paths["memory"], "memory.oom_control", "oom_kill") > 0:
            return "memory"
        if self._count(self.paths["pids"], "pids.events", "max") > 0:
            return "processes"
        if self.cpu_limit and self.counts_cpu and self.cpu_seconds() > self.cpu_limit:
            return "cpu_time"
        return None

    def _count(self, directory: str, filename: str, key: str) -> int:
        """The value of *key* in a ``KEY VALUE`` counter file (0 without one), through a
        descriptor kept open: opening the file by its path each time cost about 130 us a
        file on a tick (cgroup v1, a 2-core VM), a re-read (``pread``) about 1 us. The
        file's content is made afresh on every read."""
        path = os.path.join(directory, filename)
        fd = self._counters.get(path)
        if fd is None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return 0
            self._counters[path] = fd
        try:
            return _parse_counter(os.pread(fd, _COUNTERS_SIZE, 0), key)
        except OSError:
            return 0

    def close(self) -> None:
        """Close the descriptors :meth:`limit_hit` keeps (reopened if it is asked again)."""
        counters, self._counters = self._counters, {}
        for fd in counters.values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def __getstate__(self) -> dict[str, object]:
        """Pickled (for the fork server) without descriptors, which name nothing there."""
        return {**self.__dict__, "_counters": {}}

    def remove(self) -> None:
        """Delete the cgroup directories, waiting up to a second for dying processes to go."""
        self.close()
        deadline = time.monotonic() + 1.0
        for path in dict.fromkeys(self.paths.values()):
            while True:
                try:
                    os.rmdir(path)
                except FileNotFoundError:
                    break
                except OSError as error:
                    if error.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
                else:
                    break


def create(name: str, memory: int | None, processes: int | None,
           cpu_time: float | None = None) -> Cgroup | None:
    """Create a cgroup enforcing the limits, or return None when this host has none to give."""
    if os.path.exists(os.path.join(ROOT, "cgroup.controllers")):
        cgroup = _create_v2(name, memory, processes)
    else:
        cgroup = _create_v1(name, memory, processes, count_cpu=cpu_time is not None)
    if cgroup is not None:
        cgroup.cpu_limit = cpu_time
    return cgroup


def _create_v2(name: str, memory: int | None, processes: int | None) -> Cgroup | None:
    parent = os.path.join(ROOT, _own_path("0", ROOT).lstrip("/"))
    path = os.path.join(parent, name)
    try:
        _make_fresh(path)
        if not os.path.exists(os.path.join(path, "memory.max")) or not os.path.exists(
            os.path.join(path, "pids.max")
        ):
            os.rmdir(path)
            return None
        _write(os.path.join(path, "memory.max"), str(memory or "max"))
        if memory and os.path.exists(os.path.join(path, "memory.swap.max")):
            _write(os.path.join(path, "memory.swap.max"), "0")
        _write(os.path.join(path, "pids.max"), str(processes or "max"))
    except OSError:
        with contextlib.suppress(OSError):
            os.rmdir(path)
        return None
    return Cgroup({"memory": path, "pids": path, "cpu": path}, 2)


def _create_v1(name: str, memory: int | None, processes: int | None, *,
               count_cpu: bool) -> Cgroup | None:
    """One cgroup per controller; cpuacct only when CPU time is limited (on v1 every
    hierarchy a process joins or leaves costs a synchronisation of all CPUs)."""
    paths = {}
    for controller in ("memory", "pids"):
        mount = os.path.join(ROOT, controller)
        if not os.path.isdir(mount):
            return None
        paths[controller] = os.path.join(mount, _own_path(controller, mount).lstrip("/"), name)
    accounting = os.path.join(ROOT, "cpuacct")
    if count_cpu and os.path.isfile(os.path.join(accounting, "cpuacct.usage")):
        with contextlib.suppress(OSError):
            paths["cpu"] = os.path.join(accounting, _own_path("cpuacct", accounting).lstrip("/"),
                                        name)
    cgroup = Cgroup(paths, 1)
    try:
        for path in paths.values():
            _make_fresh(path)
        if memory:
            _write(os.path.join(paths["memory"], "memory.limit_in_bytes"), str(memory))
            with contextlib.suppress(OSError):  # absent without swap accounting
                _write(os.path.join(paths["memory"], "memory.memsw.limit_in_bytes"), str(memory))
        if processes:
            _write(os.path.join(paths["pids"], "pids.max"), str(processes))
    except OSError:
        with contextlib.suppress(OSError):  # e.g. a read-only cgroup file system
            cgroup.remove()
        return None
    return cgroup


def _make_fresh(path: str) -> None:
    with contextlib.suppress(FileNotFoundError, OSError):
        os.rmdir(path)  # a stale, empty cgroup of a killed run with the same identity
    os.mkdir(path)


def _own_path(controller: str, mount: str) -> str:
    """This process's cgroup (a v1 controller's, or v2's for ``0``) below the *mount* point.

    /proc/self/cgroup gives the path from the hierarchy's root; a container's cgroup mount
    may show only a subtree (its own cgroup), which mountinfo names as the mount's root.
    """
    with open("/proc/self/cgroup") as stream:
        for line in stream:
            number, controllers, path = line.rstrip("\n").split(":", 2)
            if (controller == "0" and number == "0") or controller in controllers.split(","):
                return _below(path, _mount_root(mount))
    raise OSError(f"no cgroup for {controller}")


def _mount_root(mount: str) -> str:
    """The directory of its file system that the mount at *mount* shows (``/`` usually)."""
    with open("/proc/self/mountinfo") as stream:
        for line in stream:
            fields = line.split()
            if len(fields) > 4 and fields[4] == mount:
                return fields[3]
    return "/"


def _below(path: str, root: str) -> str:
    """*path* relative to *root*, both absolute; *path* itself when it is not below it."""
    root = root.rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root):] or "/"
    return path


_COUNTERS_SIZE = 4096
"""The most of a counter file read (``memory.events`` is six short lines)."""


def _parse_counter(data: bytes, key: str) -> int:
    """The value of the ``KEY VALUE`` line for *key* in a counter file's *data*; 0 without one."""
    for line in data.decode("ascii", "replace").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def join(tasks: tuple[int, ...]) -> None:
    """Move this process into the v1 cgroup whose ``tasks`` descriptors are *tasks* (from
    :meth:`Cgroup.open_moves`), and close them.

    The file moves one thread (``0``: the caller's own): the process must have only that
    one, as a freshly forked child has, or its other threads would stay outside."""
    try:
        threads = len(os.listdir("/proc/self/task"))
        if threads != 1:
            raise OSError(errno.EBUSY, f"{threads} threads: only a single-threaded process "
                          "can move itself into its cgroup")
        for fd in tasks:
            try:
                os.write(fd, b"0")
            except OSError as error:  # "<stage>: <details>", as diagnosis reads it
                raise OSError(error.errno, "write 0 into the cgroup's tasks: "
                              f"{error.strerror}") from None
    finally:
        for fd in tasks:
            os.close(fd)


def place(procs: tuple[int, ...], pid: int) -> None:
    """Move process *pid* into the cgroup whose ``cgroup.procs`` descriptors are *procs*."""
    for fd in procs:
        os.write(fd, str(pid).encode())


def _write(path: str, text: str) -> None:
    with open(path, "w") as stream:
        stream.write(text)
