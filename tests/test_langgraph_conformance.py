"""LangGraph's own checkpointer conformance suite, every capability, on Turnstile's saver, on
every backend."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import Capability

from tests import postgres
from turnstile_server.runtime.langgraph.saver import TurnstileSaver
from turnstile_server.store.postgres.database import Database as PostgresDatabase
from turnstile_server.store.postgres.langgraph import PostgresLangGraphCheckpoints
from turnstile_server.store.sqlite.database import Database
from turnstile_server.store.sqlite.langgraph import SqliteLangGraphCheckpoints


@checkpointer_test(name="TurnstileSaver")
async def sqlite_saver() -> AsyncIterator[TurnstileSaver]:
    """A saver on a fresh SQLite database, as the server opens it."""
    with tempfile.TemporaryDirectory() as directory:
        db = await Database.open(Path(directory) / "conformance.db")
        try:
            yield TurnstileSaver(SqliteLangGraphCheckpoints(db))
        finally:
            await db.close()


def postgres_saver(url: str) -> Any:
    """A saver factory on the PostgreSQL database at `url`, emptied for each saver."""

    @checkpointer_test(name="TurnstileSaver")
    async def saver() -> AsyncIterator[TurnstileSaver]:
        db = await PostgresDatabase.open(url)
        try:
            await db.write(
                lambda conn: conn.execute("TRUNCATE lg_checkpoints, lg_blobs, lg_writes")
            )
            yield TurnstileSaver(PostgresLangGraphCheckpoints(db))
        finally:
            await db.close()

    return saver


async def check(factory: Any, capability: str) -> None:
    report = await validate(factory, capabilities={capability})
    result = report.results[capability]
    assert result.detected, f"{capability} is not implemented"
    assert result.passed is True, "\n".join(result.failures)
    assert result.tests_passed > 0 and result.tests_failed == 0


@pytest.mark.parametrize("capability", [capability.value for capability in Capability])
async def test_saver_passes_langgraph_conformance(capability: str) -> None:
    await check(sqlite_saver, capability)


@pytest.mark.parametrize("capability", [capability.value for capability in Capability])
async def test_saver_on_postgresql_passes_langgraph_conformance(capability: str) -> None:
    async with postgres.database() as url:
        await check(postgres_saver(url), capability)
