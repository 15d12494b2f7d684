"""Real containers for buildjail's tests: a Debian image, the engines, and their clean-up.

No registry is reachable, so the image is built from a Debian rootfs made with
``debootstrap`` (cached as a tarball, keyed by what went into it), with buildjail installed
in a venv at :data:`VENV` from a wheel built from this checkout plus a wheelhouse, and
imported into each engine under a unique name. The engines are driven through their own
command-line tools: rootful Podman, rootless Podman (a throw-away host user with subuids),
Docker (a ``dockerd`` of our own) and ``podman kube play``. Everything made here has a
unique name and is removed again, also when a test fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import corpus

CHECKOUT = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
ROOTFS_PACKAGES = (
    "python3", "python3-venv", "python3-pip",  # the image's Python 3.11, venv and pip
    "ca-certificates",
    "bubblewrap",  # the bwrap backend is tested inside too
    "iproute2",  # `ip`, which fromager's own network isolation script runs (benchmarks)
)
IMAGE_PYTHON = "3.11"
VENV = "/opt/buildjail"
"""Where buildjail is installed in the image (a venv)."""
PAYLOAD = "/opt/buildjail-tests"
"""Where the image holds the inside driver, the sdist and the wheelhouse."""
IMAGE_PATH = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
UID = 1000
"""The non-root user of the ``--user`` configurations (no passwd entry, as in CI)."""
OUTPUT_LIMIT = 8 << 20
"""The most of a container's output read back (the inside driver bounds its own)."""
DEBOOTSTRAP_TIMEOUT = 1800
IMPORT_TIMEOUT = 600

TOOLS = {
    "podman": "/usr/bin/podman",
    "docker": "/usr/bin/docker",  # Debian's 20.10, the client of Debian's dockerd
    "dockerd": "/usr/sbin/dockerd",
    "runc": "/usr/sbin/runc",
    "debootstrap": "/usr/sbin/debootstrap",
    "newuidmap": "/usr/bin/newuidmap",
    "catatonit": "/usr/bin/catatonit",  # rootless podman's pause process
}
INSTALL_HINT = ("apt-get install podman runc uidmap catatonit docker.io debootstrap "
                "(.ci/run installs them)")


class ContainerSetupError(RuntimeError):
    """The container harness itself could not be set up (not a finding about buildjail)."""


def unique(prefix: str) -> str:
    """A name no other run on this host uses: *prefix*, this pid and random hex."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def run_tool(cmd: Sequence[str], *, timeout: float = 600, check: bool = True,
             env: Mapping[str, str] | None = None, stdin: Any = None,
             input_bytes: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run a harness command with its output captured; raise ContainerSetupError on failure."""
    proc = subprocess.run(list(cmd), capture_output=True, timeout=timeout, check=False,
                          env=dict(env) if env is not None else None, stdin=stdin,
                          input=input_bytes, cwd="/")
    done = subprocess.CompletedProcess(
        proc.args, proc.returncode, _bounded_text(proc.stdout), _bounded_text(proc.stderr))
    if check and done.returncode != 0:
        raise ContainerSetupError(
            f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stderr[-4000:]}"
            f"{done.stdout[-2000:]}")
    return done


def _bounded_text(data: bytes | None) -> str:
    return (data or b"")[:OUTPUT_LIMIT].decode(errors="replace")


# --- the Debian rootfs ------------------------------------------------------------------


