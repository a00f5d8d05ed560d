"""`--max-running` grants slots fairly: a thread that waits for a slot gets the next one that
frees, before a thread whose run just ended runs its queue on; threads take turns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests import support
from tests.support import GATES
from turnstile import TurnstileClient
from turnstile_server.config import ServerConfig

STEP = 10.0  # seconds for the next run to start: hitting it is a hang, and a failure


@pytest.fixture
async def client(database: str) -> AsyncIterator[TurnstileClient]:
    config = ServerConfig(host="127.0.0.1", port=0, database=database, max_running=1)
    async with support.client_of(config) as (_, sdk):
        yield sdk


async def next_started(names: list[str]) -> str:
    """The one of the gated runs `names` (not yet started) that starts next: only one can."""
    waits = {asyncio.ensure_future(GATES.arrived(name).wait()): name for name in names}
    try:
        done, _ = await asyncio.wait(waits, timeout=STEP, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    assert done, f"none of {names} started"
    started = [waits[wait] for wait in done]
    assert len(started) == 1, f"{started} started at once with one slot"
    return started[0]


async def test_threads_waiting_for_a_slot_take_turns_with_the_thread_whose_run_ended(
    client: TurnstileClient,
) -> None:
    a, b, c = [(await client.threads.create())["thread_id"] for _ in range(3)]
    queued = {a: ["a1", "a2", "a3"], b: ["b1", "b2"], c: ["c1"]}
    await client.runs.create(a, "gated", input={"gates": ["a1"]})
    await GATES.arrived("a1").wait()  # a holds the one slot
    for thread_id in (a, b, c):
        for name in queued[thread_id][1 if thread_id == a else 0 :]:
            await client.runs.create(thread_id, "gated", input={"gates": [name]})

    order = ["a1"]
    waiting = [name for names in queued.values() for name in names if name != "a1"]
    while waiting:
        GATES.open(order[-1])  # the running run ends: its slot frees
        started = await next_started(waiting)
        order.append(started)
        waiting.remove(started)

    # First come, first served across threads (b waited before c), one run per turn: a's
    # queue no longer takes the slot its own run freed (it ran a1, a2, a3, then b, then c).
    assert order == ["a1", "b1", "c1", "a2", "b2", "a3"]
