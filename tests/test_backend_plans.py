"""What each backend compiles from a policy, planned without running anything.

These need neither root nor bubblewrap: the plans are built for a pretended caller (root
with a leased identity, or uid 4242) and inspected, never executed.
"""

from __future__ import annotations

import fnmatch
import io
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildjail._linux import kernel as k
from buildjail._linux import seccomp
from buildjail._linux.filesystem import (
    COPY_FILE_SIZE,
    STAGE_DIR,
    _etc_shown,
    _read_bounded,
    installation_paths,
    venv_paths,
)
from buildjail._linux.identity import BUILD_GID, BUILD_UID, Identity, passwd_text
from buildjail.backends._supervisor import plan_sandbox
from buildjail.backends.base import Launch, Request, SandboxPlan
from buildjail.backends.bwrap import plan_bwrap
from buildjail.backends.landlock import plan_landlock
from buildjail.backends.native import plan_native
from buildjail.policy import VIEW_ETC, Policy

BWRAP = "/opt/nowhere/bwrap"
"""Never executed: the plans only name it."""
LEASED = Identity(uid=61000, gid=61000)
SEEN = LEASED.mapped_inside()
"""The leased identity as a namespaced sandbox plans it: seen inside as the fixed ids."""
CALLER = Identity(uid=4242, gid=4242)
INIT_FULL = k.CLONE_NEWNS | k.CLONE_NEWNET | k.CLONE_NEWIPC | k.CLONE_NEWUTS | k.CLONE_NEWCGROUP
"""The namespaces the native init makes for ``full``: all but the supervisor's user and pid."""


@pytest.fixture
def trees(tmp_path: Path) -> tuple[str, str]:
    """A read-only and a writable tree for the policy to expose."""
    readonly, writable = tmp_path / "src", tmp_path / "out"
    readonly.mkdir()
    writable.mkdir()
    return str(readonly), str(writable)


def _sandbox(profile: str, trees: tuple[str, str], *, root: bool,
             recording: bool = False) -> SandboxPlan:
    """The shared plan of *profile*, as root (with a leased identity) or as uid 4242;
    *recording* attempts as the build frontends do."""
    readonly, writable = trees
    policy = Policy.profile(profile)
    if recording:
        policy = policy.recording_attempts()
    if policy.filesystem:
        policy = policy.with_paths(readonly=[readonly], writable=[writable])
    leased = root and policy.ephemeral_identity
    request = Request(policy=policy, argv=("python", "-c", "pass"), cwd=writable,
                      env={"PATH": "/usr/bin:/bin"}, stdout=1)
    return plan_sandbox(request, LEASED if leased else CALLER, leased=leased, root=root)


@pytest.fixture
def launches() -> Iterator[list[Launch]]:
    """The launches a test plans; their descriptors are closed afterwards."""
    planned: list[Launch] = []
    yield planned
    for launch in planned:
        for fd in launch.fds:
            os.close(fd)


def _bwrap(sandbox: SandboxPlan, launches: list[Launch]) -> Launch:
    launch = plan_bwrap(BWRAP, sandbox)
    launches.append(launch)
    return launch


def _value(argv: tuple[str, ...], option: str) -> str:
    """The value following *option*, which must occur exactly once."""
    assert argv.count(option) == 1, (option, argv)
    return argv[argv.index(option) + 1]


def _triples(argv: tuple[str, ...]) -> set[tuple[str, str, str]]:
    return set(zip(argv, argv[1:], argv[2:], strict=False))


# -- what the supervisor plans for every backend ---------------------------------------------

def test_a_non_root_caller_gets_a_user_namespace(trees: tuple[str, str]) -> None:
    assert "user" in _sandbox("full", trees, root=False).namespaces
    assert "user" not in _sandbox("full", trees, root=True).namespaces
    assert _sandbox("none", trees, root=False).namespaces == frozenset()