def rootfs_key(packages: Sequence[str] = ROOTFS_PACKAGES) -> str:
    """What the cached rootfs is made of, as a short hash: suite, mirror, variant, packages."""
    text = json.dumps([SUITE, MIRROR, "minbase", sorted(packages)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rootfs_tarball(cache: Path, packages: Sequence[str] = ROOTFS_PACKAGES) -> Path:
    """The Debian rootfs as a tarball in *cache*, made with debootstrap once per package list.

    The tarball appears under its final name only when complete (a temporary name, then a
    rename), so a killed run leaves no half tarball for the next one to trust.
    """
    path = cache / f"rootfs-{SUITE}-{rootfs_key(packages)}.tar"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".rootfs-", dir=cache) as work:
        root = Path(work) / "root"
        run_tool([TOOLS["debootstrap"], "--variant=minbase", f"--include={','.join(packages)}",
                  SUITE, str(root), MIRROR], timeout=DEBOOTSTRAP_TIMEOUT)
        _trim_rootfs(root)
        partial = Path(work) / "rootfs.tar"
        run_tool(["/usr/bin/tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf",
                  str(partial), "."], timeout=IMPORT_TIMEOUT)
        os.replace(partial, path)
    return path


def _trim_rootfs(root: Path) -> None:
    """Drop what the image never needs: apt's package lists and downloaded .debs."""
    for directory in (root / "var/lib/apt/lists", root / "var/cache/apt/archives"):
        for entry in directory.glob("*"):
            if entry.is_file():
                entry.unlink()


# --- what goes into the image: buildjail, its dependencies, an sdist and its wheelhouse ----


def runtime_requirements() -> list[str]:
    """buildjail's own dependencies, as pyproject.toml declares them."""
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
    return [str(requirement) for requirement in project["dependencies"]]


def dependency_wheels(cache: Path) -> Path:
    """Wheels of buildjail's dependencies for the image's Python, downloaded once per list."""
    requirements = runtime_requirements()
    key = hashlib.sha256(json.dumps([IMAGE_PYTHON, requirements]).encode()).hexdigest()[:16]
    path = cache / f"container-deps-{key}"
    if path.is_dir():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".container-deps-", dir=cache))
    try:  # with the host's pip configuration: its index, certificates and proxy
        run_tool([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary", ":all:",
                  "--python-version", IMAGE_PYTHON, "--disable-pip-version-check",
                  "-d", str(partial), *requirements])
        os.rename(partial, path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return path


def buildjail_wheel(wheelhouse: Path, destination: Path) -> Path:
    """A wheel of this checkout, built offline (hatchling comes from *wheelhouse*)."""
    run_tool([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-cache-dir",
              "-w", str(destination), str(CHECKOUT)],
             env=corpus.index_environment(wheelhouse))
    (wheel,) = destination.glob("buildjail-*.whl")
    return wheel


@dataclasses.dataclass(frozen=True)
class Payload:
    """What the inside driver needs, at its path in the image."""

    sdist: str
    wheelhouse: str
    driver: str = f"{PAYLOAD}/container_inside.py"
    workdir: str = "/work"

    def command(self) -> list[str]:
        """The container's command: the inside driver, with absolute paths only."""
        return ["/usr/bin/python3", "-I", self.driver, "--venv", VENV, "--sdist", self.sdist,
                "--wheelhouse", self.wheelhouse, "--workdir", self.workdir]


SDIST = next(sdist for sdist in corpus.CORPUS if sdist.name == "six")
"""The sdist built in every container: pure Python, a setup.py only (setuptools' legacy path)."""


def stage_payload(root: Path, cache: Path) -> Payload:
    """Copy the driver, buildjail's wheels, the sdist and its wheelhouse into the image tree."""
    target = root / PAYLOAD.lstrip("/")
    target.mkdir(parents=True)
    build_requirements = corpus.build_wheelhouse(cache)
    shutil.copytree(build_requirements, target / "wheelhouse")
    install = target / "install"
    shutil.copytree(dependency_wheels(cache), install)
    buildjail_wheel(build_requirements, install)
    sdist = corpus.fetch_sdist(cache, SDIST)
    (target / "sdists").mkdir()
    shutil.copy(sdist, target / "sdists" / sdist.name)
    shutil.copy(Path(__file__).with_name("container_inside.py"), target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    payload = Payload(sdist=f"{PAYLOAD}/sdists/{sdist.name}", wheelhouse=f"{PAYLOAD}/wheelhouse")
    work = root / payload.workdir.lstrip("/")
    work.mkdir()
    work.chmod(0o1777)  # a CI job's workspace: any uid the container runs as may build there
    return payload


def _in_image(root: Path, *cmd: str) -> None:
    """Run *cmd* chrooted into the image tree (installing our own wheels, offline)."""
    env = {"PATH": IMAGE_PATH, "HOME": "/root", "LC_ALL": "C.UTF-8",
           "PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1", "PIP_NO_INDEX": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    run_tool(["/usr/sbin/chroot", str(root), *cmd], env=env)


@contextlib.contextmanager
def image_tree(cache: Path) -> Iterator[tuple[Path, Payload]]:
    """The cached rootfs extracted, with buildjail in a venv, the payload and a uid-1000 user."""
    tarball = rootfs_tarball(cache)
    with tempfile.TemporaryDirectory(prefix=".image-", dir=cache) as work:
        root = Path(work) / "root"
        root.mkdir()
        run_tool(["/usr/bin/tar", "--numeric-owner", "--xattrs", "-C", str(root), "-xf",
                  str(tarball)], timeout=IMPORT_TIMEOUT)
        payload = stage_payload(root, cache)
        _in_image(root, "/usr/bin/python3", "-m", "venv", VENV)
        _in_image(root, f"{VENV}/bin/pip", "install", "--quiet", "--find-links",
                  f"{PAYLOAD}/install", "buildjail")
        # A CI image's usual non-root user: uid 1000 with a home (the --user configurations).
        _in_image(root, "/usr/sbin/useradd", "--create-home", "--uid", str(UID), "--user-group",
                  "--shell", "/bin/bash", "builder")
        yield root, payload


def tar_stream(root: Path) -> subprocess.Popen[bytes]:
    """A tar of the image tree on a pipe, for an engine's ``import -``."""
    return subprocess.Popen(["/usr/bin/tar", "--numeric-owner", "--xattrs", "-C", str(root),
                             "-c", "."], stdout=subprocess.PIPE)


# --- the engines ------------------------------------------------------------------------

ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")
"""Explicit rlimits: root here lacks CAP_SYS_RESOURCE, so runc cannot keep the defaults."""
PODMAN_OPTIONS = ("--runtime", TOOLS["runc"], "--network", "none", *ULIMITS)
"""What every podman run gets: runc (crun cannot start containers here), no network."""
DOCKER_OPTIONS = ("--network", "none", *ULIMITS)
HOST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
RUN_TIMEOUT = 1700
"""Seconds for one container, start to exit (the inside driver's steps take 1440 at most)."""


@dataclasses.dataclass(frozen=True)
class ContainerOutput:
    """A finished container: its exit code and bounded output."""

    exit_code: int | None
    stdout: str
    stderr: str
    duration: float


@dataclasses.dataclass
class Engine:
    """One container engine's command line, the options every run gets, and its images."""

    name: str
    command: tuple[str, ...]
    run_options: tuple[str, ...]
    env: dict[str, str]
    images: list[str] = dataclasses.field(default_factory=list)

    def call(self, *args: str, timeout: float = 600, check: bool = True,
             stdin: Any = None, env: Mapping[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
        """Run the engine's command with *args*."""
        return run_tool([*self.command, *args], env=env or self.env, timeout=timeout,
                        check=check, stdin=stdin)

    def import_image(self, root: Path, name: str) -> None:
        """Import the image tree as *name*, with a PATH (imported images have none)."""
        tar = tar_stream(root)
        try:
            self.images.append(name)
            self.call("import", "--change", f"ENV PATH={IMAGE_PATH}", "-", name,
                      stdin=tar.stdout, timeout=IMPORT_TIMEOUT)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            if tar.wait() != 0:
                raise ContainerSetupError(f"tar of {root} exited with {tar.returncode}")

    def run(self, image: str, options: Sequence[str], command: Sequence[str],
            timeout: float = RUN_TIMEOUT) -> ContainerOutput:
        """Run *command* in a fresh container of *image* (removed afterwards, also on timeout)."""
        name = unique("bj-ctr")
        start = time.monotonic()
        try:
            proc = self.call("run", "--rm", "--name", name, *self.run_options, *options, image,
                             *command, timeout=timeout, check=False)
            code: int | None = proc.returncode
            stdout, stderr = proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as error:
            code, stdout = None, _bounded_text(error.stdout)
            stderr = f"timed out after {timeout} s\n" + _bounded_text(error.stderr)
        finally:
            self.remove("container", name)
        return ContainerOutput(code, stdout, stderr, time.monotonic() - start)

    def remove(self, kind: str, name: str, env: Mapping[str, str] | None = None) -> None:
        """Remove the container or pod *name*, retrying while the engine says it is busy."""
        for _ in range(10):
            if self.call(kind, "inspect", name, check=False, env=env).returncode != 0:
                return  # gone
            self.call(kind, "rm", "--force", name, check=False, env=env)
            time.sleep(0.5)
        raise ContainerSetupError(f"{self.name}: cannot remove the {kind} {name}")

    def remove_images(self) -> None:
        """Remove every image this engine imported."""
        while self.images:
            self.call("rmi", "--force", self.images.pop(), check=False)


def rootful_podman() -> Engine:
    """The host's podman as root."""
    return Engine("podman", (TOOLS["podman"],), PODMAN_OPTIONS, {"PATH": HOST_PATH})


@contextlib.contextmanager
def rootless_user() -> Iterator[str]:
    """A throw-away host user with subordinate ids (useradd assigns them); removed after."""
    name = f"bjrl{uuid.uuid4().hex[:12]}"
    run_tool(["/usr/sbin/useradd", "--create-home", "--user-group", "--shell",
              "/usr/sbin/nologin", name])
    uid = pwd.getpwnam(name).pw_uid
    try:
        for path in ("/etc/subuid", "/etc/subgid"):
            if not any(line.startswith(f"{name}:") for line in Path(path).read_text().splitlines()):
                raise ContainerSetupError(
                    f"useradd gave {name} no range in {path}: set SUB_UID_COUNT/SUB_GID_COUNT "
                    "in /etc/login.defs (rootless podman needs subordinate ids)")
        yield name
    finally:
        _kill_processes_of(uid)  # rootless podman's pause process (catatonit -P) and the like
        run_tool(["/usr/sbin/userdel", "--remove", name], check=False)
        for leftover in (f"/tmp/podman-run-{uid}", f"/tmp/containers-user-{uid}",
                         f"/tmp/storage-run-{uid}", f"/run/user/{uid}"):
            with contextlib.suppress(OSError):
                if os.lstat(leftover).st_uid == uid:
                    shutil.rmtree(leftover, ignore_errors=True)


def _kill_processes_of(uid: int) -> None:
    """SIGKILL every process whose real uid is *uid* (a user this module created)."""
    for _ in range(50):
        pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()
                and _real_uid(int(entry)) == uid]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _real_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as stream:
            for line in stream:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rootless_podman(user: str) -> Engine:
    """podman run by *user* through runuser: rootless, root inside is that user."""
    home = pwd.getpwnam(user).pw_dir
    command = ("/usr/sbin/runuser", "-u", user, "--", "/usr/bin/env", f"HOME={home}",
               TOOLS["podman"])
    return Engine("podman-rootless", command, PODMAN_OPTIONS, {"PATH": HOST_PATH})


@contextlib.contextmanager
def docker_daemon() -> Iterator[Engine]:
    """A dockerd of our own (no systemd here) on its own socket and data root; removed after."""
    name = unique("bj-dockerd")
    socket_path, data_root, exec_root = f"/run/{name}.sock", f"/var/lib/{name}", f"/run/{name}"
    pidfile = f"/run/{name}.pid"
    engine = Engine("docker", (TOOLS["docker"],), DOCKER_OPTIONS,
                    {"PATH": HOST_PATH, "DOCKER_HOST": f"unix://{socket_path}"})
    with tempfile.TemporaryFile() as log:
        daemon = subprocess.Popen(
            [TOOLS["dockerd"], "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--host", f"unix://{socket_path}", "--data-root", data_root,
             "--exec-root", exec_root, "--pidfile", pidfile],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd="/")
        try:
            _wait_for_docker(engine, daemon, log)
            yield engine
        finally:
            with contextlib.suppress(ContainerSetupError, subprocess.TimeoutExpired):
                engine.remove_images()
            _stop(daemon)
            for root in (data_root, exec_root):
                _unmount_below(root)
                shutil.rmtree(root, ignore_errors=True)
            for path in (socket_path, pidfile):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


def _wait_for_docker(engine: Engine, daemon: subprocess.Popen[bytes], log: Any) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            break
        if engine.call("version", check=False, timeout=30).returncode == 0:
            return
        time.sleep(0.5)
    log.seek(0)
    tail = log.read()[-4000:].decode(errors="replace")
    raise ContainerSetupError(f"dockerd did not come up (exit {daemon.poll()}):\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _unmount_below(root: str) -> None:
    """Lazily unmount whatever is still mounted at or below *root* (a daemon's leftovers)."""
    with open("/proc/self/mountinfo") as stream:
        points = [line.split()[4] for line in stream]
    for point in sorted(points, key=len, reverse=True):
        if point == root or point.startswith(root + "/"):
            run_tool(["/usr/bin/umount", "--lazy", point], check=False)


# --- a pod through podman kube play -----------------------------------------------------

POD_SPEC = Path(__file__).with_name("pod-buildjail.yaml")
POD_NAME = "buildjail-matrix-pod"
POD_IMAGE = "localhost/buildjail-matrix:latest"
POD_CONTAINER = "worker"
CONTAINERS_CONF = """\
# podman kube play has no --runtime or --ulimit: the same settings as the podman runs.
[engine]
runtime = "{runc}"
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
"""


def pod_spec(pod: str, image: str, command: Sequence[str]) -> str:
    """tests/pod-buildjail.yaml with a unique pod name and our image; its command checked."""
    text = POD_SPEC.read_text()
    if json.dumps(list(command)) not in text:
        raise ContainerSetupError(f"{POD_SPEC}'s command is not {json.dumps(list(command))}")
    for placeholder, value in ((f"name: {POD_NAME}", f"name: {pod}"),
                               (f"image: {POD_IMAGE}", f"image: {image}")):
        if text.count(placeholder) != 1:
            raise ContainerSetupError(f"{POD_SPEC} must hold '{placeholder}' exactly once")
        text = text.replace(placeholder, value)
    return text


def kube_play(podman: Engine, image: str, command: Sequence[str],
              timeout: float = RUN_TIMEOUT) -> ContainerOutput:
    """Play the pod spec with *image*, wait for its container, return its logs; remove it."""
    pod = unique("bj-pod")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bj-kube-") as work:
        spec, conf = Path(work) / "pod.yaml", Path(work) / "containers.conf"
        spec.write_text(pod_spec(pod, image, command))
        conf.write_text(CONTAINERS_CONF.format(runc=TOOLS["runc"]))
        env = {**podman.env, "CONTAINERS_CONF": str(conf)}
        try:
            podman.call("kube", "play", "--network", "none", str(spec), env=env)
            container = f"{pod}-{POD_CONTAINER}"
            waited = podman.call("wait", container, timeout=timeout, env=env)
            logs = podman.call("logs", container, env=env)
        finally:
            podman.remove("pod", pod, env=env)
    code = int(waited.stdout.strip().splitlines()[-1])
    return ContainerOutput(code, logs.stdout, logs.stderr, time.monotonic() - start)


# --- the matrix -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Configuration:
    """One way users run buildjail in a container, with the engine's default options."""

    id: str
    engine: str
    """podman (rootful), podman-rootless, docker, or kube (a pod through podman kube play)."""
    runtime: str
    """What buildjail's doctor should say it runs in: podman, docker or kubernetes."""
    options: tuple[str, ...] = ()
    """Engine options beyond the harness's own (--runtime runc, --network none, ulimits)."""
    uid: int = 0
    """Who the inside driver runs as."""


MATRIX: tuple[Configuration, ...] = (
    Configuration("podman-root", "podman", "podman"),
    Configuration("podman-user", "podman", "podman", ("--user", f"{UID}:{UID}"), UID),
    Configuration("podman-userns-auto", "podman", "podman", ("--userns=auto",)),
    Configuration("podman-rootless", "podman-rootless", "podman"),
    Configuration("docker-root", "docker", "docker"),
    Configuration("docker-user", "docker", "docker", ("--user", f"{UID}:{UID}"), UID),
    Configuration("kube-pod", "kube", "kubernetes"),
)
BY_ID = {configuration.id: configuration for configuration in MATRIX}

_NEEDS = {
    "podman": ("podman", "runc", "debootstrap"),
    "podman-rootless": ("podman", "runc", "debootstrap", "newuidmap", "catatonit"),
    "docker": ("docker", "dockerd", "debootstrap"),
    "kube": ("podman", "runc", "debootstrap"),
}


def missing_tools(engine: str) -> list[str]:
    """The tools *engine*'s configurations need that are not installed here."""
    return [TOOLS[tool] for tool in _NEEDS[engine] if not os.access(TOOLS[tool], os.X_OK)]


@dataclasses.dataclass(frozen=True)
class InsideReport:
    """What the inside driver reported from one container: facts and every step."""

    configuration: str
    options: tuple[str, ...]
    facts: dict[str, Any]
    steps: dict[str, dict[str, Any]]
    duration: float
    """The container's whole run, start to removal, in seconds."""

    def step(self, name: str) -> dict[str, Any]:
        """One step's exit code, stdout, stderr (and json, report, wheel where it has them)."""
        return self.steps[name]


def parse_inside_report(configuration: str, options: tuple[str, ...],
                        output: ContainerOutput) -> InsideReport:
    """The inside driver's report from a container's output, or why there is none."""
    from container_inside import MARKER

    for line in reversed(output.stdout.splitlines()):
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER):])
            return InsideReport(configuration, options, data["facts"], data["steps"],
                                output.duration)
    raise ContainerSetupError(
        f"{configuration} {' '.join(options)}: the inside driver reported nothing "
        f"(container exit {output.exit_code}):\n{output.stderr[-4000:]}\n{output.stdout[-4000:]}")


class Matrix:
    """The engines, their images and the reports, made on first use and kept for the session.

    Each configuration (with a given set of extra options, e.g. the fix buildjail printed)
    starts one container, which runs every step; the report is kept for every test that
    asks for it. close() removes every container, pod, image, user and daemon made.
    """

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.stack = contextlib.ExitStack()
        self.engines: dict[str, Engine] = {}
        self.images: dict[str, str] = {}
        self.reports: dict[tuple[str, tuple[str, ...]], InsideReport | ContainerSetupError] = {}
        self.timings: dict[str, float] = {}
        self._tree: tuple[Path, Payload] | None = None

    def close(self) -> None:
        """Remove everything the matrix made."""
        self.stack.close()

    def report(self, configuration: Configuration, extra: Sequence[str] = ()) -> InsideReport:
        """The inside driver's report from *configuration* run with *extra* options."""
        key = (configuration.id, tuple(extra))
        if key not in self.reports:
            try:
                self.reports[key] = self._run(configuration, tuple(extra))
            except ContainerSetupError as error:
                self.reports[key] = error
        found = self.reports[key]
        if isinstance(found, ContainerSetupError):
            raise found
        return found

    def _run(self, configuration: Configuration, extra: tuple[str, ...]) -> InsideReport:
        engine_name = "podman" if configuration.engine == "kube" else configuration.engine
        engine = self._engine(engine_name)
        _, payload = self._image_tree()
        image = self.images[engine_name]
        if configuration.engine == "kube":
            if extra:
                raise ContainerSetupError("a pod's options are its spec, not extra options")
            output = kube_play(engine, image, payload.command())
        else:
            output = engine.run(image, [*configuration.options, *extra], payload.command())
        label = f"{configuration.id} {' '.join(extra)}".strip()
        self.timings[f"run {label}"] = output.duration
        keep = os.environ.get("BUILDJAIL_CONTAINER_REPORTS")
        if keep:  # for a CI job's artifacts: what each container printed
            Path(keep).mkdir(parents=True, exist_ok=True)
            name = f"{configuration.id}-{hashlib.sha256(label.encode()).hexdigest()[:8]}"
            (Path(keep) / f"{name}.txt").write_text(
                f"{label}\nexit {output.exit_code}\n{output.stdout}\n{output.stderr}")
        return parse_inside_report(configuration.id, extra, output)

    def _image_tree(self) -> tuple[Path, Payload]:
        if self._tree is None:
            start = time.monotonic()
            rootfs_tarball(self.cache)
            self.timings["debootstrap rootfs (or its cached tarball)"] = time.monotonic() - start
            start = time.monotonic()
            self._tree = self.stack.enter_context(image_tree(self.cache))
            self.timings["image tree: buildjail, its wheelhouse, the sdist"] = (
                time.monotonic() - start)
        return self._tree

    def _engine(self, name: str) -> Engine:
        if name in self.engines:
            return self.engines[name]
        root, _ = self._image_tree()
        start = time.monotonic()
        if name == "podman":
            engine = rootful_podman()
        elif name == "podman-rootless":
            engine = rootless_podman(self.stack.enter_context(rootless_user()))
        else:
            engine = self.stack.enter_context(docker_daemon())
        self.stack.callback(engine.remove_images)
        image = unique("localhost/bj-img" if name.startswith("podman") else "bj-img")
        engine.import_image(root, image)
        self.images[name] = image
        self.engines[name] = engine
        self.timings[f"engine {name}"] = time.monotonic() - start
        return engine
