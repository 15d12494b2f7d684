"""Walks of trees a build wrote: any depth, bounded descriptors, links judged by their end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from buildjail import trees


def _deep(root: Path, levels: int, name: str) -> Path:
    """*levels* nested directories named *name* under *root*; the deepest, as a /proc path."""
    fd = os.open(root, os.O_RDONLY)
    for _ in range(levels):
        os.mkdir(name, dir_fd=fd)
        child = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    return Path(f"/proc/self/fd/{fd}")


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_walk_goes_deeper_than_path_max_and_the_recursion_limit(tmp_path: Path) -> None:
    deepest = _deep(tmp_path, 2500, "d" * 50)  # 127,500 characters, 2,500 levels
    os.close(int(deepest.name))
    before = _open_descriptors()
    most = 0
    errors: list[str] = []
    names = []
    for entry in trees.walk(str(tmp_path), errors):
        names.append(entry.name)
        most = max(most, _open_descriptors() - before)
    assert errors == []
    assert len(names) == 2502 and names[-1] == "leaf"
    assert most <= trees.MAX_OPEN_DIRECTORIES + 2  # not one descriptor per level
    assert _open_descriptors() == before
    assert trees.remove_tree(str(tmp_path / ("d" * 50))) == []
    assert list(tmp_path.iterdir()) == []


def test_a_walk_never_follows_a_link_and_stays_on_its_file_system(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("x")
    (tmp_path / "tree" / "link").symlink_to(tmp_path / "outside")
    names = [entry.name for entry in trees.walk(str(tmp_path / "tree"))]
    assert names == ["tree", "link"]
    assert trees.remove_tree(str(tmp_path / "tree")) == []
    assert (tmp_path / "outside" / "secret").exists()


def test_messages_show_the_end_of_an_overlong_path(tmp_path: Path) -> None:
    deepest = _deep(tmp_path, 100, "n" * 100)
    os.mkfifo(deepest / "fifo")
    os.close(int(deepest.name))
    [refused] = trees.refuse_escaping([str(tmp_path)])
    assert refused.endswith("/" + "n" * 100 + "/fifo is a FIFO")
    assert refused.startswith(".../") and len(refused) < 400


@pytest.mark.parametrize(("links", "refused"), [
    ({"inside": "sub/file"}, []),
    ({"absolute-inside": "{root}/sub/file"}, []),
    ({"out": "/etc/passwd"}, ["out"]),
    ({"dangling-out": "/etc/buildjail-does-not-exist"}, ["dangling-out"]),
    ({"up": "../outside"}, ["up"]),
    ({"chain": "hop", "hop": "/etc"}, ["chain", "hop"]),
    # Each looks inside on its own; followed, "x" leads to the tree's parent.
    ({"a": "{root}", "x": "a/.."}, ["x"]),
], ids=["relative", "absolute", "out", "dangling", "up", "chain", "through-a-link"])
def test_links_are_judged_by_where_they_lead(tmp_path: Path, links: dict[str, str],
                                             refused: list[str]) -> None:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "file").write_text("x")
    for name, target in links.items():
        (root / name).symlink_to(target.format(root=root))
    removed = trees.refuse_escaping([str(root)])
    assert sorted(line.split()[0].rsplit("/", 1)[1] for line in removed) == sorted(refused)
    for name in links:
        assert os.path.lexists(root / name) == (name not in refused)


def test_links_into_an_allowed_tree_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "venv"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").symlink_to("/usr/bin/python3.11")
    assert trees.refuse_escaping([str(root)], allowed=["/usr/bin"]) == []
    assert trees.refuse_escaping([str(root)]) != []
