"""mkdocs hook: the CLI, API and configuration references, generated at build time.

A page asks for a reference with a marker line (`<!-- generated: cli -->`,
`<!-- generated: api -->`, `<!-- generated: configuration -->`). The text comes
from the code itself (click's help of every command, the api's OpenAPI
document, the Settings model's fields), so the documentation cannot drift from
what the program does. A setting without a description fails the build.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

import click
from mkdocs.exceptions import PluginError
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

HELP_WIDTH = 96
_MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)
_generated: dict[str, str] = {}
NOTHING = "\N{EN DASH}"  # an empty table cell


# ---------------------------------------------------------------- CLI reference


def _walk(
    command: click.Command, ctx: click.Context, depth: int
) -> Iterator[tuple[int, click.Command, click.Context]]:
    yield depth, command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            child = command.get_command(ctx, name)
            if child is None or child.hidden:
                continue
            child_ctx = _context(child, name, ctx)
            yield from _walk(child, child_ctx, depth + 1)


def _context(command: click.Command, name: str, parent: click.Context | None) -> click.Context:
    # make_context applies the command's context_settings (e.g. `-h` for help);
    # resilient parsing: no argument is required just to render help.
    return command.make_context(
        name, [], parent=parent, resilient_parsing=True, terminal_width=HELP_WIDTH
    )


def render_cli() -> str:
    """Every command's `--help`, walked from the `envcat` group (server group included)."""
    from envcat.cli.main import cli

    root = _context(cli, "envcat", None)
    sections = []
    for depth, command, ctx in _walk(cli, root, 0):
        heading = "#" * min(depth + 2, 4)
        help_text = command.get_help(ctx)
        sections.append(f"{heading} `{ctx.command_path}`\n\n```text\n{help_text}\n```\n")
    return "\n".join(sections)


# ---------------------------------------------------------------- API reference


def _build_spec() -> dict[str, Any]:
    from envcat.api import create_app
    from envcat.api.openapi import build_spec
    from envcat.core.keys import new_kms_key, new_shared_secret
    from envcat.core.settings import Settings

    # Throwaway settings: building the app connects to nothing.
    settings = Settings(
        database_url="sqlite://",
        redis_url="redis://127.0.0.1:6379/15",
        bundle_kms_key=SecretStr(new_kms_key()),
        bff_shared_secret=SecretStr(new_shared_secret()),
    )
    create_app(settings)
    return build_spec()


def _schema_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _link(name: str) -> str:
    return f"[`{name}`](#{name.lower()})"


