"""Wheels, sdists and projects for the perimeter tests, written directly (no build tool)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Any

PROJECTS = Path(__file__).parent / "projects"
PERIMETER = PROJECTS / "perimeter"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(directory: Path, name: str, version: str = "1.0",
                files: dict[str, bytes] | None = None) -> Path:
    """A valid pure-Python wheel of *name* holding *files* (default: one module)."""
    stem = name.replace("-", "_")
    dist_info = f"{stem}-{version}.dist-info"
    members = dict(files or {f"{stem}.py": b"VALUE = 1\n"})
    members[f"{dist_info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\n"
                                        f"Version: {version}\n").encode()
    members[f"{dist_info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: tests\n"
                                     b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    record = [_record_line(member, data) for member, data in members.items()]
    record.append(f"{dist_info}/RECORD,,")
    members[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"{stem}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            info = zipfile.ZipInfo(member, (2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return path


def make_project(directory: Path, name: str = "perimeter", *, attack: dict[str, Any] | None = None,
                 requires: list[str] | None = None, version: str = "1.0") -> Path:
    """A copy of the hostile perimeter project named *name*, attacking as *attack* says."""
    if directory.exists():
        shutil.rmtree(directory)
    shutil.copytree(PERIMETER, directory, ignore=shutil.ignore_patterns("__pycache__"))
    (directory / "pyproject.toml").write_text(
        "[build-system]\n"
        f"requires = {json.dumps(requires or [])}\n"
        'build-backend = "perimeter_backend"\nbackend-path = ["_backend"]\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n')
    (directory / "attack.json").write_text(json.dumps({"name": name, "version": version,
                                                       **(attack or {})}))
    return directory


def make_sdist(directory: Path, name: str, *, attack: dict[str, Any] | None = None,
               requires: list[str] | None = None, version: str = "1.0",
               extra: dict[str, bytes] | None = None) -> Path:
    """An sdist of the perimeter project named *name* (as a package index would serve it)."""
    work = directory / f".{name}-tree"
    project = make_project(work, name, attack=attack, requires=requires, version=version)
    top = f"{name.replace('-', '_')}-{version}"
    path = directory / f"{top}.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for member in ("pyproject.toml", "attack.json", "_backend/perimeter_backend.py"):
            archive.add(project / member, arcname=f"{top}/{member}")
        pkg_info = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
        for member, data in {"PKG-INFO": pkg_info, **(extra or {})}.items():
            info = tarfile.TarInfo(f"{top}/{member}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    shutil.rmtree(work)
    return path


def simple_index(root: Path, wheels: list[Path]) -> None:
    """A PEP 503 index under *root*/simple serving *wheels* from *root*/files."""
    files = root / "files"
    files.mkdir(exist_ok=True)
    for wheel in wheels:
        shutil.copy(wheel, files / wheel.name)
        project = wheel.name.split("-")[0].replace("_", "-").lower()
        page = root / "simple" / project
        page.mkdir(parents=True, exist_ok=True)
        (page / "index.html").write_text(
            f'<html><body><a href="../../files/{wheel.name}">{wheel.name}</a></body></html>\n')
