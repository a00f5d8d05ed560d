"""Human in the loop end to end on PostgreSQL: the tests of `tests/test_human_in_the_loop.py`,
collected again on a server whose database is a fresh PostgreSQL one (`tests/postgres.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests import postgres, test_human_in_the_loop
from tests.hitl_graphs import hitl_registry
from tests.support import client_of
from turnstile import TurnstileClient
from turnstile_server.app import App

pytestmark = pytest.mark.timeout(60)

fresh = test_human_in_the_loop.fresh
_tests: dict[str, Any] = {
    name: value for name, value in vars(test_human_in_the_loop).items() if name.startswith("test_")
}
globals().update(_tests)


@pytest.fixture
async def client() -> AsyncIterator[TurnstileClient]:
    async with postgres.database() as url, client_of(url, hitl_registry()) as (_, sdk):
        yield sdk


@pytest.fixture
async def served() -> AsyncIterator[tuple[App, TurnstileClient]]:
    async with postgres.database() as url, client_of(url, hitl_registry()) as (app, sdk):
        yield app, sdk
