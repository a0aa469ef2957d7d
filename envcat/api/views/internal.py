"""Internal endpoints for the bff's own identity (local accounts)."""

from __future__ import annotations

from flask import Blueprint

from envcat.api.auth import authenticate_bff
from envcat.api.context import client_origin
from envcat.api.openapi import endpoint
from envcat.core.schemas.accounts import (
    AccountDeleted,
    AccountDeletion,
    AccountOut,
    Credentials,
    PasswordChange,
    PasswordChanged,
)
from envcat.services import accounts

bp = Blueprint("internal", __name__, url_prefix="/api/v1/internal")
bp.before_request(authenticate_bff)


@endpoint(
    bp,
    "/local-auth/sign-up",
    "POST",
    summary="Create a local account and its personal tenant (ALLOW_SIGNUP; password >= 10 chars)",
    auth="internal",
    body=Credentials,
    responses={201: AccountOut},
    errors=(401, 403, 404, 409),
)
def sign_up(body: Credentials) -> tuple[AccountOut, int]:
    """The bff's sign-up form."""
    return accounts.sign_up(body.email, body.password), 201


@endpoint(
    bp,
    "/local-auth/sign-in",
    "POST",
    summary="Check a local account's email and password",
    auth="internal",
    body=Credentials,
    responses={200: AccountOut},
    errors=(401, 404),
)
def sign_in(body: Credentials) -> AccountOut:
    """The bff's sign-in form; 401 invalid_credentials for any wrong pair."""
    return accounts.authenticate(body.email, body.password)


@endpoint(
    bp,
    "/local-auth/change-password",
    "POST",
    summary="Replace a local account's password (the current one is required); audited",
    auth="internal",
    body=PasswordChange,
    responses={200: PasswordChanged},
    errors=(400, 401, 404),
)
def change_password(body: PasswordChange) -> PasswordChanged:
    """The account page; 401 invalid_credentials when the current password is wrong."""
    return accounts.change_password(
        body.user_id, body.old_password, body.new_password, client_origin()
    )


@endpoint(
    bp,
    "/local-auth/delete-account",
    "POST",
    summary="Delete a local account (password required; refused for a workspace's last owner)",
    auth="internal",
    body=AccountDeletion,
    responses={200: AccountDeleted},
    errors=(400, 401, 404, 409),
)
def delete_account(body: AccountDeletion) -> AccountDeleted:
    """The account page; 409 last_owner while other members depend on this owner."""
    return accounts.delete_account(body.user_id, body.password, client_origin())
