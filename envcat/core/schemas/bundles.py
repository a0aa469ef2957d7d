"""Wire models of the bundle and key-library endpoints (DESIGN §5).

Request models are strict (no type coercion) and refuse unknown fields; query
models are lenient (query strings are text) and ignore unknown parameters, so a
forged `?tenant_id=` is simply not read. Validation messages never quote the
rejected input: it may be a secret.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, model_validator

from envcat.core.wire import KEY_NAME_RE

KEY_NAME_MAX = 200
BUNDLE_NAME_MAX = 200
MAX_VALUE_BYTES = 64 * 1024
MAX_DESCRIPTION = 2000
MAX_TAGS = 32
MAX_TAG = 64
MAX_POSITION = 1_000_000
MAX_IMPORT_CONTENT = 1024 * 1024

BUNDLE_NAME_RE = re.compile(r"[A-Za-z0-9._/-]+")


def is_valid_key_name(name: str) -> bool:
    """True for an environment-variable name `^[A-Za-z_][A-Za-z0-9_]*$` of ≤ 200 chars."""
    return len(name) <= KEY_NAME_MAX and KEY_NAME_RE.fullmatch(name) is not None


def is_valid_bundle_name(name: str) -> bool:
    """True for 1-200 chars of [A-Za-z0-9._/-], no leading/trailing "/" and no "//"."""
    return (
        0 < len(name) <= BUNDLE_NAME_MAX
        and BUNDLE_NAME_RE.fullmatch(name) is not None
        and not name.startswith("/")
        and not name.endswith("/")
        and "//" not in name
    )


def value_problem(value: str) -> str | None:
    """Why `value` cannot be stored as a key value, or None when it can."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "must be valid Unicode text"
    if size > MAX_VALUE_BYTES:
        return f"must be at most {MAX_VALUE_BYTES} bytes of UTF-8"
    if "\x00" in value:
        return "must not contain a NUL character (no environment variable can hold one)"
    return None


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as descriptive text, or None when it can."""
    if "\x00" in value:
        return "must not contain a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text"
    return None


def _key_name(name: str) -> str:
    if not is_valid_key_name(name):
        raise ValueError(
            f"must match ^{KEY_NAME_RE.pattern}$ and be at most {KEY_NAME_MAX} characters"
        )
    return name


def _bundle_name(name: str) -> str:
    if not is_valid_bundle_name(name):
        raise ValueError(
            f"must be 1-{BUNDLE_NAME_MAX} characters of A-Z a-z 0-9 . _ / -, "
            'without a leading or trailing "/" or "//"'
        )
    return name


def _value(value: str) -> str:
    if problem := value_problem(value):
        raise ValueError(problem)
    return value


def _text(value: str) -> str:
    if problem := text_problem(value):
        raise ValueError(problem)
    return value


def _tags(tags: list[str]) -> list[str]:
    cleaned: list[str] = []
    for tag in (t.strip() for t in tags):
        if not tag:
            raise ValueError("tags must not be empty")
        if tag not in cleaned:
            cleaned.append(tag)
    return cleaned


KeyName = Annotated[str, AfterValidator(_key_name)]
BundleName = Annotated[str, AfterValidator(_bundle_name)]
KeyValue = Annotated[str, AfterValidator(_value)]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION), AfterValidator(_text)]
Tag = Annotated[str, Field(max_length=MAX_TAG), AfterValidator(_text)]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS), AfterValidator(_tags)]
ObjectId = Annotated[str, Field(min_length=1, max_length=64)]
Position = Annotated[int, Field(ge=0, le=MAX_POSITION)]
Search = Annotated[str, Field(max_length=200)]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _Patch(_Body):
    """A partial update: omit a field to keep it; `null` is refused, not "clear"."""

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = sorted(str(k) for k, v in data.items() if v is None)
            if nulls:
                raise ValueError(f"fields may be omitted but not null: {', '.join(nulls)}")
        return data


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _empty_is_absent(cls, data: Any) -> Any:
        # `?cursor=&action=` from a form means "not given".
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != ""}
        return data


# ---- bundles -------------------------------------------------------------------------


class BundleCreate(_Body):
    """POST /bundles."""

    name: BundleName
    description: Description = ""
    tags: Tags = Field(default_factory=list)


class BundleUpdate(_Patch):
    """PATCH /bundles/{id}."""

    name: BundleName | None = None
    description: Description | None = None
    tags: Tags | None = None


class AttachKey(_Body):
    """Attach an existing library key to a bundle, optionally exported under `alias`."""

    key_id: ObjectId
    alias: KeyName | None = None  # the variable name the bundle exports it as
    required: bool = False
    position: Position | None = None


class CreateAndAttachKey(_Body):
    """Create a key in the library and attach it to a bundle."""

    name: KeyName
    value: KeyValue
    is_secret: bool = True
    description: Description = ""
    required: bool = False
    position: Position | None = None
    dangerous_ok: bool = False  # an admin's yes to a name like LD_PRELOAD (see core.wire)
    alias: KeyName | None = None  # the variable name the bundle exports it as


class BundleKeyAdd(RootModel[AttachKey | CreateAndAttachKey]):
    """POST /bundles/{id}/keys: `{key_id, …}` attaches, `{name, value, …}` creates."""


class ImportRequest(_Body):
    """POST /bundles/{id}/import."""

    format: Literal["dotenv", "json"]
    content: Annotated[str, Field(max_length=MAX_IMPORT_CONTENT)]
    overwrite: bool = False
    is_secret: bool = True  # for the keys the import creates; existing keys keep theirs
    dangerous_ok: bool = False  # lets the import create names like LD_PRELOAD (core.wire)
    # issue #15: when given, a key the import creates is secret exactly when named here
    # (the preview's per-key choice); `is_secret` is then ignored.
    secret_names: (
        Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=1000)] | None
    ) = None


class ImportPreviewKey(BaseModel):
    """One name of a previewed import: never its value, nor the stored one.

    `status`: `new` (to this bundle; `in_library` when a library key with the same
    value is attached), `changed` (differs from the stored value, compared server-side),
    `unchanged`, or `skipped` (another key is exported under the name here).
    `is_secret`: the existing key's kind, or the default for a new one. `applies`:
    whether confirming with the same options writes it (`changed` needs `overwrite`).
    """

    name: str
    status: Literal["new", "changed", "unchanged", "skipped"]
    in_library: bool
    is_secret: bool
    applies: bool


class ImportPreview(BaseModel):
    """POST /bundles/{id}/import/preview: nothing is written; `skipped` lists invalid names."""

    keys: list[ImportPreviewKey]
    skipped: list[str]


BULK_MAX = 500


class BundleKeysBulk(_Body):
    """POST /bundles/{id}/bulk-keys: attach or detach many library keys at once, all or none."""

    action: Literal["attach", "detach"]
    key_ids: Annotated[list[ObjectId], Field(min_length=1, max_length=BULK_MAX)]


PAGE_MAX = 500  # rows per page of GET /bundles and GET /keys at most


class _PageQuery(_Query):
    """`q`: case-insensitive name substring; `limit`: rows per page (none: all of them);
    `cursor`: the `next_cursor` of the previous page (issue #15)."""

    q: Search = ""
    limit: Annotated[int, Field(ge=1, le=PAGE_MAX)] | None = None
    cursor: Annotated[str, Field(max_length=400)] | None = None


class BundleListQuery(_PageQuery):
    """GET /bundles?q=&limit=&cursor= (case-insensitive substring of the name)."""


class ExportQuery(_Query):
    """GET /bundles/{id}/export?format=."""

    format: Literal["dotenv", "json"] = "dotenv"


class BundleSummary(BaseModel):
    """One row of GET /bundles."""

    id: str
    name: str
    description: str
    tags: list[str]
    key_count: int
    created_at: datetime
    updated_at: datetime


class BundleList(BaseModel):
    """GET /bundles: one page in name order; `total` counts every match of `q`, and
    `next_cursor` (null on the last page) is passed back as `cursor`."""

    bundles: list[BundleSummary]
    total: int = 0
    next_cursor: str | None = None


class BundleKeyOut(BaseModel):
    """A key as attached to a bundle; `value` is null for secret keys.

    `name` is the library name, `alias` the name the bundle exports it as (or null),
    `export_name` the one a delivery, an export and the approval page use.
    """

    id: str
    name: str
    alias: str | None = None
    export_name: str
    is_secret: bool
    required: bool
    position: int
    description: str
    value: str | None


class BundleDetail(BaseModel):
    """A bundle with its keys in position order."""

    id: str
    name: str
    description: str
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    keys: list[BundleKeyOut]


class ImportResult(BaseModel):
    """What an import did, by name; each name is in exactly one list."""

    created: list[str]
    updated: list[str]
    unchanged: list[str]
    skipped: list[str]


# ---- the key library -----------------------------------------------------------------


class KeyCreate(_Body):
    """POST /keys."""

    name: KeyName
    value: KeyValue
    is_secret: bool = True
    description: Description = ""
    dangerous_ok: bool = False  # an admin's yes to a name like LD_PRELOAD (see core.wire)


class KeyUpdate(_Patch):
    """PATCH /keys/{id}."""

    name: KeyName | None = None
    value: KeyValue | None = None
    is_secret: bool | None = None
    description: Description | None = None
    dangerous_ok: bool | None = None


class KeyListQuery(_PageQuery):
    """GET /keys?q=&limit=&cursor=."""


class KeyQuery(_Query):
    """GET /keys/{id}?reveal=true."""

    reveal: bool = False


class KeyOut(BaseModel):
    """A library key; `value` is null for a secret key unless revealed."""

    id: str
    name: str
    is_secret: bool
    description: str
    value: str | None
    bundle_count: int
    dangerous_ok: bool = False
    created_at: datetime
    updated_at: datetime


class KeyList(BaseModel):
    """GET /keys: one page in name order, as GET /bundles."""

    keys: list[KeyOut]
    total: int = 0
    next_cursor: str | None = None


# ---- key versions (issue #19) --------------------------------------------------------


class KeyVersionQuery(_Query):
    """GET /keys/{id}/versions/{n}?reveal=true."""

    reveal: bool = False


class Rollback(_Body):
    """POST /keys/{id}/rollback: the version to make current again."""

    version: Annotated[int, Field(ge=1, le=2**31 - 1)]


class KeyVersionOut(BaseModel):
    """One kept value of a key: when, by whom, how many bytes; `value` only when revealed."""

    version: int
    created_at: datetime
    created_by: str | None
    author_email: str | None
    size: int
    import_id: str | None
    is_current: bool
    value: str | None = None


class KeyVersionList(BaseModel):
    """GET /keys/{id}/versions, newest first (never a value)."""

    key_id: str
    name: str
    versions: list[KeyVersionOut]


class ImportUndone(BaseModel):
    """POST /bundles/{id}/imports/{import_id}/undo: what the undo did, by name."""

    import_id: str
    restored: list[str]  # keys whose value before the import is current again
    deleted: list[str]  # keys the import created
    detached: int  # library keys the import had only attached to this bundle