def test_the_full_view_is_planned_for_the_builds_identity(trees: tuple[str, str]) -> None:
    sandbox = _sandbox("full", trees, root=True)
    assert sandbox.leased
    assert sandbox.mounts is not None
    assert sandbox.mounts.identity == SEEN
    assert (SEEN.uid, SEEN.inside_uid, SEEN.inside_gid) == (61000, BUILD_UID, BUILD_GID)
    assert f"buildjail:x:{BUILD_UID}:{BUILD_GID}:" in passwd_text(SEEN)
    assert trees[0] in sandbox.mounts.readonly
    assert sandbox.mounts.writable == (trees[1],)
    assert sandbox.env["HOME"] == LEASED.home
    assert sandbox.env["TMPDIR"] == "/tmp"
    assert sandbox.seccomp_program == seccomp.build_filter()


def test_without_a_view_the_environment_is_the_requests(trees: tuple[str, str]) -> None:
    sandbox = _sandbox("network", trees, root=False)
    assert sandbox.mounts is None
    assert sandbox.env == {"PATH": "/usr/bin:/bin"}
    assert sandbox.seccomp_program is None


# -- native ----------------------------------------------------------------------------------

def test_native_full_as_root_builds_everything_in_its_init(trees: tuple[str, str]) -> None:
    sandbox = _sandbox("full", trees, root=True)
    launch = plan_native(sandbox)
    setup, confinement, command = launch.setup, launch.confinement, launch.command
    assert setup.namespaces == INIT_FULL
    assert setup.loopback
    assert setup.fresh_proc
    assert setup.mounts is sandbox.mounts
    assert setup.hostname == sandbox.hostname
    assert setup.staged == ()
    assert confinement.identity == SEEN
    assert confinement.switch_identity
    assert confinement.map_identity  # the supervisor maps the init's last user namespace
    assert confinement.drop_capabilities
    assert confinement.no_new_privs
    assert confinement.seccomp_program == seccomp.build_filter()
    assert confinement.limits == sandbox.policy.limits
    assert command.argv == ("python", "-c", "pass")
    assert command.cwd == trees[1]
    assert command.stdio == (None, 1, None)
    assert command.new_session
    assert command.env["HOME"] == LEASED.home
    assert (command.inherited_fds, command.status_fd, launch.fds) == ((), None, ())


def test_native_full_as_non_root_keeps_the_callers_uid(trees: tuple[str, str]) -> None:
    launch = plan_native(_sandbox("full", trees, root=False))
    assert launch.setup.namespaces == INIT_FULL  # the user namespace is the supervisor's
    assert launch.confinement.identity == CALLER
    assert not launch.confinement.switch_identity
    assert not launch.confinement.map_identity  # the caller's own ids are the same every run
    assert launch.confinement.drop_capabilities


def test_native_network_isolates_only_the_network_and_hostname(trees: tuple[str, str]) -> None:
    launch = plan_native(_sandbox("network", trees, root=True))
    assert launch.setup.namespaces == k.CLONE_NEWNET | k.CLONE_NEWUTS
    assert launch.setup.loopback
    assert launch.setup.mounts is None
    assert not launch.setup.fresh_proc
    assert launch.confinement.seccomp_program is None
    assert not launch.confinement.drop_capabilities
    assert not launch.command.new_session


def test_native_none_confines_nothing(trees: tuple[str, str]) -> None:
    launch = plan_native(_sandbox("none", trees, root=True))
    assert launch.setup.namespaces == 0
    assert not launch.setup.loopback
    assert launch.setup.hostname is None
    assert launch.setup.mounts is None
    confinement = launch.confinement
    assert not (confinement.switch_identity or confinement.drop_capabilities
                or confinement.no_new_privs or confinement.seccomp_program)


# -- bwrap -----------------------------------------------------------------------------------

