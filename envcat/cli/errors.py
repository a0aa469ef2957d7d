"""Errors the CLI shows to the person, each carrying the exit code of DESIGN.md §8.

Every class is a `click.ClickException`, so click prints one line on stderr
(never a traceback) and exits with the class's `exit_code`.
"""

from __future__ import annotations

import contextlib
from typing import IO, Any

import click

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_EXPIRED = 3
EXIT_DENIED = 4
EXIT_UNREACHABLE = 5
EXIT_UNTRUSTED = 6
EXIT_NOT_EXECUTABLE = 126
EXIT_COMMAND_NOT_FOUND = 127
EXIT_CANCELLED = 130


class CliError(click.ClickException):
    """A failure the person can act on; exit code 1."""

    exit_code = EXIT_ERROR


class RequestExpired(CliError):
    """The request expired, was already delivered, or the wait timed out."""

    exit_code = EXIT_EXPIRED


class RequestDenied(CliError):
    """The approver refused the request."""

    exit_code = EXIT_DENIED


class ServerUnreachable(CliError):
    """The EnvCat server could not be reached over the network."""

    exit_code = EXIT_UNREACHABLE


class UsageProblem(CliError):
    """A setting is missing or malformed (no workspace, a bad config file); exit code 2."""

    exit_code = EXIT_USAGE


class Untrusted(CliError):
    """The delivery failed verification or carries a refused name: nothing is printed or run."""

    exit_code = EXIT_UNTRUSTED


class CommandNotFound(CliError):
    """`envcat run` was given a command that is not on PATH (as a shell: 127)."""

    exit_code = EXIT_COMMAND_NOT_FOUND


class CommandNotExecutable(CliError):
    """`envcat run` found the command but could not execute it (as a shell: 126)."""

    exit_code = EXIT_NOT_EXECUTABLE


class Cancelled(CliError):
    """The person pressed Ctrl-C; shown as a plain "Cancelled." line."""

    exit_code = EXIT_CANCELLED

    def __init__(self) -> None:
        super().__init__("Cancelled.")

    def show(self, file: IO[Any] | None = None) -> None:
        """Print "Cancelled." without click's "Error:" prefix."""
        click.echo(self.message, err=True, file=file)


class Terminated(CliError):
    """SIGTERM or SIGHUP while waiting: the request was cancelled; exit code 128 + signal."""

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the line if stderr still exists (a closed terminal sends SIGHUP)."""
        with contextlib.suppress(OSError, ValueError):
            click.echo(self.message, err=True, file=file)


def terminated(signal_number: int, name: str) -> Terminated:
    """Return the error for a cancelling signal, exiting 128 + its number as shells do."""
    kind = type(f"Terminated{name}", (Terminated,), {"exit_code": 128 + signal_number})
    error: Terminated = kind(f"Cancelled ({name}).")
    return error
