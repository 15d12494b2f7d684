"""Runs inside the sandbox: tries each attack, prints a JSON object of outcomes.

An outcome is "ok" (the attempt succeeded), an errno name such as "EACCES", or a value.
"""

import ctypes
import errno
import json
import multiprocessing
import os
import pwd
import socket
import subprocess
import sys

config = json.loads(sys.argv[1])
results = {}


def attempt(name, action):
    try:
        value = action()
        results[name] = "ok" if value is None else value
    except OSError as error:
        results[name] = errno.errorcode.get(error.errno, str(error.errno))
    except Exception as error:
        results[name] = f"{type(error).__name__}: {error}"


def read(path):
    with open(path, "rb") as stream:
        stream.read()


def write(path):
    with open(path, "w") as stream:
        stream.write("pwned\n")


def connect(family, kind, address):
    with socket.socket(family, kind) as sock:
        sock.settimeout(3)
        if kind == socket.SOCK_DGRAM:
            sock.sendto(b"x", address)
        else:
            sock.connect(address)


def loopback_roundtrip():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=3) as client:
            client.sendall(b"ping")
            conn, _ = server.accept()
            with conn:
                return conn.recv(4).decode()


def square(value):
    return value * value


def pool():
    with multiprocessing.get_context("fork").Pool(2) as workers:
        return sum(workers.map(square, range(10)))


def compile_and_run():
    source = os.path.join(os.environ.get("TMPDIR", "/tmp"), "hello.c")
    with open(source, "w") as stream:
        stream.write('#include <stdio.h>\nint main(void){puts("hello from C");return 0;}\n')
    subprocess.run(["/usr/bin/gcc", source, "-o", source[:-2]], check=True,
                   capture_output=True)
    return subprocess.run([source[:-2]], check=True, capture_output=True,
                          text=True).stdout.strip()


for name, path in config["secrets"].items():
    attempt(f"read:{name}", lambda path=path: read(path))
for name, path in config["writes"].items():
    attempt(f"write:{name}", lambda path=path: write(path))
attempt("read:parent_environ", lambda: read(f"/proc/{config['parent_pid']}/environ"))
attempt("read:parent_cmdline", lambda: read(f"/proc/{config['parent_pid']}/cmdline"))
def read_text(path):
    with open(path, "rb") as stream:
        return stream.read().strip(b"\0").decode()


attempt("read:init_environ", lambda: read_text("/proc/1/environ"))
attempt("read:init_cmdline", lambda: read_text("/proc/1/cmdline"))
results["pids"] = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
results["env"] = dict(os.environ)
attempt("tcp:host_loopback", lambda: connect(socket.AF_INET, socket.SOCK_STREAM,
                                             ("127.0.0.1", config["listener_port"])))
attempt("tcp:host_address", lambda: connect(socket.AF_INET, socket.SOCK_STREAM,
                                            (config["host_address"], config["listener_port"])))
attempt("udp:host_address", lambda: connect(socket.AF_INET, socket.SOCK_DGRAM,
                                            (config["host_address"], config["udp_port"])))
attempt("dns:pypi.org", lambda: socket.getaddrinfo("pypi.org", 443) and None)
attempt("loopback", loopback_roundtrip)
results["hostname"] = socket.gethostname()
attempt("interfaces", lambda: sorted(name for _, name in socket.if_nameindex()))
attempt("kill:parent", lambda: os.kill(config["parent_pid"], 0))
attempt("host_tmp_marker_visible", lambda: os.path.exists(config["host_tmp_marker"]))
attempt("write:tmp", lambda: write(config["inside_tmp_marker"]))
attempt("write:dev_shm", lambda: write(config["inside_shm_marker"]))
attempt("getpwuid", lambda: pwd.getpwuid(os.getuid()).pw_name)
attempt("home_writable", lambda: write(os.path.join(os.environ["HOME"], "x")))
results["cpu_count"] = os.cpu_count()
attempt("multiprocessing", pool)
attempt("gcc", compile_and_run)
attempt("proc_self_exe", lambda: os.readlink("/proc/self/exe"))
libc = ctypes.CDLL(None, use_errno=True)
results["ptrace_init"] = "ok" if libc.ptrace(16, 1, 0, 0) == 0 else errno.errorcode[
    ctypes.get_errno()]
print(json.dumps(results))
