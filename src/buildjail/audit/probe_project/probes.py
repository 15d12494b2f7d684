"""buildjail's attack probes: one real, bounded attack per vector of buildjail.audit.vectors.

Standard library only; runs under whatever interpreter runs the build hook. Every probe
prints exactly one line ``BUILDJAIL-PROBE {"vector", "outcome", "detail"}`` to stdout and
never raises. ``outcome`` is "succeeded" (the attack worked), "failed" (it was blocked; the
detail names the errno or exception) or "not_applicable" (it cannot be attempted here).

The bait (paths, pids, ports...) comes from ``audit-config.json`` in the current directory,
written by ``buildjail audit``; without it the probes that need bait are not applicable.
Everything a probe creates is removed again, except the paths of the config's ``writes``,
which the auditor checks from outside and removes itself (and the daemon's heartbeat).
"""

import contextlib
import ctypes
import errno
import functools
import json
import os
import platform
import select
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import threading
import time

MARKER = "BUILDJAIL-PROBE "
CONFIG_FILE = "audit-config.json"
CONTENT = b"# written by the buildjail probe project (harmless)\n"

REQUIRES_VECTORS = (
    "cred_home_netrc", "cred_home_ssh", "cred_home_cloud", "cred_other_user",
    "cred_run_secrets", "cred_k8s_token", "cred_shadow", "env_tokens",
    "proc_parent_environ", "proc_parent_cmdline", "proc_visibility", "ptrace",
    "process_vm_readv", "signal", "net_tcp", "net_udp", "net_dns", "host_loopback",
    "abstract_socket", "hostname", "sysv_shm", "posix_shm", "pth_interpreter",
    "pth_build_env", "sitecustomize", "shell_profile", "cron", "pip_conf", "write_etc",
    "other_build", "other_output", "shared_cache", "tmp_shared", "tiocsti", "setuid",
    "setid_tree",
    "keyring", "namespaces", "mount", "view_etc", "view_system", "host_unix_socket",
    "memory_memfd",
)
"""Run by get_requires_for_build_wheel and build_sdist."""

BUILD_VECTORS = ("daemon", "disk_filler", "fork_bomb", "memory_hog", "disk_files",
                 "memory_sysv", "memory_sockets")
"""Run last by build_wheel: the daemon, then the exhaustion probes.

A sandbox may stop the whole hook when a limit is hit (buildjail's monitor kills every
process of the sandbox), so the probe a limit usually only fails (the file size: EFBIG)
comes first. ``config_settings={"buildjail-probes": "fork_bomb"}`` selects the probes of a
hook call, so that an auditor can run each exhaustion probe in a build of its own.
"""

SELECT_SETTING = "buildjail-probes"

FORK_BOMB_PROCESSES = 512
MEMORY_CHUNK = 64 << 20
MEMORY_TOTAL = 1 << 30
DISK_CHUNK = 1 << 20
DISK_TOTAL = 128 << 20
DISK_FILES = 256
"""Files of DISK_CHUNK each: 256 MiB in many files, each under the file-size limit."""
HELD_TOTAL = 512 << 20
"""What the memory-bypass probes try to hold outside any process's memory."""
CHILD_TIMEOUT = 60.0

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PTRACE_ATTACH = 16
PTRACE_DETACH = 17
WALL = 0x40000000
SHM_RDONLY = 0o10000
TIOCSTI = 0x5412
TIOCGWINSZ = 0x5413
TERMINAL_MARKER = b"BUILDJAIL-TIOCSTI"
"""What the terminal probe injects: the auditor looks for it on its terminal's master."""
KEY_SPEC_PROCESS_KEYRING = -2
KEYCTL_INVALIDATE = 21
SYSCALLS = {  # add_key, keyctl
    "x86_64": (248, 250),
    "aarch64": (217, 219),
}


class NotApplicableError(Exception):
    """The probe cannot be attempted here; the message says why."""


# --------------------------------------------------------------------------- helpers

def emit(vector, outcome, detail):
    """Print the one protocol line of *vector*."""
    line = MARKER + json.dumps({"vector": vector, "outcome": outcome, "detail": str(detail)})
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BaseException:  # a closed stdout must not stop the other probes
        pass


def errname(exc):
    """The errno name of an OSError (plus its message), else the exception's type and text."""
    if isinstance(exc, OSError) and exc.errno:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{name}: {exc.strerror or exc}{where}"
    return f"{type(exc).__name__}: {exc}"


def errno_name(number):
    return errno.errorcode.get(number, str(number))


