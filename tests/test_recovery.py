"""What a restart does with runs a stopped or crashed server left RUNNING."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests import support
from tests.support import GATES, eventually
from turnstile import TurnstileClient
from turnstile_server.config import ServerConfig


@asynccontextmanager
async def serving(database: Path, **settings: object) -> AsyncIterator[TurnstileClient]:
    """A server on `database` for the block (stopped at once, runs left RUNNING), and a client."""
    config = ServerConfig(port=0, database=str(database), **settings)  # type: ignore[arg-type]
    async with support.client_of(config) as (_, client):
        yield client


async def running(client: TurnstileClient, thread_id: str, run_id: str, attempt: int) -> None:
    async def check() -> None:
        run = await client.runs.get(thread_id, run_id)
        assert (run["status"], run["attempt"]) == ("running", attempt)

    await eventually(check)


async def test_a_run_cut_off_max_attempts_times_ends_error_and_the_thread_takes_new_runs(
    tmp_path: Path,
) -> None:
    database = tmp_path / "attempts.db"
    async with serving(database, max_attempts=3) as client:
        thread_id = (await client.threads.create())["thread_id"]
        run = await client.runs.create(thread_id, "gated", input={"gates": ["never"]})
        await running(client, thread_id, run["run_id"], 1)
    for attempt in (2, 3):
        async with serving(database, max_attempts=3) as client:
            await running(client, thread_id, run["run_id"], attempt)

    async with serving(database, max_attempts=3) as client:
        ended = await client.runs.get(thread_id, run["run_id"])
        thread = await client.threads.get(thread_id)
        GATES.open("next")
        after = await client.runs.wait_run(thread_id, "gated", input={"gates": ["next"]})

    assert ended["status"] == "error"
    assert ended["attempt"] == 3
    assert ended["error"] is not None
    assert ended["error"]["type"] == "MaxAttemptsExceeded"
    assert "giving up after 3 attempts" in ended["error"]["message"]
    assert thread["status"] == "error"
    assert after.run["status"] == "success"


async def test_a_run_being_cancelled_when_the_server_died_ends_as_cancelled_at_restart(
    tmp_path: Path,
) -> None:
    database = tmp_path / "cancelling.db"
    async with serving(database) as client:
        thread_id = (await client.threads.create())["thread_id"]
        interrupted = await client.runs.create(thread_id, "gated", input={"gates": ["x"]})
        await running(client, thread_id, interrupted["run_id"], 1)
        other = (await client.threads.create())["thread_id"]
        rolled_back = await client.runs.create(other, "gated", input={"gates": ["y"]})
        await running(client, other, rolled_back["run_id"], 1)
    # The server died after marking the cancellations, before the runs unwound.
    with sqlite3.connect(database) as db:
        db.execute(
            "UPDATE runs SET cancel_action = 'interrupt', cancel_reason = 'cancelled by the"
            " client' WHERE run_id = ?",
            (interrupted["run_id"],),
        )
        db.execute(
            "UPDATE runs SET cancel_action = 'rollback' WHERE run_id = ?",
            (rolled_back["run_id"],),
        )

    async with serving(database) as client:
        run = await client.runs.get(thread_id, interrupted["run_id"])
        thread = await client.threads.get(thread_id)
        other_runs = await client.runs.list(other)
        other_thread = await client.threads.get(other)
        GATES.open("z")
        after = await client.runs.wait_run(thread_id, "gated", input={"gates": ["z"]})

    assert (run["status"], run["attempt"]) == ("interrupted", 1)
    assert thread["status"] == "interrupted"
    assert other_runs == []
    assert other_thread["status"] == "idle"
    assert after.run["status"] == "success"
