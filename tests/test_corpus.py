"""The real-sdist corpus: ``buildjail build --profile full`` gives the wheels pypa/build gives.

The corpus (tests/corpus.py) and a wheelhouse of pinned build requirements are downloaded
once into ``$BUILDJAIL_TEST_CACHE`` (default ``~/.cache/buildjail-tests``); every build
then runs with ``--no-index --find-links WHEELHOUSE``. The corpus is built three times in
one session: by buildjail with ``-j 1`` and ``-j 2``, and by an unsandboxed
``python -m build --wheel`` per sdist as the reference.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import corpus
from conftest import require_backend
from corpus import CORPUS, Sdist

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
slow = pytest.mark.slow  # the three corpus builds: about 70 s here once fetched

BUILD_TIMEOUT = 900
LAYERS = {"seccomp", "namespace:net", "filesystem"}
HOOKS = ("get_requires_for_build_wheel", "build_wheel")


@dataclasses.dataclass
class Inputs:
    """The fetched corpus (in CORPUS order), the wheelhouse and the build environment."""

    sdists: list[Path]
    wheelhouse: Path
    env: dict[str, str]


@dataclasses.dataclass
class BuildjailRun:
    """One ``buildjail build`` call over the whole corpus."""

    outdir: Path
    reports: list[dict[str, Any]]


@pytest.fixture(scope="session")
def inputs() -> Inputs:
    """Fetch the corpus and the wheelhouse into the cache (downloads only the first time)."""
    cache = corpus.cache_dir()
    sdists = corpus.fetch_corpus(cache)
    wheelhouse = corpus.build_wheelhouse(cache)
    return Inputs(sdists, wheelhouse, corpus.index_environment(wheelhouse))


def _buildjail(inputs: Inputs, base: Path, jobs: int, backend: str = "native") -> BuildjailRun:
    outdir, report = base / "wheels", base / "report.json"
    cmd = [sys.executable, "-m", "buildjail", "build", "--profile", "full", "--no-index",
           "--backend", backend,
           "--find-links", str(inputs.wheelhouse), "-o", str(outdir), "-j", str(jobs),
           "--report", str(report), "--logs", str(base / "logs"),
           *(str(sdist) for sdist in inputs.sdists)]
    proc = subprocess.run(cmd, env=inputs.env, cwd=base, capture_output=True, text=True,
                          check=False, timeout=BUILD_TIMEOUT)
    assert report.is_file(), f"no report; exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    reports = json.loads(report.read_text())
    failed = [f"{entry['source']}: {entry['error']}" for entry in reports
              if entry["result"] != "ok"]
    assert proc.returncode == 0 and not failed, "\n".join(
        [f"exit {proc.returncode}", *failed, proc.stderr[-3000:]])
    return BuildjailRun(outdir, reports)


@pytest.fixture(scope="session")
def jailed(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory) -> BuildjailRun:
    """The corpus built by ``buildjail build --profile full -j 1``."""
    return _buildjail(inputs, tmp_path_factory.mktemp("buildjail-j1"), jobs=1)


@pytest.fixture(scope="session")
def jailed_parallel(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory) -> BuildjailRun:
    """The corpus built by ``buildjail build --profile full -j 2``."""
    return _buildjail(inputs, tmp_path_factory.mktemp("buildjail-j2"), jobs=2)


@pytest.fixture(scope="session")
def jailed_bwrap(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory) -> BuildjailRun:
    """The corpus built through bubblewrap: ``--backend bwrap -j 2``."""
    require_backend("bwrap")
    return _buildjail(inputs, tmp_path_factory.mktemp("buildjail-bwrap"), jobs=2,
                      backend="bwrap")


@pytest.fixture(scope="session")
def reference(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each sdist built unsandboxed by ``python -m build --wheel``, in its own directory."""
    base = tmp_path_factory.mktemp("reference")

    def build(sdist: Sdist, path: Path) -> tuple[str, Path]:
        outdir = base / sdist.name
        proc = subprocess.run([sys.executable, "-m", "build", "--wheel", str(path), "-o",
                               str(outdir)], env=inputs.env, cwd=base, capture_output=True,
                              text=True, check=False, timeout=BUILD_TIMEOUT)
        assert proc.returncode == 0, f"reference build of {path.name}:\n{proc.stdout[-3000:]}"
        return sdist.name, outdir

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(build, CORPUS, inputs.sdists))