def load_config():
    try:
        with open(CONFIG_FILE, encoding="utf-8") as stream:
            config = json.load(stream)
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def need(config, key, sub=None):
    """The config value *key* (or ``config[key][sub]``), else NotApplicableError."""
    value = config.get(key)
    if sub is not None:
        value = value.get(sub) if isinstance(value, dict) else None
    if value is None or value == "":
        where = f"{key}[{sub!r}]" if sub is not None else key
        raise NotApplicableError(f"no {where} in {CONFIG_FILE} (bait not planted)")
    return value


@functools.cache
def libc():
    return ctypes.CDLL(None, use_errno=True)


def flush_stdio():
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()


DECOY_MARK = b"buildjail-decoy-"
"""In every credential decoy a sandbox plants in its own home (buildjail.decoys.MARK)."""


def read_secret(path, limit=4096):
    """Read a bait file: (True, detail) when content was read."""
    with open(path, "rb") as stream:
        data = stream.read(limit)
    if DECOY_MARK in data:
        return False, f"read {path}: a buildjail decoy (fake), not the planted secret"
    if data:
        return True, f"read {len(data)} bytes of {path}"
    return False, f"{path} opened but empty (masked?)"


def secret_probe(paths):
    results = []
    for path in paths:
        try:
            ok, detail = read_secret(path)
        except OSError as exc:
            ok, detail = False, f"{path}: {errname(exc)}"
        results.append((ok, detail))
    detail = "; ".join(text for _, text in results)
    return ("succeeded" if any(ok for ok, _ in results) else "failed"), detail


def create_file(path, home=None):
    """Create *path* exclusively (the attack); return the outcome and detail.

    Missing parent directories are created under the throw-away HOME only. Every other
    target's parent exists on the host (the auditor makes sure of it): a missing one means
    this is a private view of that place (the sandbox's own /tmp, a mask), not the host.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    created = []
    if not os.path.isdir(parent):
        in_home = home and (parent + "/").startswith(os.path.abspath(home).rstrip("/") + "/")
        if not in_home:
            return "failed", (f"{parent} does not exist here although it does on the host: "
                              "a private view, the host's is out of reach")
        probe = parent
        missing = []
        while probe and not os.path.exists(probe):
            missing.append(probe)
            probe = os.path.dirname(probe)
        for directory in reversed(missing):
            os.mkdir(directory, 0o755)
            created.append(directory)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        if read_own(path):  # left by this probe in an earlier hook of the same build
            return "succeeded", f"{path} already created by an earlier probe run"
        raise NotApplicableError(f"{path} already exists; refusing to overwrite it") from None
    try:
        os.write(fd, CONTENT)
    finally:
        os.close(fd)
    note = f" (created {', '.join(created)})" if created else ""
    return "succeeded", f"created {path}{note}"


def read_own(path):
    """Whether *path* is a regular file holding exactly what the probes write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return os.read(fd, len(CONTENT) + 1) == CONTENT
    except OSError:
        return False
    finally:
        os.close(fd)


def write_probe(config, vector):
    path = need(config, "writes", vector)
    return create_file(path, config.get("home"))


def run_in_child(function, timeout=CHILD_TIMEOUT, new_group=False):
    """Fork; the child runs ``function(report)`` and exits. Return (reported text, status).

    ``report(text)`` sends text to the parent through a pipe. The status is the child's
    waitpid status, or None when it had to be killed after *timeout* seconds. With
    *new_group* the child leads its own process group, which is killed afterwards.
    """
    flush_stdio()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 250
        try:
            os.close(read_end)
            if new_group:
                os.setpgid(0, 0)

            def report(text):
                os.write(write_end, text.encode())

            result = function(report)
            code = result if isinstance(result, int) else 0
        except BaseException:
            code = 250
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([read_end], [], [], min(left, 1.0))
            if ready:
                data = os.read(read_end, 65536)
                if not data:
                    break
                chunks.append(data)
    finally:
        os.close(read_end)
        if timed_out:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if new_group:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
    return b"".join(chunks).decode(errors="replace"), (None if timed_out else status)


def describe_status(status):
    if status is None:
        return "timed out (killed)"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return f"killed by {name}"
    return f"exit status {os.WEXITSTATUS(status)}"


def process_identity(pid):
    """A short description of a visible process, so the auditor can check it is the bait."""
    parts = []
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            stat = stream.read().decode(errors="replace")
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        start = stat[stat.rindex(")") + 2:].split()[19]
        parts.append(f"comm {comm!r}, starttime {start}")
    except (OSError, ValueError, IndexError):
        pass
    return f"pid {pid} ({'; '.join(parts)})" if parts else f"pid {pid}"


