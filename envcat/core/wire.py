"""Wire rules every layer needs, standard library only (the CLI installs without pydantic).

One definition each (issue #13): what a request id and an id in a path look like, the
header names, the long-poll cap, cleaning a caller's request id, the JSON error body,
the workspace slug, and which variable names change how programs load or run (the CLI
refuses them unless allowed one by one; the api refuses them at write time unless an
admin marks the key `dangerous_ok`). The cli, bff, api, services and workers import
these; none keeps its own copy, so the two ends of a wire cannot drift apart.
"""

from __future__ import annotations

import re

# An access request's id. The server mints `secrets.token_urlsafe(16)` (22 characters,
# `services.access_requests.store.new_request`); 16-128 leaves room for a longer id
# without a new rule. The api, the audit index and the approval page use this one.
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
# Any id placed in an api path (UUIDs, urlsafe tokens, request ids): URL-safe, so no
# `/`, `?`, `#`, `%` or dot can change the path. Looser than REQUEST_ID_RE on purpose:
# the bff's proxy and pages and the CLI only need an id to be safe in a path, and leave
# the api to answer an id of another shape with its clean 404.
PATH_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")

# Header names on the wire (names, not secrets).
POLL_TOKEN_HEADER = "X-Poll-Token"  # noqa: S105  # the CLI's proof on wait and cancel
REQUEST_ID_HEADER = "X-Request-Id"  # carried CLI/browser → bff → api → task, for logs
# The caller's request id is adopted only when short, printable ASCII: it goes into
# logs and back out in a response header.
MAX_REQUEST_ID_LENGTH = 64
# The longest wait the api holds a long poll (`GET /requests/{id}/wait?timeout=`); the
# bff's read timeout and the blocking Redis connection must outlive it.
MAX_WAIT_SECONDS = 30


def clean_request_id(value: object) -> str | None:
    """The caller's request id when it is 1-64 printable ASCII characters, else None."""
    if (
        isinstance(value, str)
        and 0 < len(value) <= MAX_REQUEST_ID_LENGTH
        and value.isprintable()
        and value.isascii()
    ):
        return value
    return None


def error_body(code: str, message: str, details: object = None) -> dict[str, object]:
    """The one JSON error shape (DESIGN §5): `{"error", "message", "details"?}`."""
    body: dict[str, object] = {"error": code, "message": message}
    if details is not None:
        body["details"] = details
    return body


def error_code(name: str) -> str:
    """An HTTP reason phrase as an error code: "Method Not Allowed" → method_not_allowed."""
    return name.lower().replace(" ", "_").replace("-", "_")


# A key's (environment variable's) name: the api stores no other (core.schemas.bundles adds
# the length cap), and the CLI writes no other into a shell, dotenv or docker file.
KEY_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
WORKSPACE_SLUG_RE = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?")
WORKSPACE_SLUG_RULE = "lower-case letters, digits, '-' and '_', 1-64 characters"
SERVER_KEY_PATH = "/api/v1/server-key"
# Who approved a machine's delivery, as the envelope's `approver_id` names it (issue #16):
# a workload's trust policy or a service token, never a person.
WORKLOAD_APPROVER_PREFIX = "workload-policy:"
SERVICE_TOKEN_APPROVER_PREFIX = "service-token:"  # noqa: S105  # a prefix, not a secret
# issue #16: an admin service token acts as this caller (`token:<id>`) in the audit log
TOKEN_ACTOR_PREFIX = "token:"  # noqa: S105  # a prefix, not a secret
MACHINE_APPROVER_PREFIXES = (WORKLOAD_APPROVER_PREFIX, SERVICE_TOKEN_APPROVER_PREFIX)
# A delivery under a device grant (issue #17): a person approved once, for some hours.
GRANT_APPROVER_PREFIX = "grant:"
# Which `.envcat.toml` list lets a project that lists passkey approvers accept each kind of
# delivery no person approved just now (bundle names).
UNATTENDED_ALLOW_LISTS = (
    (MACHINE_APPROVER_PREFIXES, "allow_workloads"),
    ((GRANT_APPROVER_PREFIX,), "allow_grants"),
)

# Exact names that make a shell, the dynamic loader or an interpreter run code,
# or change which program runs (see docs/security.md, "Dangerous variable names").
DANGEROUS_NAMES = frozenset(
    {
        "BASH_ENV",
        "ENV",
        "PROMPT_COMMAND",
        "PS1",
        "PS2",
        "PS4",
        "IFS",
        "SHELLOPTS",
        "BASHOPTS",
        "CDPATH",
        "PATH",
        "NODE_OPTIONS",
        "NODE_PATH",
        "PERL5OPT",
        "PERL5LIB",
        "PERLLIB",
        "RUBYOPT",
        "RUBYLIB",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "CLASSPATH",
        "GCONV_PATH",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "RES_OPTIONS",
        "TMPDIR",
        "EDITOR",
        "VISUAL",
        "PAGER",
        "BROWSER",
        "SSH_ASKPASS",
        "SUDO_ASKPASS",
        "ZDOTDIR",
        "XDG_CONFIG_HOME",
        "HOME",
        "SHELL",
    }
)
# Prefixes: the dynamic loaders (LD_PRELOAD, DYLD_INSERT_LIBRARIES), Python's
# start-up hooks (PYTHONPATH, PYTHONSTARTUP, PYTHONHOME), git's exec hooks
# (GIT_SSH_COMMAND, GIT_EXEC_PATH, GIT_CONFIG_*), and BASH_FUNC_* exported functions.
DANGEROUS_PREFIXES = ("LD_", "DYLD_", "PYTHON", "GIT_", "BASH_FUNC_", "LUA_PATH", "LUA_CPATH")


def is_dangerous_name(name: str) -> bool:
    """True when a variable of this name can make a program load or run other code."""
    upper = name.upper()
    return upper in DANGEROUS_NAMES or upper.startswith(DANGEROUS_PREFIXES)


def slugify(text: str) -> str:
    """Return a workspace slug made from a name or an email address (may be empty)."""
    base = text.split("@", 1)[0] if "@" in text else text
    slug = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-_")
    return slug[:48].strip("-_")


def is_workspace_slug(value: str) -> bool:
    """True when `value` is a well-formed workspace slug."""
    return WORKSPACE_SLUG_RE.fullmatch(value) is not None


def is_machine_approver(approver_id: str) -> bool:
    """True when a delivery was approved by a workload's policy or a service token."""
    return approver_id.startswith(MACHINE_APPROVER_PREFIXES)


def unattended_allow_list(approver_id: str) -> str | None:
    """The `.envcat.toml` list naming bundles whose unattended deliveries of this kind a
    project with passkey approvers accepts (`allow_workloads`, `allow_grants`), else None."""
    return next(
        (name for kinds, name in UNATTENDED_ALLOW_LISTS if approver_id.startswith(kinds)), None
    )
