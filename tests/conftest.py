"""Fixtures: a real server on 127.0.0.1:0 over a SQLite file, built by the production code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests import support
from tests.rpc import Stubs
from tests.streams import serving
from turnstile import TurnstileClient, get_client
from turnstile_server.app import App
from turnstile_server.config import ServerConfig

# The SDK stream tests' fixtures (a scripted transport and clients on it) live with it.
pytest_plugins = ["tests.scripted"]


@pytest.fixture(autouse=True)
def fresh_support_state() -> None:
    support.GATES.__init__()  # type: ignore[misc]
    support.STEPS.__init__()  # type: ignore[misc]


@pytest.fixture
def database(tmp_path: Path) -> str:
    return str(tmp_path / "turnstile.db")


@pytest.fixture
async def app(database: str) -> AsyncIterator[App]:
    server = await App.start(
        ServerConfig(host="127.0.0.1", port=0, database=database), support.registry()
    )
    yield server
    await server.stop(grace=0)


@pytest.fixture
async def client(app: App) -> AsyncIterator[TurnstileClient]:
    sdk = get_client(url=app.address)
    yield sdk
    await sdk.close()


@pytest.fixture
async def stubs(database: str) -> AsyncIterator[Stubs]:
    """Raw stubs on a server with the streaming test graphs (`tests/streams.py`)."""
    async with serving(database) as (_, stubs):
        yield stubs
