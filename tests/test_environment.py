"""The environment allow-list, and credentials inside the values it keeps."""

import fnmatch
import os
import random
import re
from pathlib import Path

import pytest

from buildjail import environment
from buildjail.environment import filter_environment
from buildjail.policy import ENV_DELETE_DEFAULT, ENV_KEEP_DEFAULT, Policy
from conftest import Identity, every_backend
from wheels import make_project

sandbox_backend = pytest.fixture(params=["native", "bwrap", "landlock"])(every_backend)
"""These tests hold for every backend, the landlock one included."""


def test_full_profile_keeps_build_variables_and_drops_credentials() -> None:
    policy = Policy.profile("full")
    env = {
        "PATH": "/usr/bin", "CFLAGS": "-O2", "LC_ALL": "C", "SOURCE_DATE_EPOCH": "1",
        "_PYPROJECT_HOOKS_BUILD_BACKEND": "setuptools.build_meta",
        "GITHUB_TOKEN": "t", "AWS_ACCESS_KEY_ID": "a", "TWINE_PASSWORD": "p", "NETRC": "/x",
        "MY_SECRET": "s", "DB_PASSWORD": "p", "HOME": "/root", "SSH_AUTH_SOCK": "/s",
        "RANDOM_THING": "r",
    }
    kept = filter_environment(env, policy.env_keep, policy.env_delete)
    assert set(kept) == {"PATH", "CFLAGS", "LC_ALL", "SOURCE_DATE_EPOCH",
                         "_PYPROJECT_HOOKS_BUILD_BACKEND"}


def test_delete_patterns_win_over_keep_patterns() -> None:
    kept = filter_environment({"CI_JOB_TOKEN": "t", "CI_JOB_ID": "1"}, ["CI_*"], ["*TOKEN*"])
    assert kept == {"CI_JOB_ID": "1"}


def test_patterns_are_case_insensitive_and_anchored() -> None:
    kept = filter_environment({"path": "/bin", "XPATH": "x", "PATHX": "y"}, ["PATH"], [])
    assert kept == {"path": "/bin"}


def test_network_profile_passes_everything() -> None:
    policy = Policy.profile("network")
    env = {"GITHUB_TOKEN": "t", "PATH": "/bin"}
    assert filter_environment(env, policy.env_keep, policy.env_delete) == env


# --- credentials inside kept values ------------------------------------------------------

TOKENS = {"PIP_FIND_LINKS": "https://user:TOKEN-A@files.example.org/wheels",
          "CFLAGS": "-O2 -DMIRROR=https://ci:TOKEN-B@mirror.example.org/x",
          "MAKEFLAGS": "-j2 URL=git+https://TOKEN-C@example.org/repo.git"}


def test_credentials_in_kept_values_are_redacted() -> None:
    policy = Policy.profile("full")
    kept = filter_environment(TOKENS, policy.env_keep, policy.env_delete,
                              redact=policy.env_redact)
    assert kept == {"PIP_FIND_LINKS": "https://user:***@files.example.org/wheels",
                    "CFLAGS": "-O2 -DMIRROR=https://ci:***@mirror.example.org/x",
                    "MAKEFLAGS": "-j2 URL=git+https://***@example.org/repo.git"}
    assert Policy.profile("network").env_redact is False  # fromager's isolation: unchanged


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
@pytest.mark.parametrize("redact", [True, False], ids=["full", "control-redact-false"])
def test_a_hook_sees_no_token_in_the_variables_it_is_given(
        redact: bool, identity: Identity, sandbox_backend: str, shared_dir: Path) -> None:
    project = make_project(shared_dir / "perimeter", attack={"hooks": {
        "get_requires_for_build_wheel": {"env": sorted(TOKENS)}}})
    policy = shared_dir / "policy.toml"
    policy.write_text(f'extends = "full"\n[environment]\nredact = {str(redact).lower()}\n')
    logs = shared_dir / "logs"
    identity.own(shared_dir)
    proc = identity.buildjail(str(project), "--wheel", "-o", str(shared_dir / "out"),
                              "--logs", str(logs), "--policy", str(policy),
                              backend=sandbox_backend, env=TOKENS)
    assert proc.returncode == 0, proc.stderr
    log = (logs / "perimeter.log").read_text()
    seen = [line for line in log.splitlines() if line.startswith("PERIMETER env ")]
    assert len(seen) == 3, log
    if redact:
        assert "PERIMETER env CFLAGS: -O2 -DMIRROR=https://ci:***@mirror.example.org/x" in seen
        assert not [line for line in seen if "TOKEN-" in line]
    else:  # the control: with redaction off, the same hook reads the tokens
        assert sum("TOKEN-" in line for line in seen) == 3


def test_the_star_only_matcher_agrees_with_fnmatchs_regex() -> None:
    """The patterns with ``*`` alone match without a regex (start-up time): differentially,
    every default pattern and some tricky ones agree with fnmatch's case-insensitive regex
    on random and chosen names, alone and together; ``?``, ``[`` and non-ASCII take the
    regex."""
    patterns = (*ENV_KEEP_DEFAULT, *ENV_DELETE_DEFAULT, "A*B*A", "**", "*", "X**Y", "*AB*AB*",
                "AB*BA", "", "A?", "[AB]*", "é*")
    rng = random.Random(15)
    names = ["".join(rng.choice("ABab_*?[xyTOKENSé") for _ in range(rng.randint(0, 8)))
             for _ in range(3000)]
    names += ["GITHUB_TOKEN", "my_secret", "lc_all", "PATH", "ABA", "AB", "ABBA", "ABAB", "XY",
              "\u017fecret", "ÉTÉ", ""]
    for pattern in patterns:
        regex = re.compile(fnmatch.translate(pattern), re.IGNORECASE)
        matches = environment._matcher((pattern,))
        assert [n for n in names if matches(n)] == [n for n in names if regex.match(n)], pattern
    together = environment._matcher(patterns)
    regexes = environment._regex_matcher(patterns)
    assert [n for n in names if together(n)] == [n for n in names if regexes(n)]
