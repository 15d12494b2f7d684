"""The audit's bait: secrets, listeners, IPC objects and marker paths planted on the host.

``with Bait(workdir, tag) as bait:`` plants everything an attack probe could reach (a
throw-away HOME full of credentials, another user's key, container and Kubernetes secrets,
a victim process, TCP/UDP/abstract-socket listeners, System V and POSIX shared memory, a
setuid binary, a marker in ``/tmp``) and, on leaving the block (also on an exception, a
``KeyboardInterrupt``, a ``SIGTERM`` or at interpreter exit), removes every trace of it,
including whatever the probes managed to write at the ``writes`` paths.

Names outside ``workdir`` contain the tag, so concurrent audits do not collide. As root
everything is planted; as another user, what needs root is listed in ``Bait.unavailable``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import threading
import time
import types
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["ENV_TOKENS", "Bait", "BaitError", "kill_inside", "observe", "processes_inside"]

ENV_TOKENS = ("GITHUB_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "TWINE_PASSWORD",
              "PYPI_API_TOKEN", "NPM_TOKEN")
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,40}")
_K8S_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
_K8S_TOKEN_PREFIX = "eyJhbGciOiJSUzI1NiJ9."
_OWNER_PID = re.compile(r"bj-audit-t?(\d+)-")
_RUN_SECRETS = Path("/run/secrets")
_UNROUTED = ("192.0.2.1", "10.255.255.255")
_IPC_CREAT = 0o1000
_IPC_EXCL = 0o2000
_IPC_RMID = 0
_SHM_SIZE = 4096
_POLL_SECONDS = 0.1
_WORKDIR_ENTRIES = ("home", "other-build", "cache", "setuid-id")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
_libc.shmget.restype = ctypes.c_int
_libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_libc.shmat.restype = ctypes.c_void_p
_libc.shmdt.argtypes = [ctypes.c_void_p]
_libc.shmdt.restype = ctypes.c_int
_libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
_libc.shmctl.restype = ctypes.c_int


class BaitError(RuntimeError):
    """The bait cannot be planted (a bad tag, or a marker path that already exists)."""


Undo = Callable[[], None]


def _is_root() -> bool:
    return os.geteuid() == 0


def _canary(tag: str, what: str) -> str:
    """A recognisable fake secret: a probe that prints it proves it read it."""
    return f"bj-audit-{tag}-{what}-{os.urandom(6).hex()}"


def _write(path: Path, text: str, mode: int) -> None:
    """Create ``path`` (it must not exist) with exactly ``mode``, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _make_dirs(path: Path, mode: int) -> list[Path]:
    """Create ``path`` and its missing parents; return the created ones, outermost first."""
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = probe.parent
    created = list(reversed(missing))
    for directory in created:
        directory.mkdir()
        directory.chmod(mode)
    return created


