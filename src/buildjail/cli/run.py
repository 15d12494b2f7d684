"""``buildjail run``: one command in the sandbox."""

from __future__ import annotations

import argparse
import os

from ..errors import EXIT_TRIED
from ..limits import describe_limit
from ._checks import check_existing_paths, check_output_file, duration_value, size_value
from ._options import (
    absolute,
    add_backend,
    add_on_attempt,
    add_policy,
    after_dashes,
    error,
    hidden_tools_hint,
    load_policy,
    write_report,
)

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from ..policy import Policy
    from ..result import RunResult

ON_ATTEMPT_HELP = ("; run records the attempts only with this option or a policy's "
                   'on_attempt = "fail" (recording costs milliseconds a run), and under fail '
                   f"a command that tried exits {EXIT_TRIED}, or with its own code when that is "
                   "already a failure")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``run`` to *commands*."""
    run = commands.add_parser("run", help="run one command in the sandbox")
    add_policy(run, "named policy (default: full)", "policy TOML file (overrides --profile)")
    add_backend(run)
    add_on_attempt(run, "the command", ON_ATTEMPT_HELP)
    run.add_argument("--writable", metavar="PATH", action="append", default=[],
                     help="make PATH writable in the sandbox (repeatable)")
    run.add_argument("--readonly", metavar="PATH", action="append", default=[],
                     help="make PATH visible read-only, even under a masked path (repeatable)")
    run.add_argument("--mask", metavar="PATH", action="append", default=[],
                     help="hide PATH in the sandbox (repeatable)")
    run.add_argument("--keep-env", metavar="PATTERN", action="append", default=[],
                     help="pass environment variables matching PATTERN (repeatable)")
    run.add_argument("--timeout", metavar="SECONDS", type=duration_value,
                     help="wall-time limit (exit code 124 when hit)")
    run.add_argument("--memory", metavar="SIZE", type=size_value, help="memory limit, e.g. 2G")
    run.add_argument("--json-report", metavar="FILE", help="write the run's result as JSON")
    run.add_argument("--explain", action="store_true",
                     help="print what the sandbox would show and give the command; run nothing")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...")
    run.set_defaults(handler=main)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``buildjail run``; return the command's exit code."""
    from ..backends import resolved
    from ..onattempt import check_recording
    from ..sandbox import Sandbox

    cmd = after_dashes(args.cmd)
    if not cmd:
        parser.error("run: no command given (buildjail run [OPTIONS] -- CMD ARGS...)")
    _check_inputs(args)
    policy = _policy(args)
    if args.explain:
        from ..explain import explain

        backend = resolved(args.backend)
        print(explain(policy, cmd, os.getcwd(), os.environ, backend))
        return 0
    check_recording(policy, args.backend)
    result = Sandbox(policy, backend=args.backend).run(cmd)
    if args.json_report:
        write_report(args.json_report, result.to_dict())
    if result.limit_hit:
        error(f"stopped: {describe_limit(result.limit_hit)} was hit")
    elif result.exit_code == 127:  # a shell's "command not found"
        hint = hidden_tools_hint(policy)
        if hint:
            error(hint)
    return _judged(result, policy)


def _policy(args: argparse.Namespace) -> Policy:
    """The policy the options name: its paths, environment, limits and ``on_attempt``,
    recording the attempts when ``--on-attempt`` is given or the policy fails on them."""
    from ..onattempt import failing

    policy = load_policy(args).with_paths(
        readonly=absolute(args.readonly), writable=absolute(args.writable),
        masked=absolute(args.mask),
    ).with_env(keep=args.keep_env).with_on_attempt(args.on_attempt)
    if args.timeout is not None:
        policy = policy.with_limits(wall_time=args.timeout)
    if args.memory is not None:
        policy = policy.with_limits(memory=args.memory)
    return policy.recording_attempts() if args.on_attempt or failing(policy) else policy


def _judged(result: RunResult, policy: Policy) -> int:
    """The command's exit code, after the ``tried:`` line of what it tried; under
    ``on_attempt = "fail"``, EXIT_TRIED (the reason said) when it tried or was not recorded
    whole, unless the command failed already (its own code kept)."""
    from ..onattempt import AttemptsRefusedError, AttemptsUnrecordedError, judge

    if result.attempts_summary:
        _say(result.attempts_summary)
    try:
        judge(result, policy, "the command")
    except (AttemptsRefusedError, AttemptsUnrecordedError) as failure:
        _say(str(failure))
        return result.exit_code or EXIT_TRIED
    return result.exit_code


def _say(text: str) -> None:
    """``buildjail: TEXT`` on stderr in one line, its control characters shown, not sent
    (the command chose what it tried)."""
    from ..escaping import escape_controls

    error(" ".join(escape_controls(text).split("\n")))


def _check_inputs(args: argparse.Namespace) -> None:
    """Refuse, before the sandbox starts, paths that do not exist and a report path that
    cannot be written."""
    check_existing_paths("--writable", args.writable)
    check_existing_paths("--readonly", args.readonly)
    check_existing_paths("--policy", [args.policy] if args.policy else [])
    check_output_file("--json-report", args.json_report)