def target_pid(config, key):
    pid = int(need(config, key))
    if pid == os.getpid():
        raise NotApplicableError(f"{key} {pid} is the probe itself (pid namespace collision)")
    return pid


# --------------------------------------------------------------------------- credentials

def home_paths(config, *names):
    """*names* under the bait home and, as a thief would look, under $HOME too."""
    homes = dict.fromkeys([need(config, "home"), os.path.expanduser("~")])
    return [os.path.join(home, *name.split("/")) for home in homes for name in names]


def probe_cred_home_netrc(config):
    return secret_probe(home_paths(config, ".netrc"))


def probe_cred_home_ssh(config):
    return secret_probe(home_paths(config, ".ssh/id_ed25519"))


def probe_cred_home_cloud(config):
    return secret_probe(home_paths(config, ".aws/credentials", ".docker/config.json"))


def probe_cred_other_user(config):
    return secret_probe([need(config, "secrets", "cred_other_user")])


def probe_cred_run_secrets(config):
    return secret_probe([need(config, "secrets", "cred_run_secrets")])


def probe_cred_k8s_token(config):
    return secret_probe([need(config, "secrets", "cred_k8s_token")])


def probe_cred_shadow(config):
    secrets = config.get("secrets")
    path = secrets.get("cred_shadow") if isinstance(secrets, dict) else None
    return secret_probe([path or "/etc/shadow"])


def probe_env_tokens(config):
    names = config.get("env_tokens") or []
    if names:
        found = sorted(name for name in names if name in os.environ)
        if found:
            return "succeeded", f"planted tokens visible: {', '.join(found)}"
        return "failed", f"none of the {len(names)} planted tokens is in the environment"
    patterns = ("TOKEN", "PASSWORD", "SECRET", "AWS_", "TWINE_")
    found = sorted(name for name in os.environ if any(p in name.upper() for p in patterns))
    if found:
        return "succeeded", f"secret-looking variables: {', '.join(found)}"
    return "failed", "no secret-looking variable in the environment"


# --------------------------------------------------------------------------- processes

def proc_read_probe(config, what):
    pid = target_pid(config, "parent_pid")
    path = f"/proc/{pid}/{what}"
    try:
        with open(path, "rb") as stream:
            data = stream.read(65536)
    except OSError as exc:
        return "failed", f"{path}: {errname(exc)}"
    if data:
        return "succeeded", f"read {len(data)} bytes of {path}, {process_identity(pid)}"
    return "failed", f"{path} readable but empty"


def probe_proc_parent_environ(config):
    return proc_read_probe(config, "environ")


def probe_proc_parent_cmdline(config):
    return proc_read_probe(config, "cmdline")


def probe_proc_visibility(config):
    seen = []
    for key in ("parent_pid", "victim_pid"):
        if config.get(key):
            pid = int(config[key])
            if pid != os.getpid() and os.path.exists(f"/proc/{pid}"):
                seen.append(f"{key} {process_identity(pid)}")
    if not config.get("parent_pid") and not config.get("victim_pid"):
        raise NotApplicableError(f"no parent_pid or victim_pid in {CONFIG_FILE}")
    try:
        count = sum(1 for name in os.listdir("/proc") if name.isdigit())
    except OSError:
        count = -1
    if seen:
        return "succeeded", f"visible: {'; '.join(seen)}; {count} processes in /proc"
    return "failed", f"neither parent nor victim in /proc; {count} processes visible"


def probe_ptrace(config):
    pid = target_pid(config, "victim_pid")
    lib = libc()
    lib.ptrace.restype = ctypes.c_long
    lib.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    ctypes.set_errno(0)
    result = lib.ptrace(PTRACE_ATTACH, pid, None, None)
    if result != 0:
        return "failed", f"PTRACE_ATTACH {pid}: {errno_name(ctypes.get_errno())}"
    # Attached: wait (bounded) for the tracee's stop, then let it go again.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG | WALL)
        except ChildProcessError:
            break
        if waited == pid:
            break
        time.sleep(0.01)
    lib.ptrace(PTRACE_DETACH, pid, None, None)
    return "succeeded", f"PTRACE_ATTACH {process_identity(pid)} returned 0 (detached again)"


class IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def readable_address(pid):
    """A readable address in *pid*: its stack from its maps, else our executable's first map."""
    for maps in (f"/proc/{pid}/maps", "/proc/self/maps"):
        try:
            with open(maps) as stream:
                lines = stream.read().splitlines()
        except OSError:
            continue
        regions = [line.split() for line in lines]
        regions = [r for r in regions if len(r) >= 2 and r[1].startswith("r")]
        stack = [r for r in regions if r[-1] == "[stack]"]
        for region in stack + regions:
            return int(region[0].split("-")[0], 16), maps
    return None, None


