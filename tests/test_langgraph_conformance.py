"""LangGraph's own checkpointer conformance suite, every capability, on Turnstile's saver."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import Capability

from turnstile_server.runtime.langgraph.saver import TurnstileSaver
from turnstile_server.store.sqlite.database import Database
from turnstile_server.store.sqlite.langgraph import SqliteLangGraphCheckpoints


@checkpointer_test(name="TurnstileSaver")
async def turnstile_saver() -> AsyncIterator[TurnstileSaver]:
    """A saver on a fresh SQLite database, as the server opens it."""
    with tempfile.TemporaryDirectory() as directory:
        db = await Database.open(Path(directory) / "conformance.db")
        try:
            yield TurnstileSaver(SqliteLangGraphCheckpoints(db))
        finally:
            await db.close()


@pytest.mark.parametrize("capability", [capability.value for capability in Capability])
async def test_saver_passes_langgraph_conformance(capability: str) -> None:
    report = await validate(turnstile_saver, capabilities={capability})
    result = report.results[capability]
    assert result.detected, f"{capability} is not implemented"
    assert result.passed is True, "\n".join(result.failures)
    assert result.tests_passed > 0 and result.tests_failed == 0
