"""This terminal user's device key (issue #17) and `envcat device`.

One Ed25519 key per terminal user, made on first use and kept in the CLI's config
directory (`$XDG_CONFIG_HOME/envcat/device_key`, mode 0600 in a 0700 directory; tests
point `XDG_CONFIG_HOME` elsewhere per "device"). Every `get`/`run` signs its request
with it; an approver may trust the key for a bundle for some hours (a grant). The file
is refused when group or others can read it, as ssh refuses such keys.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from envcat.cli.config import config_dir
from envcat.cli.errors import CliError

if TYPE_CHECKING:
    from nacl.signing import SigningKey

DEVICE_KEY = "device_key"


def device_key_path() -> Path:
    """Where this user's device key lives (it may not exist yet)."""
    return config_dir() / DEVICE_KEY


def _read(path: Path) -> SigningKey:
    from nacl.signing import SigningKey

    from envcat.core.device import PUBLIC_KEY_BYTES, DeviceKeyError, decode

    info = path.lstat()
    if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
        raise CliError(
            f"{path} must be a regular file readable by you alone (chmod 600 {path}); "
            "refusing to use the device key"
        )
    try:
        seed = decode(path.read_text(encoding="ascii").strip(), PUBLIC_KEY_BYTES)
    except (DeviceKeyError, OSError, UnicodeDecodeError):
        raise CliError(f"{path} does not hold a device key; remove it to make a new one") from None
    return SigningKey(seed)


def _create(path: Path) -> SigningKey:
    """Make the key and put it in place whole, or use the one another envcat made first.

    The key is written to a private temporary file and then hard-linked to its name:
    the link appears complete or not at all and never replaces an existing file, so
    several `envcat get`s started at once on a new machine all end up with one key and
    none reads a half-written file.
    """
    from nacl.signing import SigningKey

    from envcat.core.device import encode

    key = SigningKey.generate()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor, staged = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise CliError(f"cannot create the device key {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as stream:  # mkstemp: mode 0600
            stream.write(encode(bytes(key)) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(staged, path)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: create it exclusively instead
            _write_exclusively(path, encode(bytes(key)))
    except FileExistsError:
        return _read(path)  # another envcat made it first: use theirs
    except OSError as exc:
        raise CliError(f"cannot create the device key {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(staged)
    return key


def _write_exclusively(path: Path, encoded: str) -> None:
    """O_EXCL creation, for where links are refused (another envcat may briefly see it empty)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as stream:
        stream.write(encoded + "\n")


def load_or_create() -> SigningKey:
    """This user's device key, made (0600) on first use."""
    path = device_key_path()
    if path.exists() or path.is_symlink():
        return _read(path)
    return _create(path)


def for_request(say: Callable[[str], None]) -> SigningKey | None:
    """The key to sign a request with; None (said why) when none can be made here.

    A read-only home (some CI containers) must not stop `get`: the request then
    simply cannot be delivered under a grant. A key that exists but is unusable is
    an error, since someone may have tampered with it.
    """
    path = device_key_path()
    if path.exists() or path.is_symlink():
        return _read(path)
    try:
        return _create(path)
    except CliError as exc:
        say(f"Note: no device key ({exc.message}); grants cannot apply to this request.")
        return None


def public_fingerprint(key: SigningKey) -> str:
    """`ab12 cd34 …`: the form the approval page shows."""
    from envcat.core.device import fingerprint

    return fingerprint(bytes(key.verify_key))


def signed_block(key: SigningKey, body: dict[str, Any]) -> dict[str, Any]:
    """The request body's `device` block: public key, timestamp, signature over its fields."""
    from envcat.core.device import encode, request_message, sign

    timestamp = int(time.time())
    message = request_message(
        client_pubkey=body["client_pubkey"],
        workspace=body["workspace"],
        bundle=body.get("bundle"),
        bundle_id=body.get("bundle_id"),
        template_keys=body.get("template_keys") or [],
        timestamp=timestamp,
    )
    return {
        "public_key": encode(bytes(key.verify_key)),
        "timestamp": timestamp,
        "signature": sign(key, message),
    }


def describe_grant(grant: Mapping[str, Any], now: float | None = None) -> str:
    """`delivered under grant by alice@acme.dev, expires in 3 h` from the envelope's marker."""
    from envcat.cli.display import safe_text

    expires_at = grant.get("expires_at")
    left = (float(expires_at) if isinstance(expires_at, int | float) else 0.0) - (
        time.time() if now is None else now
    )
    by = safe_text(str(grant.get("approved_by") or "?"), 120)
    if left <= 0:  # sealed just before it ended (the worker checks it), shown just after
        return f"delivered under grant by {by}, now expired"
    when = f"{left / 3600:.0f} h" if left >= 5400 else f"{max(1, round(left / 60))} min"
    return f"delivered under grant by {by}, expires in {when}"


@click.command()
@click.option("--path", "show_path", is_flag=True, help="Also print where the key is kept.")
def device(show_path: bool) -> None:
    """Show this device's fingerprint (made on first use), as approval pages show it.

    An approver may trust this device for a bundle for some hours ("grants"):
    compare the fingerprint on the approval page with this one. Anyone who copies
    the key file gets those grants until they expire or are revoked.
    """
    key = load_or_create()
    click.echo(f"this device: {public_fingerprint(key)}")
    if show_path:
        with contextlib.suppress(OSError):
            click.echo(f"key file: {device_key_path()}", err=True)