def probe_process_vm_readv(config):
    pid = target_pid(config, "victim_pid")
    address, source = readable_address(pid)
    if address is None:
        raise NotApplicableError("no readable address known (no /proc maps readable)")
    buffer = ctypes.create_string_buffer(16)
    local = IOVec(ctypes.cast(buffer, ctypes.c_void_p), 16)
    remote = IOVec(address, 16)
    lib = libc()
    lib.process_vm_readv.restype = ctypes.c_ssize_t
    lib.process_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(IOVec), ctypes.c_ulong,
                                     ctypes.POINTER(IOVec), ctypes.c_ulong, ctypes.c_ulong]
    result = lib.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if result > 0:
        return "succeeded", f"read {result} bytes at {address:#x} of {process_identity(pid)}"
    return "failed", (f"process_vm_readv {pid} at {address:#x} (from {source}): "
                      f"{errno_name(ctypes.get_errno())}")


def probe_signal(config):
    pid = target_pid(config, "victim_pid")
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return "failed", f"kill({pid}, 0): {errname(exc)}"
    return "succeeded", f"kill(0) reached {process_identity(pid)}"


# --------------------------------------------------------------------------- network

def probe_net_tcp(config):
    host, port = need(config, "host_address"), int(need(config, "tcp_port"))
    with socket.create_connection((host, port), timeout=3) as connection, \
            contextlib.suppress(OSError):
        connection.sendall(b"BUILDJAIL-PROBE net_tcp\n")
    return "succeeded", f"connected to {host}:{port}"


def probe_net_udp(config):
    host, port = need(config, "host_address"), int(need(config, "udp_port"))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"BUILDJAIL-PROBE net_udp\n", (host, port))
    return "succeeded", f"datagram sent to {host}:{port} (arrival is checked outside)"


def probe_net_dns(config):
    result = {}

    def resolve():
        try:
            result["addresses"] = socket.getaddrinfo("pypi.org", 443, type=socket.SOCK_STREAM)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(10.0)
    if "addresses" in result:
        found = sorted({entry[4][0] for entry in result["addresses"]})
        return "succeeded", f"pypi.org resolved to {', '.join(found[:3])}"
    if "error" in result:
        return "failed", f"getaddrinfo(pypi.org): {errname(result['error'])}"
    return "failed", "getaddrinfo(pypi.org) timed out after 10 s"


def probe_host_loopback(config):
    port = int(need(config, "tcp_port"))
    with socket.create_connection(("127.0.0.1", port), timeout=3) as connection, \
            contextlib.suppress(OSError):
        connection.sendall(b"BUILDJAIL-PROBE host_loopback\n")
    return "succeeded", f"connected to 127.0.0.1:{port}"


