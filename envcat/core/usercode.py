"""The verification phrase shown by both the CLI and the approval page.

Derived from the request id and the CLI public key (RFC 8628 user-code
alphabet: 20 consonants, no vowels so no words, 8 characters ≈ 34.5 bits), so a
phished approval link shows a phrase that does not match the victim's terminal.
"""

from __future__ import annotations

import base64
import hashlib

ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
LENGTH = 8
TYPED_MAX = 32  # what an approver may type (the phrase is 9; room for spaces)


def user_code(request_id: str, public_key_b64: str) -> str:
    """Return the phrase for a request, four letters, a dash, four letters (`WDJB-MJHT`)."""
    raw_key = base64.b64decode(public_key_b64.encode("ascii"))
    digest = hashlib.sha256(
        b"envcat-user-code\x00" + request_id.encode("utf-8") + b"\x00" + raw_key
    )
    number = int.from_bytes(digest.digest(), "big")
    chars = []
    for _ in range(LENGTH):
        number, index = divmod(number, len(ALPHABET))
        chars.append(ALPHABET[index])
    code = "".join(chars)
    return f"{code[:4]}-{code[4:]}"


def normalise(phrase: str) -> str:
    """The phrase as compared: upper case, without spaces and hyphens (`wdjb mjht` = `WDJBMJHT`)."""
    return "".join(phrase.split()).replace("-", "").upper()
