"""Run the probe project under each profile and backend, and judge every attack vector."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..policy import Policy
from .vectors import CONFIG_FILE, LIMITS, PROBE_MARKER, VECTORS

if TYPE_CHECKING:
    from .bait import Bait

PROBE_PROJECT = Path(__file__).with_name("probe_project")
_WORK_BASE = "/var/lib" if os.access("/var/lib", os.W_OK) else None
_WRITE_VECTORS = frozenset({
    "pth_interpreter", "pth_build_env", "sitecustomize", "shell_profile", "cron", "pip_conf",
    "write_etc", "other_build", "other_output", "shared_cache", "tmp_shared",
})


@dataclasses.dataclass(frozen=True)
class Finding:
    """One cell of the table: a vector under a profile and backend, its verdict and why."""

    vector: str
    profile: str
    backend: str
    verdict: str
    evidence: str


@dataclasses.dataclass
class AuditReport:
    """All findings of one audit, with the host it ran on."""

    findings: list[Finding]
    profiles: list[str]
    backends: list[str]
    host: dict[str, Any]
    errors: list[str] = dataclasses.field(default_factory=list)

    def vulnerable_in(self, profile: str) -> list[Finding]:
        """The findings of *profile* whose verdict is vulnerable."""
        return [f for f in self.findings if f.profile == profile and f.verdict == "vulnerable"]

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form (see the README): findings, profiles, backends, host."""
        return {
            "findings": [dataclasses.asdict(finding) for finding in self.findings],
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
            report.findings += _audit_one(profile, backend, keep_workdir, report.errors)
    return report


def _audit_one(profile: str, backend: str, keep_workdir: bool,
               errors: list[str]) -> list[Finding]:
    from .bait import Bait

    with _workdir(keep_workdir) as workdir, Bait(workdir, _tag(profile, backend)) as bait:
        project = workdir / "probe"
        shutil.copytree(PROBE_PROJECT, project,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _open_up(project)
        config = bait.config(project)
        (project / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        log = workdir / "probe.log"
        stopped = _build_probe(project, workdir, audit_policy(profile), backend=backend,
                               env=bait.env(), log=log, errors=errors)
        text = log.read_text(errors="replace") if log.exists() else ""
        return judge_probe_log(text, bait, config, profile=profile, backend=backend,
                               stopped=stopped)


def judge_probe_log(text: str, bait: Bait, config: Mapping[str, Any], *, profile: str,
                    backend: str, stopped: Mapping[str, str] | None = None) -> list[Finding]:
    """Judge every vector from a build's probe log, the probes a limit stopped, and the bait.

    *text* is the output of the probe project's hooks, as any frontend logged it;
    *config* its ``audit-config.json``; *stopped* maps a vector to why the sandbox stopped
    the hook that ran it (a limit). Call it right after the build, with the bait planted.
    """
    from .bait import observe

    results = parse_probe_log(text)
    for vector, why in (stopped or {}).items():
        results.setdefault(vector, {"vector": vector, "outcome": "failed", "detail": why})
    evidence = observe(bait, dict(config), results)
    return [_judge(vector.id, profile, backend, results.get(vector.id), evidence.get(vector.id))
            for vector in VECTORS]


def audit_policy(profile: str) -> Policy:
    """The policy the audit builds under: *profile*, with the audit's low limits if it has any."""
    policy = Policy.profile(profile)
    if any(dataclasses.astuple(policy.limits)):  # only profiles with limits get the audit's
        policy = policy.with_limits(**LIMITS)
    return policy


SEPARATE_BUILDS = ("daemon", "disk_filler", "fork_bomb", "memory_hog")
"""Probes that get a build_wheel call of their own: a limit stops the whole sandbox."""


def _build_probe(project: Path, workdir: Path, policy: Policy, *, backend: str,
                 env: dict[str, str], log: Path, errors: list[str]) -> dict[str, str]:
    """Call the probe's hooks in the sandbox; return the probes a limit stopped, and why."""
    from pyproject_hooks import BuildBackendHookCaller

    from ..buildenv import BuildEnvironment
    from ..errors import BuildjailError
    from ..pep517 import HookFailed, hook_runner

    environment = BuildEnvironment(str(workdir / "env"))
    runner = hook_runner(policy, backend=backend, log_path=log,
                         env=environment.hook_environment(env))
    caller = BuildBackendHookCaller(str(project), "probe_backend", ["."], runner=runner,
                                    python_executable=environment.python)
    outdir = workdir / "dist"
    outdir.mkdir()
    outdir.chmod(0o755)
    stopped: dict[str, str] = {}
    calls: list[tuple[str, Callable[[], object]]] = [
        ("the other probes", caller.get_requires_for_build_wheel)]
    calls += [(name, lambda name=name: caller.build_wheel(  # type: ignore[misc]
        str(outdir), config_settings={"buildjail-probes": name})) for name in SEPARATE_BUILDS]
    for name, call in calls:
        try:
            call()
        except HookFailed as error:
            limit = error.result.limit_hit
            if limit and name in SEPARATE_BUILDS:
                stopped[name] = f"the sandbox's {limit.replace('_', ' ')} limit stopped it"
            else:
                errors.append(f"{policy.name}/{backend}: {name}: {error.returncode}")
        except BuildjailError as error:
            errors.append(f"{policy.name}/{backend}: {name}: {error}")
    return stopped


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


def _judge(vector: str, profile: str, backend: str, probe: dict[str, str] | None,
           outside: str | None) -> Finding:
    """Combine what the probe reported from inside with what was seen from outside."""
    outcome = (probe or {}).get("outcome")
    detail = str((probe or {}).get("detail", ""))
    seen = f"; outside: {outside}" if outside else ""
    if vector == "daemon":  # starting one is allowed; outliving the hook is the attack
        alive = outside is not None and outside.startswith("heartbeat still growing")
        verdict = "vulnerable" if alive else "blocked"
        return Finding(vector, profile, backend, verdict, f"probe: {outcome} {detail}{seen}")
    if outcome == "not_applicable":
        return Finding(vector, profile, backend, "not_applicable", detail)
    if outcome == "succeeded" or _seen_from_outside(vector, outside):
        return Finding(vector, profile, backend, "vulnerable", f"{detail}{seen}".strip("; "))
    if probe is None:
        return Finding(vector, profile, backend, "blocked",
                       f"no report from the probe: the sandbox stopped it{seen}")
    return Finding(vector, profile, backend, "blocked", f"{detail}{seen}".strip("; "))


def _seen_from_outside(vector: str, outside: str | None) -> bool:
    """Whether the outside saw the attack's effect, whatever the probe said."""
    if outside is None:
        return False
    if vector == "shell_profile":
        return outside.startswith("~/.bashrc changed")
    return vector in _WRITE_VECTORS and outside.endswith(" exists")


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    # Not under /tmp or /var/tmp, which are private in the sandbox: the bait must stay
    # visible there, so that what blocks each attack is a real protection, not absence.
    path = Path(tempfile.mkdtemp(prefix="buildjail-audit-", dir=_WORK_BASE))
    path.chmod(0o755)
    try:
        yield path
    finally:
        if keep:
            print(f"buildjail: audit work directory kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _open_up(project: Path) -> None:
    for path in [project, *project.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


_counter = iter(range(1 << 30))


def _tag(profile: str, backend: str) -> str:
    return f"{os.getpid()}-{next(_counter)}-{profile}-{backend}"


def _host() -> dict[str, Any]:
    return {"kernel": platform.release(), "machine": platform.machine(), "euid": os.geteuid(),
            "python": platform.python_version()}
