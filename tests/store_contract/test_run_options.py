"""The contract: the LangGraph and human-in-the-loop run options are stored as given, and the
checkpoint lookups the thread state needs (`find`, `parent`) and the interruption filter."""

from __future__ import annotations

from typing import Any

import pytest

from tests.store_contract.backends import MAX_QUEUED, spec, started
from turnstile_server.store import Store

pytestmark = pytest.mark.timeout(30)

OPTIONS: dict[str, Any] = {
    "context": {"user": "ada", "n": 1.5},
    "stream_subgraphs": True,
    "command": {"resume": {"0123456789abcdef0123456789abcdef": [1, "two"]}, "goto": ["x"]},
    "interrupt_before": ("*",),
    "interrupt_after": ("tools", "agent"),
    "checkpoint_id": "1f0c3a2e-0000-6000-8000-000000000000",
    "close_tool_calls": False,
    "on_pending_interrupt": "reject",
}


async def test_run_options_are_stored_and_read_back_as_given(store: Store) -> None:
    await store.threads.create("t", {})

    admitted = (await store.runs.admit(spec("t", **OPTIONS), max_queued=MAX_QUEUED)).run
    read = await store.runs.get("t", admitted.run_id)
    listed, _ = await store.runs.list("t", status=None, limit=10, before=None)

    for run in (admitted, read, listed[0]):
        assert {name: getattr(run, name) for name in OPTIONS} == OPTIONS
        assert run.discarded_interrupts == ()


async def test_run_options_default_to_not_given(store: Store) -> None:
    await store.threads.create("t", {})

    run = await started(store, "t")
    read = await store.runs.get("t", run.run_id)

    assert (read.context, read.command, read.checkpoint_id) == (None, None, None)
    assert (read.interrupt_before, read.interrupt_after) == (None, None)
    assert (read.stream_subgraphs, read.close_tool_calls) == (False, None)
    assert read.on_pending_interrupt == "discard"


async def test_a_checkpoint_is_found_by_id_and_its_parent_by_position(store: Store) -> None:
    await store.threads.create("t", {})
    await store.threads.create("u", {})
    run = await started(store, "t")
    first = await store.checkpoints.last_of_run(run.run_id)
    assert first is not None
    second = await store.checkpoints.put("t", run.run_id, 1, "step", {"x": 1})

    assert await store.checkpoints.find("t", second.checkpoint_id) == second
    assert await store.checkpoints.find("u", second.checkpoint_id) is None  # another thread's
    assert await store.checkpoints.find("t", "no-such-id") is None
    assert await store.checkpoints.parent("t", second.seq) == first
    assert await store.checkpoints.parent("t", first.seq) is None


async def test_the_interruption_filter_tells_a_cancelled_thread_from_one_waiting(
    store: Store,
) -> None:
    await store.threads.create("t", {})
    await store.threads.create("c", {})
    running = await started(store, "c")
    await store.runs.cancel("c", running.run_id, "interrupt")
    await store.runs.finish(running, "success")

    thread = await store.threads.get("t")
    stopped = await store.threads.get("c")
    waiting, _ = await store.threads.list(
        status=None, metadata={}, limit=10, before=None, interruption="awaiting_input"
    )
    cancelled, _ = await store.threads.list(
        status=None, metadata={}, limit=10, before=None, interruption="cancelled"
    )

    assert (thread.interrupts, thread.interruption) == (None, "")
    assert (stopped.status, stopped.interruption) == ("interrupted", "cancelled")
    assert waiting == []
    assert [t.thread_id for t in cancelled] == ["c"]
