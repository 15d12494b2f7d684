"""Run the probe project under each profile and backend, and judge every attack vector."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import attempts
from ..errors import BuildjailError
from ..limits import describe_limit
from ..policy import Policy
from .terminal import TerminalSpec
from .vectors import CONFIG_FILE, LIMITS, PROBE_MARKER, VECTORS

if TYPE_CHECKING:
    from pyproject_hooks import BuildBackendHookCaller

    from ..pep517 import SandboxedHookRunner
    from ..result import RunResult
    from .bait import Bait
    from .terminal import AuditTerminal

PROBE_PROJECT = Path(__file__).with_name("probe_project")
_WRITE_VECTORS = frozenset({
    "pth_interpreter", "pth_build_env", "sitecustomize", "shell_profile", "cron", "pip_conf",
    "write_etc", "other_build", "other_output", "shared_cache", "tmp_shared",
})
_JUDGED_OUTSIDE = (_WRITE_VECTORS - {"tmp_shared"}) | {"net_udp", "tiocsti", "setid_tree"}
"""Attacks whose success is what reaches the host: a file there, a datagram that arrived,
a set-id file handed back.

A probe that wrote into the sandbox's own private view (its /tmp, its HOME), sent a
datagram nowhere, injected into a terminal that is not the audit's or set a mode the
hand-back took away succeeded only inside; the host decides."""
TERMINAL_VECTORS = ("tiocsti",)
"""Probes run on the audit's own pty, from a session of their own (see ``terminal``)."""
SELECT_SETTING = "buildjail-probes"
"""The config setting naming the probes of a hook call (``probes.SELECT_SETTING``)."""
_TARGETED = {"proc_parent_environ": ("parent_pid",), "proc_parent_cmdline": ("parent_pid",),
             "proc_visibility": ("parent_pid", "victim_pid"), "ptrace": ("victim_pid",),
             "process_vm_readv": ("victim_pid",), "signal": ("victim_pid",)}
"""Attacks on a process of the auditor's, by pid: the pid may also be one of the sandbox's
own processes (the auditor is pid 1 in a container), so the process reached must be the
target itself, which its start time tells."""
VERDICTS = ("blocked", "vulnerable", "degraded", "error", "not_applicable")
"""``degraded``: the layer is weaker as the runtime forbids (e.g. the container's hostname is
kept), named in the sandbox's report; ``error``: the probe did not run, so it says nothing."""


class AuditError(BuildjailError):
    """The audit cannot be run here (e.g. no place to plant the bait)."""


@dataclasses.dataclass(frozen=True)
class Finding:
    """One cell of the table: a vector under a profile and backend, its verdict and why."""

    vector: str
    profile: str
    backend: str
    verdict: str
    evidence: str