def test_bwrap_full_as_root(trees: tuple[str, str], launches: list[Launch]) -> None:
    sandbox = _sandbox("full", trees, root=True)
    launch = _bwrap(sandbox, launches)
    argv = launch.command.argv
    assert argv[0] == BWRAP
    # the init is pid 1 of the sandbox's pid namespace: its death ends bubblewrap's inside
    # it, and what the command leaves running must outlive bubblewrap's monitor for a moment
    assert "--die-with-parent" not in argv
    for option in ("--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-uts",
                   "--unshare-cgroup", "--new-session"):
        assert option in argv
    # the init makes the network and IPC namespaces, so its monitor counts what they hold
    assert "--unshare-net" not in argv
    assert "--unshare-ipc" not in argv
    assert _value(argv, "--cap-drop") == "ALL"
    if sandbox.hostname is not None:
        assert _value(argv, "--hostname") == sandbox.hostname
    assert argv[-6:] == ("--chdir", trees[1], "--", "python", "-c", "pass")
    # bubblewrap, run as the leased uid, maps the fixed ids onto it
    assert (_value(argv, "--uid"), _value(argv, "--gid")) == (str(BUILD_UID), str(BUILD_GID))
    # the caller's trees are hidden from the leased identity (tmp_path is 0700): staged
    setup = launch.setup
    staged = {source: target for source, target, _ in setup.staged}
    assert set(trees) <= set(staged)
    assert all(target.startswith(f"{STAGE_DIR}/") for target in staged.values())
    assert ("--ro-bind", staged[trees[0]], trees[0]) in _triples(argv)
    assert ("--bind", staged[trees[1]], trees[1]) in _triples(argv)
    assert (trees[1], staged[trees[1]], True) in setup.staged
    assert setup.namespaces == k.CLONE_NEWNS | k.CLONE_NEWNET | k.CLONE_NEWIPC
    assert setup.loopback
    assert setup.fresh_proc
    assert setup.mounts is None  # bubblewrap builds the view
    confinement = launch.confinement
    assert confinement.switch_identity
    assert not confinement.map_identity  # bubblewrap does
    assert confinement.drop_capabilities  # an outsider: the init drops them before bwrap
    assert confinement.seccomp_program is None  # bubblewrap loads it: --seccomp
    limits = sandbox.policy.limits
    assert limits.processes
    assert confinement.limits.processes == limits.processes + 2
    assert launch.command.cwd == "/"
    assert not launch.command.new_session


@pytest.mark.parametrize("recording", [True, False], ids=["recording", "not-recording"])
def test_bwrap_passes_its_descriptors_to_bubblewrap(trees: tuple[str, str],
                                                    launches: list[Launch],
                                                    recording: bool) -> None:
    launch = _bwrap(_sandbox("full", trees, root=True, recording=recording), launches)
    command = launch.command
    argv = command.argv
    status_w = int(_value(argv, "--json-status-fd"))
    assert command.status_fd is not None
    assert command.status_fd not in command.inherited_fds
    assert status_w in command.inherited_fds
    seccomp_fd = int(_value(argv, "--seccomp"))
    assert seccomp_fd in command.inherited_fds
    program = seccomp.build_filter()
    assert os.pread(seccomp_fd, len(program) + 1, 0) == program
    for fd in launch.fds:
        assert not os.get_inheritable(fd)  # only the init hands them on
    if not recording:  # no decoys to watch before bubblewrap goes on: nothing blocks it
        assert "--block-fd" not in argv and command.block_fd is None
        assert set(command.inherited_fds) | {command.status_fd} == set(launch.fds)
        return
    block_r = int(_value(argv, "--block-fd"))
    assert block_r in command.inherited_fds
    assert command.block_fd is not None
    assert command.block_fd not in command.inherited_fds  # the init's, to release bubblewrap
    assert set(command.inherited_fds) | {command.status_fd, command.block_fd} == set(launch.fds)


