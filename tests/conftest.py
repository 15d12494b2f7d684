"""Shared fixtures: run sandboxes as root (in-process) and as a non-root user (setpriv)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox_driver import run_spec

SRC = Path(__file__).resolve().parent.parent / "src"
NONROOT_UID = 4242
SYSTEM_PYTHON = "/usr/bin/python3.11"
WITHOUT_SECCOMP: dict[str, Any] = {"extends": "full", "name": "full-without-seccomp",
                                   "isolation": {"seccomp": False}}
"""``full`` less its seccomp filter, which refuses set-id modes and extended attributes
(tests/test_mode_filter.py): tests of the hand-back make what a build could make without
that filter, so that each layer is tested on its own (``Policy.from_mapping`` of it, or
``policy=`` of a sandbox spec)."""


Runner = Callable[..., dict[str, Any]]


def is_root() -> bool:
    """Whether the tests run as root (CI does)."""
    return os.geteuid() == 0


@pytest.fixture(scope="session")
def world_src() -> Iterator[str]:
    """A world-readable copy of the package, importable by the non-root user."""
    if not is_root():
        yield str(SRC)
        return
    top = tempfile.mkdtemp(prefix="bj-src-")
    shutil.copytree(SRC / "buildjail", Path(top) / "buildjail",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(Path(__file__).with_name("sandbox_driver.py"), top)
    for path in Path(top).rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top)


def _run_as_user(world: str, spec: dict[str, Any], uid: int) -> dict[str, Any]:
    env = {key: value for key, value in spec.get("env", os.environ).items()}
    spec = {**spec, "env": env}
    proc = subprocess.run(
        ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
         SYSTEM_PYTHON, "-Es", f"{world}/sandbox_driver.py", json.dumps(spec)],
        capture_output=True, text=True, env=env, check=False, cwd=spec.get("cwd", "/"), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    sys.stderr.write(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture(params=["root", "nonroot"])
def identity_kind(request: pytest.FixtureRequest) -> str:
    """Run the test once as root and once as a non-root user."""
    if not is_root():
        pytest.skip("both identities are tested from a root test run (CI runs as root)")
    return str(request.param)


def processes_with(marker: str) -> list[int]:
    """The host's processes whose arguments hold *marker*: only what a test planted."""
    found = []
    for name in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if name.isdigit() and marker.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                found.append(int(name))
    return found


def require_backend(name: str) -> str:
    """Skip, saying why, when *name* cannot run here: only bwrap without bubblewrap."""
    if name == "bwrap":
        from buildjail.backends.bwrap import find_bwrap

        if find_bwrap() is None:
            pytest.skip("bubblewrap is not installed (apt-get install bubblewrap; .ci/run "
                        "installs it): the bwrap backend's tests cannot run")
    return name


def hide_bubblewrap() -> None:
    """In a child process only: a private mount namespace where /dev/null covers every bwrap."""
    from buildjail._linux import kernel as k
    from buildjail.backends.bwrap import CANDIDATES

    k.unshare(k.CLONE_NEWNS)
    k.make_mounts_private()
    for path in CANDIDATES:
        if os.path.exists(path):
            k.mount("/dev/null", path, None, k.MS_BIND)


@pytest.fixture(params=["native", "bwrap"])
def sandbox_backend(request: pytest.FixtureRequest) -> str:
    """Run the test once per namespace backend; the bwrap one needs bubblewrap installed.

    Modules whose tests hold for the landlock backend too override this with
    :func:`every_backend`; the others test what namespaces give (an empty view, a private
    /tmp and loopback, a pid namespace), which tests/test_landlock.py tests instead.
    """
    return require_backend(str(request.param))


def every_backend(request: pytest.FixtureRequest) -> str:
    """The ``sandbox_backend`` of modules that run on all three backends."""
    return require_backend(str(request.param))


@pytest.fixture
def run_sandbox(identity_kind: str, world_src: str, sandbox_backend: str) -> Runner:
    """Run ``Sandbox(profile).run(cmd, ...)`` as the identity and backend under test."""

    def run(cmd: list[str], **spec: Any) -> dict[str, Any]:
        spec = {"cmd": cmd, "backend": sandbox_backend, **spec}
        if identity_kind == "root":
            return run_spec(spec)
        return _run_as_user(world_src, spec, NONROOT_UID)

    return run


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A world-writable scratch directory outside /tmp (visible to the sandbox)."""
    base = Path("/var/lib/buildjail-tests")
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    path = Path(tempfile.mkdtemp(dir=base))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class Process:
    """One process of the host, as /proc shows it."""

    pid: int
    ppid: int
    uids: frozenset[int]  # real, effective, saved, fs
    cmdline: bytes
    environ: bytes  # empty where it cannot be read

    def carries(self, marker: bytes) -> bool:
        """Whether *marker* is in the process's command line or environment."""
        return marker in self.cmdline or marker in self.environ


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except PermissionError:
        return b""