@dataclasses.dataclass(frozen=True)
class SandboxStatus:
    """Whether the sandbox of one profile and backend was set up, and what it ran with."""

    profile: str
    backend: str
    set_up: bool
    error: str | None = None
    """Why it was not set up: the reason and the fix, as buildjail reports them."""
    layers: tuple[str, ...] = ()
    degraded: dict[str, str] = dataclasses.field(default_factory=dict)
    """Layers the runtime forbids and the sandbox kept weaker: why (see RunResult.degraded)."""
    attempts: tuple[dict[str, str], ...] = ()
    """What the probes' hook calls were recorded trying (``RunResult.attempts``), in order."""
    attempts_omitted: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class AuditReport:
    """All findings of one audit, with the host it ran on."""

    findings: list[Finding]
    profiles: list[str]
    backends: list[str]
    host: dict[str, Any]
    errors: list[str] = dataclasses.field(default_factory=list)
    sandboxes: list[SandboxStatus] = dataclasses.field(default_factory=list)

    def vulnerable_in(self, profile: str) -> list[Finding]:
        """The findings of *profile* whose verdict is vulnerable."""
        return self.with_verdict(profile, "vulnerable")

    def with_verdict(self, profile: str, verdict: str) -> list[Finding]:
        """The findings of *profile* with *verdict*."""
        return [f for f in self.findings if f.profile == profile and f.verdict == verdict]

    def failed(self, profile: str) -> bool:
        """Whether *profile* let an attack through or could not judge one (an exit code 1)."""
        return bool(self.vulnerable_in(profile) or self.with_verdict(profile, "error"))

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form (see the README): findings, sandboxes, profiles, backends."""
        return {
            "findings": [dataclasses.asdict(finding) for finding in self.findings],
            "sandboxes": [dataclasses.asdict(status) for status in self.sandboxes],
            "profiles": self.profiles,
            "backends": self.backends,
            "host": self.host,
            "errors": self.errors,
            "vectors": [dataclasses.asdict(vector) for vector in VECTORS],
        }


Progress = Callable[[str], None]


def run_audit(profiles: Sequence[str] = ("none", "network", "full"),
              backends: Sequence[str] = ("native",), *, keep_workdir: bool = False,
              progress: Progress | None = None) -> AuditReport:
    """Plant bait, build the probe project under each profile/backend, judge, clean up."""
    report = AuditReport([], list(profiles), list(backends), _host())
    for backend in backends:
        for profile in profiles:
            if progress:
                progress(f"auditing profile {profile} on the {backend} backend")
            findings, status = _audit_one(profile, backend, keep_workdir, report.errors)
            report.findings += findings
            report.sandboxes.append(status)
    return report


def _audit_one(profile: str, backend: str, keep_workdir: bool,
               errors: list[str]) -> tuple[list[Finding], SandboxStatus]:
    from .bait import Bait

    with _workdir(keep_workdir) as workdir, Bait(workdir, _tag(profile, backend)) as bait, \
            _audit_terminal(profile, backend, errors) as terminal:
        project = workdir / "probe"
        shutil.copytree(PROBE_PROJECT, project,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _open_up(project)
        config = bait.config(project)
        if terminal is not None:
            config["terminal"] = terminal.signature
        (project / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        log = workdir / "probe.log"
        run = _build_probe(project, workdir, audit_policy(profile), backend=backend,
                           env=bait.env(), log=log, errors=errors, terminal=terminal)
        text = "".join(_read_log(path) for path in (log, log.with_name("terminal-probe.log")))
        status = SandboxStatus(profile, backend, run.setup_error is None, run.setup_error,
                               run.layers, run.degraded, run.attempts, run.attempts_omitted)
        findings = judge_probe_log(text, bait, config, profile=profile, backend=backend,
                                   stopped=run.stopped, degraded=run.degraded,
                                   setup_error=run.setup_error, outside=run.outside)
        return findings, status


def _read_log(path: Path) -> str:
    """The text of a probe log, or nothing when the build never wrote it."""
    return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def _audit_terminal(profile: str, backend: str,
                    errors: list[str]) -> Iterator[AuditTerminal | None]:
    """The pty the terminal probe attacks, or None (an error noted) when none can be opened."""
    from .terminal import AuditTerminal

    try:
        terminal = AuditTerminal()
    except OSError as error:
        errors.append(f"{profile}/{backend}: no pseudo-terminal for the terminal probe: "
                      f"{error.strerror or error}")
        yield None
        return
    with terminal:
        yield terminal


def judge_probe_log(text: str, bait: Bait, config: Mapping[str, Any], *, profile: str,
                    backend: str, stopped: Mapping[str, str] | None = None,
                    degraded: Mapping[str, str] | None = None,
                    setup_error: str | None = None,
                    outside: Mapping[str, str] | None = None) -> list[Finding]:
    """Judge every vector from a build's probe log, the probes a limit stopped, and the bait.

    *text* is the output of the probe project's hooks, as any frontend logged it;
    *config* its ``audit-config.json``; *stopped* maps a vector to why the sandbox stopped
    the hook that ran it (a limit); *degraded* is the sandbox's ``RunResult.degraded``;
    *setup_error* why the sandbox could not be set up, if so (every vector is then an
    error: nothing ran); *outside* what the auditor saw itself, by vector (the terminal's
    master side). Call it right after the build, with the bait planted.
    """
    from .bait import observe

    results = parse_probe_log(text)
    for vector, why in (stopped or {}).items():
        results.setdefault(vector, {"vector": vector, "outcome": "failed", "detail": why})
    evidence = {**observe(bait, dict(config), results), **(outside or {})}
    targets = {key: _start_time(config.get(key)) for key in ("parent_pid", "victim_pid")}
    context = _Context(profile, backend, dict(degraded or {}), setup_error,
                       socket.gethostname(), targets)
    return [_judge(vector.id, results.get(vector.id), evidence.get(vector.id), context)
            for vector in VECTORS]


@dataclasses.dataclass(frozen=True)
class _Context:
    """What a verdict needs to know of the sandbox besides the probe and the outside."""

    profile: str
    backend: str
    degraded: dict[str, str]
    setup_error: str | None
    hostname: str
    """This (the auditor's) hostname: a container's, when the hostname layer is degraded."""
    targets: dict[str, str | None]
    """``parent_pid``/``victim_pid`` -> the start time of that process, read from outside."""


def _start_time(pid: object) -> str | None:
    """The start time (field 22 of /proc/PID/stat) of a process, as the probes report it."""
    if not isinstance(pid, int):
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            stat = stream.read().decode(errors="replace")
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def audit_policy(profile: str) -> Policy:
    """The policy the audit builds under: *profile*, with the audit's low limits if it has any."""
    policy = Policy.profile(profile).recording_attempts()
    if any(policy.limits):  # only profiles with limits get the audit's
        policy = policy.with_limits(**LIMITS)
    return policy


SEPARATE_BUILDS = ("daemon", "disk_filler", "fork_bomb", "memory_hog", "disk_files",
                   "memory_sysv", "memory_sockets")
"""Probes that get a build_wheel call of their own: a limit stops the whole sandbox."""
MAIN_VECTORS = tuple(vector.id for vector in VECTORS
                     if vector.id not in SEPARATE_BUILDS + TERMINAL_VECTORS)
"""The probes of the first hook call: all but the separate builds and the terminal's."""


@dataclasses.dataclass
class _ProbeRun:
    """What the probe build's sandbox reported, besides the log."""

    stopped: dict[str, str] = dataclasses.field(default_factory=dict)
    """Probes a limit stopped, and why."""
    setup_error: str | None = None
    layers: tuple[str, ...] = ()
    degraded: dict[str, str] = dataclasses.field(default_factory=dict)
    outside: dict[str, str] = dataclasses.field(default_factory=dict)
    """What the auditor itself saw of a probe (the terminal's master side), by vector."""
    attempts: tuple[dict[str, str], ...] = ()
    attempts_omitted: dict[str, int] = dataclasses.field(default_factory=dict)


def _build_probe(project: Path, workdir: Path, policy: Policy, *, backend: str,
                 env: dict[str, str], log: Path, errors: list[str],
                 terminal: AuditTerminal | None) -> _ProbeRun:
    """Call the probe's hooks in the sandbox, then the terminal probe on the audit's own pty."""
    from ..buildenv import BuildEnvironment, IndexOptions
    from ..installers import InstallerError

    # The installer's cache in the audit's work directory, not in the bait's HOME.
    try:
        installer = IndexOptions().installer().with_cache(str(workdir / "uv-cache"),
                                                          always=True)
    except InstallerError:
        installer = None  # the build environment says why
    environment = BuildEnvironment(str(workdir / "env"), installer=installer)
    hook_env = environment.hook_environment(env)
    runner, caller = probe_caller(str(project), environment.python, policy, backend=backend,
                                  log=str(log), env=hook_env)
    outdir = workdir / "dist"
    outdir.mkdir()
    outdir.chmod(0o755)
    calls: list[tuple[str, Callable[[], object]]] = [
        ("the other probes", lambda: caller.get_requires_for_build_wheel(
            config_settings={SELECT_SETTING: list(MAIN_VECTORS)}))]
    calls += [(name, lambda name=name: caller.build_wheel(  # type: ignore[misc]
        str(outdir), config_settings={SELECT_SETTING: name})) for name in SEPARATE_BUILDS]
    run = call_probes(calls, runner, policy.name, backend, errors)
    if run.setup_error is None:
        spec = TerminalSpec(str(project), environment.python, hook_env, policy.name, backend,
                            str(log.with_name("terminal-probe.log")))
        _probe_terminal(spec, terminal, workdir, run, errors)
    return run


def probe_caller(project: str, python: str, policy: Policy, *, backend: str, log: str,
                 env: dict[str, str]) -> tuple[SandboxedHookRunner, BuildBackendHookCaller]:
    """The sandboxed hook runner and the hook caller of the probe project."""
    from pyproject_hooks import BuildBackendHookCaller

    from ..pep517 import hook_runner

    runner = hook_runner(policy, backend=backend, log_path=log, env=env)
    caller = BuildBackendHookCaller(project, "probe_backend", ["."], runner=runner,
                                    python_executable=python)
    return runner, caller


def call_probes(calls: Sequence[tuple[str, Callable[[], object]]], runner: SandboxedHookRunner,
                profile: str, backend: str, errors: list[str]) -> _ProbeRun:
    """Make each hook call of *calls*; return what the sandbox reported, add to *errors*."""
    from ..errors import SandboxSetupError
    from ..pep517 import HookFailed

    run = _ProbeRun()
    for name, call in calls:
        try:
            call()
        except HookFailed as error:
            limit = error.result.limit_hit
            if limit and name in SEPARATE_BUILDS:
                limit_words = describe_limit(limit).removeprefix("the ")
                run.stopped[name] = f"the sandbox's {limit_words} stopped it"
            else:
                errors.append(f"{profile}/{backend}: {name}: {error.returncode}")
        except SandboxSetupError as error:
            fix = f" (fix: {error.fix})" if error.fix else ""
            run.setup_error = f"{error.reason}{fix}"
            errors.append(f"{profile}/{backend}: {name}: the sandbox was not set up: "
                          f"{run.setup_error}")
            break  # every other call would fail the same way
        except BuildjailError as error:
            errors.append(f"{profile}/{backend}: {name}: {error}")
    if runner.results:
        # The sandbox's layers as a call that ran to its end saw them: where a limit stopped
        # an exhaustion probe, what its init would have recorded is said lost, for it alone.
        ended = [result for _, result in runner.results if not result.limit_hit]
        last = (ended or [runner.results[-1][1]])[-1]
        run.layers, run.degraded = last.layers, dict(last.degraded)
    run.attempts, run.attempts_omitted = _attempts_of(result for _, result in runner.results)
    return run


def _attempts_of(results: Iterable[RunResult]) -> tuple[tuple[dict[str, str], ...],
                                                          dict[str, int]]:
    """Every hook call's attempts, each once, in order, and what they omitted, by kind."""
    runs = list(results)
    seen = dict.fromkeys(item for result in runs for item in result.attempts)
    return (tuple(item.to_dict() for item in seen),
            attempts.merged_omitted(result.attempts_omitted for result in runs))


def _probe_terminal(spec: TerminalSpec, terminal: AuditTerminal | None, workdir: Path,
                    run: _ProbeRun, errors: list[str]) -> None:
    """Run the terminal probe on the audit's pty; record what its master side read."""
    from .terminal import describe_received, run_on_terminal

    if terminal is None:
        return  # no pty: the probe has no report, so it is an error, never blocked
    helper = run_on_terminal(spec, terminal, workdir)
    errors += [f"{spec.profile}/{spec.backend}: {error}" for error in helper.get("errors", [])]
    run.outside["tiocsti"] = describe_received(terminal.received())


def parse_probe_log(text: str) -> dict[str, dict[str, str]]:
    """The probe lines of a build log, by vector id.

    A line may carry a prefix before the marker (fromager prefixes the package name). When
    several hooks ran a probe, the last line wins, unless an earlier one succeeded: one hook
    the attack got through is enough.
    """
    results: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        start = line.find(PROBE_MARKER)
        if start < 0:
            continue
        try:
            record = json.loads(line[start + len(PROBE_MARKER):])
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("vector"), str):
            previous = results.get(record["vector"])
            if previous is None or previous.get("outcome") != "succeeded":
                results[record["vector"]] = record
    return results


