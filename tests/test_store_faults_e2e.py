"""Store faults end to end: a real server whose SQLite fails at random (`tests/faults.py`).

Transient "database is locked" faults are absorbed by the store's retries: every call answers
as without faults, and the double-texting invariants hold. I/O errors make calls fail
`UNAVAILABLE` (reason `STORE_UNAVAILABLE`), never anything else; once they stop, the server
serves again and every admitted run ends.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests import support
from tests.faults import Faults, RandomFaults, Rule, ScriptedFaults, inject
from tests.invariants import (
    CALL_TIMEOUT,
    assert_serving,
    assert_thread_invariants,
    polling_running,
    settled_runs,
    watching,
)
from tests.rpc import DOMAIN, Stubs, error_info, random_id, struct
from tests.support import STEPS, eventually
from turnstile.v1 import run_pb2, run_service_pb2, thread_pb2, thread_service_pb2
from turnstile_server.app import App
from turnstile_server.config import ServerConfig

pytestmark = pytest.mark.timeout(60)

THREADS = 6
RUNS_PER_THREAD = 10
RUN_INPUT = {"steps": 2, "pause": 0.002, "unwind": 0.005}
STRATEGIES = [
    run_pb2.MULTITASK_STRATEGY_ENQUEUE,
    run_pb2.MULTITASK_STRATEGY_ENQUEUE,
    run_pb2.MULTITASK_STRATEGY_INTERRUPT,
    run_pb2.MULTITASK_STRATEGY_ROLLBACK,
    run_pb2.MULTITASK_STRATEGY_REJECT,
]


@dataclass
class Server:
    """A running server with faults under its store, and stubs on a channel to it."""

    app: App
    stubs: Stubs
    channel: grpc.aio.Channel
    database: str


@asynccontextmanager
async def faulty_server(tmp_path: Path, faults: Faults) -> AsyncIterator[Server]:
    """A server on a fresh database whose connections fail as `faults` decides."""
    database = str(tmp_path / "faulty.db")
    app = await App.start(
        ServerConfig(host="127.0.0.1", port=0, database=database), support.registry()
    )
    try:
        with inject(app.store, faults):
            async with grpc.aio.insecure_channel(app.address) as channel:
                yield Server(app, Stubs(channel), channel, database)
    finally:
        await app.stop(grace=0)


async def new_thread(stubs: Stubs) -> str:
    response = await stubs.threads.CreateThread(
        thread_service_pb2.CreateThreadRequest(), timeout=CALL_TIMEOUT
    )
    thread_id: str = response.thread.thread_id
    return thread_id


def create_run(
    thread_id: str, strategy: run_pb2.MultitaskStrategy.ValueType, after_seconds: float = 0.0
) -> run_service_pb2.CreateRunRequest:
    return run_service_pb2.CreateRunRequest(
        thread_id=thread_id,
        assistant_id="recording",
        input=struct(RUN_INPUT),
        multitask_strategy=strategy,
        request_id=random_id(),
        after_seconds=after_seconds,
    )


async def test_locked_faults_at_random_are_retried_and_every_invariant_holds(
    tmp_path: Path,
) -> None:
    faults = RandomFaults(seed=1337, locked=0.25)
    async with faulty_server(tmp_path, faults) as server:
        stubs = server.stubs
        thread_ids = [await new_thread(stubs) for _ in range(THREADS)]
        outcomes: Counter[str] = Counter()

        async def drive(index: int, thread_id: str) -> list[str]:
            rng = random.Random(1000 + index)
            admitted: list[str] = []
            for _ in range(RUNS_PER_THREAD):
                strategy = rng.choice(STRATEGIES)
                try:
                    response = await stubs.runs.CreateRun(
                        create_run(thread_id, strategy), timeout=CALL_TIMEOUT
                    )
                except grpc.aio.AioRpcError as exc:
                    error = error_info(exc)
                    assert strategy == run_pb2.MULTITASK_STRATEGY_REJECT, error
                    assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "THREAD_BUSY")
                    continue
                admitted.append(response.run.run_id)
                await asyncio.sleep(rng.choice([0, 0.002, 0.01]))
            return admitted

        async with (
            polling_running(server.database) as poll,
            watching(stubs, thread_ids) as watches,
        ):
            admissions = await asyncio.gather(*(drive(i, tid) for i, tid in enumerate(thread_ids)))
            for tid, admitted in zip(thread_ids, admissions, strict=True):
                runs = await assert_thread_invariants(
                    stubs, server.database, tid, admitted, watches[tid]
                )
                outcomes.update(run_pb2.RunStatus.Name(r.status) for r in runs)
                outcomes["rolled back"] += len(admitted) - len(runs)
                last = next(r for r in runs if r.run_id == admitted[-1])
                assert last.status == run_pb2.RUN_STATUS_SUCCESS, "nothing superseded the last"
                thread = await stubs.threads.GetThread(
                    thread_service_pb2.GetThreadRequest(thread_id=tid), timeout=CALL_TIMEOUT
                )
                assert thread.thread.status == thread_pb2.THREAD_STATUS_IDLE
        await assert_serving(server.channel, stubs, thread_ids)
    assert sum(len(a) for a in admissions) >= THREADS * RUNS_PER_THREAD // 2
    # Every path was taken: refusals, rollbacks, interruptions, successes.
    assert sum(len(a) for a in admissions) < THREADS * RUNS_PER_THREAD
    assert outcomes["rolled back"] >= 5 and outcomes["RUN_STATUS_INTERRUPTED"] >= 5, outcomes
    assert faults.injected["locked"] >= 250, f"too few faults to mean much: {faults.injected}"
    assert STEPS.steps > 0 and STEPS.overlaps == [], "two runs of one thread were in a step at once"
    assert poll.polls > 10 and poll.violations == [], "two runs RUNNING on one thread"


async def test_io_errors_are_unavailable_and_the_server_recovers_when_they_stop(
    tmp_path: Path,
) -> None:
    faults = RandomFaults(seed=4242, locked=0.1, io=0.03, active=False)
    async with faulty_server(tmp_path, faults) as server:
        stubs = server.stubs
        thread_ids = [await new_thread(stubs) for _ in range(4)]
        failures: Counter[tuple[str, str]] = Counter()
        successes = 0

        async def call(make: Callable[[], Awaitable[Any]]) -> Any:
            nonlocal successes
            try:
                result = await make()
            except grpc.aio.AioRpcError as exc:
                error = error_info(exc)  # always a google.rpc.Status with an ErrorInfo
                assert error.domain == DOMAIN and "Traceback" not in error.message, error
                failures[(error.code.name, error.reason)] += 1
                return None
            successes += 1
            return result

        async def drive(index: int, thread_id: str) -> list[str]:
            rng = random.Random(2000 + index)
            admitted: list[str] = []
            for _ in range(25):
                strategy = rng.choice(STRATEGIES[:4])  # reject's THREAD_BUSY is not the point
                run = await call(
                    functools.partial(
                        stubs.runs.CreateRun, create_run(thread_id, strategy), timeout=CALL_TIMEOUT
                    )
                )
                if run is not None:
                    admitted.append(run.run.run_id)
                await call(
                    lambda: stubs.threads.GetThreadState(
                        thread_service_pb2.GetThreadStateRequest(thread_id=thread_id),
                        timeout=CALL_TIMEOUT,
                    )
                )
                await call(
                    lambda: stubs.runs.ListRuns(
                        run_service_pb2.ListRunsRequest(thread_id=thread_id),
                        timeout=CALL_TIMEOUT,
                    )
                )
                await call(
                    lambda: stubs.threads.GetThreadHistory(
                        thread_service_pb2.GetThreadHistoryRequest(thread_id=thread_id),
                        timeout=CALL_TIMEOUT,
                    )
                )
                await asyncio.sleep(rng.choice([0, 0.002, 0.01]))
            return admitted

        async with watching(stubs, thread_ids) as watches:
            faults.active = True
            admissions = await asyncio.gather(*(drive(i, tid) for i, tid in enumerate(thread_ids)))
            faults.active = False
            assert set(failures) == {("UNAVAILABLE", "STORE_UNAVAILABLE")}, failures
            assert failures[("UNAVAILABLE", "STORE_UNAVAILABLE")] >= 20 and successes >= 200
            assert faults.injected["io"] >= 40, faults.injected
            for tid, admitted in zip(thread_ids, admissions, strict=True):
                await assert_thread_invariants(stubs, server.database, tid, admitted, watches[tid])
        await assert_serving(server.channel, stubs, thread_ids)
    assert STEPS.overlaps == []


async def test_store_unavailable_reaches_the_caller_as_unavailable_with_its_reason(
    tmp_path: Path,
) -> None:
    faults = ScriptedFaults([])
    async with faulty_server(tmp_path, faults) as server:
        tid = await new_thread(server.stubs)
        faults.rules.append(Rule("SELECT * FROM threads WHERE thread_id", "io", times=1))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await server.stubs.threads.GetThread(
                thread_service_pb2.GetThreadRequest(thread_id=tid), timeout=CALL_TIMEOUT
            )
        error = error_info(caught.value)
        assert (error.code, error.reason, error.domain) == (
            grpc.StatusCode.UNAVAILABLE,
            "STORE_UNAVAILABLE",
            DOMAIN,
        )
        assert error.metadata == {"sqlite_error": "SQLITE_IOERR"}
        again = await server.stubs.threads.GetThread(
            thread_service_pb2.GetThreadRequest(thread_id=tid), timeout=CALL_TIMEOUT
        )
        assert again.thread.thread_id == tid


# One I/O error in a run's background work (no caller to retry it), reproduced exactly.


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE runs SET status = 'running'",  # starting the run
        "UPDATE runs SET status = CASE",  # finishing the run
        "ORDER BY r.seq LIMIT 1",  # reading the thread's next run
    ],
)
async def test_a_single_io_error_in_a_runs_background_work_does_not_strand_it(
    tmp_path: Path, statement: str
) -> None:
    faults = ScriptedFaults([Rule(statement, "io", times=1)])
    async with faulty_server(tmp_path, faults) as server:
        tid = await new_thread(server.stubs)
        # Due a moment later, the run is started by the scheduler, not in its admission (an
        # error there is the caller's UNAVAILABLE, tested above).
        first = await server.stubs.runs.CreateRun(
            create_run(tid, run_pb2.MULTITASK_STRATEGY_ENQUEUE, after_seconds=0.01),
            timeout=CALL_TIMEOUT,
        )
        await eventually(lambda: _fired(faults))
        runs = await settled_runs(server.stubs, tid)
        assert [r.run_id for r in runs] == [first.run.run_id]
        await assert_serving(server.channel, server.stubs, [tid])


async def _fired(faults: ScriptedFaults) -> None:
    assert faults.rules[0].fired == 1
