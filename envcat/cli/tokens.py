"""Where `envcat login` keeps a terminal's user token (issue #16): the OS keyring or a file.

One token per server and workspace. `ENVCAT_TOKEN_STORE` (or `--token-store`) picks the
backend: `keyring` (the `keyring` library; needs a usable backend such as the macOS
Keychain, Windows Credential Locker or the Secret Service), `file`
(`<config dir>/tokens.json`, mode 0600, written atomically) or `auto` (the default:
the keyring when a usable backend exists, else the file). Nothing but the token, its
workspace and expiry is stored; `envcat logout` deletes it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from envcat.cli.config import config_dir, origin
from envcat.cli.errors import CliError

STORE_ENV = "ENVCAT_TOKEN_STORE"
STORE_CHOICES = ("auto", "keyring", "file")
KEYRING_SERVICE = "envcat"
TOKENS_FILE = "tokens.json"


@dataclass(frozen=True)
class StoredLogin:
    """A terminal's sign-in: the bearer token, its workspace and when it expires (ISO 8601)."""

    token: str
    workspace: str
    expires_at: str

    def is_expired(self, now: datetime | None = None) -> bool:
        """Whether the server will refuse it anyway (then it is not sent)."""
        try:
            expires = datetime.fromisoformat(self.expires_at)
        except ValueError:
            return True
        return expires <= (now or datetime.now(UTC))


class _Backend(Protocol):
    name: str

    def read(self, entry: str) -> str | None: ...
    def write(self, entry: str, text: str) -> None: ...
    def delete(self, entry: str) -> None: ...


class FileBackend:
    """`tokens.json` in the config directory, 0600, replaced atomically."""

    name = "file"

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / TOKENS_FILE

    def _all(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read {self.path}: {exc}") from None
        return (
            {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
        )

    def _save(self, entries: dict[str, str]) -> None:
        from envcat.cli.output import write_private_file

        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private_file(self.path, json.dumps(entries, indent=2, sort_keys=True) + "\n")

    def read(self, entry: str) -> str | None:
        return self._all().get(entry)

    def write(self, entry: str, text: str) -> None:
        self._save({**self._all(), entry: text})

    def delete(self, entry: str) -> None:
        entries = self._all()
        if entries.pop(entry, None) is not None:
            self._save(entries)


class KeyringBackend:
    """The OS keyring through the `keyring` library."""

    name = "keyring"

    def __init__(self, module: Any) -> None:
        self._keyring = module

    def read(self, entry: str) -> str | None:
        value = self._keyring.get_password(KEYRING_SERVICE, entry)
        return value if isinstance(value, str) else None

    def write(self, entry: str, text: str) -> None:
        self._keyring.set_password(KEYRING_SERVICE, entry, text)

    def delete(self, entry: str) -> None:
        with contextlib.suppress(Exception):  # absent already: nothing to delete
            self._keyring.delete_password(KEYRING_SERVICE, entry)


def _usable_keyring() -> Any | None:
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 0) < 1:
        return None
    return keyring


def backend(choice: str | None = None) -> _Backend:
    """The store `choice` (else $ENVCAT_TOKEN_STORE, else auto) names."""
    choice = (choice or os.environ.get(STORE_ENV) or "auto").lower()
    if choice not in STORE_CHOICES:
        raise CliError(f"{STORE_ENV} must be one of {', '.join(STORE_CHOICES)}, not {choice!r}")
    if choice == "file":
        return FileBackend()
    module = _usable_keyring()
    if module is not None:
        return KeyringBackend(module)
    if choice == "keyring":
        raise CliError("no usable OS keyring here (pip install keyring, or use the file store)")
    return FileBackend()


def entry_name(server: str, workspace: str) -> str:
    """One sign-in per server origin and workspace."""
    return f"{origin(server)}|{workspace}"


def load(server: str, workspace: str, choice: str | None = None) -> StoredLogin | None:
    """The stored sign-in for this server and workspace, if any (expired ones included)."""
    text = backend(choice).read(entry_name(server, workspace))
    if text is None:
        return None
    try:
        return StoredLogin(**json.loads(text))
    except (TypeError, ValueError):
        return None


def save(server: str, login: StoredLogin, choice: str | None = None) -> str:
    """Store the sign-in; return the backend's name."""
    store = backend(choice)
    store.write(entry_name(server, login.workspace), json.dumps(asdict(login)))
    return store.name


def forget(server: str, workspace: str, choice: str | None = None) -> None:
    """Delete the stored sign-in (absent is fine)."""
    backend(choice).delete(entry_name(server, workspace))