def _judge(vector: str, probe: dict[str, str] | None, outside: str | None,
           context: _Context) -> Finding:
    """Combine what the probe reported from inside with what was seen from outside."""
    verdict, evidence = _verdict(vector, probe, outside, context)
    return Finding(vector, context.profile, context.backend, verdict, evidence)


def _verdict(vector: str, probe: dict[str, str] | None, outside: str | None,
             context: _Context) -> tuple[str, str]:
    outcome = (probe or {}).get("outcome")
    detail = str((probe or {}).get("detail", ""))
    seen = f"; outside: {outside}" if outside else ""
    if context.setup_error is not None:
        return "error", "did not run: the sandbox was not set up (its reason is with the sandbox)"
    if vector == "daemon":  # starting one is allowed; outliving the hook is the attack
        alive = outside is not None and outside.startswith("heartbeat still growing")
        if probe is None and not alive:
            return "error", f"no report from the probe: it did not run{seen}"
        return ("vulnerable" if alive else "blocked"), f"probe: {outcome} {detail}{seen}"
    if outcome == "not_applicable":
        return "not_applicable", detail
    if _seen_from_outside(vector, outside):
        return "vulnerable", f"{detail}{seen}".strip("; ")
    if probe is None:
        return "error", f"no report from the probe: it did not run, so it proves nothing{seen}"
    uncovered = _NOT_COVERED_AS.get(vector)
    if outcome == "succeeded" and uncovered in context.degraded and (
            vector != "hostname" or detail == f"hostname seen: {context.hostname}"):
        return "degraded", f"{detail}: {context.degraded[uncovered]}"
    if outcome == "succeeded" and vector in _TARGETED and not _reached_target(
            vector, detail, context):
        return "blocked", (f"{detail}: a process of the sandbox's own with the target's pid, "
                           "not the target (its start time differs)")
    if outcome == "succeeded" and vector in _JUDGED_OUTSIDE:
        return "blocked", f"{detail}, but only inside the sandbox: nothing reached the host{seen}"
    if outcome == "succeeded":
        return "vulnerable", f"{detail}{seen}".strip("; ")
    return "blocked", f"{detail}{seen}".strip("; ")


