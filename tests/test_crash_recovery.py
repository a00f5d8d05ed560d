"""Crash recovery: a server killed with SIGKILL mid-run loses nothing when it restarts."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests import postgres
from tests.processes import STARTUP, FileGates, served_client, sigkill
from tests.support import eventually
from turnstile import ThreadState

GRAPH = "file_gated=tests.support:file_gated"


def texts(state: ThreadState) -> list[tuple[str, str]]:
    return [(m["type"], m["content"]) for m in state["values"]["messages"]]


async def test_sigkill_mid_run_then_restart_completes_every_run_in_order_once(
    tmp_path: Path,
) -> None:
    gates = FileGates(tmp_path / "gates", "a", "c")
    config = gates.config
    database = tmp_path / "crash.db"

    async with served_client(database, GRAPH) as (process, client):
        thread = await client.threads.create()
        thread_id = thread["thread_id"]
        cut = await client.runs.create(
            thread_id,
            "file_gated",
            input={"messages": [{"role": "user", "content": "one"}], "gates": ["a", "b"]},
            config=config,
        )
        queued = [
            await client.runs.create(
                thread_id,
                "file_gated",
                input={"messages": [{"role": "user", "content": word}], "gates": ["c"]},
                config=config,
                multitask_strategy="enqueue",
            )
            for word in ("two", "three")
        ]

        async def mid_way() -> None:
            assert gates.arrived("b")
            state = await client.threads.get_state(thread_id)
            assert ("ai", "passed a") in texts(state)

        await eventually(mid_way, within=STARTUP)
        await sigkill(process)

    gates.open("b")
    async with served_client(database, GRAPH) as (_, client):
        results = [await client.runs.join_run(thread_id, r["run_id"]) for r in [cut, *queued]]
        state = await client.threads.get_state(thread_id)
        thread = await client.threads.get(thread_id)
        history = await client.threads.get_history(thread_id, limit=100)

    assert [r.run["status"] for r in results] == ["success"] * 3
    assert [r.run["attempt"] for r in results] == [2, 1, 1]
    ends = [r.run["end_time"] or "" for r in results]
    assert ends == sorted(ends), "the queued runs ran after the cut one, in order"
    assert texts(state) == [
        ("human", "one"),
        ("ai", "passed a"),
        ("ai", "passed b"),
        ("human", "two"),
        ("ai", "passed c"),
        ("human", "three"),
        ("ai", "passed c"),
    ]
    assert thread["status"] == "idle"
    # Each input was applied once: one input checkpoint per run, the cut run's steps once each.
    checkpoints = [(c["run_id"], c["source"], c["step"]) for c in reversed(history)]
    assert checkpoints == [
        (cut["run_id"], "input", 0),
        (cut["run_id"], "step", 1),
        (cut["run_id"], "step", 2),
        (queued[0]["run_id"], "input", 0),
        (queued[0]["run_id"], "step", 1),
        (queued[1]["run_id"], "input", 0),
        (queued[1]["run_id"], "step", 1),
    ]


async def test_a_run_with_durability_exit_killed_mid_run_resumes_from_its_input(
    tmp_path: Path,
) -> None:
    gates = FileGates(tmp_path / "gates", "a")
    config = gates.config
    database = tmp_path / "crash.db"

    async with served_client(database, GRAPH) as (process, client):
        thread_id = (await client.threads.create())["thread_id"]
        run = await client.runs.create(
            thread_id,
            "file_gated",
            input={"messages": [{"role": "user", "content": "one"}], "gates": ["a", "b"]},
            config=config,
            durability="exit",
        )

        async def in_step_two() -> None:
            assert gates.arrived("b")

        await eventually(in_step_two, within=STARTUP)
        await sigkill(process)

    # Step 1 was done, and held for the run's end: the crash lost it, not the input.
    with sqlite3.connect(database) as db:
        sources = db.execute("SELECT source FROM checkpoints ORDER BY seq").fetchall()
    assert sources == [("input",)]
    gates.open("b")
    async with served_client(database, GRAPH) as (_, client):
        result = await client.runs.join_run(thread_id, run["run_id"])
        history = await client.threads.get_history(thread_id, limit=100)

    assert (result.run["status"], result.run["attempt"]) == ("success", 2)
    assert [m["content"] for m in result.values["messages"]] == ["one", "passed a", "passed b"]
    assert [(c["source"], c["step"]) for c in reversed(history)] == [
        ("input", 0),
        ("step", 1),
        ("step", 2),
    ]


@asynccontextmanager
async def database_of(backend: str, tmp_path: Path) -> AsyncIterator[Path | str]:
    """A SQLite file, or a fresh PostgreSQL database's URL."""
    if backend == "sqlite":
        yield tmp_path / "waiting.db"
        return
    async with postgres.database() as url:
        yield url


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_sigkill_while_a_thread_waits_for_input_then_restart_and_resume(
    tmp_path: Path, backend: str
) -> None:
    async with database_of(backend, tmp_path) as database:
        await sigkill_while_waiting_then_resume(database)


async def sigkill_while_waiting_then_resume(database: Path | str) -> None:
    approval = "approval=turnstile_tools.approval:graph"
    async with served_client(database, approval) as (process, client):
        thread = await client.threads.create()
        thread_id = thread["thread_id"]
        stopped = await client.runs.wait_run(
            thread_id, "approval", input={"messages": [{"role": "user", "content": "pay bob 100"}]}
        )
        before = await client.threads.get(thread_id)
        await sigkill(process)

    async with served_client(database, approval) as (_, client):
        after = await client.threads.get(thread_id)
        parts = [
            part
            async for part in client.runs.stream(
                thread_id, "approval", command={"resume": "yes"}, stream_mode="updates"
            )
        ]
        done = await client.threads.get(thread_id)

    assert stopped.run["status"] == "success"
    assert (after["status"], after["interruption"]) == ("interrupted", "awaiting_input")
    assert after["interrupts"] == before["interrupts"] != {}
    updates = [part.data for part in parts if part.event == "updates"]
    assert any("Done: sent $100 to bob." in str(update.get("execute", {})) for update in updates), (
        updates
    )
    assert parts[-1].event == "end" and "awaiting_input" not in parts[-1].data
    assert done["status"] == "idle"
