"""The environment allow-list."""

from buildjail.environment import filter_environment
from buildjail.policy import Policy


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
