"""buildjail in real containers: rootful and rootless Podman, Docker, a pod through kube play.

Each configuration starts one container with the engine's default security options, in
which tests/container_inside.py runs every step (doctor, run under full and network, the
audit of full on both backends, a real sdist build and the same build without buildjail).
Where buildjail cannot work with the defaults it must fail closed (exit 125) with one
reason line and the runtime's exact fix; the tests then take that fix from its message,
start the container again with it applied, and check that everything works: so a wrong or
incomplete fix fails here.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

import containers
import corpus
from conftest import is_root
from containers import BY_ID, MATRIX, Configuration, InsideReport, Matrix

pytestmark = [pytest.mark.containers, pytest.mark.root]

RUNTIME_FIX = {
    "podman": {"unmask=/proc/*"},
    "docker": {"seccomp=unconfined", "systempaths=unconfined"},
}
"""The --security-opt values that make the full sandbox work, per runtime: exactly these."""
POD_FIX = {"procMount": "Unmasked", "hostUsers": "false"}
"""The pod spec's fields that make it work on Kubernetes."""
POD_EQUIVALENT = {
    ("hostUsers", "false"): ("podman-userns-auto", ()),  # a user namespace of its own
    ("procMount", "Unmasked"): (None, ("--security-opt", "unmask=/proc/*")),
}
"""What each field of the pod fix is in rootful Podman, which ignores procMount before 4.7."""
CAP_SYS_ADMIN = 21
HOSTNAME_LAYER = re.compile(r"hostname|uts", re.IGNORECASE)
DEFAULTS = [pytest.param(configuration, id=configuration.id) for configuration in MATRIX]
ENGINE_RUNS = [pytest.param(configuration, id=configuration.id) for configuration in MATRIX
               if configuration.engine != "kube"]


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest) -> Iterator[Matrix]:
    """The engines, images and container reports of this module; all removed after it.

    Module-scoped, not session-scoped: its dockerd is a child of the test process, and
    the tests that follow check that they leave no child process behind.
    """
    if not is_root():
        pytest.skip("the container matrix needs root (rootful Podman, its own dockerd, a "
                    "throw-away user for rootless Podman); CI runs as root")
    start = time.monotonic()
    made = Matrix(corpus.cache_dir())
    try:
        yield made
    finally:
        made.close()
        _print_timings(request, made.timings, time.monotonic() - start)


def _print_timings(request: pytest.FixtureRequest, timings: dict[str, float],
                   total: float) -> None:
    """Say in the test log how long the matrix took, and its parts."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    reporter.write_line(f"\ncontainer matrix: {total:.0f} s in all (set-up and tear-down "
                        "included)")
    for name, seconds in timings.items():
        reporter.write_line(f"  {seconds:6.1f} s  {name}")


def defaults(matrix: Matrix, configuration: Configuration) -> InsideReport:
    """The report of *configuration* with the engine's defaults (skip if not installed)."""
    missing = containers.missing_tools(configuration.engine)
    if missing:
        pytest.skip(f"{configuration.engine} cannot run here: {', '.join(missing)} not "
                    f"installed ({containers.INSTALL_HINT})")
    return matrix.report(configuration)


def with_printed_fix(matrix: Matrix, configuration: Configuration) -> InsideReport:
    """The report of *configuration* with the fix ``run --profile full`` printed applied."""
    run = defaults(matrix, configuration).step("run_full")
    fix = _fix_of(run["stderr"]) if run["exit_code"] == 125 else ""
    extra = [arg for option in sorted(security_options(fix))
             for arg in ("--security-opt", option)]
    return matrix.report(configuration, extra)


# --- reading buildjail's messages -------------------------------------------------------


def security_options(text: str) -> set[str]:
    """The values of every ``--security-opt`` a message names."""
    return {value.rstrip(".:") for value in
            re.findall(r"--security-opt[= ]+([^\s,;)`'\"]+)", text)}


