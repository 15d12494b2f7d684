"""A hostile PEP 517 backend: it attacks the code *around* the sandbox, as attack.json says.

Each key of ``attack.json`` (in the project, written by the test) turns one attack on; the
backend otherwise builds a valid wheel and sdist of ``NAME-VERSION``. What it tried and
saw is printed as ``PERIMETER <what>: <detail>`` lines (they end up in the build log).
"""

import base64
import glob
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile


def _load_attack():
    if not os.path.exists("attack.json"):
        return {}
    with open("attack.json") as stream:
        return json.load(stream)


ATTACK = _load_attack()
NAME = ATTACK.get("name", "perimeter")
VERSION = ATTACK.get("version", "1.0")


def say(what, detail=""):
    print(f"PERIMETER {what}: {detail}", flush=True)


def _attacks(hook):
    """Run the attacks configured for *hook* (or for every hook)."""
    for key, value in ATTACK.get("hooks", {}).get(hook, {}).items():
        globals()["attack_" + key](value)


def attack_print(text):
    sys.stdout.write(text)
    sys.stdout.flush()


def attack_flood(megabytes):
    line = ("x" * 1023 + "\n").encode()
    chunk = line * 1024
    for _ in range(megabytes):
        os.write(1, chunk)


def attack_fail(message):
    raise RuntimeError(message)


def attack_sleep(seconds):
    time.sleep(seconds)


def attack_read_own_output(_):
    """Read back what is behind our stdout (the log file, if that is what it is)."""
    target = os.readlink("/proc/self/fd/1")
    say("stdout is", target)
    try:
        with open("/proc/self/fd/1", "rb") as stream:
            os.set_blocking(stream.fileno(), False)
            data = stream.read(1 << 20) or b""
    except (OSError, TypeError) as error:
        say("read back", f"failed: {type(error).__name__}: {error}")
        return
    say("read back", base64.b64encode(data).decode())


def attack_tool(name):
    """Not an attack: run a tool found on PATH, as builds run cargo or cmake."""
    subprocess.run([name], check=True)


def attack_connect(address):
    """Reach a host by name or address (``HOST:PORT``), as a toolchain download would."""
    import socket

    host, _, port = address.rpartition(":")
    say("connecting to", address)
    with socket.create_connection((host, int(port)), timeout=10):
        pass


def attack_env(names):
    for name in names:
        say(f"env {name}", os.environ.get(name, "<unset>"))


def attack_write(paths):
    """Try to write files (outside the writable trees, or into -o inside the tree)."""
    for path in paths:
        try:
            with open(path, "wb") as stream:
                stream.write(b"planted by the build\n")
            say("wrote", path)
        except OSError as error:
            say("write refused", f"{path}: {error.strerror}")


def attack_fetch(url):
    """Reach the test's loopback server (the host's network)."""
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=3).read()
        say("fetched", url)
    except Exception as error:
        say("fetch refused", f"{url}: {type(error).__name__}: {error}")


def attack_import(names):
    """Show which build requirements the build environment really holds."""
    for name in names:
        try:
            module = __import__(name)
            say("imported", f"{name} from {module.__file__}")
        except ImportError as error:
            say("import failed", f"{name}: {error}")


def attack_git(script):
    """Make the checkout's next `git status` run *script* (core.fsmonitor), and more."""
    for cmd in (["/usr/bin/git", "config", "core.fsmonitor", script],
                ["/usr/bin/git", "config", "--local", "alias.st", f"!{script}"]):
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        say("git config", f"exit {done.returncode}: {done.stderr.strip()}")
    try:
        with open(".git/hooks/post-checkout", "w") as stream:
            stream.write(f"#!/bin/sh\n{script}\n")
        say("git hook", "written")
    except OSError as error:
        say("git hook", f"refused: {error.strerror}")