def test_bwrap_full_shows_the_view_not_the_host(trees: tuple[str, str],
                                                launches: list[Launch]) -> None:
    sandbox = _sandbox("full", trees, root=False)
    mounts = sandbox.mounts
    assert mounts is not None
    argv = _bwrap(sandbox, launches).command.argv
    triples = _triples(argv)
    assert not any(path == "/" and target == "/" for _, path, target in triples)
    assert "--dev-bind" not in argv
    for path in mounts.system:
        assert ("--ro-bind", path, path) in triples
    for entry in mounts.entries:
        if entry.kind == "dir":
            assert ("--dir", entry.path) in set(itertools.pairwise(argv))
        elif entry.kind == "link":
            assert ("--symlink", os.fsdecode(entry.data), entry.path) in triples
        else:
            assert any(option == "--file" and path == entry.path
                       for option, _, path in triples), entry.path
    for path in mounts.masked_files:
        assert any(option == "--ro-bind-data" and masked == path
                   for option, _, masked in triples), path
    assert _value(argv, "--proc") == "/proc"
    assert _value(argv, "--dev") == "/dev"
    remount_root = max(index for index, pair in enumerate(itertools.pairwise(argv))
                       if pair == ("--remount-ro", "/"))
    last_bind = max(index for index, option in enumerate(argv)
                    if option in ("--bind", "--ro-bind"))
    assert remount_root > last_bind  # the root is read-only, the binds as they are


def test_bwrap_full_as_non_root(trees: tuple[str, str], launches: list[Launch]) -> None:
    launch = _bwrap(_sandbox("full", trees, root=False), launches)
    argv = launch.command.argv
    assert "--unshare-user" in argv
    assert "--disable-userns" in argv
    assert "--seccomp" in argv
    # not an outsider: the trees are bound where they are, nothing is staged
    assert ("--ro-bind", trees[0], trees[0]) in _triples(argv)
    assert ("--bind", trees[1], trees[1]) in _triples(argv)
    assert launch.setup.staged == ()
    assert not launch.confinement.switch_identity
    assert launch.confinement.drop_capabilities
    assert launch.confinement.identity == CALLER
    assert "--uid" not in argv  # bubblewrap keeps the caller's own ids


def test_bwrap_network_shares_the_hosts_files(trees: tuple[str, str],
                                              launches: list[Launch]) -> None:
    launch = _bwrap(_sandbox("network", trees, root=False), launches)
    argv = launch.command.argv
    assert ("--dev-bind", "/", "/") in _triples(argv)
    assert "--unshare-uts" in argv
    assert "--unshare-user" in argv
    for option in ("--unshare-net", "--unshare-pid", "--proc", "--seccomp", "--cap-drop"):
        assert option not in argv
    assert "--die-with-parent" in argv  # no pid namespace of the init's to end it
    assert launch.setup.namespaces == k.CLONE_NEWNET
    assert launch.setup.loopback


def test_bwrap_none_as_root_adds_no_namespace(trees: tuple[str, str],
                                              launches: list[Launch]) -> None:
    launch = _bwrap(_sandbox("none", trees, root=True), launches)
    argv = launch.command.argv
    assert not [option for option in argv if option.startswith("--unshare-")]
    assert "--die-with-parent" in argv
    assert ("--dev-bind", "/", "/") in _triples(argv)
    assert "--seccomp" not in argv
    assert "--new-session" not in argv
    assert launch.setup.namespaces == 0
    assert not launch.setup.loopback
    assert not launch.confinement.drop_capabilities


