"""The contract: cancellation, history paging, deleting a thread."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.store_contract.backends import MAX_QUEUED, spec, started
from turnstile_server.errors import (
    RunNotActive,
    RunNotFound,
    ThreadNotFound,
)
from turnstile_server.store import Store
from turnstile_server.store.langgraph_checkpoints import BlobRecord, CheckpointFrame, WriteRecord

pytestmark = pytest.mark.timeout(30)


# Cancellation.


async def test_cancelling_a_pending_run_ends_it_without_starting(store: Store) -> None:
    await store.threads.create("t", {})
    running = await started(store, "t")
    pending = (await store.runs.admit(spec("t"), max_queued=MAX_QUEUED)).run
    run, still_running = await store.runs.cancel("t", pending.run_id, "interrupt")
    assert not still_running
    assert (run.status, run.cancel_reason) == ("interrupted", "cancelled by the client")
    assert (await store.runs.get("t", pending.run_id)).start_time is None
    await store.runs.finish(running, "success")
    assert (await store.threads.get("t")).status == "idle"


async def test_cancelling_a_running_run_marks_it_and_its_end_says_interrupted(
    store: Store,
) -> None:
    await store.threads.create("t", {})
    running = await started(store, "t")
    run, still_running = await store.runs.cancel("t", running.run_id, "interrupt", reason="why")
    assert still_running and (run.cancel_action, run.cancel_reason) == ("interrupt", "why")
    again, _ = await store.runs.cancel("t", running.run_id, "interrupt")
    assert again.status == "running", "cancelling a run being cancelled is no error"
    ended = await store.runs.finish(running, "error")
    assert ended is not None and (ended.run.status, ended.run.error) == ("interrupted", None)
    assert (await store.threads.get("t")).status == "interrupted"
    with pytest.raises(RunNotActive):
        await store.runs.cancel("t", running.run_id, "interrupt")


async def test_rolling_back_a_pending_run_deletes_it(store: Store) -> None:
    await store.threads.create("t", {})
    await started(store, "t")
    pending = (await store.runs.admit(spec("t"), max_queued=MAX_QUEUED)).run
    _, still_running = await store.runs.cancel("t", pending.run_id, "rollback")
    assert not still_running
    with pytest.raises(RunNotFound):
        await store.runs.get("t", pending.run_id)


# History paging.


async def test_history_pages_newest_first_with_the_values_at_each_checkpoint(
    store: Store,
) -> None:
    await store.threads.create("t", {})
    run = await started(store, "t")
    for step in range(1, 6):
        await store.checkpoints.put("t", run.run_id, step, "step", {"n": step})
    seen: list[Any] = []
    before: int | None = None
    while True:
        page, before = await store.checkpoints.history("t", limit=2, before=before)
        assert len(page) <= 2
        seen += [(record.step, values.get("n")) for record, values in page]
        if before is None:
            break
    assert seen == [(5, 5), (4, 4), (3, 3), (2, 2), (1, 1), (0, None)]


# Deleting a thread, and writes that come after it.


async def test_deleting_a_thread_removes_its_runs_and_checkpoints_and_returns_its_inflight_runs(
    store: Store,
) -> None:
    await store.threads.create("t", {})
    done = await started(store, "t")
    await store.runs.finish(done, "success")
    running = await started(store, "t")
    queued = (await store.runs.admit(spec("t"), max_queued=MAX_QUEUED)).run
    cached, _ = await store.checkpoints.state("t")  # the thread's state is cached now
    assert cached.values["messages"]
    inflight = await store.threads.delete("t")
    assert [(r.run_id, r.status, r.cancel_reason) for r in inflight] == [
        (running.run_id, "interrupted", "thread deleted"),
        (queued.run_id, "interrupted", "thread deleted"),
    ]
    with pytest.raises(ThreadNotFound):
        await store.threads.get("t")
    for run in (done, running, queued):
        with pytest.raises(RunNotFound):
            await store.runs.get("t", run.run_id)
    assert await store.checkpoints.last_of_run(done.run_id) is None
    state, last = await store.checkpoints.state("t")
    assert (state.values, last) == ({}, None), "nothing cached survives the thread"
    # The run that was executing learns at its end that it is gone; its late writes fail.
    assert await store.runs.finish(running, "success") is None
    with pytest.raises(ThreadNotFound):
        await store.checkpoints.put("t", running.run_id, 1, "step", {"late": True})
    written = store.checkpoints.submit("t", running.run_id, [(2, "step", {"late": True})])
    with pytest.raises(ThreadNotFound):
        await store.checkpoints.landed(written, "t")
    assert await store.runs.threads_with_inflight() == []


# Recovery at start.


# LangGraph's rows go with their run.


async def test_a_rolled_back_runs_langgraph_rows_go_with_it_and_its_late_writes_are_refused(
    store: Store,
) -> None:
    await store.threads.create("t", {})
    running = await started(store, "t")
    frame = CheckpointFrame(
        "t", "", "c1", None, running.run_id, "msgpack", b"f", {"ch": "1"}, {"step": 1}
    )
    blob = BlobRecord("ch", "1", "full", "msgpack", b"v")
    write = WriteRecord("task", 0, "ch", "msgpack", b"w")
    await store.langgraph.put(frame, [blob], require_run=True)
    await store.langgraph.put_writes("t", "", "c1", running.run_id, [write], require_run=True)
    stored = await store.langgraph.get("t", "", None, {})
    assert stored is not None and stored.writes == [write] and stored.blobs == {"ch": [blob]}
    await store.runs.cancel("t", running.run_id, "rollback")
    ended = await store.runs.finish(running, "success")
    assert ended is not None and ended.rolled_back
    assert await store.langgraph.get("t", "", None, {}) is None, "deleted with the run"
    late = replace(frame, checkpoint_id="c2")
    with pytest.raises(ThreadNotFound):
        await store.langgraph.put(late, [], require_run=True)
    with pytest.raises(ThreadNotFound):
        await store.langgraph.put_writes("t", "", "c2", running.run_id, [write], require_run=True)
    assert await store.langgraph.get("t", "", None, {}) is None


async def test_a_checkpoint_put_with_its_parents_writes_stores_both_or_neither(
    store: Store,
) -> None:
    """A superstep's writes land in its checkpoint's transaction: against the parent, as
    `put_writes` stores them (a regular write already stored is kept, a special one replaced),
    and not at all when the checkpoint is refused."""
    await store.threads.create("t", {})
    running = await started(store, "t")
    run_id = running.run_id
    first = CheckpointFrame("t", "", "c1", None, run_id, "msgpack", b"f", {"ch": "1"}, {})
    await store.langgraph.put(first, [BlobRecord("ch", "1", "full", "msgpack", b"v")])
    kept = WriteRecord("a", 0, "ch", "msgpack", b"first")
    await store.langgraph.put_writes("t", "", "c1", run_id, [kept])
    step = [
        WriteRecord("a", 0, "ch", "msgpack", b"again"),
        WriteRecord("b", 0, "ch", "msgpack", b"b"),
        WriteRecord("b", -3, "__interrupt__", "msgpack", b"i1"),
        WriteRecord("b", -3, "__interrupt__", "msgpack", b"i2"),
    ]
    second = replace(first, checkpoint_id="c2", parent_id="c1", versions={"ch": "2"})
    await store.langgraph.put(
        second, [BlobRecord("ch", "2", "full", "msgpack", b"w")], writes=step, require_run=True
    )
    parent = await store.langgraph.get("t", "", "c1", {})
    assert parent is not None
    assert [(w.task_id, w.idx, w.data) for w in parent.writes] == [
        ("a", 0, b"first"),
        ("b", -3, b"i2"),
        ("b", 0, b"b"),
    ]
    latest = await store.langgraph.get("t", "", None, {})
    assert latest is not None and latest.frame.checkpoint_id == "c2" and latest.writes == []
    third = replace(first, checkpoint_id="c3", parent_id="c2", run_id="gone")
    late = [WriteRecord("c", 0, "ch", "msgpack", b"late")]
    with pytest.raises(ThreadNotFound):
        await store.langgraph.put(third, [], writes=late, require_run=True)
    again = await store.langgraph.get("t", "", "c2", {})
    assert again is not None and again.writes == [], "the refused checkpoint's writes"
    assert await store.langgraph.get("t", "", "c3", {}) is None


async def test_earlier_checkpoints_put_with_a_checkpoint_land_in_its_transaction(
    store: Store,
) -> None:
    """A run's input checkpoint is written with START's, which follows it: both land, or
    neither (here: the run is gone, so the write is refused whole)."""
    await store.threads.create("t", {})
    running = await started(store, "t")
    run_id = running.run_id
    given = CheckpointFrame("t", "", "i1", None, run_id, "msgpack", b"f", {"ch": "1"}, {})
    applied = replace(given, checkpoint_id="s1", parent_id="i1", versions={"ch": "2"})
    start_write = WriteRecord("start", 0, "ch", "msgpack", b"w")
    await store.langgraph.put(
        applied,
        [BlobRecord("ch", "2", "append", "msgpack", b"tail", base="1")],
        writes=[start_write],
        earlier=[(given, [BlobRecord("ch", "1", "full", "msgpack", b"v")])],
        require_run=True,
    )
    first = await store.langgraph.get("t", "", "i1", {})
    latest = await store.langgraph.get("t", "", None, {})
    assert first is not None and first.writes == [start_write]
    assert latest is not None and latest.frame.checkpoint_id == "s1"
    assert [b.kind for b in latest.blobs["ch"]] == ["append", "full"], "the chain to i1's"
    gone = replace(given, checkpoint_id="i2", parent_id="s1", run_id="gone")
    with pytest.raises(ThreadNotFound):
        await store.langgraph.put(
            replace(gone, checkpoint_id="s2", parent_id="i2"),
            [],
            earlier=[(gone, [])],
            require_run=True,
        )
    assert await store.langgraph.get("t", "", "i2", {}) is None
    assert await store.langgraph.get("t", "", "s2", {}) is None
