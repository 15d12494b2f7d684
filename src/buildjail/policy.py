"""The sandbox policy: what a sandbox isolates, independent of how it is enforced."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping

from ._records import Checked
from .attempts import ON_ATTEMPT
from .errors import PolicyError
from .limits import Limits, parse_duration, parse_size

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from ._records import NamedTuple

NAMESPACES = frozenset({"mount", "pid", "net", "ipc", "uts", "cgroup", "user"})
PROFILES = ("full", "network", "none")

ENV_KEEP_DEFAULT = (
    "PATH", "LANG", "LANGUAGE", "LC_*", "TZ", "TERM", "COLUMNS", "LINES", "NO_COLOR",
    "FORCE_COLOR", "CC", "CXX", "CPP", "LD", "AR", "AS", "NM", "RANLIB", "STRIP", "OBJCOPY",
    "CFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS", "LDSHARED", "FFLAGS", "FC", "F77", "F90",
    "ARCHFLAGS", "MAKEFLAGS", "MAKE", "CMAKE_*", "NINJA*", "MESON*", "PKG_CONFIG*",
    "RUSTFLAGS", "CARGO_BUILD_*", "CARGO_PROFILE_*", "CARGO_NET_OFFLINE", "MAX_JOBS",
    "NPY_NUM_BUILD_JOBS", "SOURCE_DATE_EPOCH", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE",
    "PYTHONNOUSERSITE", "PYTHONUTF8", "PYTHONIOENCODING", "PYTHONWARNINGS", "VIRTUAL_ENV",
    "_PYPROJECT_HOOKS_*", "PEP517_*", "SETUPTOOLS_*", "PBR_*", "DISTUTILS_*",
    "PIP_NO_INDEX", "PIP_FIND_LINKS", "PIP_NO_BUILD_ISOLATION", "UV_OFFLINE",
)
"""Environment variables that pass into a ``full`` sandbox (fnmatch patterns)."""

ENV_DELETE_DEFAULT = (
    "*TOKEN*", "*PASSWORD*", "*PASSWD*", "*SECRET*", "*CREDENTIAL*", "*PRIVATE*",
    "*API_KEY*", "*APIKEY*", "*ACCESS_KEY*", "*_AUTH", "*_AUTH_*", "*SESSION*", "AWS_*",
    "TWINE_*", "NETRC", "GH_*", "GITHUB_*", "SSH_*", "GPG_*", "DOCKER_*", "KUBECONFIG",
    "*_URL_WITH_AUTH", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX*", "*COOKIE*",
)
"""Environment variables that never pass, even when a keep pattern matches them."""

VIEW_SYSTEM = (
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/nix/store",
    "/sys/devices/system/cpu", "/sys/devices/system/node",
)
"""The operating system's trees a filesystem view shows, read-only, where they are (the
merged-/usr links /bin, /lib... as links). /opt is not among them: it holds vendors' software
and their licence keys, and on UBI images the application's home; add toolchains there with
``--readonly`` (e.g. ``/opt/rh/gcc-toolset-13``)."""

VIEW_ETC = (
    "alternatives", "ca-certificates", "ca-certificates.conf", "crypto-policies",
    "debian_version", "*-release", "fonts", "gai.conf", "host.conf", "java-*", "ld.so.cache",
    "ld.so.conf", "ld.so.conf.d", "ld.so.preload", "locale.alias", "locale.conf", "localtime",
    "magic", "magic.mime", "mime.types", "nsswitch.conf", "os-release", "perl", "pki",
    "protocols", "python*", "rpc", "services", "sgml", "ssl", "terminfo", "timezone", "xml",
)
"""The entries of /etc a filesystem view shows (fnmatch patterns): what builds read there.
Never backups (``passwd-``), ``shadow``, ``pip.conf``, ``gitconfig``, ``npmrc``, Maven's
or apt's settings, keys: the rest of /etc is absent. ``passwd``, ``group`` and ``hosts``
are the sandbox's own, ``mtab`` a link to ``/proc/self/mounts``."""

