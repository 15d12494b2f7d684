"""Lending writable trees to the ephemeral uid and handing them back, against hostile builds."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from buildjail import Policy, Sandbox
from buildjail._linux import ownership
from buildjail._linux.identity import BUILD_UID
from conftest import NONROOT_UID, WITHOUT_SECCOMP, Runner, early_in_a_second

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
SH = "/bin/sh"

def walk_only() -> Policy:
    """The policy of :data:`WITHOUT_SECCOMP`."""
    return Policy.from_mapping(WITHOUT_SECCOMP)


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


CAP_SETUID_EFFECTIVE = struct.pack("<5I", 0x02000001, 1 << 7, 0, 0, 0)
"""security.capability for cap_setuid+ep (VFS_CAP_REVISION_2, effective)."""


def _privileged_files(tree: Path) -> tuple[Path, Path, Path]:
    """A root setuid, a root capable and a world-writable setuid copy of /usr/bin/id."""
    suid, capable, open_suid = tree / "suid", tree / "capable", tree / "open-suid"
    for path, mode in ((suid, 0o4755), (capable, 0o755), (open_suid, 0o4777)):
        shutil.copy("/usr/bin/id", path)
        path.chmod(mode)
    os.setxattr(capable, "security.capability", CAP_SETUID_EFFECTIVE)
    return suid, capable, open_suid


@pytest.mark.parametrize("backend", ["native", "landlock"])
def test_a_privileged_file_the_build_rewrites_gets_no_privileges_back(
        shared_dir: Path, backend: str) -> None:
    """A set-id or capable file in a writable tree: not lent, so the build cannot rewrite
    it; and one the build could write anyway (mode 4777) gets no privileges back on the
    build's content (the kernel strips its set-id bit on the write; the hand-back must
    not put it back)."""
    suid, capable, open_suid = _privileged_files(shared_dir)
    original = suid.read_bytes()
    script = "; ".join(f"cat /bin/true > {path}" for path in (suid, capable, open_suid))
    Sandbox("full", backend=backend).run([SH, "-c", script], cwd="/", writable=[shared_dir])
    assert suid.read_bytes() == capable.read_bytes() == original  # not the build's
    assert suid.stat().st_mode & stat.S_ISUID and suid.stat().st_uid == 0
    assert os.getxattr(capable, "security.capability") == CAP_SETUID_EFFECTIVE
    assert open_suid.read_bytes() == Path("/bin/true").read_bytes()  # written, as 4777 lets
    assert not open_suid.stat().st_mode & stat.S_ISUID  # but no privilege came back


def test_control_an_unchanged_privileged_file_keeps_its_privileges(shared_dir: Path) -> None:
    """The same files, untouched by the build: all keep what they had."""
    suid, capable, open_suid = _privileged_files(shared_dir)
    Sandbox("full").run(["/bin/true"], cwd="/", writable=[shared_dir])
    assert suid.stat().st_mode & 0o7777 == 0o4755
    assert open_suid.stat().st_mode & 0o7777 == 0o4777
    assert os.getxattr(capable, "security.capability") == CAP_SETUID_EFFECTIVE


def test_a_deep_tree_with_a_setuid_file_is_handed_back_whole(shared_dir: Path) -> None:
    script = ("import os, shutil\n"
              "for _ in range(1100):\n"
              "    os.mkdir('d'); os.chdir('d')\n"
              "shutil.copy('/bin/true', 'suid'); os.chmod('suid', 0o6755)\n")
    try:
        result = Sandbox(walk_only()).run(["/usr/bin/python3.11", "-c", script],
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


# --- the hand-back against builds that attack it ---------------------------------------------

ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
UNDEFINED = 0xFFFFFFFF
ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
CAPABILITY = "security.capability"
CAP_NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
"""A file capability (VFS_CAP_REVISION_2, effective) granting CAP_NET_RAW."""


def _acl(other_uid: int) -> bytes:
    """A POSIX ACL (the kernel's xattr format) granting *other_uid* read, write and execute."""
    entries = [(ACL_USER_OBJ, 7, UNDEFINED), (ACL_USER, 7, other_uid),
               (ACL_GROUP_OBJ, 5, UNDEFINED), (ACL_MASK, 7, UNDEFINED), (ACL_OTHER, 5, UNDEFINED)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


def _find(*args: str) -> str:
    """find(1): it walks any depth (fts), unlike Python's os.walk in 3.11."""
    return subprocess.run(["/usr/bin/find", *args], capture_output=True, text=True,
                          check=True).stdout


def test_a_tree_deeper_than_path_max_is_handed_back_whole(shared_dir: Path,
                                                         sandbox_backend: str) -> None:
    """60 levels of 100-character names (6,000+ characters) under 2,000 levels of ``d``."""
    script = ("import os\n"
              "for _ in range(2000):\n    os.mkdir('d'); os.chdir('d')\n"
              "for level in range(60):\n"
              "    name = f'{level:03d}' + 'n' * 97\n    os.mkdir(name); os.chdir(name)\n"
              "    open('file', 'w').write('x')\n"
              "open('suid', 'w').close(); os.chmod('suid', 0o6777)\n")
    result = Sandbox(walk_only(), backend=sandbox_backend).run(
        ["/usr/bin/python3.11", "-c", script], cwd=str(shared_dir), writable=[shared_dir])
    try:
        assert result.exit_code == 0  # not 125: the hand-back went through
        assert int(_find(str(shared_dir), "-name", "file", "-printf", "x\\n").count("x")) == 60
        assert _find(str(shared_dir), "-mindepth", "1", "(", "!", "-uid", "0", "-o", "!",
                     "-gid", "0", "-o",
                     "-perm", "/7022", ")", "-print") == ""
        assert _find(str(shared_dir), "-name", "suid")  # it is there, normalised
    finally:
        subprocess.run(["/bin/rm", "-rf", str(shared_dir / "d")], check=True)


def test_control_such_a_tree_is_beyond_path_based_calls(shared_dir: Path) -> None:
    """The old hand-back called lchown(path): for this tree the kernel refuses the path."""
    fd = os.open(shared_dir, os.O_RDONLY)
    path = str(shared_dir)
    try:
        for level in range(60):
            name = f"{level:03d}" + "n" * 97
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd, path = child, f"{path}/{name}"
        with pytest.raises(OSError) as caught:
            os.lchown(path, 0, 0)
        assert caught.value.errno == errno.ENAMETOOLONG
    finally:
        os.close(fd)
        subprocess.run(["/bin/rm", "-rf", str(shared_dir / ("000" + "n" * 97))], check=True)


HOSTILE_MODES = """
import os, shutil, struct, sys, time
acl = bytes.fromhex(sys.argv[1])
def made(name, kind, mode):
    (os.mkdir(name) if kind == 'd' else open(name, 'w').close())
    os.chmod(name, mode)
made('open.d', 'd', 0o777); made('sgid.d', 'd', 0o2775); made('sticky.d', 'd', 0o1777)
made('shared.f', 'f', 0o666)
shutil.copy('/bin/true', 'suid.f'); os.chmod('suid.f', 0o6755)
os.chmod('pre.f', 0o4777)
made('acl.f', 'f', 0o644)
for name, attr in (('acl.f', 'system.posix_acl_access'), ('open.d', 'system.posix_acl_default'),
                   ('pre.f', 'system.posix_acl_access')):
    try:
        os.setxattr(name, attr, acl); print('ACL SET', name, flush=True)
    except OSError as error:
        print('ACL REFUSED', name, error.strerror, flush=True)
made('cap.f', 'f', 0o755)
deadline = time.time() + 20
while time.time() < deadline and 'security.capability' not in os.listxattr('cap.f'):
    time.sleep(0.05)
print('CAP SEEN' if 'security.capability' in os.listxattr('cap.f') else 'CAP NOT SEEN')
for name in sorted(os.listdir('.')):
    print('MODE', name, oct(os.lstat(name).st_mode), flush=True)
"""


def test_modes_acls_and_capabilities_the_build_chose_are_not_handed_back(
        shared_dir: Path, sandbox_backend: str, tmp_path: Path) -> None:
    tree = shared_dir / "tree"
    tree.mkdir()
    tree.chmod(0o755)
    (tree / "pre.f").write_text("the user's file\n")
    (tree / "pre.f").chmod(0o644)

    def grant_capability() -> None:  # as root, outside: a build cannot set one itself
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (tree / "cap.f").exists():
            time.sleep(0.02)
        with contextlib.suppress(OSError):
            os.setxattr(tree / "cap.f", CAPABILITY, CAP_NET_RAW)

    granter = threading.Thread(target=grant_capability)
    granter.start()
    out = tmp_path / "out"
    with open(out, "wb") as stream:
        result = Sandbox(walk_only(), backend=sandbox_backend).run(
            ["/usr/bin/python3.11", "-c", HOSTILE_MODES, _acl(BUILD_UID).hex()], cwd=str(tree),
            writable=[tree], stdout=stream.fileno())
    granter.join()
    seen = out.read_text()
    assert result.exit_code == 0, seen
    assert "CAP SEEN" in seen  # the capability was really on the file during the build
    assert "MODE suid.f 0o106755" in seen and "MODE sgid.d 0o42775" in seen
    # an ACL naming the build's own uid (another would be unmapped in its user namespace)
    assert "ACL SET acl.f" in seen and "ACL SET open.d" in seen and "ACL SET pre.f" in seen
    for path in [tree, *tree.iterdir()]:
        info = path.lstat()
        assert (info.st_uid, info.st_gid) == (0, 0), path
        assert stat.S_IMODE(info.st_mode) & 0o7022 == 0, (path, oct(info.st_mode))
        assert not set(os.listxattr(path)) & {*ACL_XATTRS, CAPABILITY}, path
    assert stat.S_IMODE((tree / "pre.f").stat().st_mode) == 0o644  # the user's mode, restored
    assert (tree / "pre.f").read_text() == "the user's file\n"


def test_a_non_root_build_leaves_no_set_id_or_writable_files(
        run_sandbox: Runner, identity_kind: str, shared_dir: Path) -> None:
    """As non-root no uid is lent: the run normalises what it changed, as the caller."""
    tree = shared_dir / "tree"
    tree.mkdir()
    os.chown(tree, 4242 if identity_kind == "nonroot" else 0, 4242 if identity_kind ==
             "nonroot" else 0)
    script = ("import os, shutil\n"
              "shutil.copy('/bin/true', 'suid'); os.chmod('suid', 0o6755)\n"
              "os.mkdir('open'); os.chmod('open', 0o2777)\n"
              "open('shared', 'w').close(); os.chmod('shared', 0o666)\n"
              "print(oct(os.stat('suid').st_mode), oct(os.stat('open').st_mode))\n")
    result = run_sandbox(["/usr/bin/python3.11", "-c", script], cwd=str(tree),
                         writable=[str(tree)], capture=True, policy=WITHOUT_SECCOMP)
    assert result["exit_code"] == 0, result
    assert result["stdout"].split() == ["0o106755", "0o42777"]  # what the build did
    # As non-root a directory keeps its set-gid bit (no privilege: it passes a group of the
    # caller's on; the caller's own directories cannot be told from the build's).
    kept = 0o2755 if identity_kind == "nonroot" else 0o755
    for name, mode in (("suid", 0o755), ("open", kept), ("shared", 0o644)):
        assert stat.S_IMODE((tree / name).stat().st_mode) == mode, name


_SET_GID_COPIES = (
    "import os, shutil, stat, subprocess\n"
    "print(oct(stat.S_IMODE(os.stat('sub').st_mode)))\n"  # what the build sees of it
    "subprocess.run(['/bin/chmod', '775', 'sub'], check=True)\n"  # GNU: keeps set-gid
    "subprocess.run(['/bin/cp', '-a', 'sub', 'by-cp'], check=True)\n"
    "shutil.copytree('sub', 'by-copytree')\n"
    "open('sub/new-file', 'w').close(); os.mkdir('sub/new-dir')\n"
)


def test_a_set_gid_directory_of_the_callers_keeps_it_and_the_build_can_copy_it(
        run_sandbox: Runner, identity_kind: str, shared_dir: Path) -> None:
    """Under ``full`` (the filter refuses a set-gid bit in any mode): as root the bit is
    held back for the run, so copying the directory works; as either, the caller's
    directory has it again afterwards, and nothing the build made has it."""
    owner = 4242 if identity_kind == "nonroot" else 0
    tree = shared_dir / "tree"
    (tree / "sub").mkdir(parents=True)
    for path in (tree, tree / "sub"):
        os.chown(path, owner, owner)
    (tree / "sub").chmod(0o2775)
    result = run_sandbox(["/usr/bin/python3.11", "-c", _SET_GID_COPIES], cwd=str(tree),
                         writable=[str(tree)], capture=True)
    if identity_kind == "root":
        assert result["exit_code"] == 0, result
        assert result["stdout"].split() == ["0o775"]  # held back for the run
        for made in ("by-cp", "by-copytree", "sub/new-dir", "sub/new-file"):
            assert not (tree / made).stat().st_mode & (stat.S_ISUID | stat.S_ISGID), made
    else:  # no walk lends the tree: the bit shows, and GNU chmod passing it back is refused
        assert result["exit_code"] == 1, result
        assert result["stdout"].split() == ["0o2775"], result
        assert not (tree / "by-cp").exists()
    mode = stat.S_IMODE((tree / "sub").stat().st_mode)
    if identity_kind == "root":
        assert mode == 0o2775  # the caller's, as before
    else:  # the set-gid bit stays; group-write goes if the directory counts as changed in
        # the run (its change time within CTIME_SLACK_NS of the start: just made here)
        assert mode in (0o2775, 0o2755), oct(mode)
    assert (tree / "sub").stat().st_uid == owner


def test_a_lent_directory_whose_inode_comes_back_as_a_file_gets_no_set_gid(
        shared_dir: Path) -> None:
    """The hand-back restores an entry by its inode number: a set-gid directory the build
    removed, whose number a file of the build's then got, must not make that file set-gid."""
    from buildjail._linux import ownership

    tree = shared_dir / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub").chmod(0o2775)
    owners = ownership.lend([str(tree)], 4242, 4242)
    assert stat.S_IMODE((tree / "sub").stat().st_mode) == 0o775  # held back for the run
    key = next(key for key, original in owners.items() if original.directory
               and original.mode & stat.S_ISGID)
    (tree / "sub").rmdir()
    (tree / "file").write_text("the build's")
    os.chown(tree / "file", 4242, 4242)
    file_key = ((tree / "file").stat().st_dev, (tree / "file").stat().st_ino)
    owners[file_key] = owners.pop(key)  # as if the file had got the directory's number
    ownership.hand_back([str(tree)], owners, 4242, 0, 0)
    mode = (tree / "file").stat().st_mode
    assert not mode & (stat.S_ISUID | stat.S_ISGID), oct(mode)


def _quarantined() -> set[int]:
    from buildjail._linux import identity

    return identity.quarantined_ids()


def test_a_failing_hand_back_frees_the_uid_and_makes_the_tree_unreachable(
        shared_dir: Path, sandbox_backend: str) -> None:
    """Files that cannot be handed back (here: on a read-only mount made during the build)."""
    from buildjail import SandboxSetupError

    for attempt in range(3):
        tree = shared_dir / f"tree{attempt}"
        (tree / "sub").mkdir(parents=True)
        tree.chmod(0o755)
        before = _quarantined()

        def mount_read_only(tree: Path = tree) -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (tree / "sub" / "file").exists():
                time.sleep(0.02)
            subprocess.run(["/usr/bin/mount", "--bind", str(tree / "sub"), str(tree / "sub")],
                           check=True)
            subprocess.run(["/usr/bin/mount", "-o", "remount,bind,ro", str(tree / "sub")],
                           check=True)
            (tree / "go").touch()

        mounter = threading.Thread(target=mount_read_only)
        mounter.start()
        script = ("import os, time\nopen('sub/file', 'w').close()\n"
                  "while not os.path.exists('go'): time.sleep(0.02)\n")
        try:
            with pytest.raises(SandboxSetupError) as caught:
                Sandbox("full", backend=sandbox_backend).run(
                    ["/usr/bin/python3.11", "-c", script], cwd=str(tree), writable=[tree])
            mounter.join()
            message = caught.value.reason
            assert f"{tree} made unreachable (mode 000), so uid " in message, message
            uid = int(message.split(" so uid ")[1].split()[0])
            assert uid not in _quarantined() - before  # the uid is free again
            assert _quarantined() - before == set()
            assert stat.S_IMODE(tree.stat().st_mode) == 0
            assert (tree / "sub" / "file").stat().st_uid == uid  # the failure was real
        finally:
            mounter.join()
            subprocess.run(["/usr/bin/umount", str(tree / "sub")], check=False)
            subprocess.run(["/bin/rm", "-rf", str(tree)], check=True)


def _lent_long_ago(tree: Path) -> tuple[ownership.Owners, int]:
    """Lend *tree* to 4242 and wait past the slack, so that every entry's change time lies
    before the returned ``lent_before``, as a large tree's first entries do in a run."""
    from buildjail._linux import ownership

    owners = ownership.lend([str(tree)], 4242, 4242)
    time.sleep(ownership.CTIME_SLACK_NS / 1e9 + 0.05)
    return owners, ownership.changed_since()


def test_an_acl_set_on_a_lent_file_is_stripped_though_the_file_was_lent_before_the_run(
        shared_dir: Path) -> None:
    """The hand-back skips the xattr look only for entries whose inode the run left alone:
    an ACL set during the run changes the change time, and is stripped."""
    from buildjail._linux import ownership

    tree = shared_dir / "tree"
    tree.mkdir()
    (tree / "old.f").write_text("the user's\n")
    (tree / "old.f").chmod(0o644)
    (tree / "kept.f").write_text("the user's, with an ACL\n")
    os.setxattr(tree / "kept.f", ACL_XATTRS[0], _acl(1234))
    kept_acl = os.getxattr(tree / "kept.f", ACL_XATTRS[0])
    owners, lent_before = _lent_long_ago(tree)
    assert (tree / "old.f").stat().st_ctime_ns < lent_before  # the case under test
    time.sleep(0.05)
    os.setxattr(tree / "old.f", ACL_XATTRS[0], _acl(4242))  # as the build could without seccomp
    ownership.hand_back([str(tree)], owners, 4242, 0, 0, lent_before=lent_before)
    assert not set(os.listxattr(tree / "old.f")) & set(ACL_XATTRS)
    assert stat.S_IMODE((tree / "old.f").stat().st_mode) == 0o644
    assert os.getxattr(tree / "kept.f", ACL_XATTRS[0]) == kept_acl  # the user's own, kept
    for path in (tree, tree / "old.f", tree / "kept.f"):
        assert (path.stat().st_uid, path.stat().st_gid) == (0, 0), path


def test_control_an_untouched_lent_entry_is_not_looked_at_again(shared_dir: Path) -> None:
    """What the skip saves, seen from outside: the xattrs of an entry lent before the run
    and left alone are not read at the hand-back (an ACL planted behind the hand-back's
    back, without a change of the inode's change time, cannot be made; so the test counts
    the reads instead)."""
    from buildjail._linux import ownership

    tree = shared_dir / "tree"
    (tree / "sub").mkdir(parents=True)
    for number in range(20):
        (tree / "sub" / f"f{number}").write_text("x")
    owners, lent_before = _lent_long_ago(tree)
    reads: list[str] = []
    real = os.listxattr

    def counted(path: str, *, follow_symlinks: bool = True) -> list[str]:
        reads.append(path)
        return real(path, follow_symlinks=follow_symlinks)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "listxattr", counted)
        ownership.hand_back([str(tree)], owners, 4242, 0, 0, lent_before=lent_before)
        assert reads == []
        owners = ownership.lend([str(tree)], 4242, 4242)
        reads.clear()
        ownership.hand_back([str(tree)], owners, 4242, 0, 0)  # no lend time: every entry
        assert len(reads) == 22
    assert {path.stat().st_uid for path in tree.rglob("*")} == {0}


def test_the_hand_back_gives_the_working_directory_back(shared_dir: Path,
                                                       tmp_path: Path) -> None:
    """The xattr calls name entries from a working directory moved through the tree; it is
    the caller's again afterwards, also when the walk failed."""
    from buildjail._linux import ownership

    tree = shared_dir / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("x")
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        owners = ownership.lend([str(tree)], 4242, 4242)
        assert os.getcwd() == str(tmp_path)
        ownership.hand_back([str(tree)], owners, 4242, 0, 0)
        assert os.getcwd() == str(tmp_path)
        with pytest.raises(OSError):
            ownership.lend([str(tree), str(tree / "missing" / "x")], 4242, 4242)
        assert os.getcwd() == str(tmp_path)
    finally:
        os.chdir(here)
        subprocess.run(["/bin/chown", "-R", "0:0", str(tree)], check=True)


def test_an_acl_set_on_a_lent_file_is_stripped_where_times_are_whole_seconds(
        coarse_fs: Path) -> None:
    """The hand-back's skip trusts a change to move the change time past ``lent_before``;
    on a file system that keeps whole seconds, a change made in the second the lend ended
    is stamped with the start of that second, before ``lent_before``."""
    from buildjail._linux import ownership

    tree = coarse_fs / "tree"
    tree.mkdir()
    (tree / "old.f").write_text("the user's\n")
    (tree / "old.f").chmod(0o664)
    (tree / "old.d").mkdir()
    (tree / "old.d").chmod(0o775)
    early_in_a_second()
    owners = ownership.lend([str(tree)], 4242, 4242)
    lent_before = ownership.changed_since()
    # as the build could without seccomp, right after the lend
    os.setxattr(tree / "old.f", ACL_XATTRS[0], _acl(4242))
    os.setxattr(tree / "old.d", ACL_XATTRS[1], _acl(4242))
    assert (tree / "old.f").stat().st_ctime_ns < lent_before  # the case under test
    ownership.hand_back([str(tree)], owners, 4242, 0, 0, lent_before=lent_before)
    for path in (tree / "old.f", tree / "old.d"):
        assert not set(os.listxattr(path)) & set(ACL_XATTRS), path
        assert (path.stat().st_uid, path.stat().st_gid) == (0, 0), path


ACL_ON_ORIGINALS = """
import os, sys
acl = bytes.fromhex(sys.argv[1])
os.setxattr('old.f', 'system.posix_acl_access', acl)
os.setxattr('old.d', 'system.posix_acl_default', acl)
print('ACL SET', flush=True)
"""


def _callers_tree(tree: Path) -> Path:
    """Make *tree* with a file and a directory of the caller's, for ACL_ON_ORIGINALS."""
    tree.mkdir()
    tree.chmod(0o755)
    (tree / "old.f").write_text("the user's\n")
    (tree / "old.f").chmod(0o664)
    (tree / "old.d").mkdir()
    (tree / "old.d").chmod(0o775)
    return tree


def _acls_are_not_kept(tree: Path, backend: str, out: Path, *, first: str = "") -> None:
    """Run ACL_ON_ORIGINALS (after *first*) in *tree* under ``full`` less seccomp: it must
    set its ACLs, and the caller's entries must come back root's without them."""
    with open(out, "wb") as stream:
        result = Sandbox(walk_only(), backend=backend).run(
            ["/usr/bin/python3.11", "-c", first + ACL_ON_ORIGINALS, _acl(BUILD_UID).hex()],
            cwd=str(tree), writable=[tree], stdout=stream.fileno())
    assert result.exit_code == 0 and "ACL SET" in out.read_text()
    for path in (tree / "old.f", tree / "old.d"):
        assert not set(os.listxattr(path)) & set(ACL_XATTRS), path
        assert (path.stat().st_uid, path.stat().st_gid) == (0, 0), path


def test_a_build_cannot_keep_an_acl_on_the_callers_files_where_times_are_whole_seconds(
        coarse_fs: Path, sandbox_backend: str, tmp_path: Path) -> None:
    """The same through a real run (``full`` less seccomp): the build's first act is to
    put ACLs granting its uid access on a file and (default) on a directory of the
    caller's; three runs, each must hand them back clean."""
    for attempt in range(3):
        tree = _callers_tree(coarse_fs / f"tree{attempt}")
        early_in_a_second(0.2)
        _acls_are_not_kept(tree, sandbox_backend, tmp_path / f"out{attempt}")


NORMALISED_WHERE_TIMES_ARE_SECONDS = """
import os
open('open.f', 'w').close(); os.chmod('open.f', 0o777)
os.mkdir('sticky.d'); os.chmod('sticky.d', 0o1777)
open('acl.d/inherits.f', 'w').close()
"""


def test_a_build_leaves_no_writable_mode_or_acl_where_times_are_whole_seconds(
        run_sandbox: Runner, identity_kind: str, coarse_fs: Path) -> None:
    """Under ``full`` (the filter on): as non-root, ``normalize_changed`` skips entries whose
    change time is before the run's start less the slack; whole-second times put what the
    build makes in the run's first second before it. Three runs, each must come back clean:
    no group/other-writable or sticky mode, no ACL inherited from the caller's directory."""
    owner = NONROOT_UID if identity_kind == "nonroot" else 0
    for attempt in range(3):
        tree = coarse_fs / f"tree{attempt}"
        (tree / "acl.d").mkdir(parents=True)
        for path in (tree, tree / "acl.d"):
            os.chown(path, owner, owner)
        os.setxattr(tree / "acl.d", ACL_XATTRS[1], _acl(1234))  # a shared project directory
        early_in_a_second(0.0)
        result = run_sandbox(["/usr/bin/python3.11", "-c", NORMALISED_WHERE_TIMES_ARE_SECONDS],
                             cwd=str(tree), writable=[str(tree)], capture=True)
        assert result["exit_code"] == 0, result
        for name in ("open.f", "sticky.d", "acl.d/inherits.f"):
            info = (tree / name).lstat()
            assert stat.S_IMODE(info.st_mode) & 0o7022 == 0, (attempt, name, oct(info.st_mode))
            assert ACL_XATTRS[0] not in os.listxattr(tree / name), (attempt, name)


def test_relative_roots_are_lent_and_handed_back_whole(shared_dir: Path) -> None:
    """The xattr calls move the working directory through the tree: a relative root given
    after another must still name the tree the caller meant, not one below the first."""
    from buildjail._linux import ownership

    for path in (shared_dir / "a" / "sub", shared_dir / "b"):
        path.mkdir(parents=True)
        (path / "f").write_text("x")
    here = os.getcwd()
    os.chdir(shared_dir)
    try:
        owners = ownership.lend(["a", "b"], 4242, 4242)
        assert (shared_dir / "b" / "f").stat().st_uid == 4242  # lent, like a
        ownership.hand_back(["a", "b"], owners, 4242, 0, 0)
        assert {path.stat().st_uid for path in shared_dir.rglob("*")} == {0}
    finally:
        os.chdir(here)
        subprocess.run(["/bin/chown", "-R", "0:0", str(shared_dir)], check=True)


def _clock_ahead(seconds: int) -> Callable[[int], int]:
    """``time.clock_gettime_ns`` with the coarse real-time clock *seconds* ahead: as if the
    writable tree's file system stamped change times by a clock that far behind ours."""
    real = time.clock_gettime_ns

    def ahead(clock: int) -> int:
        return real(clock) + (seconds * 1_000_000_000 if clock == 5 else 0)  # REALTIME_COARSE

    return ahead


def test_a_build_cannot_keep_an_acl_where_the_file_systems_clock_is_behind(
        shared_dir: Path, sandbox_backend: str, tmp_path: Path) -> None:
    """A network or FUSE file system stamps change times with its server's clock: one 5 s
    behind ours (modelled by running the supervisor's coarse clock 5 s ahead; it is forked
    from here) stamps the build's ACL before the lend's end by our clock. The hand-back
    asks the file system its time (a file made there) and still finds it."""
    tree = _callers_tree(shared_dir / "tree")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "clock_gettime_ns", _clock_ahead(5))
        _acls_are_not_kept(tree, sandbox_backend, tmp_path / "out")
    assert sorted(path.name for path in tree.iterdir()) == ["old.d", "old.f"]  # no probe left


