"""Fixtures of the longrun Python tests: real embedded servers (see support.py)."""

from __future__ import annotations

from typing import Iterator

import pytest
from support import Server

from longrun import Client


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    s = Server()
    s.start()
    yield s
    s.dispose()


@pytest.fixture()
def fresh_server() -> Iterator[Server]:
    """A server of its own, for tests that kill it."""
    s = Server()
    s.start()
    yield s
    s.dispose()


@pytest.fixture()
def client(server: Server) -> Client:
    return server.client()
