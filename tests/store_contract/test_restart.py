"""The contract: a restart keeps everything, recovery settles runs, and the one-process rule."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.store_contract.backends import MAX_QUEUED, Backend, spec, started, statuses
from turnstile_server.errors import (
    ThreadNotFound,
)

pytestmark = pytest.mark.timeout(30)


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
    await store.threads.create("from-elsewhere", {}, if_exists="do_nothing")
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
        else:  # several processes serve one database: each sees the others' writes at once
            assert code == 0, err
            assert (await store.threads.get("from-elsewhere")).thread_id == "from-elsewhere"
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


# Recovery at start.


async def test_recovery_ends_cancelled_runs_and_runs_out_of_attempts_and_requeues_the_rest(
    backend: Backend,
) -> None:
    store = await backend.open()
    try:
        for thread_id in ("interrupted", "rolled-back", "exhausted", "resumed"):
            await store.threads.create(thread_id, {})
        interrupted = await started(store, "interrupted")
        await store.runs.cancel("interrupted", interrupted.run_id, "interrupt")
        rolled_back = await started(store, "rolled-back")
        await store.checkpoints.put("rolled-back", rolled_back.run_id, 1, "step", {"n": 1})
        await store.runs.cancel("rolled-back", rolled_back.run_id, "rollback")
        exhausted = await started(store, "exhausted")
        resumed = await started(store, "resumed")
    finally:
        await store.close()  # as if the process died with all four RUNNING
    store = await backend.open()
    try:
        recovery = await store.runs.recover(max_attempts=2)
        assert [(r.run_id, r.status) for r in recovery.deleted] == [
            (rolled_back.run_id, "interrupted")
        ]
        assert [(r.run_id, r.status) for r in recovery.ended] == [
            (interrupted.run_id, "interrupted")
        ]
        assert recovery.requeued == 2
        assert (await store.threads.get("interrupted")).status == "interrupted"
        assert (await store.threads.get("rolled-back")).status == "idle"
        assert await store.checkpoints.last_of_run(rolled_back.run_id) is None
        second = await store.runs.start_next("exhausted")
        assert second.run is not None and second.run.attempt == 2
    finally:
        await store.close()  # dies again, during the second attempt
    store = await backend.open()
    try:
        recovery = await store.runs.recover(max_attempts=2)
        assert [(r.run_id, r.status) for r in recovery.ended] == [(exhausted.run_id, "error")]
        assert recovery.ended[0].error is not None
        assert recovery.ended[0].error.type == "MaxAttemptsExceeded"
        assert recovery.requeued == 0, "the other run was PENDING: nothing to settle"
        assert (await store.threads.get("exhausted")).status == "error"
        assert await store.runs.threads_with_inflight() == ["resumed"]
        assert (await store.runs.get("resumed", resumed.run_id)).status == "pending"
    finally:
        await store.close()


async def test_recovery_of_a_resume_cancelled_before_it_wrote_leaves_the_thread_waiting(
    backend: Backend,
) -> None:
    pending = [{"id": "0123456789abcdef0123456789abcdef", "value": "ok?", "task_id": "k"}]
    store = await backend.open()
    try:
        await store.threads.create("t", {})
        asking = await started(store, "t")
        await store.runs.finish(asking, "success", interrupts=pending)
        resume = spec("t", input=None, command={"resume": "yes"})
        cut = (await store.runs.admit(resume, max_queued=MAX_QUEUED, start=True)).run
        await store.runs.cancel("t", cut.run_id, "interrupt")
    finally:
        await store.close()  # as if the process died while the resume unwound
    store = await backend.open()
    try:
        recovery = await store.runs.recover(max_attempts=2)
        thread = await store.threads.get("t")
    finally:
        await store.close()

    assert [(r.run_id, r.status) for r in recovery.ended] == [(cut.run_id, "interrupted")]
    assert (thread.status, thread.interruption, thread.interrupts) == (
        "interrupted",
        "awaiting_input",
        pending,
    )
