"""The contract: admission, the four strategies and request ids."""

from __future__ import annotations

import asyncio

import pytest

from tests.store_contract.backends import MAX_QUEUED, spec, started, statuses
from turnstile_server.errors import (
    QueueFull,
    RequestIdReused,
    RunNotFound,
    ThreadBusy,
    ThreadNotFound,
)
from turnstile_server.store import Store

pytestmark = pytest.mark.timeout(30)


# Admission.


async def test_a_run_on_an_idle_thread_starts_in_its_admission_with_its_input(
    store: Store,
) -> None:
    await store.threads.create("t", {})
    run = await started(store, "t")
    assert run.status == "running" and run.attempt == 1
    assert (await store.runs.get("t", run.run_id)).status == "running"
    assert (await store.threads.get("t")).status == "busy"
    state, last = await store.checkpoints.state("t")
    assert last is not None and (last.run_id, last.source) == (run.run_id, "input")
    assert [m["content"] for m in state.values["messages"]] == ["hi"]


async def test_admission_needs_the_thread_unless_asked_to_create_it(store: Store) -> None:
    with pytest.raises(ThreadNotFound):
        await store.runs.admit(spec("nowhere"), max_queued=MAX_QUEUED)
    admission = await store.runs.admit(spec("new", create_thread=True), max_queued=MAX_QUEUED)
    assert admission.run.status == "pending" and admission.start is None
    assert (await store.threads.get("new")).status == "busy"


async def test_concurrent_reject_admissions_on_an_idle_thread_admit_exactly_one(
    store: Store,
) -> None:
    await store.threads.create("t", {})
    outcomes = await asyncio.gather(
        *(store.runs.admit(spec("t", "reject"), max_queued=MAX_QUEUED) for _ in range(8)),
        return_exceptions=True,
    )
    admitted = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(admitted) == 1
    assert all(isinstance(o, ThreadBusy) for o in outcomes if isinstance(o, BaseException))
    assert list(await statuses(store, "t")) == [admitted[0].run.run_id]


# The four strategies.


async def test_reject_on_a_busy_thread_names_the_inflight_runs_and_writes_nothing(
    store: Store,
) -> None:
    await store.threads.create("t", {})
    running = await started(store, "t")
    queued = (await store.runs.admit(spec("t"), max_queued=MAX_QUEUED)).run
    before = await store.threads.get("t")
    with pytest.raises(ThreadBusy) as refused:
        await store.runs.admit(spec("t", "reject"), max_queued=MAX_QUEUED)
    assert refused.value.inflight == [running.run_id, queued.run_id]
    assert await statuses(store, "t") == {running.run_id: "running", queued.run_id: "pending"}
    assert (await store.threads.get("t")).update_time == before.update_time


async def test_enqueue_queues_in_admission_order_up_to_the_limit(store: Store) -> None:
    await store.threads.create("t", {})
    await started(store, "t")
    queued = [(await store.runs.admit(spec("t"), max_queued=MAX_QUEUED)).run for _ in range(3)]
    assert [run.queue_position for run in queued] == [1, 2, 3]
    assert [(await store.runs.get("t", r.run_id)).queue_position for r in queued] == [1, 2, 3]
    with pytest.raises(QueueFull):
        await store.runs.admit(spec("t"), max_queued=MAX_QUEUED)


async def test_enqueue_starts_the_next_run_when_the_running_one_ends(store: Store) -> None:
    await store.threads.create("t", {})
    first = await started(store, "t")
    second = (await store.runs.admit(spec("t"), max_queued=MAX_QUEUED)).run
    assert (await store.runs.start_next("t")).run is None, "one run at a time"
    ended = await store.runs.finish(first, "success", then_start=True)
    assert ended is not None and ended.run.status == "success"
    assert ended.next.run is not None and ended.next.run.run_id == second.run_id
    assert (await store.runs.get("t", second.run_id)).status == "running"


