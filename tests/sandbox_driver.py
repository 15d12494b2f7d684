"""Run one sandbox from a JSON spec; used in-process (root) and through setpriv (non-root)."""

from __future__ import annotations

import json
import sys
import tempfile
from typing import Any


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``Sandbox(policy).run(cmd, ...)`` as *spec* describes; return the result as a dict."""
    from buildjail import Policy, Sandbox, SandboxSetupError

    spec = dict(spec)
    policy = Policy.profile(spec.pop("profile", "full"))
    if "policy" in spec:
        policy = Policy.from_mapping(spec.pop("policy"))
    policy = policy.with_limits(**spec.pop("limits", {}))
    policy = policy.with_env(keep=spec.pop("keep_env", ()))
    policy = policy.with_paths(masked=spec.pop("masked", ()))
    capture = spec.pop("capture", False)
    capture_stderr = spec.pop("capture_stderr", False)
    if spec.pop("terminal", False):
        return _run_on_terminal(policy, spec)
    backend = spec.pop("backend", "auto")
    fork_server = spec.pop("fork_server", None)
    with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
        if capture:
            spec["stdout"] = output.fileno()
        if capture_stderr:
            spec["stderr"] = errors.fileno()
        try:
            result = Sandbox(policy, backend=backend, fork_server=fork_server).run(
                spec.pop("cmd"), **spec).to_dict()
        except SandboxSetupError as error:
            return {"setup_error": error.reason, "fix": error.fix}
        if capture:
            output.seek(0)
            result["stdout"] = output.read().decode(errors="replace")
    return result


def _run_on_terminal(policy: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Run with a pseudo-terminal as stdout and stderr; return what it printed there."""
    import os

    from buildjail import Sandbox, SandboxSetupError

    backend = spec.pop("backend", "auto")
    main, secondary = os.openpty()
    try:
        try:
            result = Sandbox(policy, backend=backend).run(
                spec.pop("cmd"), stdout=secondary, stderr=secondary, **spec).to_dict()
        except SandboxSetupError as error:
            return {"setup_error": error.reason, "fix": error.fix}
        os.close(secondary)
        secondary = -1
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        result["stdout"] = b"".join(chunks).decode(errors="replace")
        return result
    finally:
        os.close(main)
        if secondary >= 0:
            os.close(secondary)


if __name__ == "__main__":
    print(json.dumps(run_spec(json.loads(sys.argv[1]))))
