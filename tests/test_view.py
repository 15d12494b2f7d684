"""The view of ``full``: an allow-list of the host. Secrets planted where the old view showed
them — shared caches, /etc's credential files and backups, /opt, /srv, a service account's
home, the source tree's neighbours, buildjail's own venv — and a listening unix socket in
/var/lib are neither readable nor reachable from a sandboxed command, as root and as a
non-root user, on both backends; under ``none`` (the control) every one of them is.

The plants go into a private mount namespace of a child process (tmpfs and bind mounts),
so the host is never changed: the sandbox, started from that child, sees the child's view.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from buildjail._linux import kernel as k
from conftest import Runner

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="plants need root (CI runs as root)")]

PROBE = """
import json, os, socket, sys
found = {}
for path in json.loads(sys.argv[1]):
    try:
        with open(path, "rb") as stream:
            found[path] = "read " + stream.read(200).decode(errors="replace")
    except OSError as error:
        found[path] = f"{type(error).__name__}: {error.strerror}"
with socket.socket(socket.AF_UNIX) as client:
    try:
        client.connect(sys.argv[2])
        found["socket"] = "connected: " + client.recv(64).decode()
    except OSError as error:
        found["socket"] = f"{type(error).__name__}: {error.strerror}"
print(json.dumps(found))
"""


def _service_home() -> str | None:
    """The home of a service account (uid 100-999) that is a directory of its own."""
    with open("/etc/passwd") as stream:
        for line in stream:
            fields = line.rstrip("\n").split(":")
            if len(fields) > 5 and fields[2].isdigit() and 100 <= int(fields[2]) < 1000 \
                    and fields[5].startswith("/var/") and os.path.isdir(fields[5]):
                return fields[5]
    return None


class Plants:
    """The secrets of one test, by place; each a unique canary."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.canary = f"bj-view-{uuid.uuid4().hex}"
        self.files: dict[str, str] = {}
        self.socket = str(workdir / "service.sock")
        self.source = workdir / "project" / "src"
        self.host_files: list[Path] = []

    def plant(self) -> None:
        """In this (child) process's private mount namespace: put every secret in place."""
        for name in ("pip.conf", "gitconfig", "passwd-", "npmrc"):
            if os.path.isfile(f"/etc/{name}"):  # over the host's own, in this namespace only
                self._bind(f"/etc/{name}", f"[global]\nindex-url = https://u:{self.canary}@x\n")
        for top, relative in (("/var/cache", "builder/cargo/credentials.toml"),
                              ("/opt", "app-root/src/.netrc"), ("/srv", "build/token")):
            if os.path.isdir(top):
                k.mount("tmpfs", top, "tmpfs", 0, "size=1m,mode=0755")
                self._write(f"{top}/{relative}", 0o644)
        home = _service_home()
        if home is not None:
            k.mount("tmpfs", home, "tmpfs", 0, "size=1m,mode=0755")
            self._write(f"{home}/.pgpass", 0o644)
        self._write(str(self.workdir / "project" / "secret.env"), 0o644)  # beside the source

    def plant_on_the_host(self) -> None:
        """In this process, before the child forks: buildjail's own venv's pip.conf."""
        venv = Path(sys.prefix) / "pip.conf"
        if sys.prefix != sys.base_prefix and not venv.exists():
            venv.write_text(f"[global]\nindex-url = https://u:{self.canary}@example.invalid/\n")
            venv.chmod(0o644)
            self.files[str(venv)] = self.canary
            self.host_files.append(venv)

    def _bind(self, target: str, text: str) -> None:
        source = self.workdir / f"bind-{len(self.files)}"
        source.write_text(text)
        source.chmod(0o644)
        k.mount(str(source), target, None, k.MS_BIND)
        self.files[target] = text

    def _write(self, path: str, mode: int) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as stream:
            stream.write(f"secret {self.canary}\n")
        os.chmod(path, mode)
        self.files[path] = self.canary

    def remove_host_files(self) -> None:
        """The only file on the host itself: the venv's pip.conf, if it was planted."""
        while self.host_files:
            self.host_files.pop().unlink(missing_ok=True)


@pytest.fixture
def plants(shared_dir: Path) -> Iterator[Plants]:
    made = Plants(shared_dir)
    made.source.mkdir(parents=True)
    made.source.chmod(0o777)
    try:
        made.plant_on_the_host()
        yield made
    finally:
        made.remove_host_files()


def _serve(path: str, canary: str) -> Callable[[], None]:
    """A root service listening on *path*; returns how to stop it."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except OSError:
                continue
            with client:
                client.sendall(canary.encode())

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join()
        server.close()
        os.unlink(path)

    return close


def _probe_in_planted_namespace(plants: Plants, run: Callable[[], dict[str, Any]]
                                ) -> dict[str, Any]:
    """Fork; the child plants in a private mount namespace, then runs the sandbox from there."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            k.unshare(k.CLONE_NEWNS)
            k.make_mounts_private()
            plants.plant()
            data = json.dumps({"plants": plants.files, "result": run()})
        except BaseException:
            data = json.dumps({"error": traceback.format_exc()})
        os.write(write_fd, data.encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as stream:
        raw = stream.read()
    os.waitpid(pid, 0)
    message = json.loads(raw)
    assert "error" not in message, message["error"]
    return message  # type: ignore[no-any-return]


def _run_probe(run_sandbox: Runner, plants: Plants, profile: str) -> tuple[dict[str, str],
                                                                         dict[str, str]]:
    def run() -> dict[str, Any]:
        paths = json.dumps(sorted(plants.files))
        return run_sandbox(["/usr/bin/python3.11", "-c", PROBE, paths, plants.socket],
                           cwd=str(plants.source), writable=[str(plants.source)],
                           profile=profile, capture=True)

    stop = _serve(plants.socket, plants.canary)
    try:
        message = _probe_in_planted_namespace(plants, run)
    finally:
        stop()
    result = message["result"]
    assert "setup_error" not in result, result
    assert result["exit_code"] == 0, result
    return message["plants"], json.loads(result["stdout"])


def test_full_shows_none_of_the_planted_secrets(run_sandbox: Runner, plants: Plants) -> None:
    planted, found = _run_probe(run_sandbox, plants, "full")
    assert len(planted) >= 8, planted  # every place this host has was planted
    for path in planted:
        assert found[path].startswith(("FileNotFoundError", "PermissionError")), (path, found)
        assert plants.canary not in found[path]
    assert found["socket"].startswith(("FileNotFoundError", "ConnectionRefused")), found


def test_without_a_sandbox_every_planted_secret_is_reached(run_sandbox: Runner,
                                                           plants: Plants) -> None:
    """The control: under none the same probe reads each secret and reaches the service."""
    planted, found = _run_probe(run_sandbox, plants, "none")
    for path, text in planted.items():
        assert found[path].startswith("read "), (path, found[path])
        assert text[:20] in found[path] or plants.canary in found[path], (path, found[path])
    assert found["socket"] == f"connected: {plants.canary}", found