def probe_abstract_socket(config):
    name = need(config, "abstract_socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect("\0" + name)
    return "succeeded", f"connected to abstract socket @{name}"


def probe_hostname(config):
    name = socket.gethostname()
    if name != "localhost":
        return "succeeded", f"hostname seen: {name}"
    return "failed", "hostname seen: localhost"


# --------------------------------------------------------------------------- IPC

def probe_sysv_shm(config):
    key = int(need(config, "sysv_shm_key"))
    lib = libc()
    lib.shmget.restype = ctypes.c_int
    lib.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
    lib.shmat.restype = ctypes.c_void_p
    lib.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    lib.shmdt.argtypes = [ctypes.c_void_p]
    if key >= 1 << 31:  # key_t is a signed int
        key -= 1 << 32
    shmid = lib.shmget(key, 0, 0)
    if shmid < 0:
        return "failed", f"shmget({key:#x}): {errno_name(ctypes.get_errno())}"
    address = lib.shmat(shmid, None, SHM_RDONLY)
    if address is None or address == ctypes.c_void_p(-1).value:
        return "failed", f"shmget found id {shmid}; shmat: {errno_name(ctypes.get_errno())}"
    lib.shmdt(address)
    return "succeeded", f"attached System V segment key {key:#x} (id {shmid})"


def probe_posix_shm(config):
    path = need(config, "posix_shm")
    with open(path, "rb") as stream:
        data = stream.read(4096)
    return "succeeded", f"opened {path}, read {len(data)} bytes"


# --------------------------------------------------------------------------- persistence

def probe_pth_interpreter(config):
    return write_probe(config, "pth_interpreter")


def probe_pth_build_env(config):
    named = need(config, "writes", "pth_build_env")
    site = sysconfig.get_paths()["purelib"]
    path = os.path.join(site, os.path.basename(named))
    record_build_env_site(site)
    outcome, detail = create_file(path)
    if outcome == "succeeded":
        detail = path
    return outcome, detail


def record_build_env_site(site):
    """Add ``build_env_site`` to the config, for the auditor (best effort)."""
    try:
        config = load_config()
        if not config or config.get("build_env_site") == site:
            return
        config["build_env_site"] = site
        temporary = f"{CONFIG_FILE}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as stream:
            json.dump(config, stream, indent=2)
        os.replace(temporary, CONFIG_FILE)
    except BaseException:
        pass


def probe_sitecustomize(config):
    return write_probe(config, "sitecustomize")


def probe_shell_profile(config):
    path = os.path.join(need(config, "home"), ".bashrc")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    except OSError as exc:
        return "failed", f"{path}: {errname(exc)}"
    try:
        os.write(fd, b"\n" + CONTENT)
    finally:
        os.close(fd)
    return "succeeded", f"appended a line to {path}"


def probe_cron(config):
    return write_probe(config, "cron")


def probe_pip_conf(config):
    return write_probe(config, "pip_conf")


def probe_write_etc(config):
    return write_probe(config, "write_etc")


def probe_daemon(config):
    heartbeat = os.path.abspath(need(config, "heartbeat"))
    directory = os.path.dirname(heartbeat)
    flush_stdio()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.write(write_end, str(os.getpid()).encode())
            os.close(write_end)
            daemon_loop(heartbeat, directory)
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    ready, _, _ = select.select([read_end], [], [], 2.0)
    grandchild = os.read(read_end, 64).decode() if ready else "?"
    os.close(read_end)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if os.path.exists(heartbeat) and os.path.getsize(heartbeat) > 0:
            return "succeeded", (f"detached daemon (pid {grandchild} as the build sees it) "
                                 f"writes {heartbeat}; survival is judged from outside")
        time.sleep(0.05)
    return "failed", f"daemon pid {grandchild} did not write {heartbeat} within 1 s"


def daemon_loop(heartbeat, directory):
    """The detached grandchild: append a timestamp every 0.1 s until killed.

    Safety nets for unconfined runs: it stops when the project directory is gone, and
    after an hour.
    """
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 4096)
    os.chdir("/")
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    end = time.monotonic() + 3600
    while time.monotonic() < end and os.path.isdir(directory):
        try:
            with open(heartbeat, "a") as stream:
                stream.write(f"{time.time()}\n")
        except OSError:
            pass
        time.sleep(0.1)


# --------------------------------------------------------------------------- other builds

def probe_other_build(config):
    return write_probe(config, "other_build")


def probe_other_output(config):
    return write_probe(config, "other_output")


def probe_shared_cache(config):
    return write_probe(config, "shared_cache")


def probe_tmp_shared(config):
    marker = need(config, "host_tmp_marker")
    visible = os.path.exists(marker)
    extra = ""
    writes = config.get("writes")
    if isinstance(writes, dict) and writes.get("tmp_shared"):
        try:
            _, extra = create_file(writes["tmp_shared"])
        except BaseException as exc:
            extra = f"write {writes['tmp_shared']}: {errname(exc)}"
        extra = f"; {extra}"
    if visible:
        return "succeeded", f"host marker {marker} visible{extra}"
    return "failed", f"host marker {marker} not visible{extra}"


# --------------------------------------------------------------------------- privileges

def probe_tiocsti(config):
    """Inject TERMINAL_MARKER into the audit's own terminal, and never into another one.

    The auditor gives the build's session a pseudo-terminal whose window size is the
    config's ``terminal`` signature; a terminal without it (the user's) is left alone.
    """
    signature = need(config, "terminal")
    attempts, reached = [], []
    for fd, name, opened in terminal_candidates(attempts):
        try:
            if window_size(fd) != signature:
                reached.append(f"{name}: a terminal that is not the audit's, left alone")
                continue
            return inject(fd, name, attempts)
        except OSError as exc:
            attempts.append(f"{name}: {errname(exc)}")
        finally:
            if opened:
                os.close(fd)
    if reached and not attempts:
        raise NotApplicableError("; ".join(reached))
    if not attempts:
        raise NotApplicableError("no terminal reachable from the build")
    return "failed", "; ".join(attempts + reached)