MASKED_DEFAULT = (
    "/root", "/home", "/run/secrets", "/var/run/secrets", "/etc/shadow", "/etc/shadow-",
    "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers", "/etc/sudoers.d", "/etc/ssh",
    "/etc/ssl/private", "/etc/pki/tls/private", "/etc/pki/CA/private", "/etc/machine-id",
    "/var/lib/dbus/machine-id", "/var/mail", "/var/spool", "/var/log", "/var/backups",
    "/var/lib/sss",
)
"""Paths hidden even inside a tree the view shows (besides every home directory)."""


class _PolicyFields(NamedTuple):
    name: str = "custom"
    namespaces: frozenset[str] = frozenset()
    filesystem: bool = False
    ephemeral_identity: bool = False
    no_new_privs: bool = False
    drop_capabilities: bool = False
    seccomp: bool = False
    new_session: bool = False
    kill_all: bool = False
    cgroup_limits: bool | None = False
    """True: memory and processes limited by a cgroup or the run fails; None (``auto``, as
    ``full`` has it): by a cgroup wherever one can be had, else the in-sandbox monitor."""
    readonly: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()
    masked: tuple[str, ...] = ()
    env_keep: tuple[str, ...] = ("*",)
    env_delete: tuple[str, ...] = ()
    env_redact: bool = False
    """Whether credentials in URLs inside kept environment values are redacted."""
    limits: Limits = Limits()
    hostname: str = "localhost"
    record_attempts: bool | None = None
    """Record what the build tried (DNS names, credential decoys opened). None: as the
    frontend chooses — ``buildjail build``, ``fromager`` and ``audit`` record
    (:meth:`recording_attempts`), ``buildjail run`` (but with ``--on-attempt`` or a failing
    ``on_attempt``) and a plain :class:`Sandbox` do not:
    recording adds about 1-5 ms to a call (``benchmarks/attempts_cost.py``)."""
    on_attempt: str = "warn"
    """What the frontends (``build``, ``fromager``, ``run``) do with a run that tried the network
    or a decoy (:func:`~buildjail.attempts.suspicious`): ``warn`` says it, ``fail`` fails the
    build, and fails closed where the attempts cannot be recorded. A plain :class:`Sandbox`
    only records."""