def _discard(path: Path) -> None:
    """Remove a file, link or directory tree if it exists."""
    if path.is_symlink() or path.is_file() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _clear_stale_k8s_token() -> None:
    """Remove a Kubernetes token bait that an audit killed before its clean-up left behind.

    Only a regular file holding a bait canary whose planting process is gone is removed (a
    real token, or the bait of an audit still running, stays), then its empty directories.
    """
    try:
        fd = os.open(_K8S_TOKEN, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    try:
        head = os.read(fd, 256).decode("ascii", "replace") if stat.S_ISREG(
            os.fstat(fd).st_mode) else ""
    finally:
        os.close(fd)
    owner = _OWNER_PID.match(head, len(_K8S_TOKEN_PREFIX))
    if not head.startswith(_K8S_TOKEN_PREFIX) or owner is None or _alive(int(owner[1])):
        return
    with contextlib.suppress(FileNotFoundError):
        _K8S_TOKEN.unlink()
    for directory in (_K8S_TOKEN.parent, _K8S_TOKEN.parent.parent):
        with contextlib.suppress(OSError):
            directory.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_dirs(created: list[Path]) -> Undo:
    """An undo step removing directories ``_make_dirs`` created, if they are empty by then."""

    def undo() -> None:
        for directory in reversed(created):
            with contextlib.suppress(FileNotFoundError, OSError):
                directory.rmdir()

    return undo


def _host_address() -> tuple[str, str | None]:
    """The host's non-loopback IPv4 (a UDP connect sends no packet), else 127.0.0.1 and why."""
    for target in _UNROUTED:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect((target, 9))
            except OSError:
                continue
            address = str(sock.getsockname()[0])
        if not address.startswith("127.") and address != "0.0.0.0":
            return address, None
    return "127.0.0.1", "no non-loopback IPv4 route: host_address is 127.0.0.1"


_BASE_PURELIB = ("import sys, sysconfig; print(sysconfig.get_paths(vars={'base': "
                 "sys.base_prefix, 'platbase': sys.base_exec_prefix})['purelib'])")


def _base_purelib(python: str | None = None) -> Path:
    """The purelib directory of the base interpreter behind *python* (``sys.executable``)."""
    if python is None:
        paths = sysconfig.get_paths(vars={"base": sys.base_prefix,
                                          "platbase": sys.base_exec_prefix})
        return Path(paths["purelib"])
    done = subprocess.run([python, "-I", "-c", _BASE_PURELIB], capture_output=True, text=True,
                          check=True)
    return Path(done.stdout.strip())


def _shm_create(key: int, secret: str) -> int:
    """Create a System V segment with ``key`` (it must be new), holding ``secret``."""
    shmid = int(_libc.shmget(key, _SHM_SIZE, _IPC_CREAT | _IPC_EXCL | 0o666))
    if shmid < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), f"shmget({key:#x})")
    address = _libc.shmat(shmid, None, 0)
    if address is not None and address != ctypes.c_void_p(-1).value:
        ctypes.memmove(address, secret.encode(), len(secret))
        _libc.shmdt(address)
    return shmid


def _shm_remove(shmid: int) -> None:
    """Mark a System V segment for removal."""
    if _libc.shmctl(shmid, _IPC_RMID, None) < 0:
        errno = ctypes.get_errno()
        if errno not in (22, 43):  # EINVAL, EIDRM: already gone
            raise OSError(errno, os.strerror(errno), f"shmctl({shmid}, IPC_RMID)")


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while cleaning up; raise KeyboardInterrupt afterwards if any came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: types.FrameType | None) -> None:
        caught.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    if caught:
        raise KeyboardInterrupt(f"signal {caught[0]} during the bait's removal")


def _terminate(signum: int, frame: types.FrameType | None) -> None:
    """SIGTERM handler: unwind like Ctrl-C so the ``with`` block removes the bait."""
    raise KeyboardInterrupt(f"signal {signum}")