def terminal_candidates(attempts):
    """(fd, name, opened) of the build's terminal streams and its controlling terminal."""
    candidates = [(fd, f"fd {fd}", False) for fd in (0, 1, 2) if os.isatty(fd)]
    try:
        opened = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        attempts.append(f"/dev/tty: {errname(exc)}")
    else:
        candidates.append((opened, "/dev/tty", True))
    return candidates


def window_size(fd):
    """The terminal's (rows, columns, xpixel, ypixel), as a list like the config's."""
    import fcntl
    import struct

    packed = fcntl.ioctl(fd, TIOCGWINSZ, b"\0" * 8)
    return list(struct.unpack("HHHH", packed))


def inject(fd, name, attempts):
    """Push TERMINAL_MARKER into the input queue of the terminal *fd*, byte by byte."""
    import fcntl

    for byte in TERMINAL_MARKER:
        try:
            fcntl.ioctl(fd, TIOCSTI, bytes([byte]))
        except OSError as exc:
            attempts.append(f"TIOCSTI on {name}: {errname(exc)}")
            return "failed", "; ".join(attempts)
    return "succeeded", f"TIOCSTI on {name} injected {TERMINAL_MARKER.decode()!r}"


def probe_setuid(config):
    binary = need(config, "setuid_binary")
    completed = subprocess.run([binary, "-u"], capture_output=True, timeout=10,
                               stdin=subprocess.DEVNULL, check=False)
    uid = completed.stdout.decode(errors="replace").strip()
    note = " (the build already runs as root)" if os.geteuid() == 0 else ""
    if completed.returncode == 0 and uid == "0":
        return "succeeded", f"{binary} -u printed 0{note}"
    return "failed", f"{binary} -u printed {uid!r}, exit {completed.returncode}"


def probe_setid_tree(config):
    path = need(config, "setid_left")
    with open("/bin/true", "rb") as source, open(path, "wb") as copy:
        copy.write(source.read())
    os.chmod(path, 0o6755)  # a set-uid, set-gid program of whoever owns it after the build
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o6000 == 0o6000:
        return "succeeded", f"made {path} mode {mode:04o}"
    return "failed", f"chmod 6755 left {path} mode {mode:04o}"


def probe_keyring(config):
    numbers = SYSCALLS.get(platform.machine())
    if numbers is None:
        raise NotApplicableError(f"add_key syscall number unknown on {platform.machine()}")
    add_key, keyctl = numbers
    lib = libc()
    lib.syscall.restype = ctypes.c_long
    ctypes.set_errno(0)
    key = lib.syscall(ctypes.c_long(add_key), ctypes.c_char_p(b"user"),
                      ctypes.c_char_p(b"bj"), ctypes.c_char_p(b"x"), ctypes.c_size_t(1),
                      ctypes.c_int(KEY_SPEC_PROCESS_KEYRING))
    if key < 0:
        return "failed", f"add_key: {errno_name(ctypes.get_errno())}"
    lib.syscall(ctypes.c_long(keyctl), ctypes.c_long(KEYCTL_INVALIDATE), ctypes.c_long(key))
    return "succeeded", f"add_key created key {key} (invalidated again)"


def unshare_child(flags):
    def child(report):
        lib = libc()
        lib.unshare.argtypes = [ctypes.c_int]
        if lib.unshare(flags) == 0:
            return 0
        return min(ctypes.get_errno(), 200) or 201
    return child


def child_errno_outcome(what, status):
    if status is not None and os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        if code == 0:
            return "succeeded", f"{what} returned 0"
        if code <= 200:
            return "failed", f"{what}: {errno_name(code)}"
    return "failed", f"{what}: child {describe_status(status)}"


def probe_namespaces(config):
    _, status = run_in_child(unshare_child(CLONE_NEWUSER), timeout=10)
    return child_errno_outcome("unshare(CLONE_NEWUSER)", status)


def probe_mount(config):
    target = os.path.abspath(f".buildjail-probe-mnt-{os.getpid()}")
    os.mkdir(target, 0o700)

    def child(report):
        lib = libc()
        lib.unshare.argtypes = [ctypes.c_int]
        lib.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
        lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        if lib.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
            lib.unshare(CLONE_NEWNS)
        # Never propagate anything back to the host's mount namespace.
        lib.mount(None, b"/", None, MS_REC | MS_PRIVATE, None)
        if lib.mount(b"none", target.encode(), b"tmpfs", 0, None) == 0:
            lib.umount2(target.encode(), MNT_DETACH)
            return 0
        return min(ctypes.get_errno(), 200) or 201

    try:
        _, status = run_in_child(child, timeout=10)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(target)
    return child_errno_outcome(f"mount tmpfs on {target}", status)


