"""Show what a build sees from inside the sandbox: ``buildjail run -- python -m ...whoami``."""

from __future__ import annotations

import os
import pwd
import socket
from collections.abc import Callable


def _attempt(action: Callable[[], object]) -> str:
    try:
        result = action()
    except OSError as error:
        return f"blocked ({error.strerror})"
    return f"ALLOWED ({result})" if result is not None else "ALLOWED"


def _read(path: str) -> object:
    with open(path, "rb") as stream:
        return f"{len(stream.read())} bytes"


def _write(path: str) -> object:
    with open(path, "w") as stream:
        stream.write("buildjail was here\n")
    os.unlink(path)
    return None


def _connect(host: str, port: int) -> object:
    with socket.create_connection((host, port), timeout=3):
        return None


def report() -> list[tuple[str, str]]:
    """Return (what, outcome) pairs for a few things a malicious build would try."""
    home = os.path.expanduser("~")
    pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    return [
        ("user", f"{pwd.getpwuid(os.getuid()).pw_name} (uid {os.getuid()}), HOME={home}"),
        ("hostname", socket.gethostname()),
        ("processes visible", ", ".join(map(str, pids))),
        ("read /root/.netrc", _attempt(lambda: _read("/root/.netrc"))),
        ("read /etc/shadow", _attempt(lambda: _read("/etc/shadow"))),
        ("write /etc/buildjail-probe", _attempt(lambda: _write("/etc/buildjail-probe"))),
        ("write /usr/lib/probe.pth", _attempt(lambda: _write("/usr/lib/probe.pth"))),
        ("connect pypi.org:443", _attempt(lambda: _connect("pypi.org", 443))),
        ("environment tokens", ", ".join(
            name for name in os.environ if "TOKEN" in name or "SECRET" in name) or "none"),
    ]


def main() -> None:
    """Print the report as a table."""
    for what, outcome in report():
        print(f"{what:28} {outcome}")


if __name__ == "__main__":
    main()
