"""`~/.config/envcat/known_servers`: the delivery key each server was trusted with.

Like SSH's known_hosts, one line per server origin: `<origin> <fingerprint>`
(`https://envcat.example SHA256:…`). Lines starting with `#` are comments.
The file is written 0600 in a 0700 directory, by atomic replace.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from envcat.cli.config import config_dir, is_fingerprint, origin
from envcat.cli.errors import CliError

KNOWN_SERVERS = "known_servers"


@dataclass(frozen=True)
class KnownServers:
    """The known_servers file at `path`."""

    path: Path

    @classmethod
    def default(cls) -> KnownServers:
        """The user's known_servers file (`$XDG_CONFIG_HOME/envcat/known_servers`)."""
        return cls(config_dir() / KNOWN_SERVERS)

    def _entries(self) -> list[tuple[str, str]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {self.path}: {exc}") from None
        entries = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 2 and not fields[0].startswith("#") and is_fingerprint(fields[1]):
                entries.append((fields[0], fields[1]))
        return entries

    def lookup(self, server: str) -> str | None:
        """Return the pinned fingerprint for this server's origin, or None."""
        wanted = origin(server)
        return next((fp for name, fp in self._entries() if name == wanted), None)

    def pin(self, server: str, fingerprint: str) -> None:
        """Record `fingerprint` for this server's origin, replacing any earlier pin."""
        wanted = origin(server)
        entries = [(name, fp) for name, fp in self._entries() if name != wanted]
        entries.append((wanted, fingerprint))
        text = "".join(f"{name} {fp}\n" for name, fp in entries)
        self._replace(text)

    def _replace(self, text: str) -> None:
        directory = self.path.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(prefix=f".{KNOWN_SERVERS}.", dir=directory)
        except OSError as exc:
            raise CliError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise CliError(f"cannot write {self.path}: {exc.strerror or exc}") from None
