"""The delivery is verified before anything is printed, written or run (issue #11).

CliRunner against the in-memory API, which seals a real signed envelope; each
test plays one attack or one trust event and checks the exit code, that stdout
is empty, and what was (not) pinned.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from envcat.cli.main import cli
from envcat.cli.runtime import Runtime
from envcat.core.envelope import encode_key
from tests.cli.cli_fakes import (
    NEW_SEED,
    OTHER_SEED,
    SERVER_SEED,
    FakeApi,
    FakeClock,
    fingerprint_of,
    keyring,
    mock_client,
)

SERVER = "https://envcat.test"


def invoke(api: FakeApi, clock: FakeClock, *args: str, command: str = "get") -> Result:
    runtime = Runtime(client=mock_client(api), clock=clock.clock(), interactive=False)
    return CliRunner().invoke(cli, [command, "--server", SERVER, *args], obj=runtime)


def pin(known_servers: Path, seed: bytes, origin: str = SERVER) -> None:
    known_servers.parent.mkdir(parents=True, exist_ok=True)
    known_servers.write_text(f"{origin} {fingerprint_of(seed)}\n")


def assert_refused(result: Result, message: str) -> None:
    assert result.exit_code == 6, result.stderr
    assert result.stdout == ""
    assert message in result.stderr
    assert "approved by" not in result.stderr
    assert "Received" not in result.stderr


# --- first use, pinning, rotation -------------------------------------------------


def test_first_use_pins_the_primary_key_and_says_so(
    api: FakeApi, clock: FakeClock, known_servers: Path
) -> None:
    result = invoke(api, clock, "--format", "json")
    assert result.exit_code == 0, result.stderr
    fingerprint = fingerprint_of(SERVER_SEED)
    assert (
        f"First use of {SERVER}: its delivery key is {fingerprint} — pinned in {known_servers}"
    ) in result.stderr
    assert known_servers.read_text() == f"{SERVER} {fingerprint}\n"
    assert oct(known_servers.stat().st_mode & 0o777) == oct(0o600)
    assert oct(known_servers.parent.stat().st_mode & 0o777) == oct(0o700)


def test_a_pinned_server_is_not_announced_again(
    api: FakeApi, clock: FakeClock, known_servers: Path
) -> None:
    pin(known_servers, SERVER_SEED)
    result = invoke(api, clock)
    assert result.exit_code == 0, result.stderr
    assert "First use" not in result.stderr
    assert "approved by alice@acme.dev in acme · production/api" in result.stderr


def test_pinned_mismatch_is_refused_naming_both_fingerprints(
    api: FakeApi, clock: FakeClock, known_servers: Path
) -> None:
    pin(known_servers, OTHER_SEED)
    result = invoke(api, clock)
    assert_refused(result, "the server key changed")
    assert fingerprint_of(OTHER_SEED) in result.stderr
    assert fingerprint_of(SERVER_SEED) in result.stderr
    assert f"envcat trust --server {SERVER}" in result.stderr
    assert known_servers.read_text() == f"{SERVER} {fingerprint_of(OTHER_SEED)}\n"


def test_the_pin_is_per_server_origin(api: FakeApi, clock: FakeClock, known_servers: Path) -> None:
    pin(known_servers, OTHER_SEED, origin="https://other.example")
    result = invoke(api, clock)
    assert result.exit_code == 0, result.stderr
    assert "First use of" in result.stderr
    lines = known_servers.read_text().splitlines()
    assert lines == [
        f"https://other.example {fingerprint_of(OTHER_SEED)}",
        f"{SERVER} {fingerprint_of(SERVER_SEED)}",
    ]


def test_rotation_vouched_by_the_pinned_key_updates_the_pin(
    api: FakeApi, clock: FakeClock, known_servers: Path
) -> None:
    pin(known_servers, SERVER_SEED)
    api.signing = keyring(NEW_SEED, SERVER_SEED)  # new primary, old key still signing
    result = invoke(api, clock)
    assert result.exit_code == 0, result.stderr
    old, new = fingerprint_of(SERVER_SEED), fingerprint_of(NEW_SEED)
    assert f"Server key rotated: {old} → {new}, vouched for by the key you trusted" in (
        result.stderr
    )
    assert known_servers.read_text() == f"{SERVER} {new}\n"
    api.signing = keyring(NEW_SEED)  # after the grace period: only the new key
    api.script = ["ready"]
    assert invoke(api, clock).exit_code == 0


def test_after_the_grace_period_an_unfollowed_rotation_is_a_mismatch(
    api: FakeApi, clock: FakeClock, known_servers: Path
) -> None:
    pin(known_servers, SERVER_SEED)
    api.signing = keyring(NEW_SEED)
    assert_refused(invoke(api, clock), "the server key changed")


def test_a_named_new_key_that_did_not_sign_is_not_followed(
    api: FakeApi, clock: FakeClock, known_servers: Path
) -> None:
    pin(known_servers, SERVER_SEED)
    # the payload names a new primary key, but only the old key signs
    api.tamper = {"server_keys": [encode_key(keyring(NEW_SEED).public_keys[0])]}
    api.signing = keyring(SERVER_SEED)
    api.tamper["server_keys"].append(encode_key(keyring(SERVER_SEED).public_keys[0]))
    result = invoke(api, clock)
    assert result.exit_code == 0, result.stderr
    assert "rotated" not in result.stderr
    assert known_servers.read_text() == f"{SERVER} {fingerprint_of(SERVER_SEED)}\n"


def test_project_pin_is_used_and_never_rewritten(
    api: FakeApi, clock: FakeClock, known_servers: Path
) -> None:
    project = Path.cwd() / ".envcat.toml"
    project.write_text(f'server_fingerprint = "{fingerprint_of(SERVER_SEED)}"\n')
    api.signing = keyring(NEW_SEED, SERVER_SEED)
    result = invoke(api, clock)
    assert result.exit_code == 0, result.stderr
    assert "First use" not in result.stderr
    assert f"update server_fingerprint in {project} to {fingerprint_of(NEW_SEED)}" in (
        result.stderr
    )
    assert project.read_text() == f'server_fingerprint = "{fingerprint_of(SERVER_SEED)}"\n'
    assert not known_servers.exists()


def test_project_pin_refuses_another_key_on_first_use(
    api: FakeApi, clock: FakeClock, known_servers: Path
) -> None:
    project = Path.cwd() / ".envcat.toml"
    project.write_text(f'server_fingerprint = "{fingerprint_of(OTHER_SEED)}"\n')
    result = invoke(api, clock)
    assert_refused(result, "the server key changed")
    assert f"update server_fingerprint in {project}" in result.stderr
    assert not known_servers.exists()


def test_project_pin_applies_only_to_the_projects_server(
    api: FakeApi, clock: FakeClock, known_servers: Path
) -> None:
    project = Path.cwd() / ".envcat.toml"
    project.write_text(
        f'server = "https://envcat.acme.dev"\nserver_fingerprint = "{fingerprint_of(OTHER_SEED)}"\n'
    )
    result = invoke(api, clock)  # --server names another server: TOFU for that one
    assert result.exit_code == 0, result.stderr
    assert "First use of" in result.stderr


# --- what the envelope states -----------------------------------------------------


def test_unsigned_values_are_refused(api: FakeApi, clock: FakeClock, known_servers: Path) -> None:
    api.unsigned = True
    assert_refused(invoke(api, clock), "not a signed EnvCat envelope")
    assert not known_servers.exists()


def test_a_payload_changed_after_signing_is_refused(
    api: FakeApi, clock: FakeClock, known_servers: Path
) -> None:
    pin(known_servers, SERVER_SEED)
    api.forge = {"DATABASE_URL": "postgres://attacker"}
    assert_refused(
        invoke(api, clock),
        f"its signature by the pinned key {fingerprint_of(SERVER_SEED)} does not verify",
    )


def test_a_forged_payload_is_refused_on_first_use_too(
    api: FakeApi, clock: FakeClock, known_servers: Path
) -> None:
    api.forge = {"DATABASE_URL": "postgres://attacker"}
    assert_refused(invoke(api, clock), "not signed by the trusted server key")
    assert not known_servers.exists()


def test_a_delivery_signed_by_another_key_is_refused(
    api: FakeApi, clock: FakeClock, known_servers: Path
) -> None:
    pin(known_servers, SERVER_SEED)
    api.impostor = keyring(OTHER_SEED)
    assert_refused(invoke(api, clock), fingerprint_of(OTHER_SEED))


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ({"request_id": "another-request"}, "it answers another request"),
        (
            {"cli_public_key": encode_key(bytes(32)).replace("-", "+").replace("_", "/")},
            "made for another terminal's key",
        ),
        ({"workspace_slug": "evil-corp"}, "from workspace 'evil-corp', not 'acme'"),
        ({"bundle_name": "evil/api"}, "from bundle 'evil/api', not 'production/api'"),
    ],
)
def test_a_statement_about_another_request_is_refused(
    api: FakeApi, clock: FakeClock, known_servers: Path, tamper: dict[str, str], message: str
) -> None:
    api.tamper = tamper
    assert_refused(invoke(api, clock, "production/api"), message)
    assert not known_servers.exists(), "nothing is pinned from a refused delivery"


def test_any_bundle_is_accepted_when_none_was_named(api: FakeApi, clock: FakeClock) -> None:
    api.bundle_name = "staging/worker"
    result = invoke(api, clock)
    assert result.exit_code == 0, result.stderr
    assert "Received 1 value from staging/worker." in result.stderr


def test_keys_not_asked_for_with_k_are_refused(api: FakeApi, clock: FakeClock) -> None:
    api.values = {"DATABASE_URL": "x", "EXTRA": "y", "MORE": "z"}
    assert_refused(
        invoke(api, clock, "-k", "DATABASE_URL"), "carries keys not asked for with -k: EXTRA, MORE"
    )


def test_fewer_keys_than_asked_for_are_accepted(api: FakeApi, clock: FakeClock) -> None:
    api.values = {"A": "1"}
    result = invoke(api, clock, "-k", "A", "-k", "B")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "export A='1'\n"


def test_a_refused_delivery_writes_no_file(api: FakeApi, clock: FakeClock, tmp_path: Path) -> None:
    api.tamper = {"workspace_slug": "evil-corp"}
    target = tmp_path / "out.env"
    result = invoke(api, clock, "--write", str(target))
    assert_refused(result, "evil-corp")
    assert not target.exists()


def test_the_default_bundle_of_the_project_is_asked_for_and_checked(
    api: FakeApi, clock: FakeClock
) -> None:
    Path(".envcat.toml").write_text('bundle = "production/api"\n')
    api.bundle_name = "production/other"
    assert_refused(invoke(api, clock), "not 'production/api'")
    assert api.calls_to("POST")[0].body["bundle"] == "production/api"


# --- untrusted names --------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["LD_PRELOAD", "BASH_ENV", "PATH", "PYTHONPATH", "NODE_OPTIONS", "GIT_SSH_COMMAND"]
)
def test_dangerous_names_are_refused(api: FakeApi, clock: FakeClock, name: str) -> None:
    api.values = {"DATABASE_URL": "x", name: "./evil"}
    result = invoke(api, clock)
    assert_refused(result, f"it sets {name}, which can make programs load or run other code")
    assert "--allow-var NAME" in result.stderr


def test_dangerous_names_are_refused_by_run_before_anything_runs(
    api: FakeApi, clock: FakeClock, tmp_path: Path
) -> None:
    api.values = {"LD_PRELOAD": "./evil.so", "BASH_ENV": "$(id)"}
    marker = tmp_path / "ran"
    result = invoke(api, clock, "--", "sh", "-c", f"touch {marker}", command="run")
    assert_refused(result, "it sets LD_PRELOAD, BASH_ENV")
    assert not marker.exists()


def test_allow_var_allows_one_name_at_a_time(api: FakeApi, clock: FakeClock) -> None:
    api.values = {"PYTHONPATH": "/srv/lib", "LD_PRELOAD": "x.so"}
    result = invoke(api, clock, "--allow-var", "PYTHONPATH")
    assert_refused(result, "it sets LD_PRELOAD,")
    api.script = ["ready"]
    result = invoke(api, clock, "--allow-var", "PYTHONPATH", "--allow-var", "LD_PRELOAD")
    assert result.exit_code == 0, result.stderr
    assert "export PYTHONPATH='/srv/lib'" in result.stdout


def test_allow_vars_in_the_project_file(api: FakeApi, clock: FakeClock) -> None:
    Path(".envcat.toml").write_text('allow_vars = ["PYTHONPATH"]\n')
    api.values = {"PYTHONPATH": "/srv/lib"}
    result = invoke(api, clock)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "export PYTHONPATH='/srv/lib'\n"


def test_allowing_is_by_exact_name(api: FakeApi, clock: FakeClock) -> None:
    api.values = {"LD_PRELOAD": "x.so"}
    assert_refused(invoke(api, clock, "--allow-var", "ld_preload"), "LD_PRELOAD")


def test_docker_refusal_names_the_key_and_the_bundle(api: FakeApi, clock: FakeClock) -> None:
    api.values = {"PEM": "-----BEGIN-----\nabc\n-----END-----"}
    result = invoke(api, clock, "--format", "docker")
    assert result.exit_code == 1
    assert "refusing PEM in docker format" in result.stderr
    assert "delivered from production/api; nothing was printed" in result.stderr
    assert result.stdout == ""


def test_the_environment_is_untouched_by_a_refusal(api: FakeApi, clock: FakeClock) -> None:
    api.values = {"LD_PRELOAD": "x.so"}
    invoke(api, clock)
    assert "LD_PRELOAD" not in os.environ


def test_an_unwritable_config_does_not_lose_a_verified_delivery(
    api: FakeApi, clock: FakeClock, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a config "directory" below a file: mkdir fails, even for root
    runtime = Runtime(client=mock_client(api), clock=clock.clock(), interactive=False)
    result = CliRunner().invoke(
        cli, ["get", "--server", SERVER], obj=runtime, env={"XDG_CONFIG_HOME": str(blocker)}
    )
    assert result.exit_code == 0, result.stderr
    assert "NOT pinned (trusted for this run only)" in result.stderr
    assert result.stdout == "export API_KEY='s3cr3t'\n"


def test_malformed_known_servers_lines_are_ignored(
    api: FakeApi, clock: FakeClock, known_servers: Path
) -> None:
    known_servers.parent.mkdir(parents=True)
    known_servers.write_text(f"garbage\n{SERVER} not-a-fingerprint\n")
    result = invoke(api, clock)
    assert result.exit_code == 0, result.stderr
    assert "First use of" in result.stderr


def test_a_project_file_without_a_pin_leaves_the_pin_to_known_servers(
    api: FakeApi, clock: FakeClock, known_servers: Path
) -> None:
    Path(".envcat.toml").write_text('workspace = "acme"\n')
    pin(known_servers, OTHER_SEED)
    result = invoke(api, clock)
    assert_refused(result, f"(in {known_servers})")
    assert "server_fingerprint" not in result.stderr
