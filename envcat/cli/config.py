"""Where the CLI's settings come from: flags, environment, `.envcat.toml`, user config.

First found wins, per setting:

- workspace: `--workspace/-w`, `ENVCAT_WORKSPACE`, `.envcat.toml` (walking up
  from the cwd), the user config (`$XDG_CONFIG_HOME/envcat/config.toml`);
- server: `--server`, `ENVCAT_SERVER`, `.envcat.toml`, the user config, then
  `http://localhost:8888`.

`.envcat.toml` belongs to a project and is meant to be committed: it holds no
secret, only `server`, `workspace`, `bundle` (the default BUNDLE),
`server_fingerprint` (a pin of the server's delivery key), `allow_vars`,
`approvers` (issue #20: passkeys whose assertion every delivery must carry),
`allow_workloads`, and `min_approvals` / `min_approvals_by_bundle` (how many
different listed people must have signed a delivery, whatever the server says).
Standard library only, so `--help` stays fast.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from envcat.cli.errors import UsageProblem
from envcat.core.wire import WORKSPACE_SLUG_RULE, is_workspace_slug

PROJECT_FILE = ".envcat.toml"
FINGERPRINT_RE = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
DEFAULT_SERVER = "http://localhost:8888"
PROJECT_KEYS = (
    "server",
    "workspace",
    "bundle",
    "server_fingerprint",
    "allow_vars",
    "approvers",
    "allow_workloads",
    "allow_grants",
    "min_approvals",
    "min_approvals_by_bundle",
)
LIST_KEYS = ("allow_vars", "approvers", "allow_workloads", "allow_grants")
NUMBER_KEYS = ("min_approvals", "min_approvals_by_bundle")
APPROVER_FIELDS = ("name", "credential_id", "public_key")
OPTIONAL_APPROVER_FIELDS = ("person",)
USER_KEYS = ("server", "workspace")
NO_WORKSPACE_HINT = (
    "no workspace: pass --workspace SLUG (or -w), set ENVCAT_WORKSPACE, run `envcat init` "
    'to write a .envcat.toml for this project, or set workspace = "SLUG" in {user_config}'
)


@dataclass(frozen=True)
class ConfigFile:
    """One parsed config file; absent settings are None."""

    path: Path
    server: str | None = None
    workspace: str | None = None
    bundle: str | None = None
    server_fingerprint: str | None = None
    allow_vars: tuple[str, ...] = field(default_factory=tuple)
    approvers: tuple[TrustedApprover, ...] = field(default_factory=tuple)
    # Bundles whose deliveries a workload's policy or a service token may approve although
    # `approvers` asks for a passkey (issue #20); only read when `approvers` is set.
    allow_workloads: tuple[str, ...] = field(default_factory=tuple)
    # How many different listed people must have signed each delivery (k-of-n, issue #20):
    # for every bundle, and per bundle name; the highest that applies wins.
    min_approvals: int = 1
    min_approvals_by_bundle: Mapping[str, int] = field(default_factory=dict)
    # Bundles whose deliveries under a device grant are accepted likewise (issue #17).
    allow_grants: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class TrustedApprover:
    """A passkey `.envcat.toml` trusts to approve (issue #20); the key is COSE or SPKI, base64.

    `person` says whose passkey it is: a person's passkeys count once toward
    `min_approvals`. Without it, the entry's name stands for the person.
    """

    name: str
    credential_id: str
    public_key: str
    person: str = ""

    @property
    def holder(self) -> str:
        """Who holds this passkey, for counting distinct approvers."""
        return self.person or self.name


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Return the user's EnvCat config directory (`$XDG_CONFIG_HOME/envcat`)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "envcat"


def user_config_path() -> Path:
    """Return the path of the user config file (it may not exist)."""
    return config_dir() / "config.toml"


def find_project_file(start: Path | None = None) -> Path | None:
    """Return the nearest `.envcat.toml` in `start` (default: cwd) or a parent, or None."""
    try:
        here = (start or Path.cwd()).absolute()
    except OSError:  # the cwd was removed under us
        return None
    for directory in (here, *here.parents):
        candidate = directory / PROJECT_FILE
        if candidate.is_file():
            return candidate
    return None


def read_config(path: Path, allowed: Sequence[str]) -> ConfigFile:
    """Parse one TOML config file; UsageProblem (exit 2) naming the file when it is malformed."""
    try:
        with path.open("rb") as stream:
            data = tomllib.load(stream)
    except tomllib.TOMLDecodeError as exc:
        raise UsageProblem(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise UsageProblem(f"cannot read {path}: {exc.strerror or exc}") from None
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise UsageProblem(
            f"{path}: unknown setting {unknown[0]!r} (expected one of: {', '.join(allowed)})"
        )
    values = {
        name: _text(path, data, name)
        for name in allowed
        if name not in LIST_KEYS and name not in NUMBER_KEYS
    }
    workspace = values.get("workspace")
    if workspace is not None and not is_workspace_slug(workspace):
        raise UsageProblem(f"{path}: workspace {workspace!r} is not a slug ({WORKSPACE_SLUG_RULE})")
    pin = values.get("server_fingerprint")
    if pin is not None and not is_fingerprint(pin):
        raise UsageProblem(f"{path}: server_fingerprint {pin!r} is not SHA256:<43 characters>")
    server = values.get("server")
    if server is not None and not is_web_url(server):
        raise UsageProblem(f"{path}: server {server!r} is not an http:// or https:// URL")
    listed = _approvers(path, data.get("approvers", []))
    minimum = _count(path, "min_approvals", data.get("min_approvals", 1))
    by_bundle = _counts(path, data.get("min_approvals_by_bundle", {}))
    _check_reachable(path, listed, max([minimum, *by_bundle.values()]))
    return ConfigFile(
        path=path,
        server=server.rstrip("/") if server else None,
        workspace=workspace,
        bundle=values.get("bundle"),
        server_fingerprint=values.get("server_fingerprint"),
        allow_vars=_names(path, data.get("allow_vars", [])),
        approvers=listed,
        allow_workloads=_bundles(path, data, "allow_workloads"),
        allow_grants=_bundles(path, data, "allow_grants"),
        min_approvals=minimum,
        min_approvals_by_bundle=by_bundle,
    )


def _text(path: Path, data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise UsageProblem(f"{path}: {name} must be a non-empty string")
    return value.strip()


def _names(path: Path, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise UsageProblem(f"{path}: allow_vars must be a list of variable names")
    return tuple(value)


def _bundles(path: Path, data: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(
        isinstance(item, str) and item.strip() for item in value
    ):
        raise UsageProblem(f"{path}: {name} must be a list of bundle names")
    return tuple(item.strip() for item in value)


def _count(path: Path, name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageProblem(f"{path}: {name} must be a whole number of approvals, 1 or more")
    return value


def _counts(path: Path, value: object) -> dict[str, int]:
    """`min_approvals_by_bundle = { "production/api" = 2, … }`."""
    if not isinstance(value, dict) or not all(
        isinstance(bundle, str) and bundle.strip() for bundle in value
    ):
        raise UsageProblem(
            f"{path}: min_approvals_by_bundle must be a table of bundle names and numbers"
        )
    return {
        bundle.strip(): _count(path, f"min_approvals_by_bundle[{bundle!r}]", count)
        for bundle, count in value.items()
    }


def _check_reachable(path: Path, listed: Sequence[TrustedApprover], most: int) -> None:
    """A k no listed set of people can reach would refuse every delivery: say so now."""
    people = len({approver.holder for approver in listed})
    if most > 1 and people < most:
        raise UsageProblem(
            f"{path}: {most} approvals are required but approvers lists "
            f"{people} {'person' if people == 1 else 'people'}; list more passkeys (with "
            "`person` naming whose each is) or lower min_approvals"
        )


def _approvers(path: Path, value: object) -> tuple[TrustedApprover, ...]:
    """`approvers = [{ name, credential_id, public_key, person? }, …]`; each key must parse."""
    shape = "approvers must be a list of { name, credential_id, public_key, person (optional) }"
    if not isinstance(value, list):
        raise UsageProblem(f"{path}: {shape}")
    listed: list[TrustedApprover] = []
    for item in value:
        if not (
            isinstance(item, dict)
            and set(APPROVER_FIELDS) <= set(item) <= {*APPROVER_FIELDS, *OPTIONAL_APPROVER_FIELDS}
        ):
            raise UsageProblem(f"{path}: {shape}")
        if not all(isinstance(item[name], str) and item[name].strip() for name in item):
            raise UsageProblem(f"{path}: {shape} (non-empty strings)")
        approver = TrustedApprover(**{name: item[name].strip() for name in item})
        from envcat.core.passkeys import PasskeyError, b64decode, load_public_key

        try:
            load_public_key(b64decode(approver.public_key))
        except PasskeyError as exc:
            raise UsageProblem(
                f"{path}: the public_key of approver {approver.name!r} is unusable: {exc}"
            ) from None
        listed.append(approver)
    return tuple(listed)


def load_project() -> ConfigFile | None:
    """Return the nearest `.envcat.toml`, parsed, or None."""
    path = find_project_file()
    if path is None:
        return None
    _check_owner(path)
    return read_config(path, PROJECT_KEYS)


def _check_owner(path: Path) -> None:
    """Refuse a project file another user owns (as git refuses such repositories).

    It chooses the server and the names allowed; a `.envcat.toml` planted in a
    shared parent such as /tmp must not decide that for us.
    """
    if not hasattr(os, "getuid"):
        return
    owner = path.stat().st_uid
    if owner not in (os.getuid(), 0):
        raise UsageProblem(
            f"{path} belongs to another user (uid {owner}); refusing to use it. "
            "Remove it, or run envcat from a directory without it above"
        )


def load_user() -> ConfigFile | None:
    """Return the user config, parsed, or None when it does not exist."""
    path = user_config_path()
    return read_config(path, USER_KEYS) if path.is_file() else None


@dataclass(frozen=True)
class Settings:
    """The resolved settings of one run."""

    server: str
    workspace: str | None
    bundle: str | None
    project: ConfigFile | None

    def require_workspace(self) -> str:
        """Return the workspace slug or raise UsageProblem saying how to set one."""
        if self.workspace is None:
            raise UsageProblem(NO_WORKSPACE_HINT.format(user_config=user_config_path()))
        return self.workspace

    @property
    def project_pin(self) -> str | None:
        """The `.envcat.toml` pin, if it applies to this run's server."""
        project = self.project
        if project is None or project.server_fingerprint is None:
            return None
        if project.server is not None and origin(project.server) != origin(self.server):
            return None  # the pin is for the project's server, not one named on the command line
        return project.server_fingerprint

    @property
    def approvers(self) -> tuple[TrustedApprover, ...]:
        """Passkeys the project trusts to approve; when any, every delivery needs one's proof."""
        return self.project.approvers if self.project is not None else ()

    def min_approvals(self, bundle: str) -> int:
        """The number of different listed people who must have signed a delivery of `bundle`."""
        project = self.project
        if project is None:
            return 1
        return max(project.min_approvals, project.min_approvals_by_bundle.get(bundle, 1))

    def allowed_unattended(self, allow_list: str) -> tuple[str, ...]:
        """Bundles of `.envcat.toml`'s `allow_workloads` or `allow_grants` (issue #17): the
        deliveries no person approved just now that a project with approvers still accepts."""
        if self.project is None:
            return ()
        return tuple(getattr(self.project, allow_list))

    @property
    def allow_vars(self) -> tuple[str, ...]:
        """Dangerous names the project allows."""
        return self.project.allow_vars if self.project is not None else ()


def resolve(
    *, server: str | None, workspace: str | None, bundle: str | None, environ: Mapping[str, str]
) -> Settings:
    """Resolve server, workspace and bundle: flags, environment, project file, user config."""
    project = load_project()
    user = load_user()
    files = [f for f in (project, user) if f is not None]
    chosen_workspace = (
        workspace
        or environ.get("ENVCAT_WORKSPACE")
        or next((f.workspace for f in files if f.workspace), None)
    )
    if chosen_workspace is not None and not is_workspace_slug(chosen_workspace):
        raise UsageProblem(f"workspace {chosen_workspace!r} is not a slug ({WORKSPACE_SLUG_RULE})")
    chosen_server = (
        server
        or environ.get("ENVCAT_SERVER")
        or next((f.server for f in files if f.server), None)
        or DEFAULT_SERVER
    )
    if not is_web_url(chosen_server):
        raise UsageProblem(f"server {chosen_server!r} is not an http:// or https:// URL")
    default_bundle = project.bundle if project is not None else None
    return Settings(
        server=chosen_server.rstrip("/"),
        workspace=chosen_workspace,
        bundle=bundle or default_bundle,
        project=project,
    )


def resolve_for_command(
    server: str | None, workspace: str | None, bundle: str | None, *, insecure_http: bool, warn: Any
) -> Settings:
    """Resolve as `resolve` does from os.environ, require a workspace, check the transport."""
    settings = resolve(server=server, workspace=workspace, bundle=bundle, environ=os.environ)
    settings.require_workspace()
    check_transport(settings.server, insecure_http=insecure_http, warn=warn)
    return settings


def is_fingerprint(value: str) -> bool:
    """True for a `SHA256:<43 base64 characters>` key fingerprint."""
    return FINGERPRINT_RE.fullmatch(value) is not None


def is_web_url(value: str) -> bool:
    """True for an http:// or https:// URL with a host."""
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # an unclosed [ or a port that is not a number
        return False


def origin(server: str) -> str:
    """Return `scheme://host[:port]` of a server URL, lower-case, default port left out."""
    parts = urlsplit(server)
    host = (parts.hostname or "").lower()
    shown = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port is not None and parts.port != default else ""
    return f"{parts.scheme}://{shown}{port}"


def is_loopback(server: str) -> bool:
    """True when the server's host is localhost, 127.0.0.0/8 or ::1."""
    host = (urlsplit(server).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport(server: str, *, insecure_http: bool, warn: Any) -> None:
    """Refuse plain http:// to anything but loopback unless --insecure-http (then warn)."""
    if urlsplit(server).scheme != "http" or is_loopback(server):
        return
    if not insecure_http:
        raise UsageProblem(
            f"refusing plain http:// to {origin(server)}: anyone on the network path could read "
            "the request and tamper with it. Use https://, or pass --insecure-http if you "
            "really mean it"
        )
    warn(f"Warning: --insecure-http: talking to {origin(server)} without TLS.")