class _Listeners:
    """TCP, UDP and abstract-unix listeners served by one daemon thread that counts contacts."""

    def __init__(self, abstract_name: str, socket_path: Path) -> None:
        """Bind every socket; start nothing yet."""
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.pathname = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socket_path = socket_path
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("0.0.0.0", 0))
        self.tcp.listen(64)
        self.udp.bind(("0.0.0.0", 0))
        self.unix.bind("\0" + abstract_name)
        self.unix.listen(64)
        self.pathname.bind(str(socket_path))
        os.chmod(socket_path, 0o777)  # any build's uid could connect, but for the view
        self.pathname.listen(64)
        self.tcp_by_address: dict[str, int] = {}
        self.udp_datagrams = 0
        self.abstract_connections = 0
        self.pathname_connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="bj-audit-bait", daemon=True)

    def start(self) -> None:
        """Start counting in the background."""
        self._thread.start()

    def _serve(self) -> None:
        sockets = [self.tcp, self.udp, self.unix, self.pathname]
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(sockets, [], [], _POLL_SECONDS)
            except (OSError, ValueError):
                return
            for sock in ready:
                with contextlib.suppress(OSError):
                    self._handle(sock)

    def _handle(self, sock: socket.socket) -> None:
        if sock is self.udp:
            sock.recvfrom(65536)
            self.udp_datagrams += 1
            return
        conn, _ = sock.accept()
        with conn:
            if sock is self.tcp:
                local = str(conn.getsockname()[0])
                self.tcp_by_address[local] = self.tcp_by_address.get(local, 0) + 1
            elif sock is self.pathname:
                self.pathname_connections += 1
            else:
                self.abstract_connections += 1

    def close(self) -> None:
        """Stop the thread and close the sockets."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for sock in (self.tcp, self.udp, self.unix, self.pathname):
            sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()


class Bait:
    """Plants the audit's bait on entering, removes every trace of it on leaving."""

    def __init__(self, workdir: Path, tag: str, *, python: str | None = None) -> None:
        """Prepare (plant nothing yet); ``tag`` is short, alphanumeric, ``-`` or ``_``.

        *python* is the interpreter the audited builds run on (its base installation's
        site-packages is the target of the .pth and sitecustomize probes); default: this one.
        """
        if not _TAG.fullmatch(tag):
            raise BaitError(f"bad bait tag {tag!r}: use letters, digits, '-' and '_'")
        self.workdir = Path(workdir).absolute()
        self.tag = tag
        self.python = python
        self.name = f"bj-audit-{tag}"
        self.home = self.workdir / "home"
        self.unavailable: dict[str, str] = {}
        """Vector id -> why its bait could not be planted on this host."""
        self.notes: list[str] = []
        """Remarks on how the bait was planted (fallbacks, pre-existing paths)."""
        self.canaries: dict[str, str] = {}
        """Vector id -> the fake secret planted for it."""
        self.cleanup_errors: list[str] = []
        """What ``remove()`` could not undo (empty when the host is as it was)."""
        self.secrets: dict[str, str] = {"cred_shadow": "/etc/shadow"}
        self.writes: dict[str, str] = self._write_paths()
        self.host_address = "127.0.0.1"
        self.victim: subprocess.Popen[bytes] | None = None
        self.shm_key: int | None = None
        self.posix_shm: Path | None = None
        self.setuid_binary: Path | None = None
        self.host_tmp_marker: Path | None = None
        self.view: dict[str, str] = {}
        """Where the view's bait lies: etc, opt, srv, cache -> a secret file outside the view."""
        self._listeners: _Listeners | None = None
        self._undo: list[Undo] = []
        self._traces: list[Path] = []
        self._project_dirs: list[Path] = []
        self.bashrc_text = ""
        """The ~/.bashrc as planted (shell_profile compares against it)."""
        self._old_sigterm: Any = None
        self._planted = False

    # -- the context manager --------------------------------------------------------------

    def __enter__(self) -> Bait:
        """Plant everything; on a failure remove what was planted and re-raise."""
        self.plant()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: types.TracebackType | None) -> None:
        """Remove every trace, whatever ended the block."""
        self.remove()

    def plant(self) -> None:
        """Plant all the bait (called by ``__enter__``)."""
        if self._planted:
            return
        self._check_writes_are_new()  # before anything exists that remove() would delete
        self._planted = True
        atexit.register(self.remove)
        self._catch_sigterm()
        try:
            for step in self._steps():
                step()
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Remove every planted object and every trace the probes left; idempotent."""
        self._restore_sigterm()
        with _signals_deferred():
            for project_dir in self._project_dirs:
                self._run_undo(functools.partial(kill_inside, project_dir))
            # A detached daemon keeps neither its cwd nor a file there (under a profile that
            # does not kill it): it still carries the bait's environment.
            self._run_undo(functools.partial(kill_carrying, f"bj-audit-{self.tag}-".encode()))
            written = [Path(path) for path in self.writes.values()
                       if os.path.isabs(path) and self._planted]
            for path in [*self._traces, *written]:
                self._run_undo(functools.partial(_discard, path))
            self._traces.clear()
            while self._undo:
                self._run_undo(self._undo.pop())
            atexit.unregister(self.remove)

    def _run_undo(self, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as error:  # cleanup goes on; the failure is reported
            self.cleanup_errors.append(f"{getattr(step, '__name__', step)}: {error}")

    def _catch_sigterm(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, _terminate)

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    # -- what the build and the auditor get -----------------------------------------------

    def config(self, project_dir: Path) -> dict[str, Any]:
        """The content of the probe project's audit-config.json (see ``vectors.CONFIG_KEYS``)."""
        project_dir = Path(project_dir).absolute()
        if project_dir not in self._project_dirs:
            self._project_dirs.append(project_dir)
        return {
            "home": str(self.home),
            "secrets": dict(self.secrets),
            "env_tokens": list(ENV_TOKENS),
            "parent_pid": os.getpid(),
            "victim_pid": self.victim.pid if self.victim else None,
            "host_address": self.host_address,
            "tcp_port": self._listeners.tcp.getsockname()[1] if self._listeners else None,
            "udp_port": self._listeners.udp.getsockname()[1] if self._listeners else None,
            "abstract_socket": self.name if self._listeners else None,
            "unix_socket": str(self._listeners.socket_path) if self._listeners else None,
            "view": dict(self.view),
            "sysv_shm_key": self.shm_key,
            "posix_shm": str(self.posix_shm) if self.posix_shm else None,
            "writes": dict(self.writes),
            "heartbeat": str(project_dir / "heartbeat.txt"),
            "setid_left": str(project_dir / SETID_LEFT),
            "setuid_binary": str(self.setuid_binary) if self.setuid_binary else None,
            "host_tmp_marker": str(self.host_tmp_marker) if self.host_tmp_marker else None,
        }

    def env(self) -> dict[str, str]:
        """The audited build's environment: ours, the planted tokens, and HOME = the bait home."""
        tokens = {name: self.canaries.get(f"env:{name}", _canary(self.tag, name.lower()))
                  for name in ENV_TOKENS}
        return {**os.environ, **tokens, "HOME": str(self.home)}

    @property
    def tcp_connections(self) -> int:
        """Connections the TCP listener accepted (on any address)."""
        return sum(self.tcp_by_address.values())

    @property
    def tcp_by_address(self) -> dict[str, int]:
        """Accepted TCP connections per local address they were made to."""
        return dict(self._listeners.tcp_by_address) if self._listeners else {}

    @property
    def udp_datagrams(self) -> int:
        """Datagrams the UDP socket received."""
        return self._listeners.udp_datagrams if self._listeners else 0

    @property
    def unix_socket_connections(self) -> int:
        """Connections the pathname unix listener (a host service's socket) accepted."""
        return self._listeners.pathname_connections if self._listeners else 0

    @property
    def abstract_connections(self) -> int:
        """Connections the abstract unix listener accepted."""
        return self._listeners.abstract_connections if self._listeners else 0

    def add_trace(self, path: Path) -> None:
        """Remove ``path`` in ``remove()`` too (only a file named like the pth_build_env bait)."""
        path = Path(path)
        if path.name != self.writes["pth_build_env"]:
            raise BaitError(f"refusing to register {path} as a trace of bait {self.name}")
        if path not in self._traces:
            self._traces.append(path)

    # -- planting ---------------------------------------------------------------------------

    def _write_paths(self) -> dict[str, str]:
        purelib = _base_purelib(self.python)
        module = f"bj_audit_{self.tag.replace('-', '_')}_sitecustomize.py"
        cron_dir = Path("/etc/cron.d")
        cron = cron_dir / self.name if cron_dir.is_dir() else Path(f"/etc/{self.name}-cron")
        return {
            "pth_interpreter": str(purelib / f"{self.name}.pth"),
            "pth_build_env": f"{self.name}.pth",
            "sitecustomize": str(purelib / module),
            "cron": str(cron),
            "pip_conf": str(self.home / ".config" / "pip" / "pip.conf"),
            "write_etc": f"/etc/{self.name}",
            "other_build": str(self.workdir / "other-build" / "src" / "pwned"),
            "other_output": str(self.workdir / "other-build" / "dist" / "pwned"),
            "shared_cache": str(self.workdir / "cache" / "pip" / "pwned"),
            "tmp_shared": f"/tmp/{self.name}-written",
        }

    def _check_writes_are_new(self) -> None:
        ours = {name: str(self.workdir / name) for name in _WORKDIR_ENTRIES}
        for what, path in {**self.writes, **ours}.items():
            if os.path.isabs(path) and os.path.lexists(path):
                raise BaitError(f"{what}: {path} exists already (left over from another "
                                "audit with the same tag?); remove it or use another tag")

    def _steps(self) -> list[Undo]:
        return [self._plant_workdir, self._plant_home, self._plant_host_address,
                self._plant_victim, self._plant_listeners, self._plant_other_user,
                self._plant_run_secret, self._plant_k8s_token, self._plant_sysv_shm,
                self._plant_posix_shm, self._plant_setuid, self._plant_tmp_marker,
                self._plant_sibling_dirs, self._plant_view]

    def _optional(self, vector: str, plant: Callable[[], None], needs_root: bool = False) -> None:
        """Plant one optional piece; if the host does not allow it, record why."""
        if needs_root and not _is_root():
            self.unavailable[vector] = "needs root"
            return
        try:
            plant()
        except OSError as error:
            self.unavailable[vector] = f"could not plant: {error}"

    def _plant_workdir(self) -> None:
        created = _make_dirs(self.workdir, 0o755)
        if created:
            self._undo.append(lambda: shutil.rmtree(created[0], ignore_errors=True))
            return
        mode = self.workdir.stat().st_mode & 0o7777
        self.workdir.chmod(0o755)
        self._undo.append(lambda: self.workdir.chmod(mode))

    def _plant_home(self) -> None:
        _make_dirs(self.home, 0o700)
        self._undo.append(lambda: shutil.rmtree(self.home, ignore_errors=True))
        netrc = self._secret("cred_home_netrc")
        _write(self.home / ".netrc",
               f"machine pypi.example.invalid login bj-audit password {netrc}\n", 0o600)
        _make_dirs(self.home / ".ssh", 0o700)
        _write(self.home / ".ssh" / "id_ed25519", _ssh_key(self._secret("cred_home_ssh")), 0o600)
        cloud = self._secret("cred_home_cloud")
        _make_dirs(self.home / ".aws", 0o700)
        _write(self.home / ".aws" / "credentials", "[default]\naws_access_key_id = "
               f"AKIABJAUDIT\naws_secret_access_key = {cloud}\n", 0o600)
        _make_dirs(self.home / ".docker", 0o700)
        _write(self.home / ".docker" / "config.json",
               f'{{"auths": {{"registry.example.invalid": {{"auth": "{cloud}"}}}}}}\n', 0o600)
        self.bashrc_text = f"# bashrc planted by buildjail audit {self.tag}\nexport PS1='$ '\n"
        _write(self.home / ".bashrc", self.bashrc_text, 0o644)
        for name in ENV_TOKENS:
            self.canaries[f"env:{name}"] = _canary(self.tag, name.lower())

    def _secret(self, vector: str) -> str:
        self.canaries[vector] = _canary(self.tag, vector)
        return self.canaries[vector]

    def _plant_host_address(self) -> None:
        self.host_address, note = _host_address()
        if note:
            self.notes.append(note)

    def _plant_victim(self) -> None:
        env = {"PATH": "/usr/bin:/bin", "VICTIM_SECRET": self._secret("victim")}
        # setpriv sets the parent-death signal and execs sleep: no leftover if we are SIGKILLed
        guard = ["/usr/bin/setpriv", "--pdeathsig", "KILL"] if os.path.exists(
            "/usr/bin/setpriv") else []
        self.victim = subprocess.Popen(
            [*guard, "/bin/sleep", "3600"], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)
        self._undo.append(self._kill_victim)

    def _kill_victim(self) -> None:
        if self.victim is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.victim.kill()
        self.victim.wait(timeout=10)

    def _plant_listeners(self) -> None:
        listeners = _Listeners(self.name, self.workdir / "service.sock")
        self._listeners = listeners
        self._undo.append(listeners.close)
        listeners.start()

    def _plant_other_user(self) -> None:
        self._optional("cred_other_user", self._other_user_home, needs_root=True)

    def _other_user_home(self) -> None:
        home = Path("/home") / self.name
        created = _make_dirs(home / ".ssh", 0o755)
        self._undo.append(_remove_dirs(created))
        key = home / ".ssh" / "id_ed25519"
        _write(key, _ssh_key(self._secret("cred_other_user")), 0o644)
        self._undo.append(key.unlink)
        for path in (home, home / ".ssh", key):
            os.chown(path, 65534, 65534)
        self.secrets["cred_other_user"] = str(key)

    def _plant_run_secret(self) -> None:
        self._optional("cred_run_secrets", self._run_secret, needs_root=True)

    def _run_secret(self) -> None:
        self._undo.append(_remove_dirs(_make_dirs(_RUN_SECRETS, 0o755)))
        path = _RUN_SECRETS / self.name
        _write(path, self._secret("cred_run_secrets") + "\n", 0o444)
        self._undo.append(path.unlink)
        self.secrets["cred_run_secrets"] = str(path)

    def _plant_k8s_token(self) -> None:
        if _is_root():
            _clear_stale_k8s_token()
        if os.path.lexists(_K8S_TOKEN):
            self.secrets["cred_k8s_token"] = str(_K8S_TOKEN)
            self.notes.append(f"{_K8S_TOKEN} exists already: the real token is the bait")
            return
        self._optional("cred_k8s_token", self._k8s_token, needs_root=True)

    def _k8s_token(self) -> None:
        self._undo.append(_remove_dirs(_make_dirs(_K8S_TOKEN.parent, 0o755)))
        _write(_K8S_TOKEN, _K8S_TOKEN_PREFIX + self._secret("cred_k8s_token"), 0o644)
        self._undo.append(_K8S_TOKEN.unlink)
        self.secrets["cred_k8s_token"] = str(_K8S_TOKEN)

    def _plant_sysv_shm(self) -> None:
        self._optional("sysv_shm", self._sysv_shm)

    def _sysv_shm(self) -> None:
        base = (zlib.crc32(self.name.encode()) & 0x3FFFFFFF) | 0x40000000
        secret = self._secret("sysv_shm")
        for key in range(base, base + 16):
            try:
                shmid = _shm_create(key, secret)
            except FileExistsError:
                continue
            self.shm_key = key
            self._undo.append(functools.partial(_shm_remove, shmid))
            return
        raise FileExistsError(f"16 System V keys from {base:#x} are taken")

    def _plant_posix_shm(self) -> None:
        self._optional("posix_shm", self._posix_shm)

    def _posix_shm(self) -> None:
        path = Path("/dev/shm") / self.name
        _write(path, self._secret("posix_shm") + "\n", 0o644)
        self._undo.append(path.unlink)
        self.posix_shm = path

    def _plant_setuid(self) -> None:
        self._optional("setuid", self._setuid, needs_root=True)

    def _setuid(self) -> None:
        path = self.workdir / "setuid-id"
        shutil.copyfile("/usr/bin/id", path)
        self._undo.append(path.unlink)
        os.chown(path, 0, 0)
        path.chmod(0o4755)
        self.setuid_binary = path

    def _plant_tmp_marker(self) -> None:
        self._optional("tmp_shared", self._tmp_marker)

    def _tmp_marker(self) -> None:
        path = Path("/tmp") / self.name
        _write(path, self._secret("tmp_shared") + "\n", 0o644)
        self._undo.append(path.unlink)
        self.host_tmp_marker = path

    def _plant_view(self) -> None:
        """Secrets where the old view showed them: /etc, /opt, /srv, a shared cache."""
        self._optional("view_etc", functools.partial(
            self._view_secret, "etc", Path(f"/etc/{self.name}.conf")), needs_root=True)
        for key, top in (("opt", "/opt"), ("srv", "/srv"), ("cache", "/var/cache")):
            self._optional("view_system", functools.partial(
                self._view_secret, key, Path(top) / self.name / "credentials"), needs_root=True)

    def _view_secret(self, key: str, path: Path) -> None:
        self._undo.append(_remove_dirs(_make_dirs(path.parent, 0o755)))
        secret = self._secret(f"view_{key}")
        _write(path, f"[global]\nindex-url = https://bj:{secret}@index.example.invalid/\n",
               0o644)
        self._undo.append(path.unlink)
        self.view[key] = str(path)

    def _plant_sibling_dirs(self) -> None:
        tree = self.workdir / "other-build"
        for directory in (tree / "src", tree / "dist", self.workdir / "cache" / "pip"):
            _make_dirs(directory, 0o755)
        self._undo.append(lambda: shutil.rmtree(tree, ignore_errors=True))
        self._undo.append(lambda: shutil.rmtree(self.workdir / "cache", ignore_errors=True))
        _write(tree / "src" / "pyproject.toml", '[project]\nname = "other"\nversion = "1"\n',
               0o644)