async def test_interrupt_marks_the_running_run_and_ends_the_pending_ones(store: Store) -> None:
    await store.threads.create("t", {})
    running = await started(store, "t")
    await store.checkpoints.put("t", running.run_id, 1, "step", {"step": 1})
    pending = (await store.runs.admit(spec("t"), max_queued=MAX_QUEUED)).run
    admission = await store.runs.admit(spec("t", "interrupt"), max_queued=MAX_QUEUED)
    new = admission.run
    assert [r.run_id for r in admission.cancelling] == [running.run_id]
    assert admission.cancelling[0].cancel_action == "interrupt"
    assert [(r.run_id, r.status) for r in admission.ended] == [(pending.run_id, "interrupted")]
    stored = await store.runs.get("t", pending.run_id)
    assert (stored.status, stored.superseded_by) == ("interrupted", new.run_id)
    assert stored.cancel_reason == f"interrupted by run {new.run_id}"
    marked = await store.runs.get("t", running.run_id)
    assert (marked.status, marked.cancel_action) == ("running", "interrupt")
    assert marked.superseded_by == new.run_id
    # The running run ends INTERRUPTED however it ended by itself; its steps stay.
    ended = await store.runs.finish(running, "success", then_start=True)
    assert ended is not None and not ended.rolled_back
    assert (ended.run.status, ended.run.superseded_by) == ("interrupted", new.run_id)
    assert ended.next.run is not None and ended.next.run.run_id == new.run_id
    state, _ = await store.checkpoints.state("t")
    assert state.values["step"] == 1
    assert await store.checkpoints.last_of_run(running.run_id) is not None


async def test_rollback_deletes_superseded_runs_and_their_checkpoints(store: Store) -> None:
    await store.threads.create("t", {})
    first = await started(store, "t")
    await store.runs.finish(first, "success")
    values_before, last_before = await store.checkpoints.state("t")
    running = await started(store, "t")
    await store.checkpoints.put("t", running.run_id, 1, "step", {"scratch": True})
    pending = (await store.runs.admit(spec("t"), max_queued=MAX_QUEUED)).run
    admission = await store.runs.admit(spec("t", "rollback"), max_queued=MAX_QUEUED)
    assert [r.run_id for r in admission.deleted] == [pending.run_id]
    assert [(r.run_id, r.cancel_action) for r in admission.cancelling] == [
        (running.run_id, "rollback")
    ]
    with pytest.raises(RunNotFound):
        await store.runs.get("t", pending.run_id)
    ended = await store.runs.finish(running, "success")
    assert ended is not None and ended.rolled_back
    assert ended.run.cancel_reason == f"rolled back by run {admission.run.run_id}"
    with pytest.raises(RunNotFound):
        await store.runs.get("t", running.run_id)
    assert await store.checkpoints.last_of_run(running.run_id) is None
    values_after, last_after = await store.checkpoints.state("t")
    assert values_after.values == values_before.values
    assert last_after == last_before


async def test_a_run_being_rolled_back_then_superseded_by_interrupt_says_it_was_rolled_back(
    store: Store,
) -> None:
    await store.threads.create("t", {})
    running = await started(store, "t")
    await store.runs.cancel("t", running.run_id, "rollback")
    admission = await store.runs.admit(spec("t", "interrupt"), max_queued=MAX_QUEUED)
    new = admission.run
    reason = f"rolled back: it was being rolled back when run {new.run_id} superseded it"
    assert [(r.cancel_action, r.cancel_reason) for r in admission.cancelling] == [
        ("rollback", reason)
    ]
    ended = await store.runs.finish(running, "success")
    assert ended is not None and ended.rolled_back, "a rollback under way stays one"
    assert (ended.run.cancel_reason, ended.run.superseded_by) == (reason, new.run_id)
    assert "interrupted" not in ended.run.cancel_reason


# Idempotency.


async def test_a_repeated_request_id_returns_the_run_it_admitted(store: Store) -> None:
    await store.threads.create("t", {})
    first = await store.runs.admit(spec("t", request_id="q1"), max_queued=MAX_QUEUED)
    again = await store.runs.admit(spec("t", request_id="q1"), max_queued=MAX_QUEUED)
    assert again.existing and again.run.run_id == first.run.run_id
    with pytest.raises(RequestIdReused):
        await store.runs.admit(
            spec("t", request_id="q1", metadata={"other": 1}), max_queued=MAX_QUEUED
        )
    assert len(await statuses(store, "t")) == 1
    thread = await store.threads.create("u", {"a": 1}, request_id="q2")
    assert await store.threads.create("u2", {}, request_id="q2") == thread
