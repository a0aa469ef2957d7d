"""What a CLI run depends on from the outside world, injectable through `ctx.obj`.

Production runs use the defaults. Tests pass either an `httpx.Client` with a
`MockTransport` or a whole `Runtime` (client, fake clock, terminal flag):
`CliRunner().invoke(cli, [...], obj=Runtime(client=..., clock=FakeClock()))`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Clock:
    """Monotonic time and sleeping; replaced by a fake clock in tests."""

    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class Runtime:
    """The HTTP client, clock and terminal flag for one run.

    `client` None means: build one from `--server`. `interactive` None means:
    ask whether stderr is a terminal.
    """

    client: httpx.Client | None = None
    clock: Clock = field(default_factory=Clock)
    interactive: bool | None = None


def runtime_from(obj: object) -> Runtime:
    """Return the Runtime behind `ctx.obj`: None, a Runtime, or a bare `httpx.Client`."""
    import httpx

    if obj is None:
        return Runtime()
    if isinstance(obj, Runtime):
        return obj
    if isinstance(obj, httpx.Client):
        return Runtime(client=obj)
    raise TypeError(f"ctx.obj must be a Runtime or an httpx.Client, not {type(obj).__name__}")


@contextlib.contextmanager
def client_for(obj: object, server: str) -> Iterator[httpx.Client]:
    """The injected client of `ctx.obj` (a test's), else a new one for `server`, closed after."""
    from envcat.cli.protocol import make_client

    runtime = runtime_from(obj)
    if runtime.client is not None:
        yield runtime.client
        return
    with make_client(server) as client:
        yield client
