"""The bridge between the server's loop and a graph loop (`runtime/loop_bridge.py`): outcomes
and cancellations cross in both directions, a cancelled call still waits for the other side,
and what the graph side posts arrives in order, before its outcome, in short turns."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from turnstile_server.runtime.loop_bridge import LoopBridge


@asynccontextmanager
async def graph_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own for the block."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 10)
        loop.close()


async def test_run_on_returns_the_graph_sides_result_and_raises_its_error() -> None:
    bridge = LoopBridge(asyncio.get_running_loop())
    async with graph_loop() as loop:

        async def answer() -> threading.Thread:
            await asyncio.sleep(0)
            return threading.current_thread()

        async def fail() -> None:
            raise ValueError("from the graph side")

        assert await bridge.run_on(loop, answer) is not threading.current_thread()
        with pytest.raises(ValueError, match="from the graph side"):
            await bridge.run_on(loop, fail)


async def test_a_cancelled_run_on_returns_only_once_the_graph_side_has_unwound() -> None:
    """Without the wait (a `wrap_future` of `run_coroutine_threadsafe`, which ends as soon as
    it is cancelled), the server side goes on while the graph side still unwinds: what was
    unwound when the call ended is then less than all of it."""
    bridge = LoopBridge(asyncio.get_running_loop())
    entered, unwinding, release = threading.Event(), threading.Event(), threading.Event()
    unwound: list[str] = []
    async with graph_loop() as loop:

        async def graph() -> None:
            entered.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                unwound.append("started")
                unwinding.set()
                await asyncio.to_thread(release.wait, 10)  # unwinding takes a while
                unwound.append("done")
                raise

        running = asyncio.create_task(bridge.run_on(loop, graph))
        when_ended: list[list[str]] = []
        running.add_done_callback(lambda _: when_ended.append(list(unwound)))
        assert await asyncio.to_thread(entered.wait, 10)
        running.cancel()
        assert await asyncio.to_thread(unwinding.wait, 10)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert when_ended == [["started", "done"]]


async def test_a_run_on_cancelled_before_the_graph_side_began_still_enters_its_coroutine() -> None:
    """The cancellation reaches the graph loop together with the start (the graph loop was
    busy: both wait in its lane): the coroutine is entered all the same and sees the
    cancellation at its first await, so what it does when cut (a LangGraph run keeps its
    input) is done. Cancelled at once, the task never ran a line of it."""
    bridge = LoopBridge(asyncio.get_running_loop())
    busy, release = threading.Event(), threading.Event()
    seen: list[str] = []
    async with graph_loop() as loop:

        def hold() -> None:  # the graph loop is busy with something else meanwhile
            busy.set()
            release.wait(10)

        loop.call_soon_threadsafe(hold)
        assert await asyncio.to_thread(busy.wait, 10)

        async def graph() -> None:
            seen.append("entered")
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                seen.append("cut")
                raise

        running = asyncio.create_task(bridge.run_on(loop, graph))
        await asyncio.sleep(0)  # `begin` is sent
        running.cancel()
        await asyncio.sleep(0)  # and the cancellation after it
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, 10)
        assert seen == ["entered", "cut"]


async def test_a_graph_side_call_cancelled_meanwhile_waits_for_the_server_side() -> None:
    server = asyncio.get_running_loop()
    bridge = LoopBridge(server)
    began, cancelled, finish = threading.Event(), threading.Event(), asyncio.Event()
    landed: list[str] = []

    async def on_server() -> str:
        began.set()
        await finish.wait()
        landed.append("landed")
        return "written"

    async with graph_loop() as loop:

        async def graph() -> str:
            call = asyncio.ensure_future(bridge.call(on_server))
            await asyncio.sleep(0)
            assert await asyncio.to_thread(began.wait, 10)
            call.cancel()
            cancelled.set()
            try:
                return await call
            except asyncio.CancelledError:
                return f"cancelled after {landed}"

        graph_side = asyncio.create_task(bridge.run_on(loop, graph))
        assert await asyncio.to_thread(cancelled.wait, 10)
        finish.set()
        assert await graph_side == "cancelled after ['landed']"


async def test_what_the_graph_side_posts_arrives_in_order_and_before_its_outcome() -> None:
    bridge = LoopBridge(asyncio.get_running_loop())
    seen: list[int] = []
    async with graph_loop() as loop:

        async def graph() -> int:
            for index in range(10_000):
                bridge.post(lambda index=index: seen.append(index))  # type: ignore[misc]
            return 10_000

        assert await bridge.run_on(loop, graph) == 10_000
    assert seen == list(range(10_000))


async def test_the_server_loop_runs_its_other_tasks_between_turns_of_posted_work() -> None:
    """Each posted item takes 1 ms, longer than a turn: the ticker runs in between (with the
    queue drained in one go, it would run only after all 20 items)."""
    bridge = LoopBridge(asyncio.get_running_loop())
    order: list[str] = []

    def item() -> None:
        time.sleep(0.001)  # work that holds the loop: the point
        order.append("item")

    async def ticker() -> None:
        while len([o for o in order if o == "item"]) < 20:
            order.append("tick")
            await asyncio.sleep(0)

    for _ in range(20):
        bridge.post(item)
    await ticker()
    first, last = order.index("item"), len(order) - 1 - order[::-1].index("item")
    assert "tick" in order[first:last], "no other task ran while the queue drained"