def _type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return _link(_schema_name(schema["$ref"]))
    if "anyOf" in schema:
        return " or ".join(_type_of(option) for option in schema["anyOf"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " \\| ".join(f'`"{value}"`' for value in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type_of(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        return f"object of {_type_of(extra)}" if isinstance(extra, dict) else "object"
    return str(kind)


def _limits(schema: dict[str, Any]) -> str:
    words = {
        "minLength": "≥ {} chars",
        "maxLength": "≤ {} chars",
        "minimum": "≥ {}",
        "maximum": "≤ {}",
        "maxItems": "≤ {} items",
        "pattern": "matches `{}`",
    }
    return ", ".join(text.format(schema[key]) for key, text in words.items() if key in schema)


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _schema_table(name: str, schema: dict[str, Any]) -> str:
    lines = [f"### {name}\n"]
    if description := schema.get("description"):
        lines.append(f"{_cell(description)}\n")
    properties = schema.get("properties", {})
    if not properties:
        lines.append(f"Type: {_type_of(schema)}.\n")
        return "\n".join(lines)
    required = set(schema.get("required", []))
    lines += ["| field | type | required | notes |", "|---|---|---|---|"]
    for field, prop in properties.items():
        notes = [n for n in (prop.get("description", ""), _limits(prop)) if n]
        if "default" in prop and field not in required:
            notes.append(f"default `{json.dumps(prop['default'])}`")
        mark = "yes" if field in required else ""
        lines.append(f"| `{field}` | {_type_of(prop)} | {mark} | {_cell('; '.join(notes))} |")
    return "\n".join(lines) + "\n"


def _auth_of(path: str, operation: dict[str, Any]) -> str:
    schemes = {name for item in operation.get("security", []) for name in item}
    if "bffSignature" in schemes:
        who = "the bff's own identity" if "/internal/" in path else "a user in a tenant"
        return f"HMAC signature of the bff, for {who}"
    if "pollToken" in schemes:
        return "`X-Poll-Token` of the request (given to the CLI only)"
    if "svix" in schemes:
        return "Svix signature of Clerk"
    return "none (public)"


def _operation(method: str, path: str, operation: dict[str, Any]) -> str:
    lines = [f"### `{method.upper()} {path}`\n", f"{operation['summary']}.\n"]
    lines.append(f"**Authentication:** {_auth_of(path, operation)}.\n")
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | type | required |", "|---|---|---|---|"]
        for p in parameters:
            mark = "yes" if p.get("required") else ""
            lines.append(f"| `{p['name']}` | {p['in']} | {_type_of(p['schema'])} | {mark} |")
        lines.append("")
    if body := operation.get("requestBody"):
        lines.append(f"**Body:** {_type_of(body['content']['application/json']['schema'])}\n")
    lines += ["| status | body |", "|---|---|"]
    for status, response in sorted(operation["responses"].items()):
        content = response.get("content", {}).get("application/json")
        lines.append(f"| {status} | {_type_of(content['schema']) if content else NOTHING} |")
    return "\n".join(lines) + "\n"


def render_api() -> str:
    """Every operation and schema of the api's OpenAPI document."""
    spec = _build_spec()
    by_tag: dict[str, list[str]] = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            tag = operation.get("tags", ["other"])[0]
            by_tag.setdefault(tag, []).append(_operation(method, path, operation))
    sections = [f"OpenAPI {spec['openapi']}, EnvCat {spec['info']['version']}.\n"]
    for tag, operations in by_tag.items():
        sections.append(f"## {tag.replace('_', ' ').capitalize()}\n")
        sections.extend(operations)
    sections.append("## Schemas\n")
    schemas = spec["components"]["schemas"]
    sections.extend(_schema_table(name, schemas[name]) for name in sorted(schemas))
    return "\n".join(sections)


# ------------------------------------------------------- configuration reference


def _annotation_text(annotation: Any) -> str:
    if annotation is SecretStr:
        return "secret"
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(_annotation_text(option) for option in options)
    names = {str: "text", int: "integer", bool: "boolean", float: "number"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(field: FieldInfo) -> str:
    low = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in field.metadata if hasattr(m, "le")), None)
    if low is not None and high is not None:
        return f" ({low} to {high})"
    return f" (≥ {low})" if low is not None else ""


def _default_text(field: FieldInfo) -> str:
    if field.default is PydanticUndefined:
        return "**required**"
    if field.default is None or field.default == "":
        return NOTHING
    if isinstance(field.default, bool):
        return f"`{str(field.default).lower()}`"
    return f"`{field.default}`"


def render_configuration() -> str:
    """One row per Settings field: variable, type, default, description."""
    from envcat.core.settings import Settings

    rows = ["| variable | type | default | description |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise PluginError(f"Settings.{name} has no description (add a docstring under it)")
        kind = _annotation_text(field.annotation) + _bounds(field)
        description = _cell(field.description)
        rows.append(f"| `{name.upper()}` | {kind} | {_default_text(field)} | {description} |")
    return "\n".join(rows) + "\n"


# ------------------------------------------------------------------ mkdocs hooks

RENDERERS: dict[str, Callable[[], str]] = {
    "cli": render_cli,
    "api": render_api,
    "configuration": render_configuration,
}


def on_pre_build(config: Any, **_: Any) -> None:
    """Generate afresh for every build (mkdocs serve rebuilds on code changes)."""
    _generated.clear()


def _render(name: str) -> str:
    if name not in RENDERERS:
        raise PluginError(f"unknown generated section {name!r}; known: {sorted(RENDERERS)}")
    if name not in _generated:
        _generated[name] = RENDERERS[name]()
    return _generated[name]


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace each `<!-- generated: NAME -->` line with the generated text."""
    return _MARKER.sub(lambda match: _render(match.group(1)), markdown)