def _ssh_key(secret: str) -> str:
    return f"-----BEGIN OPENSSH PRIVATE KEY-----\n{secret}\n-----END OPENSSH PRIVATE KEY-----\n"


# -- observing from outside -------------------------------------------------------------------


def _proc_links(pid: str) -> Iterator[str]:
    """The cwd, the open files and the arguments of a process (whatever can be read)."""
    with contextlib.suppress(OSError):
        yield os.readlink(f"/proc/{pid}/cwd")
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as stream:
        yield from stream.read().decode(errors="replace").split("\0")
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                yield os.readlink(f"/proc/{pid}/fd/{fd}")


def _ancestors() -> set[int]:
    """Our pid and those of our ancestors: never killed."""
    found, pid = {os.getpid()}, os.getppid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as stream:
                pid = int(stream.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return found


def processes_inside(directory: Path) -> list[int]:
    """Pids (not ours nor our ancestors') with cwd, an open file or an argument in ``directory``."""
    prefix = str(Path(directory).absolute())
    spared = _ancestors()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in spared:
            continue
        if any(link == prefix or link.startswith(prefix + "/") for link in _proc_links(name)):
            found.append(int(name))
    return found


def kill_inside(directory: Path) -> list[int]:
    """SIGKILL every process ``processes_inside(directory)`` finds; return their pids."""
    killed = []
    for pid in processes_inside(directory):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def kill_carrying(marker: bytes, within: float = 2.0) -> list[int]:
    """SIGKILL every process (not ours nor our ancestors) whose environment holds *marker*,
    and wait until they are gone; return their pids."""
    spared = _ancestors()
    killed = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in spared:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as stream:
                if marker not in stream.read():
                    continue
            os.kill(int(name), signal.SIGKILL)
        except OSError:
            continue
        killed.append(int(name))
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}/environ")
                                              and _proc_status(pid).get("State", "")[:1] != "Z"
                                              for pid in killed):
        time.sleep(0.02)
    return killed


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _daemon_evidence(heartbeat: Path, project_dir: Path) -> str:
    first = _size(heartbeat)
    time.sleep(1.0)
    second = _size(heartbeat)
    killed = kill_inside(project_dir)
    after = f"; killed pids {killed} left in the project dir" if killed else ""
    if first is None and second is None:
        return f"no heartbeat file {heartbeat}{after}"
    if second is not None and (first is None or second > first):
        return f"heartbeat still growing 1 s after the build: {first or 0} -> {second} bytes{after}"
    return f"heartbeat stopped at {second} bytes (no growth in 1 s after the build){after}"


