"""Untrusted archives: hostile sdists refused before anything is written, outputs checked."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import pickle
import stat
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from buildjail import archives
from buildjail.archives import (
    ArchiveError,
    check_sdist,
    extract_sdist,
    sha256_file,
    validate_sdist,
    validate_wheel,
)
from buildjail.errors import BuildjailError

TOP = "demo-1.0"
MTIME = 1_600_000_000

# A member: (name, tar type, data for files or target for links, mode).
Member = tuple[str, bytes, bytes | str, int]


def reg(name: str, data: bytes = b"", mode: int = 0o644) -> Member:
    return (name, tarfile.REGTYPE, data, mode)


def directory(name: str, mode: int = 0o755) -> Member:
    return (name, tarfile.DIRTYPE, b"", mode)


def symlink(name: str, target: str) -> Member:
    return (name, tarfile.SYMTYPE, target, 0o777)


def hardlink(name: str, target: str) -> Member:
    return (name, tarfile.LNKTYPE, target, 0o644)


def special(name: str, kind: bytes) -> Member:
    return (name, kind, b"", 0o644)


def make_tar(path: Path, *members: Member, mode: str = "w:gz") -> Path:
    """Write a tar with exactly these members (tarfile writes what it is told)."""
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for name, kind, payload, perm in members:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, perm, MTIME
            info.uid = info.gid = 4321
            info.uname = info.gname = "attacker"
            data = None
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = str(payload)
            elif kind == tarfile.REGTYPE:
                assert isinstance(payload, bytes)
                info.size, data = len(payload), io.BytesIO(payload)
            tar.addfile(info, data)
    return path


def normal_members(top: str = TOP) -> list[Member]:
    return [
        directory(top),
        reg(f"{top}/PKG-INFO", b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"),
        reg(f"{top}/setup.py", b"from setuptools import setup\nsetup()\n"),
        directory(f"{top}/src"),
        reg(f"{top}/src/demo.py", b"X = 1\n"),
        reg(f"{top}/run.sh", b"#!/bin/sh\n", mode=0o775),
    ]


def refused(archive: Path, destination: Path, *words: str, checked: bool = True
            ) -> ArchiveError:
    """Extraction fails with every word in the message and leaves nothing behind; so does
    the check before a build (*checked*), writing nothing."""
    if checked:
        check_refused(archive, *words)
    existed = destination.exists()
    before = sorted(destination.rglob("*")) if existed else []
    with pytest.raises(ArchiveError) as caught:
        extract_sdist(archive, destination)
    message = str(caught.value)
    assert str(archive) in message
    for word in words:
        assert word in message, message
    if existed:
        assert sorted(destination.rglob("*")) == before
    else:
        assert not destination.exists()
    return caught.value


def refused_by(check: Callable[[Path], object], path: Path, *words: str) -> None:
    """*check* refuses *path* with its name and every word in the message."""
    with pytest.raises(ArchiveError) as caught:
        check(path)
    message = str(caught.value)
    assert str(path) in message
    for word in words:
        assert word in message, message


def check_refused(archive: Path, *words: str) -> None:
    """``check_sdist`` refuses *archive* with every word in the message, writing nothing."""
    directory = archive.parent
    before = sorted(directory.rglob("*"))
    refused_by(check_sdist, archive, *words)
    assert sorted(directory.rglob("*")) == before


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "out" / "unpacked"


# --- extract_sdist: accepted archives ---------------------------------------------------


def test_normal_sdist_extracts_with_safe_modes_and_times(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members())
    top = extract_sdist(archive, dest)
    assert top == dest / TOP
    assert sorted(p.relative_to(top).as_posix() for p in top.rglob("*")) == [
        "PKG-INFO", "run.sh", "setup.py", "src", "src/demo.py"]
    assert (top / "src" / "demo.py").read_bytes() == b"X = 1\n"
    assert stat.S_IMODE((top / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((top / "setup.py").stat().st_mode) == 0o644
    assert stat.S_IMODE((top / "src").stat().st_mode) == 0o755
    assert (top / "setup.py").stat().st_mtime == MTIME
    assert (top / "src").stat().st_mtime == MTIME


def test_owner_from_the_archive_is_never_used(tmp_path: Path, dest: Path) -> None:
    top = extract_sdist(make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members()), dest)
    for path in [top, *top.rglob("*")]:
        assert path.lstat().st_uid == os.geteuid()
        assert path.lstat().st_gid == os.getegid()


@pytest.mark.parametrize("suffix,mode", [(".tar.gz", "w:gz"), (".tgz", "w:gz"),
                                         (".tar.bz2", "w:bz2"), (".tar.xz", "w:xz"),
                                         (".tar", "w")])
def test_every_tar_compression_is_accepted(
    tmp_path: Path, dest: Path, suffix: str, mode: str
) -> None:
    archive = make_tar(tmp_path / f"demo-1.0{suffix}", *normal_members(), mode=mode)
    assert (extract_sdist(archive, dest) / "src" / "demo.py").read_bytes() == b"X = 1\n"


def test_members_without_directory_entries_and_a_dot_prefix(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", directory("."),
                       reg(f"./{TOP}/a/b/c.txt", b"c"), reg(f"./{TOP}/PKG-INFO"))
    top = extract_sdist(archive, dest)
    assert (top / "a" / "b" / "c.txt").read_bytes() == b"c"
    assert stat.S_IMODE((top / "a").stat().st_mode) == 0o755


def test_relative_symlinks_inside_the_tree_are_allowed(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(),
                       symlink(f"{TOP}/link.py", "src/demo.py"),
                       symlink(f"{TOP}/src/up", ".."),
                       symlink(f"{TOP}/src/dangling", "../not-there"))
    top = extract_sdist(archive, dest)
    assert os.readlink(top / "link.py") == "src/demo.py"
    assert (top / "link.py").read_bytes() == b"X = 1\n"
    assert (top / "src" / "up").resolve() == top.resolve()


def test_hardlinks_inside_the_tree_become_copies(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(),
                       hardlink(f"{TOP}/copy.py", f"{TOP}/src/demo.py"))
    top = extract_sdist(archive, dest)
    assert (top / "copy.py").read_bytes() == b"X = 1\n"
    assert not (top / "copy.py").is_symlink()


def test_a_file_given_twice_keeps_the_last(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(),
                       reg(f"{TOP}/setup.py", b"second"))
    assert (extract_sdist(archive, dest) / "setup.py").read_bytes() == b"second"


def test_zip_sdist_extracts(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "demo-1.0.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr(f"{TOP}/", "")
        zipped.writestr(f"{TOP}/PKG-INFO", "Name: demo\n")
        script = zipfile.ZipInfo(f"{TOP}/bin/run")
        script.external_attr = (stat.S_IFREG | 0o4755) << 16
        zipped.writestr(script, "#!/bin/sh\n")
    top = extract_sdist(archive, dest)
    assert (top / "PKG-INFO").read_text() == "Name: demo\n"
    assert stat.S_IMODE((top / "bin" / "run").stat().st_mode) == 0o755


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_the_check_passes_a_good_sdist_and_writes_nothing(tmp_path: Path, suffix: str) -> None:
    """``check_sdist`` (the CLI's check before a build) accepts what extracts, and leaves
    no file anywhere: not beside the archive, not in the temporary directory."""
    archive = tmp_path / f"demo-1.0{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zipped:
            for name, kind, data, _mode in normal_members():
                if kind == tarfile.REGTYPE:
                    zipped.writestr(name, data)
    else:
        make_tar(archive, *normal_members())
    before = sorted(tmp_path.rglob("*"))
    temporary = sorted(os.listdir(tempfile.gettempdir()))
    check_sdist(archive)
    assert sorted(tmp_path.rglob("*")) == before
    assert sorted(os.listdir(tempfile.gettempdir())) == temporary


def test_extraction_into_an_existing_destination_keeps_its_contents(tmp_path: Path) -> None:
    destination = tmp_path / "existing"
    destination.mkdir()
    (destination / "keep.txt").write_text("mine")
    top = extract_sdist(make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members()), destination)
    assert top.is_dir() and (destination / "keep.txt").read_text() == "mine"


# --- extract_sdist: refused archives ----------------------------------------------------


@pytest.mark.parametrize("name", ["../evil", f"{TOP}/../../evil", f"{TOP}/src/../../../evil"])
def test_path_traversal_is_refused(tmp_path: Path, dest: Path, name: str) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(), reg(name, b"x"))
    error = refused(archive, dest, repr(name), "'..'")
    assert error.member == name
    assert not (tmp_path / "evil").exists()


def test_absolute_path_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(), reg("/etc/evil", b"x"))
    refused(archive, dest, "'/etc/evil'", "absolute path")


def test_symlink_to_an_absolute_path_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(),
                       symlink(f"{TOP}/passwd", "/etc/passwd"))
    refused(archive, dest, f"'{TOP}/passwd'", "'/etc/passwd'", "absolute")


@pytest.mark.parametrize("link,target", [("link", ".."), ("link", "../../etc/passwd"),
                                         ("src/link", "../../x"), ("src/a/link", "./../../../x"),
                                         ("link", "../demo-1.0")])
def test_symlink_leading_out_of_the_top_directory_is_refused(
    tmp_path: Path, dest: Path, link: str, target: str
) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(),
                       symlink(f"{TOP}/{link}", target))
    refused(archive, dest, f"'{TOP}/{link}'", repr(target), "outside")


def test_a_member_behind_a_symlink_is_refused(tmp_path: Path, dest: Path) -> None:
    # a -> .. would make a/b land beside the top directory
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(),
                       symlink(f"{TOP}/a", ".."), reg(f"{TOP}/a/b", b"x"))
    refused(archive, dest, f"'{TOP}/a/b'", "behind the symbolic link", f"'{TOP}/a'")


@pytest.mark.parametrize("sub_first", [True, False])
def test_symlink_chain_leading_out_is_refused(
    tmp_path: Path, dest: Path, sub_first: bool
) -> None:
    # Each link looks harmless on its own: d/sub -> .. is the top directory, and
    # a -> d/sub/../.. is lexically the top directory too; followed, it is dest's parent.
    sub = symlink(f"{TOP}/d/sub", "..")
    outer = symlink(f"{TOP}/a", "d/sub/../..")
    links = [sub, outer] if sub_first else [outer, sub]
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(), *links)
    refused(archive, dest, f"'{TOP}/a'", "outside")


def test_symlink_loop_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(),
                       symlink(f"{TOP}/a", "b"), symlink(f"{TOP}/b", "a"))
    refused(archive, dest, "loop")


@pytest.mark.parametrize("target", ["../outside", "/etc/passwd", "other-1.0/x"])
def test_hardlink_to_outside_is_refused(tmp_path: Path, dest: Path, target: str) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(),
                       hardlink(f"{TOP}/hard", target))
    refused(archive, dest, f"'{TOP}/hard'", "hard link", "outside")


def test_hardlink_to_a_symlink_or_a_later_member_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(),
                       symlink(f"{TOP}/link", "setup.py"), hardlink(f"{TOP}/hard", f"{TOP}/link"))
    refused(archive, dest, f"'{TOP}/hard'", "not a regular file")
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(),
                       hardlink(f"{TOP}/hard", f"{TOP}/later"), reg(f"{TOP}/later"))
    refused(archive, dest, f"'{TOP}/hard'", "not a regular file")


@pytest.mark.parametrize("kind,word", [(tarfile.CHRTYPE, "character device"),
                                       (tarfile.BLKTYPE, "block device"),
                                       (tarfile.FIFOTYPE, "fifo")])
def test_devices_and_fifos_are_refused(
    tmp_path: Path, dest: Path, kind: bytes, word: str
) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(),
                       special(f"{TOP}/dev", kind))
    refused(archive, dest, f"'{TOP}/dev'", word)


def test_setuid_setgid_sticky_and_world_writable_bits_are_dropped(
    tmp_path: Path, dest: Path
) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(),
                       reg(f"{TOP}/suid", b"x", mode=0o4755), reg(f"{TOP}/sgid", b"x", 0o2777),
                       reg(f"{TOP}/open", b"x", mode=0o666), directory(f"{TOP}/tmp", 0o1777),
                       directory(f"{TOP}/private", 0o500), reg(f"{TOP}/private/f", b"x", 0o400))
    top = extract_sdist(archive, dest)
    modes = {name: stat.S_IMODE((top / name).stat().st_mode)
             for name in ("suid", "sgid", "open", "tmp", "private", "private/f")}
    assert modes == {"suid": 0o755, "sgid": 0o755, "open": 0o644, "tmp": 0o755,
                     "private": 0o755, "private/f": 0o644}


def test_two_top_level_directories_are_refused(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(), reg("other/x", b"x"))
    refused(archive, dest, "'other/x'", "outside the top-level directory 'demo-1.0'")


def test_a_file_at_the_top_level_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", reg("PKG-INFO"), *normal_members())
    refused(archive, dest, "'PKG-INFO'", "not inside a top-level directory")


@pytest.mark.parametrize("members,culprit,word", [
    ([reg(f"{TOP}/x"), directory(f"{TOP}/x")], f"{TOP}/x", "twice"),
    ([directory(f"{TOP}/x"), symlink(f"{TOP}/x", "src")], f"{TOP}/x", "twice"),
    ([reg(f"{TOP}/x"), reg(f"{TOP}/x/y")], f"{TOP}/x/y", "to be a directory"),
    ([reg(f"{TOP}/x/y"), reg(f"{TOP}/x")], f"{TOP}/x", "twice"),
    ([reg(f"{TOP}/x"), hardlink(f"{TOP}/x", f"{TOP}/setup.py")], f"{TOP}/x", "twice"),
])
def test_a_path_with_two_kinds_is_refused(
    tmp_path: Path, dest: Path, members: list[Member], culprit: str, word: str
) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(), *members)
    refused(archive, dest, repr(culprit), word)


def test_truncated_archive_is_refused(tmp_path: Path, dest: Path) -> None:
    good = make_tar(tmp_path / "good.tar.gz", *normal_members(),
                    reg(f"{TOP}/big", os.urandom(64 << 10)))
    archive = tmp_path / "demo-1.0.tar.gz"
    archive.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    refused(archive, dest, "truncated or corrupt")


def test_random_bytes_are_refused(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "demo-1.0.tar.gz"
    archive.write_bytes(os.urandom(4096))
    refused(archive, dest, "not a valid gzip-compressed tar file", "not a gzip file")
    archive = tmp_path / "demo-1.0.zip"
    archive.write_bytes(os.urandom(4096))
    refused(archive, dest, "not a zip file")


def test_gzip_of_something_that_is_not_a_tar_is_refused(tmp_path: Path, dest: Path) -> None:
    import gzip

    archive = tmp_path / "demo-1.0.tar.gz"
    archive.write_bytes(gzip.compress(b"hello, I am not a tar file" * 100))
    refused(archive, dest, "not a valid gzip-compressed tar file")


@pytest.mark.parametrize("members", [[], [directory(".")]])
def test_empty_archive_is_refused(tmp_path: Path, dest: Path, members: list[Member]) -> None:
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *members)
    refused(archive, dest, "is empty")


def test_too_many_members_is_refused(
    tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archives, "MAX_MEMBERS", 10)
    members = [reg(f"{TOP}/f{index}") for index in range(20)]
    archive = make_tar(tmp_path / "demo-1.0.tar.gz", *members)
    refused(archive, dest, f"'{TOP}/f10'", "more than 10 members")


def test_too_many_bytes_is_refused(
    tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archives, "MAX_TOTAL_SIZE", 100_000)
    bomb = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(),
                    reg(f"{TOP}/zeros", bytes(200_000)))
    assert bomb.stat().st_size < 10_000  # it compresses well: a small bomb
    refused(bomb, dest, f"'{TOP}/zeros'", "more than 100000 bytes")
    # hard links count too: each becomes a copy
    links = [hardlink(f"{TOP}/h{index}", f"{TOP}/zeros") for index in range(5)]
    bomb = make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members(),
                    reg(f"{TOP}/zeros", bytes(30_000)), *links)
    refused(bomb, dest, f"'{TOP}/h2'", "more than 100000 bytes")


def test_huge_declared_size_is_refused_before_reading_it(tmp_path: Path, dest: Path) -> None:
    header = tarfile.TarInfo(f"{TOP}/huge")
    header.size = 1 << 40  # 1 TiB declared, none of it present
    archive = tmp_path / "demo-1.0.tar"
    archive.write_bytes(header.tobuf(tarfile.GNU_FORMAT) + bytes(1024))
    refused(archive, dest, f"'{TOP}/huge'", f"more than {archives.MAX_TOTAL_SIZE} bytes")


def test_huge_zip_member_is_refused(
    tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archives, "MAX_TOTAL_SIZE", 1 << 20)
    archive = tmp_path / "demo-1.0.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr(f"{TOP}/PKG-INFO", "")
        zipped.writestr(f"{TOP}/zeros", bytes(4 << 20))
    refused(archive, dest, f"'{TOP}/zeros'", "more than 1048576 bytes")


def test_unknown_suffix_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "demo-1.0.whatever", *normal_members())
    refused(archive, dest, "not an sdist", ".tar.gz")


def test_a_top_directory_that_already_exists_is_not_touched(tmp_path: Path) -> None:
    destination = tmp_path / "out"
    (destination / TOP).mkdir(parents=True)
    (destination / TOP / "mine").write_text("mine")
    refused(make_tar(tmp_path / "demo-1.0.tar.gz", *normal_members()), destination,
            "already exists", checked=False)


def _corrupt_zip(archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
        zipped.writestr(f"{TOP}/PKG-INFO", "Name: demo\n")
        zipped.writestr(f"{TOP}/src/a.py", "A" * 1000)
        zipped.writestr(f"{TOP}/src/b.py", "B" * 1000)
    data = bytearray(archive.read_bytes())
    data[data.index(b"B" * 1000) + 500] = ord("C")  # only the CRC check can tell
    archive.write_bytes(bytes(data))
    return archive


def test_failure_while_writing_removes_everything_written(tmp_path: Path) -> None:
    archive = _corrupt_zip(tmp_path / "demo-1.0.zip")
    refused(archive, tmp_path / "new" / "dest", f"'{TOP}/src/b.py'", "CRC")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    refused(archive, existing, f"'{TOP}/src/b.py'", "CRC")
    assert [path.name for path in existing.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("name,word", [("../evil", "'..'"), ("/abs/evil", "absolute"),
                                       ("C:/evil", "absolute"),
                                       (f"{TOP}\\..\\..\\evil", "backslash")])
def test_zip_sdist_with_a_hostile_name_is_refused(
    tmp_path: Path, dest: Path, name: str, word: str
) -> None:
    archive = tmp_path / "demo-1.0.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr(f"{TOP}/PKG-INFO", "")
        zipped.writestr(zipfile.ZipInfo(name), "x")
    refused(archive, dest, repr(name), word)


@pytest.mark.parametrize("file_type,word", [(stat.S_IFLNK, "outside"),
                                            (stat.S_IFCHR, "character device"),
                                            (stat.S_IFIFO, "fifo")])
def test_zip_sdist_with_a_link_out_or_a_device_is_refused(
    tmp_path: Path, dest: Path, file_type: int, word: str
) -> None:
    archive = tmp_path / "demo-1.0.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr(f"{TOP}/PKG-INFO", "")
        info = zipfile.ZipInfo(f"{TOP}/odd")
        info.external_attr = (file_type | 0o777) << 16
        zipped.writestr(info, "../../etc/passwd")
    refused(archive, dest, f"'{TOP}/odd'", word)


def test_archive_error_is_a_buildjail_error_and_pickles() -> None:
    error = ArchiveError("x.tar.gz", "is bad", "x/y")
    assert isinstance(error, BuildjailError)
    assert str(error) == "x.tar.gz: member 'x/y': is bad"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.archive, copy.reason, copy.member, str(copy)) == (
        "x.tar.gz", "is bad", "x/y", str(error))


# --- validate_wheel ---------------------------------------------------------------------


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(
        b"=").decode()


def make_wheel(
    path: Path,
    *,
    dist_info: str = "demo-1.0.dist-info",
    extra: dict[str, bytes] | None = None,
    attrs: dict[str, int] | None = None,
    tags: tuple[str, ...] = ("py3-none-any",),
    metadata_name: str = "demo",
    metadata_version: str = "1.0",
    record: bool = True,
    unlisted: tuple[str, ...] = (),
) -> Path:
    """Write a minimal wheel; RECORD lists every file but those in *unlisted*."""
    files = {
        "demo/__init__.py": b"X = 1\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {metadata_name}\n"
                                 f"Version: {metadata_version}\n".encode(),
        f"{dist_info}/WHEEL": ("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                               + "".join(f"Tag: {tag}\n" for tag in tags)).encode(),
        **(extra or {}),
    }
    rows = [f"{name},{_hash(data)},{len(data)}" for name, data in files.items()
            if name not in unlisted]
    if record:
        rows.append(f"{dist_info}/RECORD,,")
        files[f"{dist_info}/RECORD"] = ("\n".join(rows) + "\n").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (attrs or {}).get(name, stat.S_IFREG | 0o644) << 16
            wheel.writestr(info, data)
    return path


def wheel_refused(path: Path, *words: str) -> None:
    refused_by(validate_wheel, path, *words)


def test_valid_wheel_passes_and_its_tags_are_parsed(tmp_path: Path) -> None:
    path = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl")
    info = validate_wheel(path)
    assert (info.name, info.version, info.build_tag) == ("demo", "1.0", None)
    assert (info.python_tag, info.abi_tag, info.platform_tag) == ("py3", "none", "any")
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == sha256_file(path)
    assert info.size == path.stat().st_size
    assert info.files == ("demo/__init__.py", "demo-1.0.dist-info/METADATA",
                          "demo-1.0.dist-info/WHEEL", "demo-1.0.dist-info/RECORD")


def test_build_tag_compressed_tags_and_name_case(tmp_path: Path) -> None:
    tags = ("cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64")
    path = make_wheel(tmp_path / "Demo-1.0-1local-cp311-cp311-"
                      "manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                      dist_info="Demo-1.0.dist-info", tags=tags)
    info = validate_wheel(path)
    assert (info.name, info.build_tag) == ("Demo", "1local")
    assert info.platform_tag == "manylinux_2_17_x86_64.manylinux2014_x86_64"


def test_in_tree_symlink_in_a_wheel_is_allowed(tmp_path: Path) -> None:
    path = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl",
                      extra={"demo/alias.py": b"__init__.py"},
                      attrs={"demo/alias.py": stat.S_IFLNK | 0o777})
    assert "demo/alias.py" in validate_wheel(path).files


@pytest.mark.parametrize("name", ["demo-1.0.whl", "demo-1.0-py3-none.whl",
                                  "demo-1.0-py3-none-any.zip", "de mo-1.0-py3-none-any.whl",
                                  "demo-1.0-x-py3-none-any.whl",
                                  "demo-1.0-1-2-py3-none-any.whl"])
def test_badly_named_wheel_is_refused(tmp_path: Path, name: str) -> None:
    wheel_refused(make_wheel(tmp_path / name), "is not named")


def test_wheel_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    path.write_bytes(os.urandom(2048))
    wheel_refused(path, "not a zip file")


def test_wheel_without_record_is_refused(tmp_path: Path) -> None:
    wheel_refused(make_wheel(tmp_path / "demo-1.0-py3-none-any.whl", record=False),
                  "no demo-1.0.dist-info/RECORD")


@pytest.mark.parametrize("dist_info", ["other-1.0.dist-info", "demo-2.0.dist-info"])
def test_dist_info_not_matching_the_file_name_is_refused(tmp_path: Path, dist_info: str) -> None:
    path = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl", dist_info=dist_info)
    wheel_refused(path, repr(dist_info), "does not match the file name")


def test_two_dist_info_directories_are_refused(tmp_path: Path) -> None:
    path = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl",
                      extra={"evil-1.0.dist-info/METADATA": b"Name: evil\n"})
    wheel_refused(path, "exactly one .dist-info", "evil-1.0.dist-info")


@pytest.mark.parametrize("name,word", [("../evil.py", "'..'"), ("demo/../../evil.py", "'..'"),
                                       ("/etc/evil", "absolute"), ("C:/evil", "absolute"),
                                       ("demo\\..\\..\\evil", "backslash")])
def test_wheel_entry_escaping_is_refused(tmp_path: Path, name: str, word: str) -> None:
    path = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl", extra={name: b"x"})
    wheel_refused(path, repr(name), word)


@pytest.mark.parametrize("target", ["/etc/passwd", "../../etc/passwd", "../.."])
def test_wheel_symlink_pointing_outside_is_refused(tmp_path: Path, target: str) -> None:
    path = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl",
                      extra={"demo/link": target.encode()},
                      attrs={"demo/link": stat.S_IFLNK | 0o777})
    wheel_refused(path, "'demo/link'", repr(target))


def test_wheel_device_entry_is_refused(tmp_path: Path) -> None:
    path = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl", extra={"demo/dev": b""},
                      attrs={"demo/dev": stat.S_IFBLK | 0o644})
    wheel_refused(path, "'demo/dev'", "block device")


def test_wheel_record_must_match(tmp_path: Path) -> None:
    path = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl",
                      unlisted=("demo/__init__.py",))
    wheel_refused(path, "'demo/__init__.py'", "not listed")
    path = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl")
    with zipfile.ZipFile(path, "a") as wheel, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wheel.writestr("demo/__init__.py", b"tampered")
    wheel_refused(path, "'demo/__init__.py'", "appears twice")


def test_wheel_with_a_tampered_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    good = make_wheel(tmp_path / "good.whl")
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            payload = source.read(info)
            target.writestr(info, b"X = 2\n" if info.filename == "demo/__init__.py" else payload)
    wheel_refused(path, "'demo/__init__.py'", "does not match its hash")


def test_wheel_with_a_corrupt_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    good = make_wheel(tmp_path / "good.whl", extra={"demo/data.txt": b"D" * 1000})
    with zipfile.ZipFile(path, "w") as wheel, zipfile.ZipFile(good) as source:
        for info in source.infolist():
            wheel.writestr(info.filename, source.read(info), zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    data[data.index(b"D" * 1000) + 10] = ord("E")
    path.write_bytes(bytes(data))
    wheel_refused(path, "CRC")


def test_wheel_metadata_and_tags_must_match_the_file_name(tmp_path: Path) -> None:
    wheel_refused(make_wheel(tmp_path / "demo-1.0-py3-none-any.whl", metadata_name="other"),
                  "METADATA", "'other'")
    wheel_refused(make_wheel(tmp_path / "demo-1.0-py3-none-any.whl",
                             tags=("cp311-cp311-linux_x86_64",)), "WHEEL", "tags")


def test_wheel_versions_compare_under_pep_440(tmp_path: Path) -> None:
    """1.0.0 is 1.0 (the old text comparison refused it); a post- or pre-release is not."""
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    assert validate_wheel(make_wheel(path, metadata_version="1.0.0")).version == "1.0"
    for version in ("1.0.post1", "1.0rc1", "1.0.dev0", "not a version", "1.0\x00",
                    "1" * 5000):  # past int()'s digit limit: a ValueError, not InvalidVersion
        wheel_refused(make_wheel(path, metadata_version=version), "METADATA", "has version")


@pytest.mark.parametrize("name", ["demo-1!x-py3-none-any.whl", "demo-1.0-1+x-py3-none-any.whl",
                                  "de__mo-1.0-py3-none-any.whl", "_demo-1.0-py3-none-any.whl",
                                  "d\u0113mo-1.0-py3-none-any.whl",
                                  "demo-1.0-py3-none-any+x.whl"])
def test_wheel_names_outside_the_spec_are_refused(tmp_path: Path, name: str) -> None:
    """Not a PEP 440 version, an escaped name with '__', or anything but plain ASCII."""
    wheel_refused(make_wheel(tmp_path / name), "is not named")


# --- validate_sdist ---------------------------------------------------------------------


def make_sdist(path: Path, *members: Member) -> Path:
    return make_tar(path, *(members or normal_members(path.name.removesuffix(".tar.gz"))))


def sdist_refused(path: Path, *words: str, **expected: str) -> None:
    with pytest.raises(ArchiveError) as caught:
        validate_sdist(path, **expected)
    message = str(caught.value)
    assert str(path) in message
    for word in words:
        assert word in message, message


def test_valid_sdist_passes(tmp_path: Path) -> None:
    path = make_sdist(tmp_path / "demo-1.0.tar.gz")
    info = validate_sdist(path, expected_name="Demo", expected_version="1.0")
    assert (info.name, info.version) == ("demo", "1.0")
    assert info.sha256 == sha256_file(path) and info.size == path.stat().st_size


def test_legacy_sdist_name_passes(tmp_path: Path) -> None:
    path = make_sdist(tmp_path / "python-dateutil-2.8.2.tar.gz")
    info = validate_sdist(path, expected_name="python_dateutil", expected_version="2.8.2")
    assert (info.name, info.version) == ("python-dateutil", "2.8.2")


def test_sdist_of_another_name_or_version_is_refused(tmp_path: Path) -> None:
    path = make_sdist(tmp_path / "demo-1.0.tar.gz")
    sdist_refused(path, "expected 'other'", expected_name="other")
    sdist_refused(path, "expected '2.0'", expected_version="2.0")


def test_sdist_versions_compare_under_pep_440(tmp_path: Path) -> None:
    """1.0c1 is 1.0rc1, and 1.0-1 is 1.0.post1, not 1.0.1 (the old comparison got both wrong)."""
    validate_sdist(make_sdist(tmp_path / "demo-1.0rc1.tar.gz"), expected_version="1.0c1")
    release = make_sdist(tmp_path / "demo-1.0.1.tar.gz")
    sdist_refused(release, "expected '1.0-1'", expected_version="1.0-1")
    sdist_refused(release, "expected 'not a version'", expected_version="not a version")
    sdist_refused(release, "expected", expected_version="1" * 5000)
    post = make_sdist(tmp_path / "demo-1.0.post1.tar.gz")
    validate_sdist(post, expected_version="1.0-1")
    sdist_refused(post, "expected '1.0'", expected_version="1.0")


@pytest.mark.parametrize("name", ["demo-1.0.zip", "demo-1.0.tar.bz2", "demo.tar.gz",
                                  "demo-.tar.gz", "demo-1!x.tar.gz", "-demo-1.0.tar.gz",
                                  "d\u0113mo-1.0.tar.gz"])
def test_badly_named_sdist_is_refused(tmp_path: Path, name: str) -> None:
    sdist_refused(make_tar(tmp_path / name, *normal_members()), "is not named")


def test_sdist_that_is_not_a_gzip_tar_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0.tar.gz"
    path.write_bytes(os.urandom(1024))
    sdist_refused(path, "not a valid gzip-compressed tar file")
    make_tar(path, *normal_members(), mode="w:bz2")
    sdist_refused(path, "not a gzip file")


def test_sdist_with_entries_outside_its_top_directory_is_refused(tmp_path: Path) -> None:
    sdist_refused(make_sdist(tmp_path / "demo-1.0.tar.gz", *normal_members(), reg("x/y")),
                  "'x/y'", "outside the top-level directory")
    sdist_refused(make_sdist(tmp_path / "demo-1.0.tar.gz", *normal_members(), reg("../y")),
                  "'../y'", "'..'")
    sdist_refused(make_sdist(tmp_path / "demo-1.0.tar.gz", *normal_members(),
                             symlink(f"{TOP}/l", "../../etc")), f"'{TOP}/l'", "outside")


def test_sdist_with_the_wrong_top_directory_is_refused(tmp_path: Path) -> None:
    path = make_sdist(tmp_path / "demo-1.0.tar.gz", *normal_members("demo-2.0"))
    sdist_refused(path, "top-level directory 'demo-2.0', expected 'demo-1.0'")


def test_sdist_without_pkg_info_is_refused(tmp_path: Path) -> None:
    members = [member for member in normal_members() if not member[0].endswith("PKG-INFO")]
    sdist_refused(make_sdist(tmp_path / "demo-1.0.tar.gz", *members), "no demo-1.0/PKG-INFO")


# --- every read of a build's archive is bounded ----------------------------------------------

def test_metadata_larger_than_the_bound_is_refused_without_reading_it(
        tmp_path: Path) -> None:
    big = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nSummary: " + b"A" * (
        archives.MAX_METADATA + 1)
    path = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl",
                      extra={"demo-1.0.dist-info/METADATA": big})
    wheel_refused(path, "member 'demo-1.0.dist-info/METADATA'",
                  f"inflates to more than {archives.MAX_METADATA} bytes")


def test_a_record_that_inflates_past_the_bound_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    make_wheel(path, record=False)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as wheel:
        wheel.writestr("demo-1.0.dist-info/RECORD", b"\n" * (archives.MAX_RECORD + 1))
    wheel_refused(path, "RECORD", "inflates to more than")


def test_a_pax_header_that_inflates_past_the_bound_is_refused(tmp_path: Path,
                                                             dest: Path) -> None:
    """tarfile reads a pax header whole: 32 MiB of it would be read in one piece."""
    archive = tmp_path / "demo-1.0.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"{TOP}/PKG-INFO")
        info.pax_headers = {"comment": "A" * (2 * archives.MAX_HEADER_READ)}
        tar.addfile(info, io.BytesIO(b""))
    assert archive.stat().st_size < 1 << 20
    refused(archive, dest, "a tar header larger than", "an archive bomb?")
    with tarfile.open(archive) as tar:  # control: tarfile alone reads all of it
        assert len(tar.getmembers()[0].pax_headers["comment"]) == 2 * archives.MAX_HEADER_READ
