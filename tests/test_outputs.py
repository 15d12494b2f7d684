"""Outputs: named for the project built, fresh 0644 copies, never replacing a file in ``-o``.

Through ``buildjail build`` as root and as a non-root user, on both backends: a build
publishing another project's wheel into a shared ``-o``, two builds whose outputs collide,
a file already there, and a hook planting files in the default ``dist`` of ``buildjail
build .``. Judged by what is in ``-o`` afterwards, byte for byte, and the modes on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildjail.archives import validate_wheel
from conftest import Identity, Runner, peak_rss
from wheels import make_project, write_wheel

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _impostor(shared_dir: Path) -> Path:
    """A valid wheel of the project "victim" with other code in it."""
    directory = shared_dir / "impostor"
    directory.mkdir()
    return write_wheel(directory, "victim", files={"victim.py": b"EVIL = 1\n"})


@pytest.mark.parametrize("metadata_hook", [True, False], ids=["metadata-hook", "no-metadata-hook"])
def test_a_build_cannot_publish_another_projects_wheel(
        identity: Identity, sandbox_backend: str, shared_dir: Path, metadata_hook: bool) -> None:
    impostor = _impostor(shared_dir)
    victim = make_project(shared_dir / "victim", "victim")
    attacker = make_project(shared_dir / "evilpkg", "evilpkg",
                            attack={"wheel_file": str(impostor),
                                    "no_metadata_hook": not metadata_hook})
    out, report = shared_dir / "out", shared_dir / "report.json"
    identity.own(shared_dir)
    proc = identity.buildjail(str(victim), str(attacker), "--wheel", "-o", str(out),
                              "--report", str(report), "--readonly", str(impostor.parent),
                              backend=sandbox_backend)  # shown: the hook fetches it there
    assert proc.returncode == 1
    # Held to the project's name (whatever a metadata hook would state: it is not called),
    # before anything is published.
    reason = "victim-1.0-py3-none-any.whl is a wheel of 'victim', but 'evilpkg' is being built"
    assert f"evilpkg: checking the wheel failed: {reason}" in proc.stderr, proc.stderr
    assert [path.name for path in out.iterdir()] == ["victim-1.0-py3-none-any.whl"]
    published = out / "victim-1.0-py3-none-any.whl"
    entries = json.loads(report.read_text())
    assert entries[0]["result"] == "ok" and entries[1]["result"] == "error"
    assert entries[0]["outputs"][0]["sha256"] == _sha(published)
    assert b"EVIL" not in published.read_bytes()


def test_outputs_that_collide_are_never_replaced(
        identity: Identity, sandbox_backend: str, shared_dir: Path) -> None:
    first = make_project(shared_dir / "one" / "victim", "victim")
    impostor = _impostor(shared_dir)
    second = make_project(shared_dir / "two" / "victim", "victim",
                          attack={"wheel_file": str(impostor)})
    shown = ("--readonly", str(impostor.parent))  # where the hook fetches it
    out = shared_dir / "out"
    identity.own(shared_dir)
    proc = identity.buildjail(str(first), str(second), "--wheel", "-o", str(out),
                              "--overwrite", *shown, backend=sandbox_backend)
    assert proc.returncode == 1
    assert ("victim-1.0-py3-none-any.whl was already published by this run: an output of "
            "another build has the same name (not replaced)") in proc.stderr, proc.stderr
    assert b"EVIL" not in (out / "victim-1.0-py3-none-any.whl").read_bytes()
    # A file from before the run stays too, unless --overwrite says to replace it.
    before = _sha(out / "victim-1.0-py3-none-any.whl")
    proc = identity.buildjail(str(second), "--wheel", "-o", str(out), *shown,
                              backend=sandbox_backend)
    assert proc.returncode == 1
    assert f"{out}/victim-1.0-py3-none-any.whl already exists (not replaced" in proc.stderr
    assert _sha(out / "victim-1.0-py3-none-any.whl") == before
    proc = identity.buildjail(str(second), "--wheel", "-o", str(out), "--overwrite", *shown,
                              backend=sandbox_backend)
    assert proc.returncode == 0, proc.stderr
    assert b"EVIL = 1" in (out / "victim-1.0-py3-none-any.whl").read_bytes()


def _without_seccomp(directory: Path) -> Path:
    """A policy file: ``full`` less the seccomp filter, which refuses a set-id chmod (so
    that the copy's own normalisation is tested on its own)."""
    path = directory / "without-seccomp.toml"
    path.write_text('extends = "full"\nname = "full-without-seccomp"\n\n'
                    "[isolation]\nseccomp = false\n")
    return path


def test_the_default_dist_in_the_source_tree_is_read_only_to_hooks(
        identity: Identity, sandbox_backend: str, shared_dir: Path) -> None:
    """``buildjail build .``: ``dist`` lies in the writable tree; hooks cannot write there.
    The wheel the hook made is set-uid (4777): the published copy is 0644 all the same."""
    plant = {"write": ["dist/evil-9.9-py3-none-any.whl", "dist/perimeter-1.0.tar.gz"]}
    project = make_project(shared_dir / "perimeter", attack={
        "wheel_mode": 0o4777, "hooks": {"build_sdist": plant, "build_wheel": plant}})
    (project / "dist").mkdir()
    logs = shared_dir / "logs"
    policy = _without_seccomp(shared_dir)
    identity.own(shared_dir)
    proc = identity.buildjail(".", "--logs", str(logs), "--policy", str(policy),
                              backend=sandbox_backend, cwd=str(project))
    assert proc.returncode == 0, proc.stderr
    assert sorted(path.name for path in (project / "dist").iterdir()) == [
        "perimeter-1.0-py3-none-any.whl", "perimeter-1.0.tar.gz"]
    log = (logs / "perimeter.log").read_text()
    assert log.count("PERIMETER write refused") == 4, log
    assert "Read-only file system" in log
    for output in (project / "dist").iterdir():
        info = output.stat()
        assert stat.S_IMODE(info.st_mode) == 0o644, oct(info.st_mode)  # the build chose 4777
        assert info.st_uid == identity.uid
        validate_wheel(output) if output.suffix == ".whl" else None


def test_full_refuses_the_hook_its_set_id_wheel(
        identity: Identity, sandbox_backend: str, shared_dir: Path) -> None:
    """The same hook under ``full``: its ``chmod(wheel, 0o4777)`` fails (EPERM, the seccomp
    filter), so the hook fails and nothing is published."""
    project = make_project(shared_dir / "perimeter", attack={"wheel_mode": 0o4777})
    out, logs = shared_dir / "out", shared_dir / "logs"
    identity.own(shared_dir)
    proc = identity.buildjail(str(project), "--wheel", "-o", str(out), "--logs", str(logs),
                              backend=sandbox_backend)
    assert proc.returncode == 1, proc.stderr
    log = (logs / "perimeter.log").read_text()
    assert "PermissionError: [Errno 1] Operation not permitted" in log, log
    assert "os.chmod(os.path.join(wheel_directory, filename)" in log, log
    assert not out.exists() or not list(out.iterdir())


def test_an_output_directory_that_is_the_source_tree_is_refused(
        identity: Identity, sandbox_backend: str, shared_dir: Path) -> None:
    project = make_project(shared_dir / "perimeter")
    identity.own(shared_dir)
    proc = identity.buildjail(".", "-o", ".", backend=sandbox_backend, cwd=str(project))
    assert proc.returncode == 1
    assert (f"perimeter: checking the output directory failed: {project} is a directory the "
            "hooks may write to") in proc.stderr, proc.stderr
    assert not list(project.glob("*.tar.gz"))


def test_control_without_the_read_only_dist_a_hook_plants_files_there(
        run_sandbox: Runner, shared_dir: Path) -> None:
    project = shared_dir / "project"
    (project / "dist").mkdir(parents=True)
    for path in (project, project / "dist"):
        path.chmod(0o777)
    result = run_sandbox(["/bin/sh", "-c", "echo planted > dist/evil-9.9-py3-none-any.whl"],
                         cwd=str(project), writable=[str(project)])
    assert result["exit_code"] == 0, result
    assert (project / "dist" / "evil-9.9-py3-none-any.whl").read_text() == "planted\n"


def test_control_the_old_publication_would_have_replaced_the_victim(shared_dir: Path) -> None:
    """Before, a wheel passing validate_wheel was moved over whatever had its name."""
    impostor = _impostor(shared_dir)
    validate_wheel(impostor)  # a valid wheel: the old check alone accepts it
    out = shared_dir / "out"
    out.mkdir()
    write_wheel(out, "victim")
    shutil.move(str(impostor), str(out / impostor.name))  # what the old _publish did
    assert b"EVIL" in (out / impostor.name).read_bytes()
    assert sys.executable  # (the old code path is only this move)


def test_a_withdrawn_output_gives_its_name_back_to_the_file_it_replaced(tmp_path: Path) -> None:
    from buildjail.outputs import OutputDirectory

    built, out = tmp_path / "built", tmp_path / "out"
    built.mkdir()
    out.mkdir()
    old = write_wheel(out, "kept")
    before = old.read_bytes()
    new = write_wheel(built, "kept", files={"kept/__init__.py": b"NEW = 1\n"})
    assert new.read_bytes() != before
    directory = OutputDirectory(str(out), overwrite=True)
    try:
        published = directory.publish(str(new), "wheel", "kept")
        assert Path(published.path).read_bytes() == new.read_bytes()  # replaced
        directory.withdraw(published.path)  # the package failed after all
        assert old.read_bytes() == before  # the file from before the run is back
        again = directory.publish(str(new), "wheel", "kept")  # a kept file is dropped at the end
    finally:
        directory.close()
    assert Path(again.path).read_bytes() == new.read_bytes()
    assert sorted(path.name for path in out.iterdir()) == [old.name]  # nothing kept aside left


# --- bounded reads of what a build made --------------------------------------------------

BOMB_SIZE = 1 << 30
MAX_CALLER_RSS_KB = 160 << 10

@pytest.fixture(scope="module")
def metadata_bomb() -> Iterator[Path]:
    """A valid-looking 1 MiB wheel whose METADATA inflates to 1 GiB (readable by all)."""
    base = Path("/var/lib/buildjail-tests")
    base.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="bomb-", dir=base))
    directory.chmod(0o755)
    try:
        yield _write_bomb(directory)
    finally:
        shutil.rmtree(directory)