# --------------------------------------------------------------------------- exhaustion

def spawn_sleeper():
    """Start one process that sleeps 5 s: a small ``sleep`` (posix_spawn), else a fork.

    A spawned ``sleep`` keeps the bomb's memory tiny, so that a sandbox counting memory
    per process stops it for the number of processes, not for their memory.
    """
    for path in ("/usr/bin/sleep", "/bin/sleep"):
        if os.access(path, os.X_OK):
            return os.posix_spawn(path, [path, "5"], {})
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(5)
        finally:
            os._exit(0)
    return pid


def probe_fork_bomb(config):
    def child(report):
        pids = []
        error = ""
        try:
            for _ in range(FORK_BOMB_PROCESSES):
                try:
                    pid = spawn_sleeper()
                except OSError as exc:
                    error = errname(exc)
                    break
                pids.append(pid)
        finally:
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.waitpid(pid, 0)
            report(f"{len(pids)} {error}")
        return 0

    text, status = run_in_child(child, new_group=True)
    count, _, error = text.partition(" ")
    if count.isdigit() and int(count) == FORK_BOMB_PROCESSES:
        return "succeeded", f"all {FORK_BOMB_PROCESSES} processes started"
    if count.isdigit():
        return "failed", f"only {count} of {FORK_BOMB_PROCESSES} forks succeeded: {error}"
    return "failed", f"fork bomb child {describe_status(status)}"