@pytest.mark.parametrize("pid", [True, False])
def test_what_outlives_the_command_is_recorded_where_the_init_adopts_it(
        trees: tuple[str, str], launches: list[Launch], pid: bool) -> None:
    # Recorded where the init is pid 1 of a pid namespace with its own /proc; without one,
    # nothing in the sandbox adopts what the command leaves running.
    policy = Policy.profile("full").with_paths(readonly=[trees[0]], writable=[trees[1]])
    if not pid:
        policy = policy._replace(namespaces=policy.namespaces - {"pid"}, kill_all=False)
    request = Request(policy=policy.recording_attempts(), argv=("/bin/true",), cwd=trees[1],
                      env={"PATH": "/usr/bin:/bin"})
    sandbox = plan_sandbox(request, LEASED, leased=True, root=True)
    assert sandbox.policy.record_attempts is True
    native, bwrap = plan_native(sandbox), _bwrap(sandbox, launches)
    assert (native.setup.record_leftovers, bwrap.setup.record_leftovers) == (pid, pid)
    plain = _sandbox("full", trees, root=True)  # a plain Sandbox records nothing
    assert not plan_native(plain).setup.record_leftovers


# --- landlock: no namespace, a ruleset from the view ----------------------------------


def _landlock_sandbox(profile: str, trees: tuple[str, str], *, root: bool,
                      masked: tuple[str, ...] = ()) -> SandboxPlan:
    readonly, writable = trees
    policy = Policy.profile(profile)
    if policy.filesystem:
        policy = policy.with_paths(readonly=[readonly], writable=[writable], masked=masked)
    leased = root and policy.ephemeral_identity
    request = Request(policy=policy, argv=("/bin/true",), cwd=writable,
                      env={"PATH": "/usr/bin:/bin"})
    return plan_sandbox(request, LEASED if leased else CALLER, leased=leased, root=root,
                        namespaces=False)