def _victim_evidence(bait: Bait) -> str:
    victim = bait.victim
    if victim is None:
        return "no victim process was planted"
    if victim.poll() is not None:
        return f"victim pid {victim.pid} is dead (exit status {victim.returncode})"
    status = _proc_status(victim.pid)
    state, tracer = status.get("State", "?"), status.get("TracerPid", "0")
    if state.startswith(("T", "t")):
        return f"victim pid {victim.pid} is stopped (state {state})"
    traced = f", traced by pid {tracer}" if tracer != "0" else ""
    return f"victim pid {victim.pid} alive and running (state {state}){traced}"


def _proc_status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as stream:
            lines = stream.read().splitlines()
    except OSError:
        return {}
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def _exists(path: Path) -> str:
    return f"{path} exists" if os.path.lexists(path) else f"{path} absent"


def _build_env_pth(bait: Bait, config: dict[str, Any],
                   probe_results: dict[str, dict[str, Any]]) -> str:
    """Find the probe-reported build-env .pth, register it for removal, say if it exists."""
    detail = str(probe_results.get("pth_build_env", {}).get("detail", ""))
    name = bait.writes["pth_build_env"]
    match = re.search(rf"(/[^\s'\"]*/{re.escape(name)})", detail)
    if match:
        path = Path(match.group(1))
    elif config.get("build_env_site"):
        path = Path(config["build_env_site"]) / name
    else:
        return "the probe reported no build-environment path; cannot check from outside"
    bait.add_trace(path)
    return _exists(path)


