"""Wheels, sdists and projects for the perimeter tests, written directly (no build tool)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

PROJECTS = Path(__file__).parent / "projects"
PERIMETER = PROJECTS / "perimeter"


def _backend() -> ModuleType:
    """The hostile backend itself: it writes the valid wheels these tests need too."""
    spec = importlib.util.spec_from_file_location(
        "perimeter_backend_for_tests", PERIMETER / "_backend" / "perimeter_backend.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # no attack.json in the tests' directory: no attack
    return module


def write_wheel(directory: Path, name: str, version: str = "1.0",
                files: dict[str, bytes] | None = None, requires: tuple[str, ...] = ()) -> Path:
    """A valid pure-Python wheel of *name* holding *files* (default: one module), its
    METADATA listing *requires* as ``Requires-Dist``."""
    filename: str = _backend().write_wheel(str(directory), name, version, files)
    if requires:
        _add_requirements(directory / filename, requires)
    return directory / filename


def _add_requirements(path: Path, requires: tuple[str, ...]) -> None:
    """Rewrite the wheel at *path* with *requires* in its METADATA."""
    lines = "".join(f"Requires-Dist: {item}\n" for item in requires).encode()
    rewrite_wheel(path, path, lambda name, data: data + lines if name.endswith(
        ".dist-info/METADATA") else data)


def rewrite_wheel(path: Path, target: Path, edit: Callable[[str, bytes], bytes]) -> Path:
    """The wheel at *path* written to *target* with each member's data passed through
    *edit* (name, data), and a RECORD that matches."""
    with zipfile.ZipFile(path) as archive:
        members = {name: edit(name, archive.read(name)) for name in archive.namelist()}
    record = next(name for name in members if name.endswith(".dist-info/RECORD"))
    lines = []
    for name, data in members.items():
        if name != record:
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            lines.append(f"{name},sha256={digest.decode()},{len(data)}")
    members[record] = ("\n".join([*lines, f"{record},,"]) + "\n").encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)
    return target


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
