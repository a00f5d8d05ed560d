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
    test_hostile_input,
    test_idempotency,
    test_run_options,
    test_seeds,
    test_strategy_matrix,
)
from tests.support import client_of
from turnstile import InvalidArgumentError, TurnstileClient
from turnstile_server.graph import GraphRegistry
from turnstile_server.runtime.native import NativeRuntime

pytestmark = pytest.mark.timeout(60)

stubs = test_idempotency.stubs
# The hostile-input fuzz: every answer specific (no INTERNAL), on PostgreSQL too.
test_fuzzed_requests_get_specific_errors_and_the_server_keeps_serving = (
    test_hostile_input.test_fuzzed_requests_get_specific_errors_and_the_server_keeps_serving
)
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
    # The built-in agent is a LangGraph graph, which the stand-in runtime does not run.
    graphs = GraphRegistry.with_builtins(
        [NativeRuntime(), test_run_options.StandInRuntime()], omit=("agent",)
    )
    graphs.register("lg", recorded)
    async with client_of(database, graphs) as (_, client):
        yield client, recorded


async def test_metadata_with_nul_is_invalid_text_and_filters_on_nul_match_nothing(
    client: TurnstileClient,
) -> None:
    # PostgreSQL's JSON operators refuse \u0000 wherever it is in the value they read: a
    # thread stored with it would break every filter on its key, so it is not stored.
    for call in (
        lambda: client.threads.create(metadata={"k": "a\x00b"}),
        lambda: client.threads.create(metadata={"k": {"deep": ["\x00"]}}),
        lambda: client.assistants.create("echo", metadata={"k": "\x00"}),
    ):
        with pytest.raises(InvalidArgumentError) as caught:
            await call()
        assert caught.value.reason == "INVALID_TEXT"
    plain = (await client.threads.create(metadata={"k": "ab", "n": 2}))["thread_id"]
    with pytest.raises(InvalidArgumentError):
        await client.threads.update(plain, metadata={"k": "\x00"})
    assert await client.threads.search(metadata={"k": "a\x00b"}) == []
    assert [t["thread_id"] for t in await client.threads.search(metadata={"k": "ab"})] == [plain]
    assert [t["thread_id"] for t in await client.threads.search(metadata={"n": 2})] == [plain]


async def test_a_request_id_with_nul_is_invalid_argument_invalid_text_on_postgresql(
    client: TurnstileClient,
) -> None:
    # SQLite stores any string; PostgreSQL's text cannot hold NUL: refused, never INTERNAL.
    thread_id = (await client.threads.create())["thread_id"]
    for call in (
        lambda: client.threads.create(request_id="a\x00b"),
        lambda: client.runs.create(thread_id, "echo", request_id="a\x00b"),
    ):
        with pytest.raises(InvalidArgumentError) as caught:
            await call()
        assert caught.value.reason == "INVALID_TEXT"
