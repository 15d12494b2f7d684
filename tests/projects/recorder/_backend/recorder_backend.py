"""A PEP 517 backend for buildjail's tests that records what each hook received.

Every hook appends one JSON line to ``records.jsonl`` in the source tree — its name, its
``config_settings``, the interpreter running it, the hook script, the variables named in
``RECORD_ENV`` — and the sdist and the wheel carry that file (``recorder/records.jsonl``),
so a build through any frontend can be compared with another's.
"""

import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import zipfile

NAME, VERSION = "recorder", "1.0"
DIST_INFO = f"{NAME}-{VERSION}.dist-info"
METADATA = f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n"
WHEEL = "Wheel-Version: 1.0\nGenerator: recorder\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
RECORDS = "records.jsonl"
RECORD_ENV = ("SOURCE_DATE_EPOCH", "BJ_TEST_PLANTED", "BJ_TEST_OTHER")


def _record(hook, config_settings):
    record = {
        "hook": hook,
        "config_settings": config_settings,
        "executable": os.path.realpath(sys.executable),
        "base_prefix": sys.base_prefix,
        "version": list(sys.version_info[:3]),
        "script": os.path.abspath(sys.argv[0]),
        "env": {name: os.environ.get(name) for name in RECORD_ENV},
    }
    with open(RECORDS, "a") as stream:
        stream.write(json.dumps(record, sort_keys=True) + "\n")


def get_requires_for_build_sdist(config_settings=None):
    _record("get_requires_for_build_sdist", config_settings)
    return []


def get_requires_for_build_wheel(config_settings=None):
    _record("get_requires_for_build_wheel", config_settings)
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    _record("prepare_metadata_for_build_wheel", config_settings)
    path = os.path.join(metadata_directory, DIST_INFO)
    os.makedirs(path, exist_ok=True)
    for name, text in (("METADATA", METADATA), ("WHEEL", WHEEL)):
        with open(os.path.join(path, name), "w") as stream:
            stream.write(text)
    return DIST_INFO


def _records():
    with open(RECORDS, "rb") as stream:
        return stream.read()


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _record("build_wheel", config_settings)
    with open(f"{NAME}/__init__.py", "rb") as stream:
        files = {f"{NAME}/__init__.py": stream.read()}
    files[f"{NAME}/{RECORDS}"] = _records()
    files[f"{DIST_INFO}/METADATA"] = METADATA.encode()
    files[f"{DIST_INFO}/WHEEL"] = WHEEL.encode()
    lines = [_record_line(name, data) for name, data in files.items()]
    files[f"{DIST_INFO}/RECORD"] = ("\n".join([*lines, f"{DIST_INFO}/RECORD,,"]) + "\n").encode()
    filename = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)
    return filename


def build_sdist(sdist_directory, config_settings=None):
    _record("build_sdist", config_settings)
    filename = f"{NAME}-{VERSION}.tar.gz"
    top = f"{NAME}-{VERSION}"
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as archive:
        for path in ("pyproject.toml", "_backend/recorder_backend.py", f"{NAME}/__init__.py",
                     RECORDS):
            archive.add(path, arcname=f"{top}/{path}")
        info = tarfile.TarInfo(f"{top}/PKG-INFO")
        info.size = len(METADATA)
        archive.addfile(info, io.BytesIO(METADATA.encode()))
    return filename