def read_process(pid: int) -> Process | None:
    """The process *pid*, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            ppid = int(stream.read().rsplit(b")", 1)[1].split()[1])
        with open(f"/proc/{pid}/status") as stream:
            uids = next(line for line in stream if line.startswith("Uid:"))
        cmdline = _read_bytes(f"/proc/{pid}/cmdline")
        environ = _read_bytes(f"/proc/{pid}/environ")
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return Process(pid, ppid, frozenset(int(uid) for uid in uids.split()[1:]), cmdline,
                   environ)


def processes_of_host() -> list[Process]:
    """Every process of the host: to pick a test's own from, never to compare."""
    found = (read_process(int(name)) for name in os.listdir("/proc") if name.isdigit())
    return [process for process in found if process is not None]


def host_processes() -> list[tuple[int, set[int], bytes]]:
    """Every process of the host: pid, its uids (real, effective, saved, fs), cmdline."""
    return [(process.pid, set(process.uids), process.cmdline)
            for process in processes_of_host()]


BUILD_REQUIREMENTS = ("setuptools==75.8.0", "wheel==0.45.1")


def fetched_wheels(name: str, *requirements: str) -> Path:
    """The test cache's directory *name* holding wheels of *requirements*, fetched once."""
    cache = Path(os.environ.get("BUILDJAIL_TEST_CACHE",
                                Path.home() / ".cache" / "buildjail-tests"))
    house = cache / name
    marker = house / ".complete"
    if not marker.exists():
        house.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary",
                        ":all:", "-d", str(house), *requirements], check=True)
        marker.touch()
    return house


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """A local directory of build-requirement wheels (setuptools, wheel), fetched once."""
    return fetched_wheels("wheelhouse-basic", *BUILD_REQUIREMENTS)


