"""The store contract: what every storage backend must do, run against each of them.

Each test takes `backend`, one per storage backend (SQLite now), and opens stores on it with
`backend.open()`; a second `open()` after `close()` is a restart. Only the storage interface
is used, so a new backend is added by listing it in `BACKENDS`.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from turnstile_server.errors import (
    QueueFull,
    RequestIdReused,
    RunNotActive,
    RunNotFound,
    ThreadBusy,
    ThreadNotFound,
)
from turnstile_server.store import RunRecord, RunSpec, Store, open_store

pytestmark = pytest.mark.timeout(30)

BACKENDS = ["sqlite"]
MAX_QUEUED = 3


@dataclass
class Backend:
    """A storage backend under test: where its database is, and how to open a store on it.

    `one_process`: the backend serves one server process per database (SQLite, whose state
    cache trusts that every write goes through it) and must refuse a second one.
    """

    name: str
    url: str
    one_process: bool

    async def open(self) -> Store:
        return await open_store(self.url)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    name = request.param
    assert name == "sqlite"
    return Backend(name, f"sqlite:///{tmp_path / 'contract.db'}", one_process=True)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    opened = await backend.open()
    yield opened
    await opened.close()


def spec(thread_id: str, strategy: str = "enqueue", **fields: Any) -> RunSpec:
    values: dict[str, Any] = {
        "thread_id": thread_id,
        "assistant_id": "agent",
        "graph_id": "agent",
        "input": {"messages": [{"type": "human", "content": "hi", "id": "m1"}]},
        "multitask_strategy": strategy,
        "config": {},
        "metadata": {},
        "stream_mode": ["values"],
        **fields,
    }
    return RunSpec(**values)


async def started(store: Store, thread_id: str, strategy: str = "enqueue") -> RunRecord:
    """A run admitted and started at once on an idle thread: RUNNING, its input written."""
    admission = await store.runs.admit(spec(thread_id, strategy), max_queued=MAX_QUEUED, start=True)
    assert admission.start is not None and admission.start.run is not None
    assert admission.start.input is not None
    return admission.start.run


async def statuses(store: Store, thread_id: str) -> dict[str, str]:
    runs, _ = await store.runs.list(thread_id, status=None, limit=100, before=None)
    return {run.run_id: run.status for run in runs}


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


# Restart.


async def test_a_reopened_store_keeps_threads_runs_checkpoints_and_state(
    backend: Backend,
) -> None:
    store = await backend.open()
    try:
        await store.threads.create("t", {"k": "v"})
        done = await started(store, "t")
        await store.checkpoints.put("t", done.run_id, 1, "step", {"n": 1})
        await store.runs.finish(done, "success")
        running = await started(store, "t")
        await store.checkpoints.put("t", running.run_id, 1, "step", {"n": 2})
        queued = (await store.runs.admit(spec("t"), max_queued=MAX_QUEUED)).run
        state_before, last_before = await store.checkpoints.state("t")
    finally:
        await store.close()
    store = await backend.open()
    try:
        assert (await store.threads.get("t")).metadata == {"k": "v"}
        assert await statuses(store, "t") == {
            done.run_id: "success",
            running.run_id: "running",
            queued.run_id: "pending",
        }
        state_after, last_after = await store.checkpoints.state("t")
        assert (state_after.values, last_after) == (state_before.values, last_before)
        # The run left RUNNING resumes as a new attempt after its last checkpoint.
        recovery = await store.runs.recover(max_attempts=3)
        assert recovery.requeued == 1
        start = await store.runs.start_next("t")
        assert start.run is not None and start.run.run_id == running.run_id
        assert (start.run.attempt, start.checkpoints, start.input) == (2, 2, None)
        assert await store.runs.threads_with_inflight() == ["t"]
    finally:
        await store.close()


# The one-process rule.

OPEN_ELSEWHERE = """
import asyncio, sys
from turnstile_server.store import open_store

async def main():
    try:
        store = await open_store(sys.argv[1])
    except OSError as exc:
        print(exc, file=sys.stderr)
        sys.exit(3)
    await store.threads.create("from-elsewhere", {})
    await store.close()

asyncio.run(main())
"""


async def open_in_another_process(url: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        OPEN_ELSEWHERE,
        url,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        _, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_a_second_server_process_on_the_same_database_is_refused_while_one_has_it(
    backend: Backend,
) -> None:
    store = await backend.open()
    try:
        code, err = await open_in_another_process(backend.url)
        if backend.one_process:
            assert code == 3, err
            assert "in use by another Turnstile server" in err
            assert "one server process per SQLite database" in err
            with pytest.raises(ThreadNotFound):
                await store.threads.get("from-elsewhere")
        else:
            assert code == 0, err
    finally:
        await store.close()
    # Once the first has closed, another process may open it.
    code, err = await open_in_another_process(backend.url)
    assert code == 0, err
    store = await backend.open()
    try:
        assert (await store.threads.get("from-elsewhere")).thread_id == "from-elsewhere"
    finally:
        await store.close()


async def test_a_second_store_in_the_same_process_is_refused_too(backend: Backend) -> None:
    store = await backend.open()
    try:
        if backend.one_process:
            with pytest.raises(OSError, match="in use by another Turnstile server"):
                await backend.open()
    finally:
        await store.close()
    reopened = await backend.open()
    await reopened.close()