class Policy(Checked, _PolicyFields):
    """What a sandbox isolates: namespaces, filesystem view, environment, identity, limits.

    An immutable record (a named tuple: start-up time, issue 15), checked when made,
    copied with changes by ``_replace`` (checked too) or the ``with_*`` methods.
    """

    __slots__ = ()

    def _check(self) -> None:
        unknown = set(self.namespaces) - NAMESPACES
        if unknown:
            raise PolicyError(
                f"unknown namespace(s) {sorted(unknown)}; known: {sorted(NAMESPACES)}"
            )
        if self.filesystem and "mount" not in self.namespaces:
            raise PolicyError("a filesystem view needs the mount namespace")
        if self.kill_all and "pid" not in self.namespaces:
            raise PolicyError("killing every process of the sandbox needs the pid namespace")
        if self.cgroup_limits and "pid" not in self.namespaces:
            raise PolicyError("cgroup limits need the pid namespace")
        if self.on_attempt not in ON_ATTEMPT:
            raise PolicyError(f"on_attempt must be {' or '.join(map(repr, ON_ATTEMPT))}, "
                              f"not {self.on_attempt!r}")
        if self.on_attempt == "fail" and self.record_attempts is False:
            raise PolicyError('on_attempt = "fail" needs the attempts recorded, but '
                              "record_attempts is false")
        for path in (*self.readonly, *self.writable, *self.masked):
            if not os.path.isabs(path):
                raise PolicyError(f"paths in a policy must be absolute: {path!r}")

    def recording_attempts(self) -> Policy:
        """This policy recording attempts, unless it says not to or has no view and network
        namespace of its own to record them in (the build frontends' default)."""
        if self.record_attempts is not None or not self.filesystem or "net" not in self.namespaces:
            return self
        return self._replace(record_attempts=True)

    def with_on_attempt(self, value: str | None) -> Policy:
        """Return a copy whose ``on_attempt`` is *value* (this one's when None)."""
        return self if value is None else self._replace(on_attempt=value)

    @classmethod
    def profile(cls, name: str) -> Policy:
        """Return the named profile: ``full``, ``network`` or ``none``."""
        if name == "full":
            return _full()
        if name == "network":
            return cls(name="network", namespaces=frozenset({"net", "uts"}))
        if name == "none":
            return cls(name="none")
        raise PolicyError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")

    @classmethod
    def load(cls, profile: str = "full", file: str | os.PathLike[str] | None = None) -> Policy:
        """Return the policy of *file* when one is given, else the named *profile*."""
        return cls.from_toml(file) if file else cls.profile(profile)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Policy:
        """Load a policy from a TOML file (see the README for its keys)."""
        import tomllib  # only here: it is slow to import and most runs use a profile

        try:
            with open(path, "rb") as stream:
                data = tomllib.load(stream)
        except OSError as error:
            raise PolicyError(f"cannot read policy {os.fspath(path)}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise PolicyError(f"policy {os.fspath(path)} is not valid TOML: {error}") from None
        return cls.from_mapping(data, source=os.fspath(path))

    @classmethod
    def from_json(cls, text: str) -> Policy:
        """Read back a policy :meth:`to_json` wrote."""
        try:
            data = json.loads(text)
            return cls(**{**data, "namespaces": frozenset(data["namespaces"]),
                          "limits": Limits(**data["limits"]),
                          **{name: tuple(data[name]) for name in _PATTERNS_AND_PATHS}})
        except (ValueError, TypeError, KeyError, RecursionError) as error:
            raise PolicyError(f"not a policy in JSON: {error}") from None

    def to_json(self) -> str:
        """The policy as one line of JSON, for a process that cannot be handed the object."""
        data = {**self._asdict(), "namespaces": sorted(self.namespaces),
                "limits": self.limits._asdict()}
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "policy") -> Policy:
        """Build a policy from the parsed content of a policy TOML file."""
        return _policy_from_mapping(data, source)

    def with_paths(
        self,
        readonly: Iterable[str] = (),
        writable: Iterable[str] = (),
        masked: Iterable[str] = (),
    ) -> Policy:
        """Return a copy with more read-only, writable and masked paths."""
        return self._replace(
            readonly=_merge(self.readonly, readonly),
            writable=_merge(self.writable, writable),
            masked=_merge(self.masked, masked),
        )

    def with_env(self, keep: Iterable[str] = (), delete: Iterable[str] = ()) -> Policy:
        """Return a copy with more environment keep and delete patterns."""
        return self._replace(
            env_keep=_merge(self.env_keep, keep), env_delete=_merge(self.env_delete, delete)
        )

    def with_limits(self, **changes: Any) -> Policy:
        """Return a copy with some limits replaced (``wall_time``, ``memory``, ...)."""
        return self._replace(limits=self.limits._replace(**changes))


_PATTERNS_AND_PATHS = ("readonly", "writable", "masked", "env_keep", "env_delete")
"""The fields of a policy that are tuples (JSON has lists)."""


def _merge(current: tuple[str, ...], more: Iterable[str]) -> tuple[str, ...]:
    merged = list(current)
    for item in more:
        normalized = os.path.normpath(item) if item.startswith("/") else item
        if normalized not in merged:
            merged.append(normalized)
    return tuple(merged)


def _full() -> Policy:
    return Policy(
        name="full",
        namespaces=frozenset({"mount", "pid", "net", "ipc", "uts", "cgroup"}),
        filesystem=True,
        ephemeral_identity=True,
        no_new_privs=True,
        drop_capabilities=True,
        seccomp=True,
        new_session=True,
        kill_all=True,
        cgroup_limits=None,
        masked=MASKED_DEFAULT,
        env_keep=ENV_KEEP_DEFAULT,
        env_delete=ENV_DELETE_DEFAULT,
        env_redact=True,
        limits=Limits(wall_time=6 * 3600, processes=_default_processes(), file_size=64 << 30,
                      memory=_default_memory(), open_files=OPEN_FILES_DEFAULT),
    )


