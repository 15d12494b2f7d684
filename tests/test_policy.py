"""Policies: profiles, TOML files and their validation."""

from pathlib import Path

import pytest

from buildjail import Policy, PolicyError
from buildjail._linux.identity import IdRange, choose_range
from buildjail.limits import parse_duration, parse_size


def test_full_profile_enables_every_layer() -> None:
    policy = Policy.profile("full")
    assert policy.namespaces == {"mount", "pid", "net", "ipc", "uts", "cgroup"}
    assert policy.filesystem and policy.ephemeral_identity and policy.seccomp
    assert policy.no_new_privs and policy.drop_capabilities and policy.kill_all
    assert "/root" in policy.masked and "/home" in policy.masked
    assert policy.limits.processes and policy.limits.wall_time and policy.limits.file_size


def test_network_profile_is_fromagers_network_isolation() -> None:
    policy = Policy.profile("network")
    assert policy.namespaces == {"net", "uts"}
    assert not policy.filesystem and not policy.seccomp and policy.env_keep == ("*",)


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(PolicyError, match="unknown profile 'strict'"):
        Policy.profile("strict")


def test_policy_is_immutable() -> None:
    policy = Policy.profile("full")
    with pytest.raises(AttributeError):
        policy.seccomp = False  # type: ignore[misc]


def test_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        'extends = "full"\n'
        '[filesystem]\nwritable = ["/srv/out"]\nmasked = ["/opt/secret"]\n'
        '[environment]\nkeep = ["CI_*"]\n'
        '[limits]\nmemory = "2G"\nwall_time = "15m"\nprocesses = 128\n'
        '[isolation]\nseccomp = false\n'
    )
    policy = Policy.from_toml(path)
    assert "/srv/out" in policy.writable and "/opt/secret" in policy.masked
    assert "CI_*" in policy.env_keep and "/root" in policy.masked
    assert policy.limits.memory == 2 << 30 and policy.limits.wall_time == 900
    assert policy.limits.processes == 128 and policy.seccomp is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[limits]\nbogus = 1\n", "unknown key"),
        ("colour = 1\n", "unknown key"),
        ("[filesystem]\nwritable = \"/x\"\n", "list of strings"),
        ("[filesystem]\nwritable = [\"relative\"]\n", "absolute"),
        ("[limits]\nmemory = \"lots\"\n", "not a size"),
        ("[isolation]\nnamespaces = [\"time\"]\n", "unknown namespace"),
        ("[isolation]\nnamespaces = [\"net\"]\nfilesystem = false\nkill_all = true\n",
         "pid namespace"),
        ("[isolation]\nnamespaces = [\"net\"]\n", "needs the mount namespace"),
        ("extends = \"strict\"\n", "unknown profile"),
        ("not toml [", "not valid TOML"),
        ("[isolation]\non_attempt = \"stop\"\n", 'on_attempt must be "warn" or "fail"'),
        ("[isolation]\non_attempt = [\"fail\"]\n", 'on_attempt must be "warn" or "fail"'),
        ("[isolation]\nrecord_attempts = false\non_attempt = \"fail\"\n",
         "record_attempts is false"),
    ],
)
def test_bad_policy_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message):
        Policy.from_toml(path)


def test_missing_policy_file() -> None:
    with pytest.raises(PolicyError, match="cannot read policy"):
        Policy.from_toml("/nonexistent/policy.toml")


def test_sizes_and_durations() -> None:
    assert parse_size("512M") == 512 << 20
    assert parse_size("2GiB") == 2 << 30
    assert parse_size("1048576") == 1 << 20
    assert parse_duration("90") == 90 and parse_duration("2h") == 7200
    with pytest.raises(PolicyError):
        parse_size("-1")


def test_ephemeral_range_prefers_the_reserved_block_when_mapped() -> None:
    full = [(0, 4294967295)]
    assert choose_range(full, full, {0, 1000}) == IdRange(1_000_000, 4096)


def test_ephemeral_range_fits_rootless_podman_maps() -> None:
    # rootless Podman: 0 -> the user, 1..65536 -> subordinate ids
    uid_map = [(0, 1), (1, 65537)]
    chosen = choose_range(uid_map, uid_map, {0, 1000, 65534})
    assert chosen.start > 1000 and chosen.start + chosen.size <= 65534
    assert chosen.size >= 64


def test_too_small_a_map_fails_closed() -> None:
    from buildjail import SandboxSetupError

    with pytest.raises(SandboxSetupError, match="too few ids"):
        choose_range([(0, 1)], [(0, 1)], {0})


def test_load_takes_the_file_over_the_profile(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('extends = "none"\nname = "mine"\n')
    assert Policy.load("network", path).name == "mine"
    assert Policy.load("network") == Policy.profile("network")
    assert Policy.load() == Policy.profile("full")


def test_a_hit_limit_is_named_in_words() -> None:
    from buildjail.limits import describe_limit

    assert describe_limit("wall_time") == "the wall time limit"
    assert describe_limit("memory") == "the memory limit"


@pytest.mark.parametrize("name", ["full", "network", "none"])
def test_a_policy_survives_json(name: str) -> None:
    policy = Policy.profile(name).with_paths(readonly=["/opt/tool"]).with_limits(cpu_time=9.5)
    assert Policy.from_json(policy.to_json()) == policy


def test_json_that_is_not_a_policy_is_refused() -> None:
    for text in ("", "[]", '{"name": "x"}', '{"bogus": 1}'):
        with pytest.raises(PolicyError, match="not a policy in JSON"):
            Policy.from_json(text)


def test_on_attempt_is_warn_unless_the_file_or_the_caller_says_fail(tmp_path: Path) -> None:
    assert all(Policy.profile(name).on_attempt == "warn" for name in ("full", "network", "none"))
    path = tmp_path / "policy.toml"
    path.write_text('[isolation]\non_attempt = "fail"\n')
    failing = Policy.from_toml(path)
    assert failing.on_attempt == "fail"
    assert Policy.from_json(failing.to_json()) == failing  # what fromager's launcher gets
    assert failing.with_on_attempt(None) is failing
    assert failing.with_on_attempt("warn").on_attempt == "warn"
    with pytest.raises(PolicyError, match="on_attempt must be"):
        Policy.profile("full").with_on_attempt("loud")
