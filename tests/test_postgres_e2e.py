"""End to end over gRPC on PostgreSQL: the API, strategy, seed and idempotency tests of the
SQLite suite, run again against a server on a database of their own.

The tests of the modules below are collected here too. This module's `database` fixture, a
fresh PostgreSQL database per test (`tests/postgres.py`), stands in for the SQLite file of
`tests/conftest.py`, so the same `app` and `client` fixtures (and the idempotency tests'
`stubs`, and the run-options tests' `lg`, rebuilt here on it) serve them on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests import (
    postgres,
    test_api_e2e,
    test_idempotency,
    test_run_options,
    test_seeds,
    test_strategy_matrix,
)
from tests.support import client_of
from turnstile import TurnstileClient
from turnstile_server.graph import GraphRegistry
from turnstile_server.runtime.native import NativeRuntime

pytestmark = pytest.mark.timeout(60)

stubs = test_idempotency.stubs
for _module in (test_api_e2e, test_idempotency, test_run_options, test_seeds, test_strategy_matrix):
    _tests: dict[str, Any] = {
        name: value for name, value in vars(_module).items() if name.startswith("test_")
    }
    globals().update(_tests)


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with postgres.database() as url:
        yield url


@pytest.fixture
async def lg(
    database: str,
) -> AsyncIterator[tuple[TurnstileClient, test_run_options.Recorded]]:
    """The run-options tests' server with their stand-in LangGraph runtime, on PostgreSQL."""
    recorded = test_run_options.Recorded()
    graphs = GraphRegistry.with_builtins([NativeRuntime(), test_run_options.StandInRuntime()])
    graphs.register("lg", recorded)
    async with client_of(database, graphs) as (_, client):
        yield client, recorded
