"""A project whose build tries to escape the sandbox; it logs every attempt and succeeds."""

import json
import os
import socket
import sys
import time

from setuptools import setup

TARGETS = json.loads(os.environ.get("HOSTILE_TARGETS", "{}"))


def attempt(name, action):
    try:
        action()
        outcome = "SUCCEEDED"
    except Exception as error:
        outcome = f"failed: {type(error).__name__}: {error}"
    print(f"HOSTILE {name}: {outcome}", flush=True)


def write(path):
    with open(path, "w") as stream:
        stream.write("pwned\n")


def read(path):
    with open(path) as stream:
        stream.read()


def daemon():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            while True:
                with open(TARGETS["heartbeat"], "a") as stream:
                    stream.write(f"{time.time()}\n")
                time.sleep(0.1)
        os._exit(0)
    os.wait()
    time.sleep(0.3)
    if not os.path.exists(TARGETS["heartbeat"]):
        raise RuntimeError("the daemon could not write its heartbeat")


if "egg_info" in sys.argv or "bdist_wheel" in sys.argv or "sdist" in sys.argv:
    attempt("write_outside", lambda: write(TARGETS["outside"]))
    attempt("write_etc", lambda: write("/etc/hostile-build"))
    attempt("read_netrc", lambda: read(TARGETS["netrc"]))
    attempt("connect", lambda: socket.create_connection(("127.0.0.1", TARGETS["port"]), 2))
    if TARGETS.get("heartbeat"):
        attempt("daemon", daemon)

setup(name="hostile", version="0.1", py_modules=[])