def test_the_normalisation_finds_a_change_where_the_file_systems_clock_is_behind(
        shared_dir: Path) -> None:
    """As non-root the normalisation finds the run's changes by change time: the time it
    counts from is the file system's when that lags ours (the clock modelled as above)."""
    tree = shared_dir / "tree"
    tree.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "clock_gettime_ns", _clock_ahead(5))
        since = ownership.changed_since([str(tree)])
    (tree / "open.f").write_text("the build's")
    (tree / "open.f").chmod(0o777)
    ownership.normalize_changed([str(tree)], since)
    assert stat.S_IMODE((tree / "open.f").stat().st_mode) == 0o755


def test_where_no_file_can_be_made_everything_counts_as_changed(shared_dir: Path) -> None:
    """No file system time to be had (a read-only tree, a file): the horizon is 0, so the
    hand-back and the normalisation look at every entry."""
    from buildjail._linux import changetimes

    tree = shared_dir / "tree"
    tree.mkdir()
    (tree / "file").write_text("x")
    assert changetimes.horizon([str(tree / "file")], 0) == 0
    assert 0 < changetimes.horizon([str(tree)], 0) <= changetimes.now_ns()
    subprocess.run(["/usr/bin/mount", "--bind", str(tree), str(tree)], check=True)
    try:
        subprocess.run(["/usr/bin/mount", "-o", "remount,bind,ro", str(tree)], check=True)
        assert changetimes.horizon([str(tree)], 0) == 0
    finally:
        subprocess.run(["/usr/bin/umount", str(tree)], check=True)
    assert sorted(path.name for path in tree.iterdir()) == ["file"]


