"""A build from a checkout cannot change what runs later outside: VCS metadata is read-only.

A real git checkout, built with ``buildjail build`` as root and as a non-root user on both
backends; its hook sets ``core.fsmonitor``, an alias and a git hook, or plants a ``.git`` of
its own. Judged by running the real ``git status`` afterwards: the marker the attacker's
command would write. The control makes the same change in a sandbox that has the checkout
writable without the read-only metadata, and ``git status`` runs the attacker's command.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from conftest import Identity, Runner
from wheels import make_project

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
GIT = "/usr/bin/git"



def _git(identity: Identity, checkout: Path, *args: str) -> str:
    done = identity.run([GIT, "-c", "user.name=test", "-c", "user.email=test@example.org",
                         *args], cwd=str(checkout))
    assert done.returncode == 0, done.stderr
    return done.stdout


def _checkout(identity: Identity, directory: Path, attack: dict[str, object]) -> Path:
    project = make_project(directory, attack=attack)
    identity.own(directory.parent)
    _git(identity, project, "init", "-q")
    _git(identity, project, "add", ".")
    _git(identity, project, "commit", "-q", "-m", "initial")
    return project


def _fsmonitor(markers: Path) -> str:
    return f"touch {markers}/fsmonitor-ran-as-$(id -u); false"


def _config_digest(checkout: Path) -> str:
    return hashlib.sha256((checkout / ".git" / "config").read_bytes()).hexdigest()


def test_a_hook_cannot_make_the_users_next_git_status_run_its_code(
        identity: Identity, sandbox_backend: str, shared_dir: Path, markers: Path) -> None:
    checkout = _checkout(identity, shared_dir / "work" / "perimeter", {"hooks": {
        "build_sdist": {"git": _fsmonitor(markers)},
        "get_requires_for_build_sdist": {"git": _fsmonitor(markers)}}})
    before = _config_digest(checkout)
    logs = shared_dir / "logs"
    proc = identity.buildjail(str(checkout), "--sdist", "-o", str(shared_dir / "out"),
                              "--logs", str(logs), backend=sandbox_backend)
    assert proc.returncode == 0, proc.stderr
    log = (logs / "perimeter.log").read_text()
    assert log.count("PERIMETER git config: exit") == 4
    assert "Read-only file system" in log and "PERIMETER git hook: refused" in log
    assert _config_digest(checkout) == before
    _git(identity, checkout, "status")  # the user's next git command, outside
    assert list(markers.iterdir()) == []
    assert not (checkout / ".git" / "hooks" / "post-checkout").exists()


def test_nested_vcs_metadata_that_was_there_is_read_only_not_refused(
        identity: Identity, sandbox_backend: str, shared_dir: Path) -> None:
    """A submodule's ``.git`` file, a vendored repository: kept, and read-only to hooks."""
    project = make_project(shared_dir / "perimeter", attack={"hooks": {
        "get_requires_for_build_sdist": {"write": ["vendor/lib/.git/config", "sub/.git"]}}})
    (project / "vendor" / "lib" / ".git").mkdir(parents=True)
    (project / "vendor" / "lib" / ".git" / "config").write_text("[core]\n")
    (project / "sub").mkdir()
    (project / "sub" / ".git").write_text("gitdir: ../.git/modules/sub\n")
    logs = shared_dir / "logs"
    identity.own(shared_dir)
    proc = identity.buildjail(str(project), "--sdist", "-o", str(shared_dir / "out"),
                              "--logs", str(logs), backend=sandbox_backend)
    assert proc.returncode == 0, proc.stderr
    assert (logs / "perimeter.log").read_text().count("Read-only file system") == 2
    assert (project / "vendor" / "lib" / ".git" / "config").read_text() == "[core]\n"
    assert (project / "sub" / ".git").read_text() == "gitdir: ../.git/modules/sub\n"


@pytest.mark.parametrize("where", ["sub", "."])
def test_vcs_metadata_a_hook_creates_is_removed_and_refused(
        where: str, identity: Identity, sandbox_backend: str, shared_dir: Path) -> None:
    """A new ``.git`` would make git take a directory of the tree for a repository."""
    project = make_project(shared_dir / "perimeter", attack={"hooks": {
        "get_requires_for_build_sdist": {"new_repository": where}}})
    identity.own(shared_dir)
    proc = identity.buildjail(str(project), "--sdist", "-o", str(shared_dir / "out"),
                              backend=sandbox_backend)
    assert proc.returncode == 1
    assert ("perimeter: the get_requires_for_build_sdist hook failed: the build hook "
            "get_requires_for_build_sdist created version control metadata, which the user's "
            "tools would trust (removed): ") in proc.stderr, proc.stderr
    assert not (project / where / ".git").exists()


def test_control_with_the_checkout_writable_the_same_change_runs_on_git_status(
        identity: Identity, run_sandbox: Runner, shared_dir: Path, markers: Path) -> None:
    checkout = _checkout(identity, shared_dir / "work" / "perimeter", {})
    result = run_sandbox([GIT, "config", "core.fsmonitor", _fsmonitor(markers)],
                         cwd=str(checkout), writable=[str(checkout)])
    assert result["exit_code"] == 0, result
    _git(identity, checkout, "status")
    assert (markers / f"fsmonitor-ran-as-{identity.uid}").exists()