@pytest.mark.parametrize("root", [True, False])
def test_landlock_full_makes_no_namespace_and_confines_with_a_ruleset(
        trees: tuple[str, str], root: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("buildjail.backends.landlock.untraversable_ancestors", lambda _: [])
    sandbox = _landlock_sandbox("full", trees, root=root)
    assert sandbox.namespaces == frozenset()
    launch = plan_landlock(sandbox, abi=6, scratch="/tmp/scratch-of-this-run")
    assert (launch.setup.namespaces, launch.setup.mounts, launch.setup.subreaper) == (
        0, None, True)
    ruleset = launch.confinement.landlock
    assert ruleset is not None and ruleset.abi == 6
    readonly, writable = trees
    assert readonly in ruleset.read and "/usr" in ruleset.read and "/proc" in ruleset.read
    assert writable in ruleset.write and writable not in ruleset.read
    assert not {"/", "/etc", "/tmp", "/root", "/home"} & set(ruleset.read + ruleset.write)
    assert "/dev/null" in ruleset.devices and ruleset.deny_tcp and ruleset.scope
    assert launch.confinement.seccomp_program == seccomp.build_filter(stand_in=True)
    assert launch.confinement.switch_identity is root
    assert not launch.confinement.identity.mapped  # no user namespace: the leased uid shows
    assert launch.confinement.process_rlimit is root  # as non-root: the caller's uid
    assert launch.command.kill_descendants
    assert not launch.setup.record_leftovers  # not asked to record
    assert launch.command.env["HOME"] == "/tmp/scratch-of-this-run/home"
    assert launch.command.env["TMPDIR"] == "/tmp/scratch-of-this-run/tmp"
    assert {"landlock:abi-6", "ipc:seccomp", "scope:signals+abstract-unix"} <= set(
        launch.layers)
    assert {"processes", "loopback", "tmp", "shared memory"} <= set(launch.degraded)


def test_landlock_cuts_a_mask_out_of_a_shown_tree(tmp_path: Path) -> None:
    shown = tmp_path / "tree"
    (shown / "private").mkdir(parents=True)
    (shown / "public").mkdir()
    (shown / "file").write_text("x")
    sandbox = _landlock_sandbox("full", (str(shown), str(tmp_path / "out")), root=False,
                                masked=(str(shown / "private"),))
    (tmp_path / "out").mkdir()
    ruleset = plan_landlock(sandbox, abi=6, scratch=None).confinement.landlock
    assert ruleset is not None
    assert str(shown) not in ruleset.read and str(shown / "private") not in ruleset.read
    assert {str(shown / "public"), str(shown / "file")} <= set(ruleset.read)


def test_landlock_network_profile_is_a_network_ruleset_and_seccomp() -> None:
    request = Request(policy=Policy.profile("network"), argv=("/bin/true",), cwd="/",
                      env={})
    sandbox = plan_sandbox(request, CALLER, leased=False, root=False, namespaces=False)
    launch = plan_landlock(sandbox, abi=6, scratch=None)
    ruleset = launch.confinement.landlock
    assert ruleset is not None and not ruleset.filesystem and ruleset.deny_tcp
    assert ruleset.rules() == [] and ruleset.handled_fs == 0
    assert launch.confinement.no_new_privs and launch.confinement.seccomp_program
    assert not launch.command.kill_descendants  # network has no kill_all


def test_an_installations_pythons_are_what_glob_finds(tmp_path: Path) -> None:
    """``bin/python*`` of an interpreter installation or a venv, listed without glob (start-up
    time), is what ``glob.glob`` finds: sorted, a dangling link too, under a prefix with
    pattern characters; nothing where ``bin`` is missing or not a directory."""
    import glob

    prefix = tmp_path / "a[b]*c?"
    (prefix / "bin").mkdir(parents=True)
    for name in ("python3.11", "python", "pythonx", "py", ".python", "ipython"):
        (prefix / "bin" / name).touch()
    (prefix / "bin" / "python-dangling").symlink_to(tmp_path / "nowhere")
    (prefix / "lib").mkdir()
    (prefix / "pyvenv.cfg").touch()
    found = sorted(glob.glob(os.path.join(glob.escape(str(prefix)), "bin", "python*")))
    assert len(found) == 4
    assert installation_paths(str(prefix)) == (str(prefix / "lib"), *found)
    assert venv_paths(str(prefix)) == (str(prefix / "pyvenv.cfg"), str(prefix / "lib"), *found)
    (tmp_path / "file" / "lib").mkdir(parents=True)
    (tmp_path / "file" / "bin").touch()
    assert installation_paths(str(tmp_path / "file")) == (str(tmp_path / "file" / "lib"),)
    assert installation_paths(str(tmp_path / "nowhere")) == ()


@pytest.mark.parametrize("size", [0, 10, COPY_FILE_SIZE - 1, COPY_FILE_SIZE])
@pytest.mark.parametrize("grown", [-5, 0, 1, 100, COPY_FILE_SIZE + 10])
def test_an_etc_file_is_read_to_the_copy_bound_as_before(size: int, grown: int) -> None:
    """A copied /etc file is read by the size it was seen with, yet what comes back is what a
    read of the whole bound gave, also when the file grew or shrank since it was seen."""
    data = bytes(range(256)) * ((size + max(grown, 0)) // 256 + 1)
    data = data[:max(size + grown, 0)]
    assert _read_bounded(io.BytesIO(data), size) == io.BytesIO(data).read(COPY_FILE_SIZE + 1)


def test_the_etc_entries_shown_are_those_the_patterns_match() -> None:
    """The view shows an /etc entry by name or by wildcard exactly when one of VIEW_ETC's
    fnmatch patterns matches it whole, case and all: never a neighbour or a backup."""
    names = [*os.listdir("/etc"), *VIEW_ETC, "python3.11", "lsb-release", "java-17-openjdk",
             "-release", "release", "python", "Python3", "SSL", "ssl-", "ssl\n", "xssl",
             "passwd-", "shadow", "magic.mime.bak", "ld.so.cache~", "pip.conf", "os-release/"]
    shown = [name for name in names if _etc_shown(name)]
    assert shown == [name for name in names
                     if any(fnmatch.fnmatchcase(name, pattern) for pattern in VIEW_ETC)]
    assert {"python3.11", "lsb-release", "java-17-openjdk", "ssl"} <= set(shown)
    assert not {"SSL", "ssl\n", "passwd-", "shadow", "pip.conf", "ld.so.cache~"} & set(shown)
