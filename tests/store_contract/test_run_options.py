"""The contract: the LangGraph and human-in-the-loop run options are stored as given, and the
checkpoint lookups the thread state needs (`find`, `parent`) and the interruption filter."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.store_contract.backends import MAX_QUEUED, spec, started
from turnstile_server.errors import ThreadBusy
from turnstile_server.store import Store
from turnstile_server.store.langgraph_checkpoints import (
    BaseMoved,
    BlobRecord,
    CheckpointFrame,
    StagedUpdate,
    WriteRecord,
)
from turnstile_server.store.records import options_of

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
EVERY_OPTION: dict[str, Any] = {**OPTIONS, "timeout_seconds": 2.5, "durability": "exit"}
"""A value other than the default for every `RunOptions` field (`tests/test_run_fields.py`)."""


PENDING = [{"id": "0123456789abcdef0123456789abcdef", "value": {"q": "ok?"}, "task_id": "k"}]


async def waiting(store: Store, thread_id: str) -> None:
    """Makes the thread's run stop waiting for input on `PENDING`."""
    await store.threads.create(thread_id, {})
    run = await started(store, thread_id)
    await store.runs.finish(run, "success", interrupts=PENDING)


async def test_run_options_are_stored_and_read_back_as_given(store: Store) -> None:
    await waiting(store, "t")

    admitted = (await store.runs.admit(spec("t", **OPTIONS), max_queued=MAX_QUEUED)).run
    read = await store.runs.get("t", admitted.run_id)
    listed, _ = await store.runs.list("t", status=None, limit=10, before=None)

    for run in (admitted, read, listed[0]):  # newest first
        assert {name: getattr(run, name) for name in OPTIONS} == OPTIONS
        assert run.discarded_interrupts == ()


async def test_every_run_option_is_stored_in_its_column_and_read_back(store: Store) -> None:
    await waiting(store, "t")

    admitted = (await store.runs.admit(spec("t", **EVERY_OPTION), max_queued=MAX_QUEUED)).run
    read = await store.runs.get("t", admitted.run_id)

    for run in (admitted, read):
        assert options_of(run) == EVERY_OPTION


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


async def test_a_run_that_stops_for_input_leaves_its_thread_waiting_on_its_interrupts(
    store: Store,
) -> None:
    await waiting(store, "t")

    thread = await store.threads.get("t")
    listed, _ = await store.threads.list(
        status=None, metadata={}, limit=10, before=None, interruption="awaiting_input"
    )

    assert (thread.status, thread.interruption, thread.interrupts) == (
        "interrupted",
        "awaiting_input",
        PENDING,
    )
    assert [t.thread_id for t in listed] == ["t"]


async def test_new_input_on_a_waiting_thread_records_the_interrupts_it_discards(
    store: Store,
) -> None:
    await waiting(store, "t")

    admitted = (await store.runs.admit(spec("t"), max_queued=MAX_QUEUED)).run

    assert admitted.discarded_interrupts == (PENDING[0]["id"],)
    assert (await store.runs.get("t", admitted.run_id)).discarded_interrupts == (PENDING[0]["id"],)


async def test_a_queued_run_records_the_interrupts_it_discards_when_it_starts(
    store: Store,
) -> None:
    await store.threads.create("t", {})
    first = await started(store, "t")
    queued = (await store.runs.admit(spec("t"), max_queued=MAX_QUEUED)).run
    assert queued.discarded_interrupts == ()

    ended = await store.runs.finish(first, "success", interrupts=PENDING, then_start=True)

    assert ended is not None and ended.next.run is not None
    assert ended.next.run.discarded_interrupts == (PENDING[0]["id"],)


async def test_the_end_of_a_started_run_ends_the_wait_and_a_rollback_keeps_it(
    store: Store,
) -> None:
    await waiting(store, "t")
    resume = spec("t", input=None, command={"resume": "yes"})
    rolled = (await store.runs.admit(resume, max_queued=MAX_QUEUED, start=True)).run
    await store.runs.cancel("t", rolled.run_id, "rollback")
    await store.runs.finish(replace(rolled, status="running", attempt=1), "success")
    after_rollback = await store.threads.get("t")

    answered = (await store.runs.admit(resume, max_queued=MAX_QUEUED, start=True)).run
    await store.runs.finish(replace(answered, status="running", attempt=1), "success")
    after_answer = await store.threads.get("t")

    assert (after_rollback.status, after_rollback.interrupts) == ("interrupted", PENDING)
    assert (after_answer.status, after_answer.interrupts) == ("idle", None)


