"""A tiny PEP 517 backend whose hooks run buildjail's attack probes (standard library only).

``get_requires_for_build_wheel`` and ``build_sdist`` run every probe except the daemon and
the exhaustion ones; ``build_wheel`` builds the wheel, then runs the daemon and the
exhaustion probes last. The wheel and the sdist themselves are real and valid.
"""

import base64
import gzip
import hashlib
import io
import os
import tarfile
import time
import zipfile

import probes

NAME = "buildjail-probe"
DIST = "buildjail_probe"
VERSION = "1.0"
DIST_INFO = f"{DIST}-{VERSION}.dist-info"
WHEEL_NAME = f"{DIST}-{VERSION}-py3-none-any.whl"
SDIST_NAME = f"{DIST}-{VERSION}.tar.gz"
SDIST_FILES = ("pyproject.toml", "probe_backend.py", "probes.py")

METADATA = f"""\
Metadata-Version: 2.1
Name: {NAME}
Version: {VERSION}
Summary: buildjail's attack probes: every build hook tries what a malicious build would.
Requires-Python: >=3.11
"""

WHEEL = """\
Wheel-Version: 1.0
Generator: buildjail probe_backend
Root-Is-Purelib: true
Tag: py3-none-any
"""

MODULE = '"""Installed by the buildjail probe project; the probes run at build time only."""\n'


def _timestamp():
    try:
        return max(int(os.environ["SOURCE_DATE_EPOCH"]), 315532800)
    except (KeyError, ValueError):
        return 315532800  # 1980-01-01, the earliest a zip can hold


def _metadata_files():
    return {f"{DIST_INFO}/METADATA": METADATA.encode(), f"{DIST_INFO}/WHEEL": WHEEL.encode()}


def _record_row(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


# --------------------------------------------------------------------------- hooks

def get_requires_for_build_wheel(config_settings=None):
    probes.run(probes.selected(probes.REQUIRES_VECTORS, config_settings))
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    for path, data in _metadata_files().items():
        target = os.path.join(metadata_directory, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as stream:
            stream.write(data)
    return DIST_INFO


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {f"{DIST}.py": MODULE.encode(), **_metadata_files()}
    record_path = f"{DIST_INFO}/RECORD"
    rows = [_record_row(path, data) for path, data in files.items()]
    rows.append(f"{record_path},,")
    files[record_path] = ("\n".join(rows) + "\n").encode()
    date = time.gmtime(_timestamp())[:6]
    target = os.path.join(wheel_directory, WHEEL_NAME)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            info = zipfile.ZipInfo(path, date_time=date)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    probes.run(probes.selected(probes.BUILD_VECTORS, config_settings))
    return WHEEL_NAME


def build_sdist(sdist_directory, config_settings=None):
    probes.run(probes.selected(probes.REQUIRES_VECTORS, config_settings))
    top = f"{DIST}-{VERSION}"
    mtime = _timestamp()
    here = os.path.dirname(os.path.abspath(__file__))
    members = {"PKG-INFO": METADATA.encode()}
    for name in SDIST_FILES:
        with open(os.path.join(here, name), "rb") as stream:
            members[name] = stream.read()
    target = os.path.join(sdist_directory, SDIST_NAME)
    with open(target, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=mtime, filename="") as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive:
        directory = tarfile.TarInfo(top)
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        directory.mtime = mtime
        archive.addfile(directory)
        for name, data in members.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = mtime
            archive.addfile(info, io.BytesIO(data))
    return SDIST_NAME
