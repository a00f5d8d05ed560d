"""A run's writes never outlive its thread: a thread deleted while its run unwinds, and created
again under the same id, gets none of the old run's checkpoints, in every durability."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests import support
from tests.support import GATES
from turnstile import NotFoundError, TurnstileClient
from turnstile_server.graph import RunContext

STEP = 10.0


async def unwinding(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Three steps, then waits; cancelled, it takes until the gate `unwind` opens to unwind."""
    for index in range(3):
        yield {"messages": [{"type": "ai", "content": f"old {index}"}]}
    try:
        GATES.arrived("hold").set()
        await asyncio.Event().wait()
    finally:
        GATES.arrived("unwinding").set()
        await GATES.event("unwind").wait()
    yield {"never": True}


@pytest.fixture
async def client(database: str) -> AsyncIterator[TurnstileClient]:
    graphs = support.registry()
    graphs.register("unwinding", unwinding)
    async with support.client_of(database, graphs) as (_, sdk):
        yield sdk


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
async def test_a_thread_recreated_while_its_deleted_run_unwinds_gets_none_of_its_writes(
    client: TurnstileClient, durability: Any
) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.create(thread_id, "unwinding", durability=durability)
    async with asyncio.timeout(STEP):
        await GATES.arrived("hold").wait()
        deleting = asyncio.create_task(client.threads.delete(thread_id))
        await GATES.arrived("unwinding").wait()  # the store has deleted; the run unwinds

        async def gone() -> None:
            with pytest.raises(NotFoundError):
                await client.threads.get(thread_id)

        await support.eventually(gone, within=STEP)
        await client.threads.create(thread_id=thread_id)
        new = await client.runs.create(
            thread_id, "echo", input={"messages": [{"role": "user", "content": "new"}]}
        )
        GATES.open("unwind")  # the old run writes what it held on its way out
        await deleting
        await client.runs.join(thread_id, new["run_id"])

    history = await client.threads.get_history(thread_id, limit=100)
    assert {h["run_id"] for h in history} == {new["run_id"]}, "only the new run's checkpoints"
    state = await client.threads.get_state(thread_id)
    contents = [m["content"] for m in state["values"]["messages"]]
    assert not [c for c in contents if str(c).startswith("old")], contents