def attack_new_repository(directory):
    """Create VCS metadata in a subdirectory: git would treat it as a repository."""
    os.makedirs(os.path.join(directory, ".git", "objects"), exist_ok=True)
    os.makedirs(os.path.join(directory, ".git", "refs"), exist_ok=True)
    with open(os.path.join(directory, ".git", "HEAD"), "w") as stream:
        stream.write("ref: refs/heads/main\n")
    with open(os.path.join(directory, ".git", "config"), "w") as stream:
        stream.write("[core]\n\tfsmonitor = /bin/false\n")
    say("new repository", directory)


def attack_search(pattern):
    """Look for another build's files (a sibling's extracted source)."""
    deadline = time.time() + 8
    while time.time() < deadline:
        for path in glob.glob(pattern, recursive=True):
            try:
                with open(path) as stream:
                    say("found", f"{path}: {stream.read().strip()}")
                    return
            except OSError as error:
                say("found but unreadable", f"{path}: {error.strerror}")
                return
        time.sleep(0.2)
    say("found", "nothing")


def attack_symlink_out(pairs):
    """Replace files of the tree by links to places outside it."""
    for name, target in pairs.items():
        if os.path.lexists(name):
            os.unlink(name)
        os.symlink(target, name)
        say("linked", f"{name} -> {target}")


def attack_fifo(name):
    """Leave a FIFO: code outside opening it would hang."""
    os.mkfifo(name)
    say("fifo", name)


def get_requires_for_build_wheel(config_settings=None):
    _attacks("get_requires_for_build_wheel")
    return ATTACK.get("requires_wheel", [])


def get_requires_for_build_sdist(config_settings=None):
    _attacks("get_requires_for_build_sdist")
    return ATTACK.get("requires_sdist", [])


def _metadata():
    return f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n"


def _dist_info(name=None):
    return f"{(name or NAME).replace('-', '_')}-{VERSION}.dist-info"


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    _attacks("prepare_metadata_for_build_wheel")
    path = os.path.join(metadata_directory, _dist_info())
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "METADATA"), "w") as stream:
        stream.write(_metadata())
    with open(os.path.join(path, "WHEEL"), "w") as stream:
        stream.write("Wheel-Version: 1.0\nGenerator: perimeter\nRoot-Is-Purelib: true\n"
                     "Tag: py3-none-any\n")
    return _dist_info()


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(directory, name, version, files=None):
    """A valid wheel of NAME (name and version as given)."""
    dist_info = f"{name.replace('-', '_')}-{version}.dist-info"
    files = dict(files or {f"{name.replace('-', '_')}.py": b"VALUE = 1\n"})
    files[f"{dist_info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\n"
                                      f"Version: {version}\n").encode()
    files[f"{dist_info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: perimeter\n"
                                   b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    record = [_record_line(member, data) for member, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    filename = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(directory, filename), "w") as archive:
        for member, data in files.items():
            archive.writestr(zipfile.ZipInfo(member, (2020, 1, 1, 0, 0, 0)), data)
    return filename


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _attacks("build_wheel")
    if "wheel_file" in ATTACK:  # a wheel the test prepared (a bomb, another project's)
        filename = os.path.basename(ATTACK["wheel_file"])
        with open(ATTACK["wheel_file"], "rb") as source, open(
                os.path.join(wheel_directory, filename), "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
    else:
        files = {name: data.encode() for name, data in ATTACK.get("wheel_files", {}).items()}
        filename = write_wheel(wheel_directory, ATTACK.get("wheel_name", NAME), VERSION,
                               files or None)
    os.chmod(os.path.join(wheel_directory, filename), ATTACK.get("wheel_mode", 0o644))
    return filename


def build_sdist(sdist_directory, config_settings=None):
    _attacks("build_sdist")
    top = f"{NAME}-{VERSION}"
    filename = f"{top}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as archive:
        for path in ("pyproject.toml", "attack.json", "_backend/perimeter_backend.py"):
            if os.path.exists(path):
                archive.add(path, arcname=f"{top}/{path}")
        info = tarfile.TarInfo(f"{top}/PKG-INFO")
        info.size = len(_metadata())
        archive.addfile(info, io.BytesIO(_metadata().encode()))
    return filename


if ATTACK.get("no_metadata_hook"):  # like meson-python: the wheel is the only metadata
    del prepare_metadata_for_build_wheel
