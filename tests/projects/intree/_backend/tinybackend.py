"""A tiny PEP 517 backend for buildjail's tests: no dependencies, optional failures.

Behaviour is steered by files in the project: ``FAIL_IN_<hook>`` makes that hook raise;
``TRY_IN_<hook>`` makes it read ``~/.netrc`` and resolve the name the file holds (what a
thief does; the hook goes on and succeeds), and is carried into the sdist.
"""

import base64
import hashlib
import io
import os
import socket
import tarfile
import zipfile

NAME, VERSION = "intree", "2.0"
DIST_INFO = f"{NAME}-{VERSION}.dist-info"
METADATA = f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n"
WHEEL = "Wheel-Version: 1.0\nGenerator: tinybackend\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _maybe_fail(hook):
    if os.path.exists(f"FAIL_IN_{hook}"):
        print(f"tinybackend: about to fail in {hook}", flush=True)
        raise RuntimeError(f"tinybackend was told to fail in {hook}")


def _maybe_try(hook):
    if not os.path.exists(f"TRY_IN_{hook}"):
        return
    with open(f"TRY_IN_{hook}") as stream:
        name = stream.read().strip() or "pypi.org"
    try:
        with open(os.path.expanduser("~/.netrc")) as stream:
            stream.read()
    except OSError as error:
        print(f"tinybackend: no ~/.netrc: {error}", flush=True)
    try:
        socket.getaddrinfo(name, 443)
    except OSError as error:
        print(f"tinybackend: {name} does not resolve: {error}", flush=True)


def get_requires_for_build_wheel(config_settings=None):
    _maybe_fail("get_requires_for_build_wheel")
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    _maybe_fail("prepare_metadata_for_build_wheel")
    path = os.path.join(metadata_directory, DIST_INFO)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "METADATA"), "w") as stream:
        stream.write(METADATA)
    with open(os.path.join(path, "WHEEL"), "w") as stream:
        stream.write(WHEEL)
    return DIST_INFO


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _maybe_fail("build_wheel")
    _maybe_try("build_wheel")
    print("tinybackend: building the wheel", flush=True)
    files = {}
    for root, _, names in os.walk(NAME):
        for name in sorted(names):
            path = os.path.join(root, name)
            with open(path, "rb") as stream:
                files[path] = stream.read()
    files[f"{DIST_INFO}/METADATA"] = METADATA.encode()
    files[f"{DIST_INFO}/WHEEL"] = WHEEL.encode()
    record = [_record_line(name, data) for name, data in files.items()]
    record.append(f"{DIST_INFO}/RECORD,,")
    files[f"{DIST_INFO}/RECORD"] = ("\n".join(record) + "\n").encode()
    filename = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)
    return filename


def build_sdist(sdist_directory, config_settings=None):
    _maybe_fail("build_sdist")
    _maybe_try("build_sdist")
    filename = f"{NAME}-{VERSION}.tar.gz"
    top = f"{NAME}-{VERSION}"
    steering = sorted(name for name in os.listdir(".") if name.startswith("TRY_IN_"))
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as archive:
        for path in ("pyproject.toml", "_backend/tinybackend.py", f"{NAME}/__init__.py",
                     *steering):
            archive.add(path, arcname=f"{top}/{path}")
        info = tarfile.TarInfo(f"{top}/PKG-INFO")
        info.size = len(METADATA)
        archive.addfile(info, io.BytesIO(METADATA.encode()))
    return filename
