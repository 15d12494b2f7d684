"""The installer of build requirements (uv or pip) and the index configuration it reads.

Which index a build requirement comes from must not depend on what happens to be on
``PATH``: the installer is chosen (``--installer``, uv by default), uv is found through its
own Python package (:func:`uv.find_uv_bin`, an absolute path), and each installer reads the
**user's** index configuration as it would on its own:

- pip: ``PIP_INDEX_URL``, ``PIP_EXTRA_INDEX_URL``, ``PIP_FIND_LINKS``, ``PIP_CONFIG_FILE`` and
  the global, user and site ``pip.conf`` (pip reads no project's configuration);
- uv: ``UV_DEFAULT_INDEX``, ``UV_INDEX_URL``, ``UV_INDEX``, ``UV_EXTRA_INDEX_URL`` and the
  user-level ``uv.toml`` (else the system's) — passed explicitly with ``--config-file``
  beside ``--no-config``, so that no ``uv.toml`` or ``pyproject.toml`` of a project or of a
  parent directory is ever read.

buildjail's own ``--index-url`` and ``--extra-index-url`` win over both (through the
installer's environment, never its command line). :class:`Installer` also says which index
that configuration gives, for the report and the log, with credentials redacted.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import sys
import tomllib
from collections.abc import Mapping
from typing import Any

from .credentials import redact
from .errors import BuildjailError

INSTALLERS = ("uv", "pip")
"""The installers ``--installer`` accepts."""
DEFAULT_INSTALLER = "uv"
PYPI = "https://pypi.org/simple/"
"""The index both installers use when nothing configures another."""
MAX_CONFIG = 1 << 20
"""The largest configuration file read to describe the index."""


class InstallerError(BuildjailError):
    """The chosen installer is not available."""


@dataclasses.dataclass(frozen=True)
class Index:
    """The indexes an installer will ask, and where that configuration came from."""

    url: str | None
    """The default index (None: no index at all)."""
    origin: str
    extra: tuple[str, ...] = ()
    extra_origin: str | None = None


@dataclasses.dataclass(frozen=True)
class Installer:
    """One installer: its program, its environment and the index it will use."""

    name: str
    program: tuple[str, ...]
    """The command up to its ``install`` subcommand's options (``uv pip install``)."""
    environment: Mapping[str, str]
    """The variables set for it on top of the caller's (buildjail's own flags)."""
    removed: tuple[str, ...]
    """The caller's variables it does not get (those buildjail's flags replace)."""
    index: Index
    config_file: str | None = None

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The installer's whole environment, made from the caller's *base*."""
        kept = {key: value for key, value in base.items() if key not in self.removed}
        return {**kept, **self.environment}

    def with_cache(self, directory: str, environ: Mapping[str, str] | None = None, *,
                   always: bool = False) -> Installer:
        """This installer with its cache in *directory*: *always*, or when the user set none
        and the default one (under ``XDG_CACHE_HOME`` or ``HOME``) cannot be written."""
        environ = os.environ if environ is None else environ
        if self.name != "uv" or "UV_CACHE_DIR" in self.environment or (not always and (
                environ.get("UV_CACHE_DIR") or _default_uv_cache_writable(environ))):
            return self
        return dataclasses.replace(self, environment={**self.environment,
                                                      "UV_CACHE_DIR": directory})

    def describe(self) -> str:
        """Which installer and which index, for the log (credentials redacted)."""
        index = self.index
        where = (f"index {redact(index.url)} (from {index.origin})" if index.url
                 else f"no index ({index.origin})")
        if index.extra:
            where += (f", extra indexes {', '.join(redact(url) for url in index.extra)} "
                      f"(from {index.extra_origin})")
        if self.config_file:
            where += f", configuration {self.config_file}"
        return f"{self.name} ({self.program[0]}), {where}"

    def to_dict(self) -> dict[str, Any]:
        """The report's record of the installer (credentials redacted)."""
        return {"name": self.name, "path": self.program[0],
                "index": redact(self.index.url) if self.index.url else None,
                "index_from": self.index.origin,
                "extra_indexes": [redact(url) for url in self.index.extra],
                "config_file": self.config_file}


def find_installer(name: str, *, index_url: str | None, extra_index_urls: tuple[str, ...],
                   no_index: bool, environ: Mapping[str, str]) -> Installer:
    """The installer *name* with buildjail's index flags over the user's configuration."""
    if name == "uv":
        return _uv(index_url, extra_index_urls, no_index, environ)
    if name == "pip":
        return _pip(index_url, extra_index_urls, no_index, environ)
    raise InstallerError(f"unknown installer {name!r} (one of {', '.join(INSTALLERS)})")


def uv_binary() -> str:
    """uv's binary, found through its Python package (never through ``PATH``)."""
    try:
        from uv import find_uv_bin

        path = find_uv_bin()
    except (ImportError, FileNotFoundError) as error:
        raise InstallerError(f"uv is not installed for {sys.executable} ({error}); install "
                             "it (pip install uv) or use --installer pip") from None
    return os.path.abspath(path)


