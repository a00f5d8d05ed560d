"""The contract: cancellation, history paging, deleting a thread."""

from __future__ import annotations

from typing import Any

import pytest

from tests.store_contract.backends import MAX_QUEUED, spec, started
from turnstile_server.errors import (
    RunNotActive,
    RunNotFound,
    ThreadNotFound,
)
from turnstile_server.store import Store

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