_NOT_COVERED_AS = {"hostname": "hostname", "proc_visibility": "processes",
                   "proc_parent_cmdline": "processes", "tmp_shared": "tmp"}
"""Vectors a backend may declare it cannot block, by the ``RunResult.degraded`` key that
says so and why (the landlock backend's other processes, the host's /tmp names): judged
``degraded`` with that reason, not ``vulnerable``, where the sandbox declared it — and
only what the probe itself reports; a write the outside sees is still ``vulnerable``."""


def _reached_target(vector: str, detail: str, context: _Context) -> bool:
    """Whether the process the probe reports having reached is one of its real targets."""
    starts = {context.targets.get(key) for key in _TARGETED[vector]} - {None}
    return any(f"starttime {start})" in detail for start in starts)


def _seen_from_outside(vector: str, outside: str | None) -> bool:
    """Whether the outside saw the attack's effect, whatever the probe said."""
    if outside is None:
        return False
    if vector == "shell_profile":
        return outside.startswith("~/.bashrc changed")
    if vector == "net_udp":
        return not outside.startswith("UDP socket received 0 ")
    if vector == "host_unix_socket":
        return " accepted 0 connection" not in outside
    if vector == "tiocsti":
        return outside.startswith("the audit's terminal received the injected ")
    if vector == "setid_tree":
        return outside.endswith(": kept set-id bits")
    return vector in _WRITE_VECTORS and outside.endswith(" exists")


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="buildjail-audit-", dir=_work_base()))
    path.chmod(0o755)
    try:
        yield path
    finally:
        if keep:
            print(f"buildjail: audit work directory kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _work_base() -> str:
    """Where the bait goes: where a build of this caller could really reach it.

    Never under /tmp or /var/tmp, which are private in the sandbox, so that what blocks
    each attack is a real protection, not absence. As root: /var/lib (root's home is
    masked, and the build runs as another uid). As another user: that user's own home,
    which is where its credentials, other checkouts and caches really live.
    """
    if os.geteuid() == 0:
        return "/var/lib"
    home = os.path.expanduser("~")
    try:
        info = os.stat(home)
    except OSError:
        info = None
    if info is None or info.st_uid != os.getuid() or not os.access(home, os.W_OK | os.X_OK):
        raise AuditError(
            f"the audit plants its bait in your home directory, and {home} is not a "
            "directory you own and can write: set HOME to one")
    return home


def _open_up(project: Path) -> None:
    for path in [project, *project.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


_counter = iter(range(1 << 30))


def _tag(profile: str, backend: str) -> str:
    return f"{os.getpid()}-{next(_counter)}-{profile}-{backend}"


def _host() -> dict[str, Any]:
    return {"kernel": platform.release(), "machine": platform.machine(), "euid": os.geteuid(),
            "python": platform.python_version()}