OPEN_FILES_DEFAULT = 1024
"""Descriptors per process in ``full`` (RLIMIT_NOFILE): the common soft limit."""


def _default_processes() -> int:
    """4096, or fewer where that many processes with 1024 descriptors each would take more
    than half the host's file table (``fs.file-max``)."""
    try:
        with open("/proc/sys/fs/file-max") as stream:
            file_max = int(stream.read())
    except (OSError, ValueError):
        return 4096
    return max(256, min(4096, file_max // (2 * OPEN_FILES_DEFAULT)))


def _default_memory() -> int | None:
    """Three quarters of the host's memory, so one build cannot take it all."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * 3 // 4
    except (ValueError, OSError):
        return None


_SECTIONS: dict[str, set[str]] = {
    "filesystem": {"readonly", "writable", "masked"},
    "environment": {"keep", "delete", "redact"},
    "limits": {"wall_time", "memory", "processes", "file_size", "open_files", "cpu_time",
               "disk", "disk_inodes"},
    "isolation": {
        "namespaces", "filesystem", "ephemeral_identity", "no_new_privs",
        "drop_capabilities", "seccomp", "new_session", "kill_all", "hostname", "cgroup_limits",
        "record_attempts", "on_attempt",
    },
}


def _policy_from_mapping(data: Mapping[str, Any], source: str) -> Policy:
    unknown = set(data) - set(_SECTIONS) - {"extends", "name"}
    if unknown:
        raise PolicyError(f"{source}: unknown key(s) {sorted(unknown)}")
    for section, keys in _SECTIONS.items():
        extra = set(data.get(section, {})) - keys
        if extra:
            raise PolicyError(f"{source}: unknown key(s) in [{section}]: {sorted(extra)}")
    base = Policy.profile(str(data.get("extends", "full")))
    files = data.get("filesystem", {})
    env = data.get("environment", {})
    isolation = dict(data.get("isolation", {}))
    if isolation.get("cgroup_limits") == "auto":
        isolation["cgroup_limits"] = None
    elif not isinstance(isolation.get("cgroup_limits", False), bool):
        raise PolicyError(f"{source}: cgroup_limits must be true, false or \"auto\"")
    if not isinstance(isolation.get("record_attempts", False), bool):
        raise PolicyError(f"{source}: record_attempts must be true or false")
    if isolation.get("on_attempt", "warn") not in ON_ATTEMPT:
        raise PolicyError(f"{source}: on_attempt must be "
                          f"{' or '.join(map(json.dumps, ON_ATTEMPT))}, not "
                          f"{isolation['on_attempt']!r}")
    if "namespaces" in isolation:
        isolation["namespaces"] = frozenset(_strings(isolation["namespaces"], source))
    if "redact" in env:
        if not isinstance(env["redact"], bool):
            raise PolicyError(f"{source}: [environment] redact must be true or false")
        isolation["env_redact"] = env["redact"]
    policy = base._replace(name=str(data.get("name", source)), **isolation)
    policy = policy.with_paths(
        readonly=_strings(files.get("readonly", []), source),
        writable=_strings(files.get("writable", []), source),
        masked=_strings(files.get("masked", []), source),
    ).with_env(keep=_strings(env.get("keep", []), source),
               delete=_strings(env.get("delete", []), source))
    return policy.with_limits(**_limits(data.get("limits", {})))


def _limits(raw: Mapping[str, Any]) -> dict[str, Any]:
    parsers: dict[str, Callable[[Any], Any]] = {
        "wall_time": parse_duration, "memory": parse_size, "file_size": parse_size,
        "processes": int, "open_files": int, "cpu_time": parse_duration, "disk": parse_size,
        "disk_inodes": int,
    }
    parsed = {}
    for key, value in raw.items():
        try:
            parsed[key] = parsers[key](value)
        except (TypeError, ValueError):
            raise PolicyError(f"[limits] {key} = {value!r} is not a valid {key}") from None
    return parsed


def _strings(value: Any, source: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PolicyError(f"{source}: expected a list of strings, got {value!r}")
    return value