def _network_evidence(bait: Bait, config: dict[str, Any]) -> dict[str, str]:
    by_address, host = bait.tcp_by_address, str(config["host_address"])
    total = sum(by_address.values())
    if host.startswith("127."):
        shared = (f"TCP listener accepted {total} connection(s) in all (host address is "
                  f"{host}: net_tcp and host_loopback cannot be told apart)")
        tcp, loop = shared, shared
    else:
        tcp = f"TCP listener accepted {by_address.get(host, 0)} connection(s) on {host}"
        loop = f"TCP listener accepted {by_address.get('127.0.0.1', 0)} connection(s) on 127.0.0.1"
    return {
        "net_tcp": tcp,
        "host_loopback": loop,
        "net_udp": f"UDP socket received {bait.udp_datagrams} datagram(s)",
        "abstract_socket": f"abstract socket accepted {bait.abstract_connections} connection(s)",
        "host_unix_socket": f"the host's unix socket accepted {bait.unix_socket_connections} "
                            "connection(s)",
    }


def _bashrc_evidence(bait: Bait, home: Path) -> str:
    try:
        now = (home / ".bashrc").read_text(errors="replace")
    except OSError as error:
        return f"~/.bashrc unreadable after the build: {error}"
    if now == bait.bashrc_text:
        return "~/.bashrc unchanged"
    return f"~/.bashrc changed: {len(bait.bashrc_text)} -> {len(now)} characters"