def staged_update(thread_id: str, base: str | None, checkpoint_id: str, **fields: Any) -> Any:
    """An UpdateThreadState's rows: one checkpoint after `base`, a write against it."""
    frame = CheckpointFrame(
        thread_id, "", checkpoint_id, base, "", "msgpack", b"f", {"ch": checkpoint_id}, {}
    )
    blob = BlobRecord("ch", checkpoint_id, "full", "msgpack", b"v")
    write = WriteRecord("task", 0, "ch", "msgpack", b"w")
    values: dict[str, Any] = {
        "thread_id": thread_id,
        "base": base,
        "puts": [(frame, [blob])],
        "writes": [("", checkpoint_id, "", [write])],
        "interrupts": None,
        **fields,
    }
    return StagedUpdate(**values)


async def newest(store: Store, thread_id: str) -> str | None:
    stored = await store.langgraph.get(thread_id, "", None, {})
    return None if stored is None else stored.frame.checkpoint_id


async def test_an_update_lands_whole_with_what_the_thread_then_waits_for(store: Store) -> None:
    await waiting(store, "t")

    await store.threads.apply_update(staged_update("t", None, "c1"))
    idle = await store.threads.get("t")
    await store.threads.apply_update(staged_update("t", "c1", "c2", interrupts=[]))
    stopped = await store.threads.get("t")

    stored = await store.langgraph.get("t", "", None, {})
    assert stored is not None and stored.frame.checkpoint_id == "c2"
    assert [w.data for w in stored.writes] == [b"w"] and stored.blobs["ch"][0].data == b"v"
    assert (idle.status, idle.interrupts) == ("idle", None)
    assert (stopped.status, stopped.interruption, stopped.interrupts) == (
        "interrupted",
        "awaiting_input",
        [],
    )


async def test_an_update_is_refused_whole_while_a_run_is_inflight(store: Store) -> None:
    """The check and the write are one transaction: a run admitted after the update was
    computed, before it is applied, refuses it (ThreadBusy) and nothing of it lands."""
    await waiting(store, "t")
    computed = staged_update("t", None, "c1")
    running = await started(store, "t")  # admitted between the computation and the write

    with pytest.raises(ThreadBusy) as caught:
        await store.threads.apply_update(computed)

    assert caught.value.inflight == [running.run_id]
    assert await newest(store, "t") is None, "nothing of the update landed"
    assert (await store.threads.get("t")).status == "busy"
    await store.runs.finish(running, "success")


async def test_an_update_computed_before_a_run_wrote_is_refused_base_moved(store: Store) -> None:
    await waiting(store, "t")
    computed = staged_update("t", None, "c9")
    running = await started(store, "t")
    frame = CheckpointFrame("t", "", "c5", None, running.run_id, "msgpack", b"f", {}, {})
    await store.langgraph.put(frame, [], require_run=True)
    await store.runs.finish(running, "success")  # the run came and went meanwhile

    with pytest.raises(BaseMoved):
        await store.threads.apply_update(computed)

    assert await newest(store, "t") == "c5", "the update did not land over the run's"
    assert (await store.threads.get("t")).status == "idle"


async def test_a_resume_that_wrote_nothing_leaves_the_wait_and_one_that_wrote_ends_it(
    store: Store,
) -> None:
    await waiting(store, "t")
    resume = spec("t", input=None, command={"resume": "yes"})
    cut = (await store.runs.admit(resume, max_queued=MAX_QUEUED, start=True)).run
    await store.runs.cancel("t", cut.run_id, "interrupt")
    await store.runs.finish(replace(cut, status="running", attempt=1), "success")
    after_cut = await store.threads.get("t")

    wrote = (await store.runs.admit(resume, max_queued=MAX_QUEUED, start=True)).run
    write = WriteRecord("task", 0, "ch", "msgpack", b"w")
    await store.langgraph.put_writes("t", "", "c0", wrote.run_id, [write], require_run=True)
    await store.runs.cancel("t", wrote.run_id, "interrupt")
    await store.runs.finish(replace(wrote, status="running", attempt=1), "success")
    after_write = await store.threads.get("t")

    assert (after_cut.status, after_cut.interrupts) == ("interrupted", PENDING)
    assert (after_write.status, after_write.interruption) == ("interrupted", "cancelled")
