"""Byte-capped pages on PostgreSQL: the tests of `tests/test_page_bytes.py` (history, thread,
run and assistant lists cut by bytes, carried on by cursor), collected again on a server over
a fresh PostgreSQL database, with the native and the LangGraph `echo`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests import postgres, support, test_page_bytes
from tests.lg_graphs import lg_registry
from turnstile_server.app import App
from turnstile_server.config import ServerConfig

stubs = test_page_bytes.stubs
client = test_page_bytes.client
_tests: dict[str, Any] = {
    name: value for name, value in vars(test_page_bytes).items() if name.startswith("test_")
}
globals().update(_tests)


@pytest.fixture(params=["native", "langgraph"])
async def app(request: pytest.FixtureRequest) -> AsyncIterator[App]:
    async with postgres.database() as url:
        server = await App.start(
            ServerConfig(
                host="127.0.0.1", port=0, database=url, max_page_bytes=test_page_bytes.CAP
            ),
            support.registry() if request.param == "native" else lg_registry(),
        )
        yield server
        await server.stop(grace=0)
