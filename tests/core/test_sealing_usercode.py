import base64
import re

import pytest

from envcat.core.sealing import (
    SealingError,
    decode_public_key,
    encode_public_key,
    generate_keypair,
    open_values,
    seal_values,
)
from envcat.core.usercode import ALPHABET, user_code


def test_seal_then_open_round_trip() -> None:
    key = generate_keypair()
    values = {"A": "x'y\"z\n$HOME \u00e9\U0001f600", "EMPTY": ""}
    sealed = seal_values(encode_public_key(key), values)
    assert b"HOME" not in sealed
    assert open_values(key, sealed) == values


def test_another_key_cannot_open() -> None:
    sealed = seal_values(encode_public_key(generate_keypair()), {"A": "1"})
    with pytest.raises(SealingError):
        open_values(generate_keypair(), sealed)


@pytest.mark.parametrize("bad", ["", "!!!", base64.b64encode(b"short").decode(), "QUJD\n"])
def test_malformed_public_key_is_refused(bad: str) -> None:
    with pytest.raises(SealingError):
        decode_public_key(bad)


def test_user_code_is_stable_formatted_and_bound_to_both_inputs() -> None:
    key_a = encode_public_key(generate_keypair())
    key_b = encode_public_key(generate_keypair())
    code = user_code("req-1", key_a)
    assert re.fullmatch(f"[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}", code)
    assert user_code("req-1", key_a) == code
    assert user_code("req-2", key_a) != code
    assert user_code("req-1", key_b) != code
