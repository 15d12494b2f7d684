"""Which installer runs and which index it will ask: buildjail's flags, then the user's
variables, then the user's files; never PATH. Pure resolution, no installer run (the runs
are in test_build_indexes.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from buildjail.buildenv import IndexOptions
from buildjail.installers import PYPI, InstallerError, find_installer, uv_binary


def _environ(tmp_path: Path, **variables: str) -> dict[str, str]:
    """No host configuration: a fresh HOME and XDG directories, pip's files off."""
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
            "XDG_CONFIG_DIRS": str(tmp_path / "etc-xdg"), "PIP_CONFIG_FILE": os.devnull,
            **variables}


def _uv_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "xdg" / "uv" / "uv.toml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_uv_is_found_through_its_package_not_path(tmp_path: Path) -> None:
    installer = IndexOptions().installer("uv", _environ(tmp_path, PATH="/nonexistent"))
    assert installer.program == (uv_binary(), "pip", "install", "--no-config")
    assert os.path.isabs(installer.program[0])
    assert installer.index.url == PYPI and installer.index.origin == "the installer's default"


def test_uv_gets_the_user_level_uv_toml_explicitly(tmp_path: Path) -> None:
    path = _uv_toml(tmp_path, '[[index]]\nurl = "https://private/simple"\ndefault = true\n'
                              '[[index]]\nurl = "https://extra/simple"\n')
    installer = IndexOptions().installer("uv", _environ(tmp_path))
    assert installer.program[-3:] == ("--no-config", "--config-file", str(path))
    assert installer.index.url == "https://private/simple"
    assert installer.index.origin == str(path)
    assert installer.index.extra == ("https://extra/simple",)


def test_uv_config_file_variable_is_left_to_uv(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('index-url = "https://mine/simple"\n')
    _uv_toml(tmp_path, 'index-url = "https://user/simple"\n')
    installer = IndexOptions().installer("uv", _environ(tmp_path, UV_CONFIG_FILE=str(path)))
    assert "--config-file" not in installer.program  # uv reads UV_CONFIG_FILE itself
    assert installer.index.url == "https://mine/simple"


def test_uv_variables_win_over_the_file_and_the_flag_over_both(tmp_path: Path) -> None:
    _uv_toml(tmp_path, 'index-url = "https://file/simple"\n')
    environ = _environ(tmp_path, UV_INDEX_URL="https://variable/simple")
    assert IndexOptions().installer("uv", environ).index.origin == "UV_INDEX_URL"
    flagged = IndexOptions(index_url="https://u:TOKEN@flag/simple",
                           extra_index_urls=("https://more/simple",)).installer("uv", environ)
    assert flagged.index.origin == "--index-url"
    env = flagged.env({**environ, "UV_EXTRA_INDEX_URL": "https://user-extra/simple"})
    assert env["UV_DEFAULT_INDEX"] == "https://u:TOKEN@flag/simple"
    assert "UV_INDEX_URL" not in env and "UV_EXTRA_INDEX_URL" not in env
    assert env["UV_INDEX"] == "https://more/simple"
    assert "TOKEN" not in flagged.describe() and "TOKEN" not in str(flagged.to_dict())
    assert "TOKEN" not in " ".join(flagged.program)  # the URL is never on the command line


def test_pip_reads_its_configuration_in_pips_order(tmp_path: Path) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://global-section/simple\n"
                    "[install]\nindex-url = https://install-section/simple\n"
                    "extra-index-url =\n  https://a/simple\n  https://b/simple\n")
    environ = _environ(tmp_path, PIP_CONFIG_FILE=str(conf))
    installer = find_installer("pip", index_url=None, extra_index_urls=(), no_index=False,
                               environ=environ)
    assert installer.index.url == "https://install-section/simple"
    assert installer.index.origin == str(conf)
    assert installer.index.extra == ("https://a/simple", "https://b/simple")
    assert IndexOptions().installer("pip", {**environ, "PIP_INDEX_URL": "https://v/simple"}
                                    ).index.origin == "PIP_INDEX_URL"
    assert installer.env(environ) == environ  # pip reads the user's settings itself


def test_no_index_wins(tmp_path: Path) -> None:
    environ = _environ(tmp_path, UV_INDEX_URL="https://x/simple", PIP_INDEX_URL="https://y/")
    for name in ("uv", "pip"):
        index = IndexOptions(no_index=True).installer(name, environ).index
        assert index.url is None and index.origin == "--no-index"


def test_without_the_uv_package_the_error_says_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uv

    def missing() -> str:
        raise FileNotFoundError("no uv binary")

    monkeypatch.setattr(uv, "find_uv_bin", missing)
    with pytest.raises(InstallerError, match="--installer pip"):
        IndexOptions().installer("uv", _environ(tmp_path))


def test_uv_gets_a_private_cache_only_where_the_users_cannot_be_written(tmp_path: Path) -> None:
    """A non-root user's HOME may be unwritable: uv would refuse to start (exit 2) there."""
    home = tmp_path / "home"
    home.mkdir()
    private = str(tmp_path / "private-cache")
    uv = find_installer("uv", index_url=None, extra_index_urls=(), no_index=False,
                        environ={"HOME": str(home)})
    assert "UV_CACHE_DIR" not in uv.with_cache(private, {"HOME": str(home)}).environment
    unwritable = {"HOME": "/proc/1/no-such-home"}
    assert uv.with_cache(private, unwritable).environment["UV_CACHE_DIR"] == private
    chosen = {"HOME": "/proc/1/no-such-home", "UV_CACHE_DIR": str(tmp_path / "mine")}
    assert "UV_CACHE_DIR" not in uv.with_cache(private, chosen).environment  # uv reads it
    assert uv.with_cache(private, {"HOME": str(home)}, always=True).environment[
        "UV_CACHE_DIR"] == private
    pip = find_installer("pip", index_url=None, extra_index_urls=(), no_index=False,
                         environ={"HOME": str(home)})
    assert pip.with_cache(private, unwritable, always=True) is pip
