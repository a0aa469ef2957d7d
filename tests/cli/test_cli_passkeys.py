"""The CLI's check of a passkey approval (issue #20), with keys generated here.

Each test builds a signed envelope's statement as the CLI would receive it and a
WebAuthn assertion made with a software ES256 or Ed25519 key, then changes one
thing an attacker would change; the verifier must name the check that failed.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from envcat.cli.approvers import check_passkey_approval
from envcat.cli.config import PROJECT_KEYS, TrustedApprover, read_config
from envcat.cli.errors import Untrusted, UsageProblem
from envcat.cli.main import cli
from envcat.cli.runtime import Runtime
from envcat.core.approval_statement import ApprovalStatement
from envcat.core.envelope import Envelope, EnvelopeError
from envcat.core.passkeys import PasskeyError, key_fingerprint, load_public_key, spki
from envcat.core.usercode import user_code
from tests.cli.cli_fakes import APPROVER, DEFAULT_BUNDLE, FakeApi, FakeClock, mock_client
from tests.cli.cli_fakes import WORKSPACE as FAKE_WORKSPACE
from tests.support.passkeys import SoftPasskey

FAKE_SERVER = "https://envcat.test"

SERVER = "https://envcat.example.com"
ORIGIN, RP_ID = SERVER, "envcat.example.com"
REQUEST_ID, CLI_KEY, WORKSPACE = "req-abc", base64.b64encode(b"k" * 32).decode(), "acme"
KEYS = {"DATABASE_URL": "postgres://canary", "API_KEY": "canary-2"}


def _statement(**changes: object) -> ApprovalStatement:
    fields: dict[str, Any] = {
        "request_id": REQUEST_ID,
        "cli_public_key": CLI_KEY,
        "workspace": WORKSPACE,
        "bundle_id": "bundle-1",
        "keys": list(KEYS),
        "user_code": user_code(REQUEST_ID, CLI_KEY),
        "decided_at": 1_800_000_000,
    }
    fields.update(changes)
    return ApprovalStatement.of(**fields)


def _envelope(passkey: dict[str, object] | None, keys: dict[str, str] = KEYS) -> Envelope:
    return Envelope(
        request_id=REQUEST_ID,
        cli_public_key=CLI_KEY,
        workspace_id="t-1",
        workspace_slug=WORKSPACE,
        bundle_id="bundle-1",
        bundle_name="prod/api",
        approver_id="u-1",
        approver_email="ada@example.test",
        approved_at=1_800_000_000.5,
        keys=keys,
        passkey=passkey,
    )


def _check(envelope: Envelope, *approvers: SoftPasskey, as_spki: bool = False) -> None:
    _check_k(envelope, [TrustedApprover(**key.approver(as_spki=as_spki)) for key in approvers])


@pytest.fixture(params=["es256", "ed25519"])
def passkey(request: pytest.FixtureRequest) -> SoftPasskey:
    return SoftPasskey.es256() if request.param == "es256" else SoftPasskey.ed25519()


@pytest.mark.parametrize("as_spki", [False, True])
def test_a_valid_assertion_by_a_listed_key_passes(passkey: SoftPasskey, as_spki: bool) -> None:
    proof = passkey.sign(_statement(), origin=ORIGIN, rp_id=RP_ID)
    _check(_envelope(proof.as_dict()), passkey, as_spki=as_spki)


def test_no_assertion_is_refused(passkey: SoftPasskey) -> None:
    with pytest.raises(Untrusted, match="carries no passkey signature"):
        _check(_envelope(None), passkey)


def test_an_unlisted_approvers_valid_assertion_is_refused(passkey: SoftPasskey) -> None:
    stranger = SoftPasskey.es256("stranger")
    proof = stranger.sign(_statement(), origin=ORIGIN, rp_id=RP_ID)
    with pytest.raises(Untrusted, match="does not list"):
        _check(_envelope(proof.as_dict()), passkey)


def test_a_listed_credential_id_with_another_key_is_refused(passkey: SoftPasskey) -> None:
    impostor = replace(SoftPasskey.es256(), credential_id=passkey.credential_id)
    proof = impostor.sign(_statement(), origin=ORIGIN, rp_id=RP_ID)
    with pytest.raises(Untrusted, match="signature does not verify"):
        _check(_envelope(proof.as_dict()), passkey)


@pytest.mark.parametrize(
    "change",
    [
        {"request_id": "another-request"},
        {"cli_public_key": base64.b64encode(b"x" * 32).decode()},
        {"workspace": "other"},
        {"bundle_id": "bundle-2"},
        {"keys": ["DATABASE_URL"]},  # the delivery carries one more key than was approved
        {"user_code": "AAAA-AAAA"},
    ],
)
def test_an_assertion_over_another_statement_is_refused(
    passkey: SoftPasskey, change: dict[str, object]
) -> None:
    # the envelope repeats the signed statement, but the CLI rebuilds its own
    statement = _statement(**change)
    proof = passkey.sign(statement, origin=ORIGIN, rp_id=RP_ID)
    with pytest.raises(Untrusted, match="challenge mismatch"):
        _check(_envelope(proof.as_dict()), passkey)


def test_a_delivery_with_an_extra_key_is_refused(passkey: SoftPasskey) -> None:
    proof = passkey.sign(_statement(), origin=ORIGIN, rp_id=RP_ID)
    with pytest.raises(Untrusted, match="challenge mismatch"):
        _check(_envelope(proof.as_dict(), {**KEYS, "LD_PRELOAD": "/tmp/x.so"}), passkey)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"origin": "https://evil.example"}, "origin"),
        ({"origin": "http://envcat.example.com"}, "origin"),
        ({"rp_id": "evil.example"}, "another site"),
        ({"kind": "webauthn.create"}, "webauthn.get"),
        ({"user_verified": False}, "UV flag"),
    ],
)
def test_origin_rp_type_and_user_verification_are_checked(
    passkey: SoftPasskey, options: dict[str, object], message: str
) -> None:
    signing = {"origin": ORIGIN, "rp_id": RP_ID, **options}
    proof = passkey.sign(_statement(), **signing)  # type: ignore[arg-type]  # bad options on purpose
    with pytest.raises(Untrusted, match=message):
        _check(_envelope(proof.as_dict()), passkey)


def test_a_tampered_signature_or_shape_is_refused(passkey: SoftPasskey) -> None:
    proof = passkey.sign(_statement(), origin=ORIGIN, rp_id=RP_ID).as_dict()
    flipped = dict(proof, signature=proof["signature"][:-4] + "AAAA")
    with pytest.raises(Untrusted):
        _check(_envelope(flipped), passkey)
    with pytest.raises(Untrusted, match="malformed"):
        _check(_envelope({**proof, "extra": "x"}), passkey)


def test_cose_and_spki_forms_give_one_fingerprint(passkey: SoftPasskey) -> None:
    assert key_fingerprint(load_public_key(passkey.cose())) == key_fingerprint(
        load_public_key(passkey.spki())
    )
    # the SPKI written by hand is the DER cryptography's serializer writes
    assert spki(load_public_key(passkey.cose())) == passkey.spki()
    with pytest.raises(PasskeyError):
        load_public_key(b"\xa1\x01\x03")  # a COSE map of an RSA key type
    with pytest.raises(PasskeyError):
        load_public_key(b"\x30\x03\x02\x01\x01")


def test_envcat_toml_approvers_are_parsed_and_checked(tmp_path: Path) -> None:
    key = SoftPasskey.es256().approver("ada")
    path = tmp_path / ".envcat.toml"
    path.write_text(
        'workspace = "acme"\n[[approvers]]\n'
        + "".join(f'{name} = "{value}"\n' for name, value in key.items())
    )
    parsed = read_config(path, PROJECT_KEYS)
    assert parsed.approvers == (TrustedApprover(**key),)
    path.write_text(
        f'approvers = [{{ name = "x", credential_id = "y", public_key = "{"A" * 40}" }}]\n'
    )
    with pytest.raises(UsageProblem, match="unusable"):
        read_config(path, PROJECT_KEYS)
    path.write_text('approvers = [{ name = "x" }]\n')
    with pytest.raises(UsageProblem, match="approvers must be a list"):
        read_config(path, PROJECT_KEYS)


# --- the real command line, against the in-memory api -----------------------------------


class PasskeyApi(FakeApi):
    """The fake server, its envelope carrying an assertion by `signer` over the statement.

    `signed_reason`: the passkey signed a break-glass release with this reason.
    """

    def __init__(
        self,
        signer: SoftPasskey,
        origin: str = FAKE_SERVER,
        *,
        signed_reason: str = "",
        **fields: Any,
    ) -> None:
        super().__init__(**fields)
        self.signer, self.origin, self.signed_reason = signer, origin, signed_reason

    def envelope(self) -> Envelope:
        envelope = super().envelope()
        statement = ApprovalStatement.of(
            request_id=envelope.request_id,
            cli_public_key=envelope.cli_public_key,
            workspace=envelope.workspace_slug,
            bundle_id=envelope.bundle_id,
            keys=envelope.keys,
            user_code=user_code(envelope.request_id, envelope.cli_public_key),
            decided_at=int(time.time()),
            break_glass=self.signed_reason,
        )
        proof = self.signer.sign(statement, origin=self.origin, rp_id="envcat.test")
        return replace(envelope, passkey=proof.as_dict())


def _project(*approvers: SoftPasskey) -> None:
    entries = "".join(
        "[[approvers]]\n" + "".join(f'{k} = "{v}"\n' for k, v in key.approver().items())
        for key in approvers
    )
    Path(".envcat.toml").write_text(f'workspace = "{FAKE_WORKSPACE}"\n{entries}')


def _run(api: FakeApi) -> Result:
    runtime = Runtime(client=mock_client(api), clock=FakeClock().clock(), interactive=False)
    return CliRunner().invoke(
        cli, ["get", "--server", FAKE_SERVER, "--format", "json"], obj=runtime
    )


def test_envcat_get_prints_only_after_the_passkey_check(known_servers: Path) -> None:
    listed = SoftPasskey.ed25519("listed")
    _project(listed)
    result = _run(PasskeyApi(listed))
    assert result.exit_code == 0, result.stderr
    assert "passkey approval verified" in result.stderr
    assert result.stdout.strip().startswith("{")


@pytest.mark.parametrize("case", ["no_assertion", "unlisted", "other_origin"])
def test_a_refused_passkey_check_prints_nothing_and_pins_nothing(
    known_servers: Path, case: str
) -> None:
    listed = SoftPasskey.es256("listed")
    _project(listed)
    apis: dict[str, Callable[[], FakeApi]] = {
        "no_assertion": lambda: FakeApi(),
        "unlisted": lambda: PasskeyApi(SoftPasskey.es256("stranger")),
        "other_origin": lambda: PasskeyApi(listed, origin="https://evil.example"),
    }
    api = apis[case]()
    result = _run(api)
    assert result.exit_code == 6, result.stderr
    assert result.stdout == ""
    assert "refusing the delivery" in result.stderr
    assert not known_servers.exists()  # a first use that fails a check trusts nobody


REASON = "INC-42 checkout down, approvers asleep"


@pytest.mark.parametrize(
    ("signed", "marker", "refusal"),
    [
        (REASON, {"reason": REASON}, None),
        (REASON, {"reason": "routine rotation"}, "reason is not the one the passkey signed"),
        ("", {"reason": REASON}, "approved an ordinary release, and the delivery says break-glass"),
        (REASON, None, "signed a break-glass release, and the delivery does not say so"),
        ("", {"reason": ""}, "it says break-glass, but the signed statement does not match it"),
    ],
    ids=["as_signed", "another_reason", "ordinary_as_break_glass", "stripped", "empty_marker"],
)
def test_envcat_get_checks_the_break_glass_reason_the_passkey_signed(
    known_servers: Path, signed: str, marker: dict[str, str] | None, refusal: str | None
) -> None:
    listed = SoftPasskey.es256("listed")
    _project(listed)
    # the server signs the envelope with its own key: only the passkey vouches for the reason
    result = _run(PasskeyApi(listed, signed_reason=signed, tamper={"break_glass": marker}))
    if refusal is None:
        assert result.exit_code == 0, result.stderr
        assert "passkey approval verified" in result.stderr
        assert f"delivered by break-glass: {APPROVER} — {REASON}" in result.stderr
        assert result.stdout.strip().startswith("{")
        return
    assert result.exit_code == 6, result.stderr
    assert result.stdout == ""
    assert "refusing the delivery" in result.stderr and refusal in result.stderr
    assert "signed statement does not match" in result.stderr
    assert "delivered by break-glass" not in result.stderr
    assert "s3cr3t" not in result.stderr
    assert not known_servers.exists()


@pytest.mark.parametrize("restated", ["INC-7 another reason", ""])
def test_a_statement_the_server_restates_to_fit_its_marker_fails_the_challenge(
    passkey: SoftPasskey, restated: str
) -> None:
    # the passkey signed REASON; the server rewrites the reason (or strips it) both in the
    # marker and in the statement the envelope repeats: the assertion no longer fits
    proof = passkey.sign(_statement(break_glass=REASON), origin=ORIGIN, rp_id=RP_ID).as_dict()
    statement = {k: v for k, v in proof["statement"].items() if k != "break_glass"}
    if restated:
        statement["break_glass"] = restated
    envelope = replace(
        _envelope({**proof, "statement": statement}),
        break_glass={"reason": restated} if restated else None,
    )
    with pytest.raises(Untrusted, match="signed statement does not match this delivery"):
        _check(envelope, passkey)


def test_a_break_glass_marker_no_statement_could_carry_is_refused(passkey: SoftPasskey) -> None:
    proof = passkey.sign(_statement(break_glass=REASON), origin=ORIGIN, rp_id=RP_ID).as_dict()
    for reason in (REASON + "\n\x1b[2Kroutine", "x" * 501):
        envelope = replace(_envelope(proof), break_glass={"reason": reason})
        with pytest.raises(Untrusted, match="it says break-glass") as refused:
            _check(envelope, passkey)
        assert "\x1b" not in str(refused.value) and "routine" not in str(refused.value)


WORKLOAD = {
    "approver_id": "workload-policy:p-1",
    "approver_email": "workload:github:acme/api@refs/heads/main run 9",
}


@pytest.mark.parametrize(
    ("allowed", "approver", "accepted"),
    [
        ([], WORKLOAD, False),  # a machine delivery, not allowed for the bundle
        (["another/bundle"], WORKLOAD, False),
        ([DEFAULT_BUNDLE], WORKLOAD, True),  # the project accepts its trust policy
        (
            [DEFAULT_BUNDLE],
            {"approver_id": "service-token:t-1", "approver_email": "service token ci"},
            True,
        ),
        ([DEFAULT_BUNDLE], {}, False),  # a person without a passkey: allow_workloads is moot
        # issue #17: a device grant's delivery needs allow_grants, not allow_workloads
        ([DEFAULT_BUNDLE], {"approver_id": "grant:g-1", "approver_email": "grant by a"}, False),
    ],
)
def test_machine_deliveries_need_the_bundle_in_allow_workloads(
    known_servers: Path, allowed: list[str], approver: dict[str, str], accepted: bool
) -> None:
    listed = SoftPasskey.es256("listed")
    _project(listed)
    text = Path(".envcat.toml").read_text()
    Path(".envcat.toml").write_text(f"allow_workloads = {allowed!r}\n".replace("'", '"') + text)
    result = _run(FakeApi(tamper=dict(approver)))
    if accepted:
        assert result.exit_code == 0, result.stderr
        assert "delivery accepted" in result.stderr
        assert result.stdout.strip().startswith("{")
    else:
        assert result.exit_code == 6, result.stderr
        assert result.stdout == ""
        assert "refusing the delivery" in result.stderr
        assert not known_servers.exists()


def test_grant_deliveries_need_the_bundle_in_allow_grants(known_servers: Path) -> None:
    listed = SoftPasskey.es256("listed")
    _project(listed)
    text = Path(".envcat.toml").read_text()
    Path(".envcat.toml").write_text(f'allow_grants = ["{DEFAULT_BUNDLE}"]\n' + text)
    grant = {"approver_id": "grant:g-1", "approver_email": "grant:g-1 by ada@example.test"}
    result = _run(FakeApi(tamper=grant))
    assert result.exit_code == 0, result.stderr
    assert "allow_grants names this bundle" in result.stderr


def test_allow_workloads_must_be_a_list_of_bundle_names(tmp_path: Path) -> None:
    path = tmp_path / ".envcat.toml"
    path.write_text('allow_workloads = "production/api"\n')
    with pytest.raises(UsageProblem, match="allow_workloads must be a list of bundle names"):
        read_config(path, PROJECT_KEYS)


def test_an_envelope_without_a_passkey_keeps_its_old_payload() -> None:
    plain = _envelope(None)
    assert b"passkey" not in plain.to_payload()  # signed bytes of older servers, unchanged
    assert Envelope.from_payload(plain.to_payload()).passkey is None
    proof = SoftPasskey.es256().sign(_statement(), origin=ORIGIN, rp_id=RP_ID).as_dict()
    carried = Envelope.from_payload(_envelope(proof).to_payload())
    assert carried.passkey == proof


# --- envcat approvers list / add ----------------------------------------------------------


def _approvers_client(items: list[dict[str, str]]) -> Runtime:
    import httpx

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/api/v1/workspaces/{FAKE_WORKSPACE}/approvers":
            return httpx.Response(200, json={"workspace": FAKE_WORKSPACE, "approvers": items})
        return httpx.Response(404, json={"error": "not_found", "message": "No."})

    client = httpx.Client(transport=httpx.MockTransport(respond), base_url=FAKE_SERVER)
    return Runtime(client=client, interactive=False)


def _approvers(runtime: Runtime, *argv: str) -> Result:
    return CliRunner().invoke(cli, ["approvers", *argv, "--server", FAKE_SERVER], obj=runtime)


def test_approvers_add_shows_the_fingerprint_and_writes_a_table_the_cli_reads() -> None:
    ada, bob = SoftPasskey.es256("ada"), SoftPasskey.ed25519("bob")
    listed = [{**ada.approver("ada's laptop"), "fingerprint": "SHA256:lies"}, bob.approver("bob")]
    runtime = _approvers_client(listed)
    Path(".envcat.toml").write_text(f'workspace = "{FAKE_WORKSPACE}"\nallow_vars = []')
    shown = _approvers(runtime, "list")
    assert shown.exit_code == 0, shown.stderr
    ada_fingerprint = key_fingerprint(load_public_key(ada.cose()))
    # the fingerprint is computed by the CLI from the key, never taken from the server
    assert ada_fingerprint in shown.stdout and "SHA256:lies" not in shown.stdout
    added = _approvers(runtime, "add", ada.credential_id, "--yes")
    assert added.exit_code == 0, added.stderr
    assert ada_fingerprint in added.stderr
    parsed = read_config(Path(".envcat.toml"), PROJECT_KEYS)
    assert [a.credential_id for a in parsed.approvers] == [ada.credential_id]
    assert parsed.allow_vars == ()
    again = _approvers(runtime, "add", ada.credential_id, "--yes")
    assert again.exit_code == 2 and "already lists" in again.stderr
    assert "*" in _approvers(runtime, "list").stdout
    unknown = _approvers(runtime, "add", "nope", "--yes")
    assert unknown.exit_code == 1 and "no passkey with that credential id" in unknown.stderr
    # k-of-n: --person names whose passkey it is (issue #20)
    with_person = _approvers(runtime, "add", bob.credential_id, "--yes", "--person", "bob")
    assert with_person.exit_code == 0, with_person.stderr
    parsed = read_config(Path(".envcat.toml"), PROJECT_KEYS)
    assert [a.holder for a in parsed.approvers] == ["ada's laptop", "bob"]


def test_approvers_add_refuses_what_it_cannot_write_safely() -> None:
    ada = SoftPasskey.es256("ada")
    Path(".envcat.toml").write_text(f'workspace = "{FAKE_WORKSPACE}"\napprovers = []\n')
    inline = _approvers(_approvers_client([ada.approver()]), "add", ada.credential_id, "--yes")
    assert inline.exit_code == 2 and "add this one by hand" in inline.stderr
    Path(".envcat.toml").write_text(f'workspace = "{FAKE_WORKSPACE}"\n')
    bad = [{**ada.approver(), "public_key": base64.b64encode(b"\xa1\x01\x03").decode()}]
    refused = _approvers(_approvers_client(bad), "add", ada.credential_id, "--yes")
    assert refused.exit_code == 1 and "malformed" in refused.stderr
    assert "approvers" not in Path(".envcat.toml").read_text()


# --- k-of-n: k different listed people (issue #20) ----------------------------------------


def _k_of_n(proofs: list[dict[str, object]], required: int = 1) -> Envelope:
    return replace(
        _envelope(proofs[-1]),
        passkeys=tuple(proofs) if len(proofs) > 1 else (),
        approvals_required=required,
    )


def _check_k(
    envelope: Envelope, listed: list[TrustedApprover], min_approvals: int = 1
) -> list[object]:
    return list(
        check_passkey_approval(
            envelope,
            request_id=REQUEST_ID,
            cli_public_key=CLI_KEY,
            workspace=WORKSPACE,
            server=SERVER,
            approvers=listed,
            min_approvals=min_approvals,
        )
    )


def test_k_of_n_needs_valid_assertions_by_k_different_listed_people() -> None:
    ada, bob, bob_spare = SoftPasskey.es256("ada"), SoftPasskey.ed25519("bob"), SoftPasskey.es256()
    listed = [
        TrustedApprover(**ada.approver("ada")),
        TrustedApprover(**bob.approver("bob's key"), person="bob"),
        TrustedApprover(**bob_spare.approver("bob's spare"), person="bob"),
    ]
    by_ada = ada.sign(_statement(decided_at=1_800_000_000), origin=ORIGIN, rp_id=RP_ID).as_dict()
    by_bob = bob.sign(_statement(decided_at=1_800_000_042), origin=ORIGIN, rp_id=RP_ID).as_dict()
    spare = bob_spare.sign(_statement(), origin=ORIGIN, rp_id=RP_ID).as_dict()
    # each voter signed at their own time; the CLI rebuilds each statement
    assert len(_check_k(_k_of_n([by_ada, by_bob], required=2), listed)) == 2
    assert len(_check_k(_k_of_n([by_ada, by_bob]), listed, min_approvals=2)) == 2
    short = "by 2 different approvers listed in .envcat.toml and carries 1"
    for proofs in ([by_bob], [by_bob, by_bob], [by_bob, spare]):  # one, twice, one person
        with pytest.raises(Untrusted, match=short):
            _check_k(_k_of_n(proofs, required=2), listed)
        with pytest.raises(Untrusted, match=short):  # the server may say 1: the config says 2
            _check_k(_k_of_n(proofs), listed, min_approvals=2)
    with pytest.raises(Untrusted, match="by 3 different"):  # the server may ask for more
        _check_k(_k_of_n([by_ada, by_bob], required=3), listed, min_approvals=2)
    stranger = SoftPasskey.es256("eve").sign(_statement(), origin=ORIGIN, rp_id=RP_ID).as_dict()
    with pytest.raises(Untrusted, match="does not list"):
        _check_k(_k_of_n([by_ada, stranger], required=2), listed)
    forged = {**by_bob, "signature": by_ada["signature"]}  # a listed key's bad assertion
    with pytest.raises(Untrusted, match='by "bob\'s key" fails'):
        _check_k(_k_of_n([by_ada, forged], required=2), listed)


def test_single_approvals_keep_their_envelope_and_k_of_n_adds_the_list() -> None:
    proof = SoftPasskey.es256().sign(_statement(), origin=ORIGIN, rp_id=RP_ID).as_dict()
    single = _envelope(proof).to_payload()
    assert b"passkeys" not in single and b"approvals_required" not in single  # as before
    assert Envelope.from_payload(single).passkey_proofs() == [proof]
    other = SoftPasskey.ed25519().sign(_statement(), origin=ORIGIN, rp_id=RP_ID).as_dict()
    many = Envelope.from_payload(_k_of_n([proof, other], required=2).to_payload())
    assert many.passkey_proofs() == [proof, other] and many.approvals_required == 2
    assert many.passkey == other  # an older CLI still checks the last approver's
    for bad in (0, True, "2"):
        payload = (
            _envelope(proof)
            .to_payload()
            .replace(b'"v":1', f'"approvals_required":{json.dumps(bad)},"v":1'.encode())
        )
        with pytest.raises(EnvelopeError, match="approvals_required"):
            Envelope.from_payload(payload)


def test_min_approvals_is_read_per_project_and_bundle_and_must_be_reachable(
    tmp_path: Path,
) -> None:
    ada, bob = SoftPasskey.es256().approver("ada"), SoftPasskey.es256().approver("bob")
    path = tmp_path / ".envcat.toml"

    def write(head: str, *entries: dict[str, str]) -> None:
        body = "".join(
            "[[approvers]]\n" + "".join(f'{k} = "{v}"\n' for k, v in entry.items())
            for entry in entries
        )
        path.write_text(head + "\n" + body)

    write('min_approvals = 2\nmin_approvals_by_bundle = { "prod/api" = 2 }', ada, bob)
    parsed = read_config(path, PROJECT_KEYS)
    assert parsed.min_approvals == 2 and parsed.min_approvals_by_bundle == {"prod/api": 2}
    write("min_approvals = 2", ada, {**bob, "person": "ada"})  # two passkeys, one person
    with pytest.raises(UsageProblem, match="2 approvals are required but approvers lists 1"):
        read_config(path, PROJECT_KEYS)
    write('min_approvals_by_bundle = { "prod/api" = 3 }', ada, bob)
    with pytest.raises(UsageProblem, match="3 approvals are required"):
        read_config(path, PROJECT_KEYS)
    for bad in ("0", "true", '"2"', "1.5"):
        write(f"min_approvals = {bad}", ada)
        with pytest.raises(UsageProblem, match="whole number"):
            read_config(path, PROJECT_KEYS)
    write("min_approvals = 2")  # no approvers: nothing could be checked
    with pytest.raises(UsageProblem, match="lists 0 people"):
        read_config(path, PROJECT_KEYS)
