"""Click command classes: the top-level group that loads `server` lazily, commands
that record their argv for the request context, and `run`'s split at `--`."""

from __future__ import annotations

import importlib

import click

from envcat.cli.errors import CliError

SERVER_EXTRA_HINT = "envcat server needs the server extra: pip install 'envcat[server]'"
ARGV = "envcat.argv"
CHILD = "envcat.child"
# name -> (module, attribute, short help shown without importing the module)
LAZY_COMMANDS = {
    "server": (
        "envcat.ops.commands",
        "server",
        "Run and administer an EnvCat server (needs the server extra).",
    ),
}


class EnvcatGroup(click.Group):
    """The top-level group; loads the `server` subgroup only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            return _load_lazy_command(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List commands with static help for lazy ones, so `--help` imports nothing."""
        rows = []
        for name in self.list_commands(ctx):
            if name in LAZY_COMMANDS:
                rows.append((name, LAZY_COMMANDS[name][2]))
            elif not self.commands[name].hidden:
                rows.append((name, self.commands[name].get_short_help_str(limit=60)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _load_lazy_command(name: str) -> click.Command:
    module_name, attribute, help_text = LAZY_COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return _missing_extra_command(name, help_text)
    command = getattr(module, attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{module_name}.{attribute} is not a click command")
    return command


def _missing_extra_command(name: str, help_text: str) -> click.Command:
    def explain() -> None:
        raise CliError(SERVER_EXTRA_HINT)

    return click.Command(
        name,
        callback=explain,
        help=help_text,
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


class RecordingCommand(click.Command):
    """A command that keeps its own argv, sent to the approver as the request context."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGV] = [*ctx.command_path.split(" "), *args]
        return super().parse_args(ctx, args)


class RunCommand(RecordingCommand):
    """`run`: everything after the first `--` is the child command, untouched by click."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            split = args.index("--")
            ctx.meta[CHILD] = args[split + 1 :]
            args = args[:split]
        else:
            ctx.meta[CHILD] = []
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [*super().collect_usage_pieces(ctx), "-- COMMAND [ARGS]..."]
