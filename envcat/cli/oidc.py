"""Get the CI runner's OIDC ID token for `envcat get/run --oidc` (issue #16).

Where the token comes from, first found wins: `--id-token-file F`, `ENVCAT_ID_TOKEN`,
then GitHub Actions' token service (`ACTIONS_ID_TOKEN_REQUEST_URL` +
`ACTIONS_ID_TOKEN_REQUEST_TOKEN`, which a job gets with `permissions: id-token: write`).
The token is a bearer credential for one request: it is sent to the EnvCat server only,
never printed, and never written anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx

from envcat.cli.display import safe_text
from envcat.cli.errors import CliError, ServerUnreachable

MAX_TOKEN_BYTES = 16 * 1024
GITHUB_URL = "ACTIONS_ID_TOKEN_REQUEST_URL"
GITHUB_TOKEN = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"  # noqa: S105  # a variable name, not a secret
TOKEN_TIMEOUT = httpx.Timeout(10.0)


def _checked(token: str, source: str) -> str:
    token = token.strip()
    if not token:
        raise CliError(f"the ID token from {source} is empty")
    if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2 or not token.isascii():
        raise CliError(f"the ID token from {source} is not a JWT (header.payload.signature)")
    return token


def _from_github(environ: Mapping[str, str], audience: str) -> str:
    url, bearer = environ[GITHUB_URL], environ.get(GITHUB_TOKEN, "")
    if not bearer:
        raise CliError(f"{GITHUB_URL} is set but {GITHUB_TOKEN} is not")
    if urlsplit(url).scheme != "https" and urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
        raise CliError(f"{GITHUB_URL} is not an https URL; refusing to send the runner's token")
    separator = "&" if urlsplit(url).query else "?"
    try:
        response = httpx.get(
            f"{url}{separator}{urlencode({'audience': audience})}",
            headers={"Authorization": f"bearer {bearer}", "Accept": "application/json"},
            timeout=TOKEN_TIMEOUT,
        )
    except httpx.TransportError as exc:
        raise ServerUnreachable(
            f"cannot reach GitHub's ID token service: {safe_text(str(exc), 200)}"
        ) from None
    if response.status_code != 200:
        raise CliError(
            f"GitHub's ID token service answered HTTP {response.status_code}; does the job have "
            "`permissions: id-token: write`?"
        )
    try:
        value = response.json().get("value")
    except (ValueError, AttributeError):
        value = None
    if not isinstance(value, str):
        raise CliError("GitHub's ID token service sent no token (`value`)")
    return _checked(value, "GitHub's ID token service")


def obtain_id_token(environ: Mapping[str, str], audience: str, token_file: Path | None) -> str:
    """The workload's ID token for `audience`; CliError naming what is missing."""
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not ASCII"
            raise CliError(f"cannot read --id-token-file {token_file}: {reason}") from None
        return _checked(text, f"--id-token-file {token_file}")
    if environ.get("ENVCAT_ID_TOKEN"):
        return _checked(environ["ENVCAT_ID_TOKEN"], "ENVCAT_ID_TOKEN")
    if environ.get(GITHUB_URL):
        return _from_github(environ, audience)
    raise CliError(
        "--oidc needs an ID token: run in GitHub Actions with `permissions: id-token: write`, "
        "or set ENVCAT_ID_TOKEN, or pass --id-token-file FILE"
    )


class IdTokens:
    """ID tokens for a series of calls (`envcat scan --oidc`, issue #19): each token is good
    for one call on the server, so GitHub's token service is asked afresh for each; a
    token given as ENVCAT_ID_TOKEN or --id-token-file is one token, for one call only."""

    def __init__(self, environ: Mapping[str, str], audience: str, token_file: Path | None) -> None:
        self._environ, self._audience, self._file = environ, audience, token_file
        self.repeatable = (
            token_file is None
            and not environ.get("ENVCAT_ID_TOKEN")
            and bool(environ.get(GITHUB_URL))
        )
        self._given: str | None = None
        if not self.repeatable:  # read it now: a missing token is an error before any work
            self._given = obtain_id_token(environ, audience, token_file)

    def next(self) -> str:
        """A token for the next call; CliError when the one given token was used."""
        if self.repeatable:
            return obtain_id_token(self._environ, self._audience, self._file)
        if self._given is None:
            raise CliError(
                "the ID token given (ENVCAT_ID_TOKEN or --id-token-file) was used by the "
                "previous call; each token is good for one call"
            )
        token, self._given = self._given, None
        return token
