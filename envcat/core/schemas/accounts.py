"""Wire models of local accounts and of "who am I" (DESIGN §5)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MIN_PASSWORD = 10
MAX_PASSWORD = 1024
MAX_EMAIL = 320
# One "@", no whitespace or control characters, a dot in the domain.
EMAIL_RE = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+")

Role = Literal["owner", "admin", "member", "viewer"]


def normalise_email(email: str) -> str:
    """Trim and lower-case an email address: accounts are matched case-insensitively."""
    return email.strip().lower()


def _email(value: str) -> str:
    email = normalise_email(value)
    if len(email) > MAX_EMAIL or not EMAIL_RE.fullmatch(email) or not _is_utf8(email):
        raise ValueError("must be an email address like name@example.com")
    return email


def _password(value: str) -> str:
    if len(value) < MIN_PASSWORD:
        raise ValueError(f"must be at least {MIN_PASSWORD} characters")
    if not _is_utf8(value):
        raise ValueError("must be valid Unicode text")
    return value


def _utf8(value: str) -> str:
    if not _is_utf8(value):
        raise ValueError("must be valid Unicode text")
    return value


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


Email = Annotated[str, Field(max_length=MAX_EMAIL + 64), AfterValidator(_email)]
NewPassword = Annotated[str, Field(max_length=MAX_PASSWORD), AfterValidator(_password)]
# Looser than the rules so the service can say which rule a sign-up broke.
AnyText = Annotated[str, Field(max_length=4 * MAX_PASSWORD), AfterValidator(_utf8)]


class SignUp(BaseModel):
    """A new local account's email and password, as the accounts service checks them."""

    model_config = ConfigDict(strict=True, extra="forbid")

    email: Email
    password: NewPassword


class Credentials(BaseModel):
    """Body of POST /internal/local-auth/sign-up and sign-in (an email and a password).

    Only types and sizes are checked here: sign-up's rules (a valid email, a
    password of at least 10 characters) give a message meant for the person,
    and a sign-in with any wrong pair is a 401.
    """

    model_config = ConfigDict(strict=True, extra="forbid")

    email: AnyText
    password: AnyText


class UserOut(BaseModel):
    """A person."""

    id: str
    email: str
    name: str | None


class TenantOut(BaseModel):
    """A workspace: personal or an organisation."""

    id: str
    name: str
    kind: Literal["personal", "org"]
    slug: str = ""  # what the CLI names with -w; "" only from an older api


class AccountOut(BaseModel):
    """A user, the tenant the session acts in, and the user's role there."""

    user: UserOut
    tenant: TenantOut
    role: Role


UserId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]


class PasswordChange(BaseModel):
    """Body of POST /internal/local-auth/change-password: the bff vouches for `user_id`.

    The current password is required as well, so a stolen session alone cannot
    take over the account. The new one is checked by the service (it says which
    rule it broke).
    """

    model_config = ConfigDict(strict=True, extra="forbid")

    user_id: UserId
    old_password: AnyText
    new_password: AnyText


class AccountDeletion(BaseModel):
    """Body of POST /internal/local-auth/delete-account: the user and their password."""

    model_config = ConfigDict(strict=True, extra="forbid")

    user_id: UserId
    password: AnyText


class PasswordChanged(BaseModel):
    """The password was replaced; the bff then revokes the user's other sessions."""

    user_id: str


class AccountDeleted(BaseModel):
    """The account is gone; so are the workspaces it was the only member of."""

    user_id: str
    deleted_tenants: list[str]