def _write_bomb(directory: Path) -> Path:
    path = directory / "perimeter-1.0-py3-none-any.whl"
    header = b"Metadata-Version: 2.1\nName: perimeter\nVersion: 1.0\nSummary: "
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("perimeter-1.0.dist-info/WHEEL",
                         "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        with archive.open("perimeter-1.0.dist-info/METADATA", "w", force_zip64=True) as member:
            member.write(header)
            block = b"A" * (1 << 20)
            for _ in range(BOMB_SIZE >> 20):
                member.write(block)
        archive.writestr("perimeter-1.0.dist-info/RECORD", "")
    path.chmod(0o644)
    assert path.stat().st_size < 2 << 20
    return path


def test_a_wheel_whose_metadata_inflates_to_1_gib_is_refused_in_bounded_memory(
        identity: Identity, sandbox_backend: str, shared_dir: Path,
        metadata_bomb: Path) -> None:
    project = make_project(shared_dir / "perimeter", attack={"wheel_file": str(metadata_bomb)})
    out = shared_dir / "out"
    identity.own(shared_dir)
    code, peak, stderr = peak_rss(identity, [
        identity.python, "-m", "buildjail", "build", "--backend", sandbox_backend, str(project),
        "--wheel", "-o", str(out), "--readonly", str(metadata_bomb.parent)])
    assert code == 1, stderr
    assert ("perimeter: checking the wheel failed: member 'perimeter-1.0.dist-info/METADATA': "
            "inflates to more than") in stderr, stderr
    assert list(out.iterdir()) == []
    print(f"peak RSS of buildjail build refusing the METADATA bomb: {peak // 1024} MiB",
          file=sys.stderr)
    assert peak < MAX_CALLER_RSS_KB, f"{peak // 1024} MiB"


def test_control_reading_the_bombs_metadata_whole_takes_a_gigabyte(
        identity: Identity, metadata_bomb: Path) -> None:
    old = ("import sys, zipfile\n"  # what archives._headers did before
           "print(len(zipfile.ZipFile(sys.argv[1]).read('perimeter-1.0.dist-info/METADATA')))\n")
    code, peak, stderr = peak_rss(identity, [identity.python, "-c", old, str(metadata_bomb)])
    assert code == 0, stderr
    print(f"peak RSS of reading the bomb's METADATA whole: {peak // 1024} MiB", file=sys.stderr)
    assert peak > BOMB_SIZE >> 10, f"{peak // 1024} MiB"