def probe_memory_hog(config):
    def child(report):
        chunks = []
        page = 4096
        try:
            while len(chunks) * MEMORY_CHUNK < MEMORY_TOTAL:
                chunk = bytearray(MEMORY_CHUNK)
                chunk[::page] = b"\x01" * (MEMORY_CHUNK // page)  # touch every page
                chunks.append(chunk)
                report(f"{len(chunks) * MEMORY_CHUNK >> 20}\n")
        except MemoryError:
            report("E MemoryError\n")
        return 0

    text, status = run_in_child(child)
    lines = text.split()
    touched = max([int(word) for word in lines if word.isdigit()] or [0])
    if touched * (1 << 20) >= MEMORY_TOTAL and status is not None and os.WIFEXITED(status):
        return "succeeded", f"allocated and touched {touched} MiB"
    if "MemoryError" in text:
        return "failed", f"MemoryError after {touched} MiB"
    return "failed", f"{describe_status(status)} after {touched} MiB"


def probe_disk_filler(config):
    path = os.path.abspath(f".buildjail-probe-fill-{os.getpid()}")

    def child(report):
        written = 0
        block = b"\0" * DISK_CHUNK
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            while written < DISK_TOTAL:
                try:
                    count = os.write(fd, block)
                except OSError as exc:
                    report(f"{written >> 20} {errname(exc)}\n")
                    return 0
                if count == 0:
                    report(f"{written >> 20} write returned 0\n")
                    return 0
                written += count  # after a short write, the next one fails with the reason
            report(f"{written >> 20} ok\n")
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
        return 0

    try:
        text, status = run_in_child(child)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    count, _, rest = text.strip().partition(" ")
    if rest == "ok" and count.isdigit() and int(count) << 20 >= DISK_TOTAL:
        return "succeeded", f"wrote {count} MiB into the project directory"
    if count.isdigit():
        return "failed", f"stopped after {count} MiB: {rest}"
    return "failed", f"disk filler child {describe_status(status)}"


def probe_disk_files(config):
    directory = os.path.abspath(f".buildjail-probe-files-{os.getpid()}")

    def child(report):
        os.mkdir(directory)
        block = b"\0" * DISK_CHUNK
        for index in range(DISK_FILES):
            try:
                with open(os.path.join(directory, f"f{index}"), "wb") as stream:
                    stream.write(block)
            except OSError as exc:
                report(f"{index} {errname(exc)}\n")
                return 0
            report(f"{index + 1}\n")
        report(f"{DISK_FILES} ok\n")
        return 0

    try:
        text, status = run_in_child(child)
    finally:
        remove_tree(directory)
    last = text.strip().splitlines()[-1] if text.strip() else ""
    count, _, rest = last.partition(" ")
    if rest == "ok":
        return "succeeded", f"wrote {DISK_FILES} files of 1 MiB into the project directory"
    if count.isdigit():
        return "failed", f"stopped after {count} files: {rest or describe_status(status)}"
    return "failed", f"disk files child {describe_status(status)}"


def remove_tree(directory):
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


def probe_memory_sysv(config):
    lib = libc()
    lib.shmget.restype = ctypes.c_int
    lib.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
    lib.shmat.restype = ctypes.c_void_p
    lib.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    lib.shmdt.argtypes = [ctypes.c_void_p]
    lib.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]

    def child(report):
        segments = []
        try:
            while len(segments) * MEMORY_CHUNK < HELD_TOTAL:
                shmid = lib.shmget(0, MEMORY_CHUNK, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
                if shmid < 0:
                    report(f"E shmget: {errno_name(ctypes.get_errno())}\n")
                    return 0
                segments.append(shmid)
                address = lib.shmat(shmid, None, 0)
                ctypes.memset(address, 1, MEMORY_CHUNK)
                lib.shmdt(address)  # detached: in no process's memory any more
                report(f"{len(segments) * MEMORY_CHUNK >> 20}\n")
            time.sleep(0.5)  # held while nobody maps it: the monitor's chance to see it
            report("ok\n")
        finally:
            for shmid in segments:  # never leave them on a host without an IPC namespace
                lib.shmctl(shmid, 0, None)  # IPC_RMID
        return 0

    return held_outcome("detached System V segments", *run_in_child(child))


def probe_memory_sockets(config):
    def child(report):
        held, pairs = 0, []
        while held < HELD_TOTAL and len(pairs) < 400:
            try:
                first, second = socket.socketpair()
            except OSError as exc:
                report(f"E socketpair: {errname(exc)}\n")
                return 0
            pairs.append((first, second))
            with contextlib.suppress(OSError):
                first.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
            first.setblocking(False)
            with contextlib.suppress(OSError):
                while True:
                    held += first.send(b"x" * 65536)  # nobody reads: queued in the kernel
            report(f"{held >> 20}\n")
        time.sleep(0.5)
        report("ok\n" if held >= HELD_TOTAL else f"E only {held >> 20} MiB queued\n")
        return 0

    return held_outcome("unread socket buffers", *run_in_child(child))


def held_outcome(what, text, status):
    held = max([int(word) for word in text.split() if word.isdigit()] or [0])
    if "ok" in text.split():
        return "succeeded", f"held {held} MiB in {what}"
    error = next((line[2:] for line in text.splitlines() if line.startswith("E ")), "")
    return "failed", f"{what}: {error or describe_status(status)} after {held} MiB"


def probe_memory_memfd(config):
    try:
        fd = os.memfd_create("buildjail-probe")
    except OSError as exc:
        return "failed", f"memfd_create: {errname(exc)}"
    try:
        block = b"x" * MEMORY_CHUNK
        written = 0
        while written < HELD_TOTAL:
            written += os.write(fd, block)  # written, never mapped
        return "succeeded", f"held {written >> 20} MiB in an unmapped memfd"
    finally:
        os.close(fd)


def probe_view_etc(config):
    return secret_probe([need(config, "view", "etc")])


def probe_view_system(config):
    view = need(config, "view")
    # Every place planted but /etc's (its own vector): /opt, /srv, a cache, and whatever a
    # caller adds (fromager's tests: its settings, its log, another package's tree).
    paths = [path for key, path in sorted(view.items()) if key != "etc" and path]
    if not paths:
        raise NotApplicableError("no /opt, /srv or /var/cache bait planted")
    return secret_probe(paths)


def probe_host_unix_socket(config):
    path = need(config, "unix_socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(path)
        with contextlib.suppress(OSError):  # the service may already have hung up
            sock.sendall(b"BUILDJAIL-PROBE host_unix_socket\n")
    return "succeeded", f"connected to the host's unix socket {path}"


# --------------------------------------------------------------------------- running

def run_probe(vector, config):
    """Run one probe and print its line; never raises."""
    try:
        probe = globals()[f"probe_{vector}"]
        outcome, detail = probe(config)
    except NotApplicableError as exc:
        outcome, detail = "not_applicable", str(exc)
    except BaseException as exc:
        outcome, detail = "failed", errname(exc)
    emit(vector, outcome, detail)


def selected(default, config_settings):
    """The vectors a hook runs: *default*, or those named in its config settings."""
    value = (config_settings or {}).get(SELECT_SETTING) if isinstance(
        config_settings, dict) else None
    if value is None:
        return default
    names = value if isinstance(value, list) else str(value).replace(",", " ").split()
    known = set(REQUIRES_VECTORS) | set(BUILD_VECTORS)
    return tuple(name for name in names if name in known)


def run(vectors):
    """Run the probes of *vectors* in order, one line each."""
    try:
        config = load_config()
    except BaseException:
        config = {}
    for vector in vectors:
        run_probe(vector, config)