def _report_of(run: BuildjailRun, sdist: Sdist) -> dict[str, Any]:
    (entry,) = [entry for entry in run.reports if Path(entry["source"]).name == sdist.filename]
    return entry


def _wheels_of(entry: dict[str, Any]) -> list[Path]:
    return [Path(output["path"]) for output in entry["outputs"] if output["kind"] == "wheel"]


def test_corpus_covers_the_backends_the_issue_names() -> None:
    kinds = [sdist.kind for sdist in CORPUS]
    assert len(CORPUS) >= 12
    assert kinds.count(corpus.SETUP_PY) == 6
    assert kinds.count(corpus.C_EXTENSION) >= 3
    assert {"flit_core", "hatchling", "poetry-core", "setuptools-scm"} <= set(kinds)
    assert len({sdist.name for sdist in CORPUS}) == len(CORPUS)


def test_compare_wheels_reports_any_other_difference(tmp_path: Path) -> None:
    def wheel(name: str, files: dict[str, bytes]) -> Path:
        path = tmp_path / name / "demo-1.0-py3-none-any.whl"
        path.parent.mkdir()
        with zipfile.ZipFile(path, "w") as archive:
            for member, data in files.items():
                archive.writestr(member, data)
        return path

    base = {"demo/__init__.py": b"x = 1\n", "demo-1.0.dist-info/RECORD": b"demo/x,,\n"}
    same = corpus.compare_wheels(wheel("a", base), wheel("b", dict(base)))
    assert same == corpus.WheelDiff([], [])
    changed = corpus.compare_wheels(wheel("c", base),
                                    wheel("d", {**base, "demo/__init__.py": b"x = 2\n"}))
    assert changed.unexplained == ["demo/__init__.py differs (6 vs 6 bytes)"]
    extra = corpus.compare_wheels(wheel("e", base), wheel("f", {**base, "demo/evil.pth": b""}))
    assert extra.unexplained == [f"only in {tmp_path}/f/demo-1.0-py3-none-any.whl: "
                                 "demo/evil.pth"]


@slow
def test_setup_py_only_sdists_have_no_build_system(inputs: Inputs) -> None:
    for sdist, path in zip(CORPUS, inputs.sdists, strict=True):
        with tarfile.open(path) as archive:
            names = archive.getnames()
            top = names[0].split("/")[0]
            assert f"{top}/PKG-INFO" in names, sdist.name
            pyproject = f"{top}/pyproject.toml"
            build_system = pyproject in names and b"[build-system]" in (
                archive.extractfile(pyproject) or io.BytesIO()).read()
        if sdist.kind == corpus.SETUP_PY:
            assert f"{top}/setup.py" in names and not build_system, sdist.name
        elif sdist.backend != corpus.LEGACY:
            assert build_system, sdist.name


@slow
@pytest.mark.parametrize("sdist", CORPUS, ids=[sdist.name for sdist in CORPUS])
def test_sandboxed_wheel_equals_unsandboxed_wheel(
        sdist: Sdist, jailed: BuildjailRun, reference: dict[str, Path]) -> None:
    ours = _wheels_of(_report_of(jailed, sdist))
    theirs = sorted(reference[sdist.name].glob("*.whl"))
    assert len(ours) == 1 and len(theirs) == 1, (ours, theirs)
    assert ours[0].name == theirs[0].name
    diff = corpus.compare_wheels(ours[0], theirs[0])
    assert diff.unexplained == []
    if sdist.kind == corpus.C_EXTENSION:
        # The extension's debug information records the random directory each build
        # extracted the sdist to; its code and data are identical (see compare_wheels).
        assert len(diff.explained) == 2, diff.explained
        assert diff.explained[0].endswith(".so: debug information names the build directory")
        assert ".dist-info/RECORD: the rows of " in diff.explained[1]
    else:
        # Pure Python: every file, RECORD included, is byte for byte the reference's.
        assert diff.explained == []


@slow
def test_bwrap_backend_builds_the_same_wheels(jailed: BuildjailRun,
                                              jailed_bwrap: BuildjailRun) -> None:
    """Every real sdist builds through bubblewrap, into the wheels the native backend makes."""
    _assert_same_wheels(jailed_bwrap, jailed)
    for entry in jailed_bwrap.reports:
        assert set(entry["layers"]) >= LAYERS, entry["layers"]