def observe(bait: Bait, config: dict[str, Any],
            probe_results: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Evidence seen from outside after a build, per vector id (for the auditor's verdicts).

    Call it right after the build returned (it takes about a second: the daemon check).
    It kills any process left with its cwd or an open file in the project directory.
    """
    heartbeat = Path(config["heartbeat"])
    evidence = {"daemon": _daemon_evidence(heartbeat, heartbeat.parent)}
    evidence.update(_network_evidence(bait, config))
    for vector, path in config["writes"].items():
        if vector != "pth_build_env":
            evidence[vector] = _exists(Path(path))
    evidence["pth_build_env"] = _build_env_pth(bait, config, probe_results)
    evidence["signal"] = _victim_evidence(bait)
    evidence["shell_profile"] = _bashrc_evidence(bait, Path(config["home"]))
    evidence["setid_tree"] = _set_id_evidence(Path(config["setid_left"]))
    return evidence


SETID_LEFT = "setid-left"
"""The file in the probe project the ``setid_tree`` probe tries to make set-uid, set-gid."""


def _set_id_evidence(path: Path) -> str:
    """What the caller finds at *path* after the build; a file still set-id is removed."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return f"{path} absent"
    except OSError as error:
        return f"{path} unreadable after the build: {error.strerror}"
    mode = stat.S_IMODE(info.st_mode)
    kept = mode & (stat.S_ISUID | stat.S_ISGID)
    if not stat.S_ISREG(info.st_mode) or not kept:
        return f"{path} mode {mode:04o}, uid {info.st_uid}: no set-id bit"
    path.unlink()  # a set-uid program of the caller's must not outlive the verdict
    return f"{path} mode {mode:04o}, uid {info.st_uid}: kept set-id bits"
