"""Check a delivery before anything is printed, written or run (issue #11).

The sealed box only proves the delivery was sealed to our key, which anyone can
do. So the CLI opens the signed envelope, finds the server key it trusts (the
`.envcat.toml` pin, else `known_servers`, else the envelope's primary key on
first use), checks the signature, then checks that every stated fact is the one
it asked for. Only after all of that does it record a first-use pin or a
rotated key. Any failure is an `Untrusted` error (exit 6) naming what did not
match; the caller has printed nothing yet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from nacl.public import PrivateKey

from envcat.cli.display import safe_text
from envcat.cli.errors import CliError, Untrusted
from envcat.cli.pins import KnownServers
from envcat.core.envelope import (
    Envelope,
    EnvelopeError,
    SignedEnvelope,
    fingerprint,
    open_envelope,
)
from envcat.core.wire import is_dangerous_name


@dataclass(frozen=True)
class Expected:
    """What this run asked for; the envelope must state exactly this."""

    request_id: str
    cli_public_key: str
    workspace: str
    bundle: str | None
    keys: Sequence[str]


@dataclass(frozen=True)
class Trust:
    """Where the trusted server key comes from for one server."""

    server: str
    known: KnownServers
    project_pin: str | None = None
    project_file: str | None = None


def verify_delivery(
    private_key: PrivateKey,
    ciphertext: bytes,
    expected: Expected,
    trust: Trust,
    say: Callable[[str], None],
    also: Callable[[Envelope], None] | None = None,
) -> Envelope:
    """Return the verified envelope, or raise Untrusted; pins only after every check passed.

    `also` is one more check of the signed statement (issue #20: the passkey
    approval), run before anything is pinned.
    """
    try:
        signed = open_envelope(private_key, ciphertext)
        offered = signed.unverified_server_keys()
    except EnvelopeError as exc:
        raise Untrusted(f"refusing the delivery: {exc}") from None
    if not offered:
        raise Untrusted("refusing the delivery: it names no server key")
    pinned = trust.project_pin or trust.known.lookup(trust.server)
    key = _trusted_key(signed, offered, pinned, trust)
    try:
        envelope = signed.verified_by(key)
    except EnvelopeError as exc:
        raise Untrusted(f"refusing the delivery: {exc}") from None
    check_statement(envelope, expected)
    if also is not None:
        also(envelope)
    if pinned is None:
        where = _pin(trust, fingerprint(key), say)
        say(f"First use of {trust.server}: its delivery key is {fingerprint(key)} — {where}")
    else:
        _follow_rotation(signed, offered[0], pinned, trust, say)
    return envelope


def _trusted_key(
    signed: SignedEnvelope, offered: Sequence[bytes], pinned: str | None, trust: Trust
) -> bytes:
    if pinned is None:
        return offered[0]  # first use: the primary key, which must have signed it
    for key in offered:
        if fingerprint(key) == pinned:
            if signed.is_signed_by(key):
                return key
            raise Untrusted(
                f"refusing the delivery: its signature by the pinned key {pinned} does not "
                "verify; it was altered on the way or forged"
            )
    where = trust.project_file or str(trust.known.path)
    raise Untrusted(
        f"REFUSING the delivery: the server key changed. {trust.server} is pinned to "
        f"{pinned} (in {where}) but this delivery is signed by {fingerprint(offered[0])}. "
        "Someone may be impersonating the server. If its key was replaced on purpose, "
        f"check the new fingerprint with the server's operator and run "
        f"`envcat trust --server {trust.server}`"
        + (
            f" (and update server_fingerprint in {trust.project_file})"
            if trust.project_file
            else ""
        )
    )


def _follow_rotation(
    signed: SignedEnvelope,
    primary: bytes,
    pinned: str,
    trust: Trust,
    say: Callable[[str], None],
) -> None:
    new = fingerprint(primary)
    if new == pinned or not signed.is_signed_by(primary):
        return
    if trust.project_pin is not None:
        say(
            f"Note: the server key rotated ({pinned} → {new}), vouched for by the key you "
            f"trusted; update server_fingerprint in {trust.project_file} to {new}."
        )
        return
    where = _pin(trust, new, say)
    say(f"Server key rotated: {pinned} → {new}, vouched for by the key you trusted; {where}")


def _pin(trust: Trust, new: str, say: Callable[[str], None]) -> str:
    """Record the pin; a verified delivery is not lost because the config is read-only."""
    try:
        trust.known.pin(trust.server, new)
    except CliError as exc:
        say(f"Warning: {exc.message}")
        return "NOT pinned (trusted for this run only)"
    return f"pinned in {trust.known.path}"


def check_statement(envelope: Envelope, expected: Expected) -> None:
    """Raise Untrusted unless the envelope answers exactly this request."""
    if envelope.request_id != expected.request_id:
        raise Untrusted("refusing the delivery: it answers another request")
    if envelope.cli_public_key != expected.cli_public_key:
        raise Untrusted("refusing the delivery: it was made for another terminal's key")
    if envelope.workspace_slug != expected.workspace:
        raise Untrusted(
            f"refusing the delivery: it comes from workspace "
            f"{safe_text(envelope.workspace_slug, 80)!r}, not {expected.workspace!r}"
        )
    if expected.bundle is not None and envelope.bundle_name != expected.bundle:
        raise Untrusted(
            f"refusing the delivery: it comes from bundle "
            f"{safe_text(envelope.bundle_name, 120)!r}, not {expected.bundle!r}"
        )
    if expected.keys:
        extra = sorted(set(envelope.keys) - set(expected.keys))
        if extra:
            names = ", ".join(safe_text(name, 60) for name in extra[:5])
            raise Untrusted(
                f"refusing the delivery: it carries keys not asked for with -k: {names}"
            )


def refuse_dangerous(values: Mapping[str, str], allowed: Sequence[str]) -> None:
    """Raise Untrusted when a delivered name could make a program load or run code."""
    refused = [name for name in values if is_dangerous_name(name) and name not in allowed]
    if refused:
        names = ", ".join(safe_text(name, 60) for name in refused[:10])
        raise Untrusted(
            f"refusing the delivery: it sets {names}, which can make programs load or run "
            "other code. If you expect this, allow each by name with --allow-var NAME "
            "(or allow_vars in .envcat.toml)"
        )