@slow
def test_build_directory_explains_only_debug_information(jailed: BuildjailRun) -> None:
    """The ELF comparison is not vacuous: a changed byte of code is an unexplained change."""
    sdist = next(sdist for sdist in CORPUS if sdist.kind == corpus.C_EXTENSION)
    files = corpus.wheel_files(_wheels_of(_report_of(jailed, sdist))[0])
    name, data = next((name, data) for name, data in files.items() if name.endswith(".so"))
    text = corpus.elf_sections(data)[".text"][3]
    start = data.index(text)
    patched = data[:start] + bytes([text[0] ^ 0xFF]) + data[start + 1:]
    assert corpus.elf_differences(data, data) == []
    assert corpus.elf_differences(data, patched) == ["section .text differs"], name


@slow
def test_parallel_build_gives_the_same_wheels(jailed: BuildjailRun,
                                              jailed_parallel: BuildjailRun) -> None:
    _assert_same_wheels(jailed, jailed_parallel)


def _assert_same_wheels(first: BuildjailRun, second: BuildjailRun) -> None:
    """The same wheel for every sdist, identical but for what compare_wheels explains."""
    names = sorted(path.name for path in first.outdir.glob("*.whl"))
    assert names == sorted(path.name for path in second.outdir.glob("*.whl"))
    assert len(names) == len(CORPUS)
    for name in names:
        ours, theirs = first.outdir / name, second.outdir / name
        if ours.read_bytes() == theirs.read_bytes():
            continue
        # Zip timestamps of generated files and the extensions' build directories differ;
        # the contents must not, beyond what compare_wheels explains.
        diff = corpus.compare_wheels(ours, theirs)
        assert diff.unexplained == [], (name, diff.unexplained)


@slow
@pytest.mark.parametrize("jobs", [1, 2])
def test_report_describes_every_build(jobs: int, jailed: BuildjailRun,
                                      jailed_parallel: BuildjailRun) -> None:
    run = jailed if jobs == 1 else jailed_parallel
    assert len(run.reports) == len(CORPUS)
    for sdist in CORPUS:
        entry = _report_of(run, sdist)
        assert entry["result"] == "ok" and entry["error"] is None
        assert _canonical(entry["name"]) == _canonical(sdist.name), entry
        assert entry["version"] == sdist.version
        assert entry["backend"] == sdist.backend
        names = [hook["name"] for hook in entry["hooks"]]
        assert all(hook in names for hook in HOOKS), names
        for hook in entry["hooks"]:
            assert isinstance(hook["duration"], float) and 0 < hook["duration"] < BUILD_TIMEOUT
            assert hook["exit_code"] == 0
        assert set(entry["layers"]) >= LAYERS, entry["layers"]
        (output,) = entry["outputs"]
        wheel = Path(output["path"])
        assert output["kind"] == "wheel" and wheel.parent == run.outdir and wheel.is_file()
        assert output["sha256"] == corpus.sha256_of(wheel)
        _assert_record_matches(wheel)


@slow
def test_the_corpus_tries_nothing_suspicious(jailed: BuildjailRun) -> None:
    """No false positives: the 14 real sdists' hooks are recorded (the layers), and what
    they did is at most programs run (the compilers of the C ones), never a name, a
    connection or a decoy."""
    from buildjail.attempts import from_json, suspicious

    ran = 0
    for sdist in CORPUS:
        entry = _report_of(run=jailed, sdist=sdist)
        assert {"attempts:dns", "attempts:credentials", "attempts:connect",
                "attempts:exec"} <= set(entry["layers"]), entry["layers"]
        assert not [key for key in entry["degraded"] if key.startswith("attempts:")], entry
        for hook in entry["hooks"]:
            found = from_json(hook["attempts"])
            assert suspicious(found) == (), (sdist.name, hook["name"], hook["attempts"])
            assert hook["attempts_omitted"] == {}, (sdist.name, hook)
            ran += len(found)
    assert ran > 0  # the compiled ones' compilers were seen: the recording was on


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _assert_record_matches(wheel: Path) -> None:
    """The wheel's RECORD lists every member with its real hash (a sane wheel)."""
    import base64
    import hashlib

    files = corpus.wheel_files(wheel)
    (record,) = [name for name in files if name.endswith(".dist-info/RECORD")]
    rows = {row[0]: row[1] for row in csv.reader(io.StringIO(files[record].decode()))}
    assert set(rows) == set(files), wheel.name
    for name, data in files.items():
        if name != record:
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert rows[name] == f"sha256={digest.decode()}", (wheel.name, name)