def pod_fields(text: str) -> dict[str, str]:
    """The pod spec fields (procMount, hostUsers) a message names, with their values."""
    return dict(re.findall(r"\b(procMount|hostUsers)\b`?\s*[:=]\s*`?(\w+)", text))


def _fix_of(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    fixes = [line for line in lines if line.startswith("fix:")]
    return fixes[0] if fixes else ""


def described(step: dict[str, Any]) -> str:
    """A step for an assertion message: its command, exit code and the tail of its output."""
    logs = "".join(f"\nlog {name}: {text[-3000:]}" for name, text in step.get("logs", {}).items())
    return (f"{' '.join(step['argv'][1:3])}: exit {step['exit_code']}\n"
            f"stderr: {step['stderr'][-3000:]}\nstdout: {step['stdout'][-1500:]}{logs}")


def assert_fails_closed(step: dict[str, Any]) -> str:
    """Exit 125, and stderr is exactly one reason line and one ``fix:`` line; return the fix."""
    assert step["exit_code"] == 125, described(step)
    lines = [line.strip() for line in step["stderr"].splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("buildjail: ") and not lines[0].startswith("buildjail: fix")
    assert lines[1].startswith("fix: "), lines
    return str(lines[1])


def assert_names_the_fix(runtime: str, text: str) -> None:
    """*text* names exactly *runtime*'s fix: its --security-opt values, or its pod fields."""
    if runtime == "kubernetes":
        assert pod_fields(text) == POD_FIX, text
        assert security_options(text) == set(), text
    else:
        assert security_options(text) == RUNTIME_FIX[runtime], text


def container_named(doctor: dict[str, Any]) -> list[str]:
    """Which runtimes the doctor's ``host.container`` names."""
    text = json.dumps(doctor["host"].get("container")).lower()
    return [name for name in ("kubernetes", "podman", "docker") if name in text]


def doctor_fixes(doctor: dict[str, Any], uid: int) -> str:
    """The fixes of the required checks that failed for the identity the container runs as.

    A layer reported as degraded (the hostname where the runtime refuses sethostname) is
    not a failure that the runtime's fix is about, so its advice is left out.
    """
    who = "root" if uid == 0 else "nonroot"
    return "\n".join(str(check.get("fix") or "") for check in doctor["checks"]
                     if check["identity"] == who and check.get("required", True)
                     and check.get("checked", True) and not check["ok"]
                     and not degraded_mentions(check))


def doctor_problems(step: dict[str, Any]) -> str:
    """The doctor's failed checks, one line each, for an assertion message."""
    doctor = step.get("json")
    if not doctor:
        return described(step)
    return f"exit {step['exit_code']}:\n" + "\n".join(
        f"{check['identity']} {check['layer']}: {check.get('reason')} | fix: {check.get('fix')}"
        for check in doctor["checks"] if check.get("checked", True) and not check["ok"])


def degraded_mentions(document: Any) -> list[str]:
    """What a JSON document says is degraded, whatever its shape.

    The strings under a key containing "degraded" (and that key's own keys), the keys
    whose value is "degraded", the other strings of an object with a "degraded" value
    (``{"layer": "hostname", "status": "degraded"}``), and strings mentioning "degraded".
    """
    found: list[str] = []

    def walk(value: Any, under: bool) -> None:
        if isinstance(value, dict):
            if "degraded" in value.values():
                found.extend(str(item) for item in value.values() if isinstance(item, str))
            for key, item in value.items():
                if item == "degraded" or under:
                    found.append(str(key))
                walk(item, under or "degraded" in str(key).lower())
        elif isinstance(value, list):
            for item in value:
                walk(item, under)
        elif isinstance(value, str) and (under or "degraded" in value.lower()):
            found.append(value)

    walk(document, False)
    return found


def full_findings(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """The audit's findings under the full profile."""
    return [finding for finding in audit["findings"] if finding["profile"] == "full"]


# --- with the engine's defaults ---------------------------------------------------------


@pytest.mark.parametrize("configuration", DEFAULTS)
def test_full_fails_closed_naming_the_runtime_fix(matrix: Matrix,
                                                  configuration: Configuration) -> None:
    """Default options: ``run --profile full`` exits 125 with the runtime's exact fix."""
    fix = assert_fails_closed(defaults(matrix, configuration).step("run_full"))
    assert_names_the_fix(configuration.runtime, fix)


@pytest.mark.parametrize("configuration", DEFAULTS)
def test_doctor_names_the_runtime_and_the_same_fix(matrix: Matrix,
                                                   configuration: Configuration) -> None:
    """The doctor says which runtime it is in, that full does not work, and the same fix."""
    report = defaults(matrix, configuration)
    step = report.step("doctor")
    doctor = step["json"]
    assert doctor is not None, described(step)
    named = container_named(doctor)
    if configuration.runtime == "kubernetes":
        assert "kubernetes" in named, doctor["host"]
    else:
        assert named == [configuration.runtime], doctor["host"]
    # auto falls back to landlock, which works here: the doctor passes, and still names
    # the runtime's fix for the namespace backends, whose checks fail.
    assert doctor["auto"]["backend"] == "landlock", doctor["auto"]
    assert step["exit_code"] == 0, doctor_problems(step)
    fixes = doctor_fixes(doctor, configuration.uid)
    assert_names_the_fix(configuration.runtime, fixes)
    assert security_options(fixes) == security_options(_fix_of(
        report.step("run_full")["stderr"]))


@pytest.mark.parametrize("configuration", DEFAULTS)
def test_network_profile_with_the_defaults(matrix: Matrix,
                                           configuration: Configuration) -> None:
    """network runs under every engine's defaults (auto picks landlock where Docker's
    seccomp refuses the namespaces)."""
    step = defaults(matrix, configuration).step("run_network")
    assert step["exit_code"] == 0, described(step)


@pytest.mark.parametrize("configuration", DEFAULTS)
def test_full_through_auto_runs_on_landlock_with_the_defaults(
        matrix: Matrix, configuration: Configuration) -> None:
    """Where the namespace backends fail closed, auto picks landlock and full runs."""
    step = defaults(matrix, configuration).step("run_auto")
    assert step["exit_code"] == 0, described(step)
    report = step["report"]
    assert report["backend"] == "landlock", report
    assert any(layer.startswith("landlock:abi-") for layer in report["layers"]), report
    assert {"processes", "loopback", "tmp"} <= set(report["degraded"]), report


@pytest.mark.parametrize("configuration", DEFAULTS)
def test_audit_with_the_defaults(matrix: Matrix, configuration: Configuration) -> None:
    """No pass for probes that never ran: every native and bwrap cell is an error (the exit
    is non-zero); on landlock every vector is blocked but the ones it declares."""
    step = defaults(matrix, configuration).step("audit")
    audit = step["json"]
    assert audit is not None, described(step)
    findings = full_findings(audit)
    assert findings, audit
    namespaced = [f for f in findings if f["backend"] != "landlock"]
    assert {finding["verdict"] for finding in namespaced} == {"error"}, [
        (f["vector"], f["backend"], f["verdict"], f["evidence"]) for f in namespaced
        if f["verdict"] != "error"][:5]
    assert_landlock_cells_pass(audit)
    assert all(finding["evidence"] for finding in findings)
    assert step["exit_code"] not in (0, None), described(step)


LANDLOCK_DECLARED = {"proc_parent_cmdline", "proc_visibility", "hostname", "tmp_shared"}
"""What the landlock backend declares it cannot block (see tests/test_landlock.py)."""


def assert_landlock_cells_pass(audit: dict[str, Any]) -> None:
    """On landlock: every vector blocked or not applicable, but the declared ones degraded."""
    cells = {f["vector"]: f for f in full_findings(audit) if f["backend"] == "landlock"}
    assert set(cells) == {vector["id"] for vector in audit["vectors"]}
    bad = [(vector, cell["verdict"], cell["evidence"]) for vector, cell in cells.items()
           if cell["verdict"] != ("degraded" if vector in LANDLOCK_DECLARED else cell["verdict"])
           or cell["verdict"] in ("vulnerable", "error")]
    assert bad == [], bad


@pytest.mark.parametrize("configuration", DEFAULTS)
def test_build_where_the_sandbox_cannot_start_fails_with_the_fix(
        matrix: Matrix, configuration: Configuration) -> None:
    """buildjail build fails (exit 1), builds nothing, and names the same fix."""
    step = defaults(matrix, configuration).step("build")
    assert step["exit_code"] == 1, described(step)
    assert "error" in step["wheel"], step["wheel"]
    assert_names_the_fix(configuration.runtime, step["stderr"])


@pytest.mark.parametrize("configuration", DEFAULTS)
def test_build_through_auto_with_the_defaults_matches_pip(
        matrix: Matrix, configuration: Configuration) -> None:
    """The same real sdist through auto (landlock here): pip wheel's bytes exactly."""
    report = defaults(matrix, configuration)
    assert_build_matches_reference(report, "build_auto")
    layers = report.step("build_auto")["report"][0]["layers"]
    assert any(layer.startswith("landlock:abi-") for layer in layers), layers


# --- with the fix buildjail printed ----------------------------------------------------


def assert_everything_works(report: InsideReport, runtime: str) -> None:
    """full runs, the doctor passes, the audit passes honestly, the build matches pip's."""
    assert report.step("run_full")["exit_code"] == 0, described(report.step("run_full"))
    doctor = report.step("doctor")
    assert doctor["exit_code"] == 0, doctor_problems(doctor)
    assert_audit_passes(report, runtime)
    assert_build_matches_reference(report)
    assert_build_matches_reference(report, "build_auto")


def assert_audit_passes(report: InsideReport, runtime: str) -> None:
    """0 vulnerable, no errors, every probe reported; the hostname degraded where refused."""
    step = report.step("audit")
    audit = step["json"]
    assert audit is not None, described(step)
    assert sorted(audit["backends"]) == ["bwrap", "landlock", "native"], audit["backends"]
    findings = full_findings(audit)
    vectors = {vector["id"] for vector in audit["vectors"]}
    for backend in audit["backends"]:
        assert {f["vector"] for f in findings if f["backend"] == backend} == vectors, backend
    bad = [(f["vector"], f["backend"], f["verdict"], f["evidence"]) for f in findings
           if f["verdict"] in ("vulnerable", "error") or "no report" in f["evidence"]]
    assert bad == [], bad
    assert_landlock_cells_pass(audit)
    assert step["exit_code"] == 0, (audit["errors"], step["stderr"][-3000:])
    hostname = {f["backend"]: f["verdict"] for f in findings if f["vector"] == "hostname"}
    if runtime == "docker":  # seccomp=unconfined allows sethostname in the sandbox
        assert hostname == {"native": "blocked", "bwrap": "blocked",
                            "landlock": "degraded"}, hostname
    else:  # Podman's seccomp refuses sethostname without CAP_SYS_ADMIN
        assert hostname == {"native": "degraded", "bwrap": "degraded",
                            "landlock": "degraded"}, hostname
        listed = [text for text in degraded_mentions(
            {key: value for key, value in audit.items() if key != "findings"})
            if HOSTNAME_LAYER.search(text)]
        assert listed, "the audit JSON lists no degraded hostname layer"


def assert_build_matches_reference(report: InsideReport, step: str = "build") -> None:
    """The sandboxed wheel equals pip's of the same sdist: members, RECORD and bytes."""
    build, reference = report.step(step), report.step("reference_build")
    assert build["exit_code"] == 0, described(build)
    assert reference["exit_code"] == 0, described(reference)
    ours, theirs = build["wheel"], reference["wheel"]
    assert "error" not in ours and "error" not in theirs, (ours, theirs)
    assert ours["name"] == theirs["name"]
    assert ours["members"] == theirs["members"]
    assert ours["record"] is not None and ours["record"] == theirs["record"]
    assert ours["sha256"] == theirs["sha256"]  # six is pure Python: byte-identical


@pytest.mark.parametrize("configuration", ENGINE_RUNS)
def test_the_printed_fix_makes_everything_work(matrix: Matrix,
                                               configuration: Configuration) -> None:
    """Apply the fix from the message: full, the doctor, the audit and a build all pass."""
    assert_everything_works(with_printed_fix(matrix, configuration), configuration.runtime)


@pytest.mark.parametrize("configuration", ENGINE_RUNS)
def test_a_refused_hostname_is_reported_as_degraded(matrix: Matrix,
                                                    configuration: Configuration) -> None:
    """Where the runtime refuses sethostname (Podman), run's report names the layer."""
    step = with_printed_fix(matrix, configuration).step("run_full")
    assert step["exit_code"] == 0, described(step)
    listed = [text for text in degraded_mentions(step["report"])
              if HOSTNAME_LAYER.search(text)]
    if configuration.runtime == "docker":
        assert listed == [], step["report"]
    else:
        assert listed, step["report"]


# --- a pod through podman kube play ------------------------------------------------------


def test_pod_is_confined_as_its_spec_says(matrix: Matrix) -> None:
    """A user namespace of its own, no service-account token, no CAP_SYS_ADMIN."""
    facts = defaults(matrix, BY_ID["kube-pod"]).facts
    assert facts["uid_map"].split() != ["0", "0", "4294967295"], facts["uid_map"]
    assert facts["service_account_token"] is False
    assert not int(facts["status"]["CapEff"], 16) >> CAP_SYS_ADMIN & 1, facts["status"]


def test_pod_fix_in_its_podman_equivalent_makes_everything_work(matrix: Matrix) -> None:
    """Podman 4.3 ignores procMount, so the pod fails closed even with procMount: Unmasked.

    Its printed fix is translated into the equivalent rootful Podman configuration
    (hostUsers: false is --userns=auto, procMount: Unmasked is --security-opt unmask=/proc/*),
    which must then pass everything.
    """
    pod = defaults(matrix, BY_ID["kube-pod"])
    assert pod.facts["proc_overmounts"], (
        "this podman honours procMount: Unmasked (podman >= 4.7): the pod must now pass on "
        "its own, so test it directly instead of its podman equivalent")
    fields = pod_fields(assert_fails_closed(pod.step("run_full")))
    assert fields == POD_FIX, fields
    configuration, options = BY_ID["podman-root"], list[str]()
    for field in sorted(fields.items()):
        name, extra = POD_EQUIVALENT[field]
        configuration = BY_ID[name] if name else configuration
        options += extra
    assert configuration.options == ("--userns=auto",)
    assert_everything_works(matrix.report(configuration, options), "podman")


def test_the_hostnames_own_fix_gives_the_build_localhost(matrix: Matrix) -> None:
    """The degraded hostname's advice, applied too (Podman): the doctor's hostname row is ok."""
    configuration = BY_ID["podman-root"]
    with_fix = with_printed_fix(matrix, configuration)
    [advice] = {str(check["fix"]) for check in with_fix.step("doctor")["json"]["checks"]
                if check["layer"] == "hostname" and check.get("degraded")}
    options = [arg for option in sorted(security_options(advice) | security_options(
        _fix_of(defaults(matrix, configuration).step("run_full")["stderr"])))
        for arg in ("--security-opt", option)]
    assert "seccomp=unconfined" in options, advice
    doctor = matrix.report(configuration, options).step("doctor")["json"]
    rows = [check for check in doctor["checks"] if check["layer"] == "hostname"]
    assert rows and all(row["ok"] and not row.get("degraded") for row in rows), rows
