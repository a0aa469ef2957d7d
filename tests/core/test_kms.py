import pytest

from envcat.core.keys import new_kms_key
from envcat.core.kms import DecryptionError, Keyring

CANARY = "canary-kms-\u00e9\U0001f511-value"


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.from_setting(new_kms_key())


def test_round_trip(keyring: Keyring) -> None:
    stored = keyring.encrypt(CANARY, tenant_id="t1", key_id="k1")
    assert CANARY not in stored
    assert stored.startswith(f"v1.{keyring.primary_id}.")
    assert keyring.decrypt(stored, tenant_id="t1", key_id="k1") == CANARY


def test_each_encryption_uses_a_fresh_nonce(keyring: Keyring) -> None:
    first = keyring.encrypt("same", tenant_id="t1", key_id="k1")
    assert first != keyring.encrypt("same", tenant_id="t1", key_id="k1")


@pytest.mark.parametrize(("tenant", "key"), [("t2", "k1"), ("t1", "k2"), ("t2", "k2")])
def test_ciphertext_moved_to_another_row_or_tenant_fails(
    keyring: Keyring, tenant: str, key: str
) -> None:
    stored = keyring.encrypt(CANARY, tenant_id="t1", key_id="k1")
    with pytest.raises(DecryptionError) as caught:
        keyring.decrypt(stored, tenant_id=tenant, key_id=key)
    assert CANARY not in str(caught.value)


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s[:-3],
        lambda s: s[:-2] + ("A" if s[-2] != "A" else "B") + s[-1],
        lambda s: s.replace("v1.", "v2.", 1),
        lambda s: ".".join(s.split(".")[:3]),
        lambda s: "garbage",
        lambda s: s.split(".")[0] + ".unknownkid." + ".".join(s.split(".")[2:]),
        lambda s: ".".join([*s.split(".")[:2], "AAAA", s.split(".")[3]]),
    ],
)
def test_wrong_or_truncated_ciphertext_gives_clear_error(keyring: Keyring, damage) -> None:
    stored = keyring.encrypt(CANARY, tenant_id="t1", key_id="k1")
    with pytest.raises(DecryptionError, match="key k1"):
        keyring.decrypt(damage(stored), tenant_id="t1", key_id="k1")


def test_rotation_with_two_keys_loses_nothing() -> None:
    old_key, new_key = new_kms_key(), new_kms_key()
    old = Keyring.from_setting(old_key)
    values = {f"k{i}": f"{CANARY}-{i}" for i in range(20)}
    stored = {k: old.encrypt(v, tenant_id="t", key_id=k) for k, v in values.items()}

    rotated_ring = Keyring.from_setting(f"{new_key},{old_key}")
    assert all(rotated_ring.needs_rotation(s) for s in stored.values())
    # Half-way through a rotation both forms must decrypt.
    half = {
        k: (rotated_ring.reencrypt(s, tenant_id="t", key_id=k) if i % 2 else s)
        for i, (k, s) in enumerate(stored.items())
    }
    assert {k: rotated_ring.decrypt(s, tenant_id="t", key_id=k) for k, s in half.items()} == values
    done = {k: rotated_ring.reencrypt(s, tenant_id="t", key_id=k) for k, s in half.items()}
    assert not any(rotated_ring.needs_rotation(s) for s in done.values())
    only_new = Keyring.from_setting(new_key)
    assert {k: only_new.decrypt(s, tenant_id="t", key_id=k) for k, s in done.items()} == values


def test_reencrypt_keeps_values_already_under_primary(keyring: Keyring) -> None:
    stored = keyring.encrypt(CANARY, tenant_id="t", key_id="k")
    assert keyring.reencrypt(stored, tenant_id="t", key_id="k") == stored