def _uv(index_url: str | None, extra: tuple[str, ...], no_index: bool,
        environ: Mapping[str, str]) -> Installer:
    environment: dict[str, str] = {}
    removed: list[str] = []
    if index_url is not None:
        environment["UV_DEFAULT_INDEX"] = index_url
        removed.append("UV_INDEX_URL")
    if extra:
        environment["UV_INDEX"] = " ".join(extra)
        removed.append("UV_EXTRA_INDEX_URL")
    explicit = environ.get("UV_CONFIG_FILE") or None
    config_file = explicit or user_uv_config(environ)
    program = [uv_binary(), "pip", "install", "--no-config"]
    if config_file and not explicit:  # uv reads UV_CONFIG_FILE itself
        program += ["--config-file", config_file]
    default, extras = _uv_config_indexes(config_file) if config_file else (None, ())
    index = _resolve(
        no_index, [(index_url, "--index-url"), (environ.get("UV_DEFAULT_INDEX"),
                                                "UV_DEFAULT_INDEX"),
                   (environ.get("UV_INDEX_URL"), "UV_INDEX_URL"), (default, config_file)],
        [(" ".join(extra) if extra else None, "--extra-index-url"),
         (_joined(environ, "UV_INDEX", "UV_EXTRA_INDEX_URL"), "UV_INDEX/UV_EXTRA_INDEX_URL"),
         (" ".join(extras) if extras else None, config_file)])
    return Installer("uv", tuple(program), environment, tuple(removed), index, config_file)


def _pip(index_url: str | None, extra: tuple[str, ...], no_index: bool,
         environ: Mapping[str, str]) -> Installer:
    environment = {}
    if index_url is not None:
        environment["PIP_INDEX_URL"] = index_url
    if extra:
        environment["PIP_EXTRA_INDEX_URL"] = " ".join(extra)
    program = (sys.executable, "-m", "pip", "install")
    configured = _pip_configuration(environ)
    index = _resolve(
        no_index, [(index_url, "--index-url"), (environ.get("PIP_INDEX_URL"), "PIP_INDEX_URL"),
                   configured.get("index-url", (None, ""))],
        [(" ".join(extra) if extra else None, "--extra-index-url"),
         (environ.get("PIP_EXTRA_INDEX_URL"), "PIP_EXTRA_INDEX_URL"),
         configured.get("extra-index-url", (None, ""))])
    return Installer("pip", program, environment, (), index)


_Setting = tuple["str | None", "str | None"]


def _resolve(no_index: bool, defaults: list[_Setting], extras: list[_Setting]) -> Index:
    """The first setting given of each list (highest precedence first)."""
    if no_index:
        return Index(None, "--no-index")
    url, origin = next(((value, where) for value, where in defaults if value),
                       (PYPI, "the installer's default"))
    extra, extra_origin = next(((value, where) for value, where in extras if value),
                               ("", None))
    return Index(url, origin or "", tuple(extra.split()), extra_origin)


def _joined(environ: Mapping[str, str], *names: str) -> str | None:
    return " ".join(environ[name] for name in names if environ.get(name)) or None


def _default_uv_cache_writable(environ: Mapping[str, str]) -> bool:
    """Whether uv could create or write its default cache (a non-root user's HOME may be
    unwritable, or hidden)."""
    cache_home = environ.get("XDG_CACHE_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".cache")
    path = os.path.abspath(os.path.join(cache_home, "uv"))
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def user_uv_config(environ: Mapping[str, str]) -> str | None:
    """The user-level ``uv.toml``, else the system-level one, as uv finds them; or None."""
    home = environ.get("XDG_CONFIG_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".config")
    system = [os.path.join(directory, "uv", "uv.toml") for directory in
              (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(os.pathsep) if directory]
    for path in (os.path.join(home, "uv", "uv.toml"), *system, "/etc/uv/uv.toml"):
        if os.path.isfile(path):
            return os.path.abspath(path)
    return None


def _uv_config_indexes(path: str) -> tuple[str | None, tuple[str, ...]]:
    """The default index and the extra indexes a ``uv.toml`` sets."""
    data = _read_toml(path)
    default = data.get("index-url") if isinstance(data.get("index-url"), str) else None
    extras = [url for url in data.get("extra-index-url") or [] if isinstance(url, str)]
    for entry in data.get("index") or []:
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, str):
            continue
        if entry.get("default") is True:
            default = url
        else:
            extras.append(url)
    return default, tuple(extras)


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as stream:
            data = tomllib.loads(stream.read(MAX_CONFIG).decode("utf-8", errors="replace"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    return data


def _pip_configuration(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The ``install`` settings of the pip.conf files pip reads: key -> (value, file)."""
    settings: dict[str, tuple[str, str]] = {}
    for path in _pip_config_files(environ):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue
        for section in ("global", "install"):
            if parser.has_section(section):
                for key, value in parser.items(section):
                    settings[key.replace("_", "-")] = (value, path)
    return settings


def _pip_config_files(environ: Mapping[str, str]) -> list[str]:
    """pip's configuration files, lowest precedence first (pip's own order)."""
    explicit = environ.get("PIP_CONFIG_FILE")
    if explicit == os.devnull:
        return []
    home = environ.get("HOME") or os.path.expanduser("~")
    files = [os.path.join(directory, "pip", "pip.conf") for directory in reversed(
        (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(os.pathsep)) if directory]
    files.append("/etc/pip.conf")
    if not (explicit and os.path.exists(explicit)):
        files += [os.path.join(home, ".pip", "pip.conf"),
                  os.path.join(environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"),
                               "pip", "pip.conf")]
    files.append(os.path.join(sys.prefix, "pip.conf"))
    if explicit:
        files.append(explicit)
    return [path for path in files if os.path.isfile(path)]
