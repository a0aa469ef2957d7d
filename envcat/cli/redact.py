"""Redact the command line sent to the approver as request context (issue #11).

The approver sees the command, so a password typed on it must not travel with
it. A value is replaced by `***` when it follows a flag or `=` whose name
contains password, passwd, pwd, secret, token, key, auth or credential, and in
a few well-known shapes:

    mysql -pX                    -> mysql -p***
    --password=x | --token x     -> --password=*** | --token ***
    API_KEY=x cmd                -> API_KEY=*** cmd
    sh -c 'DB_PASSWORD=x ./app'  -> sh -c 'DB_PASSWORD=*** ./app'
    https://u:pw@host            -> https://u:***@host
    -H 'Authorization: Bearer x' -> -H 'Authorization: ***'
    curl -u user:pw              -> curl -u user:***

It errs on the side of hiding: the approver loses a word, never a secret.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

MASK = "***"
_WORD = r"(?:password|passwd|pwd|secret|token|key|auth|credential)"
_SENSITIVE = re.compile(_WORD, re.IGNORECASE)
_VALUE = r"""(?:'[^']*'|"[^"]*"|[^\s&;'"]+)"""
# NAME=value anywhere (flags, env assignments, query strings, inside sh -c strings)
_ASSIGNMENT = re.compile(rf"(?<![\w.-])([\w.-]*{_WORD}[\w.-]*=){_VALUE}", re.IGNORECASE)
# --token value inside one argument that holds a whole command (sh -c '…')
_FLAG_VALUE = re.compile(rf"(?<!\S)(-{{1,2}}[\w.-]*{_WORD}[\w.-]*\s+)(?!-){_VALUE}", re.IGNORECASE)
# mysql -pSECRET: the password glued to -p
_GLUED_P = re.compile(r"(?<!\S)(-p)(?=\S)[^\s'\"]+")
# scheme://user:password@host
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+(@)", re.IGNORECASE)
# HTTP header forms: "Authorization: Bearer x", "X-Api-Key: x"
_HEADER = re.compile(rf"((?:^|(?<=['\"]))[\w-]*{_WORD}[\w-]*:\s*)[^'\"\n]+", re.IGNORECASE)
_USER_FLAGS = frozenset({"-u", "--user", "--proxy-user"})


def redact_text(text: str) -> str:
    """Return one argument (or a whole command in one string) with secret values masked."""
    text = _URL_PASSWORD.sub(rf"\1{MASK}\2", text)
    text = _HEADER.sub(rf"\1{MASK}", text)
    text = _ASSIGNMENT.sub(rf"\1{MASK}", text)
    text = _FLAG_VALUE.sub(rf"\1{MASK}", text)
    return _GLUED_P.sub(rf"\1{MASK}", text)


def is_sensitive_flag(argument: str) -> bool:
    """True for `--token`, `--db-password`, `-auth`: a flag whose next argument is secret."""
    return (
        argument.startswith("-")
        and argument != "--"
        and "=" not in argument
        and _SENSITIVE.search(argument) is not None
    )


def redact_command(argv: Sequence[str], keep: Collection[str] = ()) -> list[str]:
    """Return `argv` with secret values masked; flags in `keep` are left alone (ours)."""
    redacted: list[str] = []
    pending: str | None = None  # the flag whose value comes next
    for argument in argv:
        if pending is not None:
            if pending in _USER_FLAGS:
                user, colon, _ = argument.partition(":")
                redacted.append(f"{user}:{MASK}" if colon else argument)
            else:
                redacted.append(MASK)
            pending = None
            continue
        if argument.partition("=")[0] in keep:
            redacted.append(argument)
            continue
        if is_sensitive_flag(argument) or argument in _USER_FLAGS:
            pending = argument
            redacted.append(argument)
            continue
        redacted.append(redact_text(argument))
    return redacted