@pytest.fixture(scope="session")
def nonroot_site() -> Path:
    """pyproject_hooks, packaging and uv, importable by a non-root user's /usr/bin/python3.11."""
    site = Path("/var/lib/buildjail-tests/nonroot-site")
    if not (site / "pyproject_hooks").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target",
                        str(site), "pyproject_hooks", "packaging"], check=True)
    if not (site / "bin" / "uv").exists():  # the --target layout uv.find_uv_bin() knows
        import uv

        shutil.copytree(Path(uv.__file__).parent, site / "uv", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        (site / "bin").mkdir(exist_ok=True)
        shutil.copy(uv.find_uv_bin(), site / "bin" / "uv")
    for path in [site.parent, site, *site.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or path.parent == site / "bin" else 0o644)
    return site


UV = shutil.which("uv", path=str(Path(sys.executable).parent))
"""The uv installed with the test dependencies (None without it)."""


def give_to(uid: int, *paths: Path) -> None:
    """Make *paths* and everything below them belong to *uid* (for a non-root run)."""
    for top in paths:
        for path in [top, *top.rglob("*")]:
            os.chown(path, uid, uid, follow_symlinks=False)


@dataclasses.dataclass
class Identity:
    """Who runs a command: root, or the non-root test user through setpriv."""

    kind: str
    world_src: str
    nonroot_site: Path
    scratch: Path

    @property
    def uid(self) -> int:
        """The uid commands run as."""
        return 0 if self.kind == "root" else NONROOT_UID

    def own(self, *paths: Path) -> None:
        """Give *paths* to this identity."""
        give_to(self.uid, *paths)

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment commands get: uv on PATH; as non-root a minimal one."""
        uv_dir = str(Path(UV).parent) if UV else ""
        if self.kind == "root":
            env = {**os.environ, "PATH": f"{uv_dir}:{os.environ.get('PATH', '')}"}
        else:
            env = {"PATH": f"{uv_dir}:/usr/bin:/bin", "HOME": "/nonexistent",
                   "PYTHONPATH": f"{self.world_src}:{self.nonroot_site}",
                   "UV_CACHE_DIR": str(self.scratch / "uv-cache"), "LANG": "C.UTF-8"}
        env["PIP_CONFIG_FILE"] = os.devnull  # the host's pip.conf adds local indexes
        return {**env, **(extra or {})}

    def run(self, cmd: list[str], *, env: dict[str, str] | None = None, cwd: str = "/",
            timeout: int = 600) -> subprocess.CompletedProcess[str]:
        """Run *cmd* as this identity."""
        prefix = [] if self.kind == "root" else [
            "/usr/bin/setpriv", f"--reuid={NONROOT_UID}", f"--regid={NONROOT_UID}",
            "--clear-groups"]
        return subprocess.run([*prefix, *cmd], env=self.environment(env), cwd=cwd,
                              capture_output=True, text=True, errors="replace",
                              timeout=timeout, check=False)

    @property
    def python(self) -> str:
        """The interpreter buildjail runs under as this identity."""
        return sys.executable if self.kind == "root" else SYSTEM_PYTHON

    def buildjail(self, *args: str, backend: str, env: dict[str, str] | None = None,
                  cwd: str = "/") -> subprocess.CompletedProcess[str]:
        """``buildjail build --backend BACKEND ARGS`` as this identity.

        Root's landlock builds run under the system Python, as in a container: the build's
        ephemeral uid cannot reach a Python under /root (pyenv's), and that backend has no
        mount namespace to show it (tests/test_landlock.py checks the refusal).
        """
        python = self.python
        if self.kind == "root" and backend == "landlock":
            python = SYSTEM_PYTHON
            env = {"PYTHONPATH": f"{self.world_src}:{self.nonroot_site}", **(env or {})}
        return self.run([python, "-m", "buildjail", "build", "--backend", backend, *args],
                        env=env, cwd=cwd)


@pytest.fixture
def identity(identity_kind: str, world_src: str, nonroot_site: Path,
             shared_dir: Path) -> Identity:
    """Root or the non-root test user, with a scratch directory it owns."""
    scratch = shared_dir / "scratch"
    scratch.mkdir()
    who = Identity(identity_kind, world_src, nonroot_site, scratch)
    who.own(scratch)
    return who


@dataclasses.dataclass
class Server:
    """A loopback HTTP server: what it serves, every request path it received, and the
    Authorization header of each (None when there was none)."""

    url: str
    root: Path
    requests: list[str]
    authorizations: list[str | None] = dataclasses.field(default_factory=list)


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]
    authorizations: list[str | None]

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        type(self).authorizations.append(self.headers.get("Authorization"))
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[Server]:
    """A loopback HTTP server serving a fresh directory and recording the requests."""
    root = tmp_path / "served"
    root.mkdir()
    with serve_directory(root) as server:
        yield server


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[Server]:
    """A loopback HTTP server, in a thread, serving *root* and recording the requests."""
    requests: list[str] = []
    authorizations: list[str | None] = []
    handler = type("Handler", (_RecordingHandler,), {"requests": requests,
                                                     "authorizations": authorizations})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{server.server_address[1]}", root, requests,
                     authorizations)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def markers(shared_dir: Path) -> Path:
    """A directory anyone may write to outside the sandbox, and nobody from inside it.

    An attack that escaped writes a marker here; the sandbox sees the host read-only.
    """
    path = shared_dir / "markers"
    path.mkdir()
    path.chmod(0o777)
    return path


_MEASURE = ("import resource, subprocess, sys\n"
            "done = subprocess.run(sys.argv[1:], capture_output=True, text=True, "
            "errors='replace')\n"
            "sys.stderr.write(done.stderr)\n"
            "print('EXIT', done.returncode, 'MAXRSS_KB', "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")


def peak_rss(identity: Identity, cmd: list[str]) -> tuple[int, int, str]:
    """Run *cmd* as *identity*: its exit code, the peak RSS (KiB) of it and everything it
    started (``getrusage(RUSAGE_CHILDREN)`` of a wrapper process), and its stderr."""
    done = identity.run([identity.python, "-c", _MEASURE, *cmd])
    words = done.stdout.split()
    assert len(words) == 4, done.stdout + done.stderr
    return int(words[1]), int(words[3]), done.stderr


def host_address() -> str:
    """This host's address on its default route (no packet is sent: a UDP connect only
    picks a route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("10.255.255.255", 9))
        return str(sock.getsockname()[0])


class Listener:
    """A TCP listener on the host, in a thread, counting who connected to *address*."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        """Stop accepting and close the socket."""
        self.stopped.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def coarse_fs(tmp_path: Path) -> Iterator[Path]:
    """A loop-mounted ext4 with 128-byte inodes: its timestamps are whole seconds (as on
    ext3-era volumes; NFS, SMB and FUSE stamp times with another machine's clock)."""
    if not is_root():
        pytest.skip("loop-mounts an ext4 image: needs root (CI runs as root)")
    image = tmp_path / "coarse.img"
    with open(image, "wb") as stream:
        stream.truncate(64 << 20)
    subprocess.run(["/usr/sbin/mkfs.ext4", "-q", "-F", "-I", "128", str(image)],
                   check=True, capture_output=True)
    base = Path("/var/lib/buildjail-tests")
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    mountpoint = Path(tempfile.mkdtemp(dir=base))
    mounted = subprocess.run(["/usr/bin/mount", "-o", "loop", str(image), str(mountpoint)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        mountpoint.rmdir()
        pytest.skip(f"cannot loop-mount an ext4 image here: {mounted.stderr.strip()}")
    try:
        mountpoint.chmod(0o777)
        yield mountpoint
    finally:
        subprocess.run(["/usr/bin/umount", str(mountpoint)], check=False)
        mountpoint.rmdir()


def early_in_a_second(start: float = 0.3) -> None:
    """Wait until the wall clock is *start* s into a second (what follows fits in it)."""
    while not start <= time.time() % 1 < start + 0.1:
        time.sleep(0.005)
