"""Fixtures of the connector tests: one moto server per session (reset per test), a
counting/throttling proxy per test."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from moto.server import ThreadedMotoServer

from tests.connectors.support import ProviderProxy, running_proxy
from tests.support import free_port


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto in server mode on a free loopback port: AWS's wire protocol, no AWS."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def moto(moto_url: str) -> str:
    """The moto server, emptied for this test."""
    httpx.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    return moto_url


@pytest.fixture
def proxy(moto: str) -> Iterator[ProviderProxy]:
    """The proxy the connections point at (counts calls, injects throttling/latency)."""
    with running_proxy(moto) as running:
        yield running
