"""Lending writable trees to the ephemeral uid and handing them back, against hostile builds."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from buildjail import Sandbox

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
SH = "/bin/sh"


def test_a_hard_link_into_a_writable_tree_does_not_open_its_other_name(
        shared_dir: Path) -> None:
    outside, tree = shared_dir / "outside", shared_dir / "tree"
    outside.mkdir()
    tree.mkdir()
    original = outside / "site_file.py"
    original.write_text("original\n")
    os.link(original, tree / "entry.py")
    result = Sandbox("full").run([SH, "-c", f"echo pwned > {tree}/entry.py"], cwd="/",
                                 writable=[tree])
    assert result.exit_code != 0  # the redirection failed: the build does not own the inode
    assert original.read_text() == "original\n"
    assert original.stat().st_uid == 0


def test_a_deep_tree_with_a_setuid_file_is_handed_back_whole(shared_dir: Path) -> None:
    script = ("import os, shutil\n"
              "for _ in range(1100):\n"
              "    os.mkdir('d'); os.chdir('d')\n"
              "shutil.copy('/bin/true', 'suid'); os.chmod('suid', 0o6755)\n")
    try:
        result = Sandbox("full").run(["/usr/bin/python3.11", "-c", script],
                                     cwd=str(shared_dir), writable=[shared_dir])
        assert result.exit_code == 0
        found = subprocess.run(  # find(1) walks any depth; os.walk recurses in Python 3.11
            ["/usr/bin/find", str(shared_dir), "(", "!", "-uid", "0", "-o", "-perm", "/6000",
             ")", "-print"], capture_output=True, text=True, check=True).stdout
        assert found == ""
        assert subprocess.run(["/usr/bin/find", str(shared_dir), "-name", "suid"],
                              capture_output=True, text=True, check=True).stdout
    finally:
        subprocess.run(["/bin/rm", "-rf", str(shared_dir / "d")], check=True)


def test_nested_writable_paths_keep_their_original_owners(shared_dir: Path) -> None:
    project, dist = shared_dir / "project", shared_dir / "project" / "dist"
    dist.mkdir(parents=True)
    old = dist / "old.whl"
    old.write_text("x")
    for path in (project, dist, old):
        os.chown(path, 4242, 4242)
    result = Sandbox("full").run([SH, "-c", f"touch {dist}/new.whl"], cwd="/",
                                 writable=[project, dist])
    assert result.exit_code == 0
    assert {path.stat().st_uid for path in (project, dist, old)} == {4242}
    assert (dist / "new.whl").stat().st_uid == 0  # what the build made goes to the caller


def test_a_writable_path_that_is_a_symlink_is_refused(shared_dir: Path) -> None:
    (shared_dir / "real").mkdir()
    (shared_dir / "link").symlink_to(shared_dir / "real")
    from buildjail import SandboxSetupError

    with pytest.raises(SandboxSetupError, match="is a symbolic link"):
        Sandbox("full").run(["/bin/true"], cwd="/", writable=[shared_dir / "link"])


def test_a_mask_inside_an_exposed_directory_under_var_tmp(tmp_path: Path) -> None:
    base = Path("/var/tmp") / tmp_path.name
    (base / "secret").mkdir(parents=True)
    try:
        (base / "secret" / "key").write_text("TOPSECRET")
        (base / "public").write_text("public")
        policy = Sandbox("full").policy.with_paths(readonly=[str(base)],
                                                   masked=[str(base / "secret")])
        out = base / "out"
        out.mkdir()
        result = Sandbox(policy).run(
            [SH, "-c", f"cat {base}/public {base}/secret/key > {out}/seen 2>&1; true"],
            cwd="/", writable=[out])
        assert result.exit_code == 0
        seen = (out / "seen").read_text()
        assert "public" in seen and "TOPSECRET" not in seen
    finally:
        shutil.rmtree(base)
