"""The native backend: enforces a policy with the kernel's own interfaces, no external tools.

Its init builds the whole sandbox itself: it makes the namespaces the supervisor left (the
network one with loopback up), sets the hostname, builds the filesystem view and a fresh
``/proc``, confines itself (identity, capabilities, ``no_new_privs``, seccomp, rlimits) and
spawns the command.
"""

from __future__ import annotations

from ..result import RunResult
from ._supervisor import run_supervised
from .base import (
    Command,
    Confinement,
    Launch,
    Request,
    SandboxPlan,
    SetUp,
    decoys_of,
    namespace_flags,
)


class NativeBackend:
    """Enforce policies with namespaces, mounts, uid switching, prctl and seccomp."""

    name = "native"

    def run(self, request: Request) -> RunResult:
        """Run the command in the sandbox; raise SandboxSetupError if it cannot be set up."""
        return run_supervised(request, self.name, plan_native)


def plan_native(sandbox: SandboxPlan) -> Launch:
    """The native launch: the init sets up, confines and spawns everything itself."""
    return Launch(
        setup=_setup(sandbox),
        confinement=_confinement(sandbox),
        command=_command(sandbox),
    )


def _setup(sandbox: SandboxPlan) -> SetUp:
    namespaces = sandbox.namespaces
    return SetUp(
        namespaces=namespace_flags(sandbox.init_namespaces),
        hostname=sandbox.hostname,
        loopback="net" in namespaces,
        mounts=sandbox.mounts,
        fresh_proc={"pid", "mount"} <= namespaces,
        decoys=decoys_of(sandbox.mounts),
        dns_trap=sandbox.policy.record_attempts is True and "net" in namespaces,
        record_calls=sandbox.policy.record_attempts is True and {"net", "pid"} <= namespaces,
        record_leftovers=sandbox.policy.record_attempts is True and {"pid", "mount"} <= namespaces,
    )


def _confinement(sandbox: SandboxPlan) -> Confinement:
    policy = sandbox.policy
    return Confinement(
        identity=sandbox.identity,
        switch_identity=sandbox.leased,
        map_identity=sandbox.identity.mapped,
        drop_capabilities=policy.drop_capabilities,
        no_new_privs=policy.no_new_privs,
        seccomp_program=sandbox.seccomp_program,
        limits=policy.limits,
    )


def _command(sandbox: SandboxPlan) -> Command:
    request = sandbox.request
    return Command(
        argv=request.argv,
        cwd=request.cwd,
        env=sandbox.env,
        stdio=request.stdio,
        new_session=sandbox.policy.new_session,
    )
