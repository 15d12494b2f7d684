"""A meson-python-like PEP 517 backend for buildjail's tests: no metadata hook.

Every ``build_wheel`` call appends a line to ``build_wheel_calls`` in the source tree and
"compiles" for ``-C compile-seconds=N`` (0 by default). A file ``METADATA_HOOK`` holding
``NAME VERSION`` gives the backend a ``prepare_metadata_for_build_wheel`` stating them.
"""

import base64
import hashlib
import os
import time
import zipfile

NAME, VERSION = "onecompile", "1.0"
TAG = "py3-none-any"
CALLS = "build_wheel_calls"


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    with open(CALLS, "a") as stream:
        stream.write(f"build_wheel metadata_directory={metadata_directory}\n")
    print("onecompile_backend: compiling", flush=True)
    time.sleep(float((config_settings or {}).get("compile-seconds", 0)))
    members = _members()
    filename = f"{NAME}-{VERSION}-{TAG}.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as wheel:
        for name, data in members.items():
            wheel.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)
    return filename


def __getattr__(name):
    """The metadata hook exists only when the tree has a ``METADATA_HOOK`` file."""
    if name == "prepare_metadata_for_build_wheel" and os.path.exists("METADATA_HOOK"):
        return _prepare_metadata
    raise AttributeError(name)


def _prepare_metadata(metadata_directory, config_settings=None):
    with open("METADATA_HOOK") as stream:
        name, version = stream.read().split()
    dist_info = f"{name}-{version}.dist-info"
    os.mkdir(os.path.join(metadata_directory, dist_info))
    with open(os.path.join(metadata_directory, dist_info, "METADATA"), "w") as stream:
        stream.write(_metadata(name, version))
    return dist_info


def _metadata(name, version):
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"


def _members():
    """The wheel's files, its dist-info last, with a RECORD of every other one."""
    dist_info = f"{NAME}-{VERSION}.dist-info"
    with open(f"{NAME}/__init__.py", "rb") as stream:
        members = {f"{NAME}/__init__.py": stream.read()}
    members[f"{dist_info}/METADATA"] = _metadata(NAME, VERSION).encode()
    members[f"{dist_info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: onecompile_backend\n"
                                     f"Root-Is-Purelib: true\nTag: {TAG}\n").encode()
    lines = []
    for name, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        lines.append(f"{name},sha256={digest.decode()},{len(data)}\n")
    members[f"{dist_info}/RECORD"] = ("".join(lines) + f"{dist_info}/RECORD,,\n").encode()
    return members