def test_a_build_cannot_keep_an_acl_when_the_clock_is_set_back_during_the_run(
        shared_dir: Path, sandbox_backend: str, tmp_path: Path) -> None:
    """The real-time clock set back during a run (NTP, an admin) stamps what the build
    changes before the lend's end; the supervisor moves that moment back as far as the
    clock went (its distance from the boot-time clock shrank). Modelled: the supervisor,
    forked from here, sees the real-time clocks and the file system's time 5 s ahead
    until the build's first act, the step."""
    from buildjail._linux import changetimes

    tree = _callers_tree(shared_dir / "tree")
    stepped = tree / "stepped"
    real_clock, real_file_system = time.clock_gettime_ns, changetimes._filesystem_now

    def ahead() -> int:
        return 0 if stepped.exists() else 5_000_000_000

    def clock(which: int) -> int:
        return real_clock(which) + (ahead() if which in (time.CLOCK_REALTIME, 5) else 0)

    def file_system_now(directory: str) -> int | None:
        now = real_file_system(directory)
        return None if now is None else now + ahead()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "clock_gettime_ns", clock)
        patch.setattr(changetimes, "_filesystem_now", file_system_now)
        _acls_are_not_kept(tree, sandbox_backend, tmp_path / "out",
                           first="open('stepped', 'w').close()\n")
