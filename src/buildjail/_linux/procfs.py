"""Small readers of the kernel's settings and this process's state in /proc."""

from __future__ import annotations


def read_setting(path: str) -> str | None:
    """Return a small file's stripped text (a sysctl, a /proc entry), or None if unreadable."""
    try:
        with open(path) as stream:
            return stream.read().strip()
    except OSError:
        return None


def seccomp_mode() -> int:
    """Return this process's seccomp mode (0 none, 1 strict, 2 filter)."""
    for line in (read_setting("/proc/self/status") or "").splitlines():
        if line.startswith("Seccomp:"):
            return int(line.split()[1])
    return 0
