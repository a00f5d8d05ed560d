"""A server restarted on the same database file: everything comes back, unfinished runs resume."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import json_format

from tests import support
from tests.rpc import Stubs, error_info, human_input, stream_events, struct
from turnstile.v1 import (
    assistant_service_pb2,
    run_pb2,
    run_service_pb2,
    thread_pb2,
    thread_service_pb2,
)
from turnstile_server.app import App
from turnstile_server.config import ServerConfig

GATE_TIMEOUT = 10.0


@asynccontextmanager
async def serving(database: str) -> AsyncIterator[Stubs]:
    """Runs a server on `database` for the block, with stubs on a channel to it."""
    app = await App.start(
        ServerConfig(host="127.0.0.1", port=0, database=database), support.registry()
    )
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            yield Stubs(channel)
    finally:
        await app.stop(grace=0)


@dataclass(frozen=True, slots=True)
class ThreadSnapshot:
    """Everything the API says about one thread."""

    thread: thread_pb2.Thread
    state: thread_pb2.Checkpoint
    history: list[thread_pb2.Checkpoint]
    runs: list[run_pb2.Run]


async def snapshot(stubs: Stubs, thread_id: str) -> ThreadSnapshot:
    thread = await stubs.threads.GetThread(thread_service_pb2.GetThreadRequest(thread_id=thread_id))
    state = await stubs.threads.GetThreadState(
        thread_service_pb2.GetThreadStateRequest(thread_id=thread_id)
    )
    history = await stubs.threads.GetThreadHistory(
        thread_service_pb2.GetThreadHistoryRequest(thread_id=thread_id, page_size=1000)
    )
    runs = await stubs.runs.ListRuns(
        run_service_pb2.ListRunsRequest(thread_id=thread_id, page_size=1000)
    )
    assert not history.next_page_token and not runs.next_page_token
    return ThreadSnapshot(
        thread.thread, state.checkpoint, list(history.checkpoints), list(runs.runs)
    )


async def wait_echo(stubs: Stubs, thread_id: str, content: str) -> run_service_pb2.WaitRunResponse:
    response: run_service_pb2.WaitRunResponse = await stubs.runs.WaitRun(
        run_service_pb2.WaitRunRequest(
            thread_id=thread_id, assistant_id="echo", input=human_input(content)
        )
    )
    assert response.run.status == run_pb2.RUN_STATUS_SUCCESS
    return response


async def start_gated(stubs: Stubs, thread_id: str, gate: str, content: str) -> run_pb2.Run:
    """Starts a `gated` run and returns once it is RUNNING, held at `gate`."""
    run_input = {"gates": [gate], "messages": [{"role": "user", "content": content}]}
    response: run_service_pb2.CreateRunResponse = await stubs.runs.CreateRun(
        run_service_pb2.CreateRunRequest(
            thread_id=thread_id, assistant_id="gated", input=struct(run_input)
        )
    )
    async with asyncio.timeout(GATE_TIMEOUT):
        await support.GATES.arrived(gate).wait()
    return response.run


def contents(checkpoint: thread_pb2.Checkpoint) -> list[tuple[str, str]]:
    """The (type, content) of every message in a checkpoint's values."""
    values = json_format.MessageToDict(checkpoint.values)
    return [(m["type"], m["content"]) for m in values["messages"]]


async def test_threads_runs_state_history_and_assistants_survive_a_restart(
    database: str,
) -> None:
    async with serving(database) as stubs:
        first = await stubs.threads.CreateThread(
            thread_service_pb2.CreateThreadRequest(metadata=struct({"owner": "first"}))
        )
        second = await stubs.threads.CreateThread(
            thread_service_pb2.CreateThreadRequest(metadata=struct({"owner": "second"}))
        )
        first_id, second_id = first.thread.thread_id, second.thread.thread_id
        hello = await wait_echo(stubs, first_id, "hello")
        await wait_echo(stubs, first_id, "again")
        await wait_echo(stubs, second_id, "hi")
        interrupted = await start_gated(stubs, second_id, "g1", "wait for it")
        cancelled = await stubs.runs.CancelRun(
            run_service_pb2.CancelRunRequest(
                thread_id=second_id,
                run_id=interrupted.run_id,
                action=run_pb2.CANCEL_ACTION_INTERRUPT,
                wait=True,
            )
        )
        assert cancelled.run.status == run_pb2.RUN_STATUS_INTERRUPTED
        created = await stubs.assistants.CreateAssistant(
            assistant_service_pb2.CreateAssistantRequest(
                graph_id="echo",
                name="echoer",
                config=struct({"configurable": {"tone": "flat"}}),
                metadata=struct({"team": "tests"}),
            )
        )
        assistant_id = created.assistant.assistant_id
        before = {
            thread_id: await snapshot(stubs, thread_id) for thread_id in (first_id, second_id)
        }
        assistant_before = await stubs.assistants.GetAssistant(
            assistant_service_pb2.GetAssistantRequest(assistant_id=assistant_id)
        )

    async with serving(database) as stubs:
        after = {thread_id: await snapshot(stubs, thread_id) for thread_id in (first_id, second_id)}
        assistant_after = await stubs.assistants.GetAssistant(
            assistant_service_pb2.GetAssistantRequest(assistant_id=assistant_id)
        )
        joined = await stubs.runs.JoinRun(
            run_service_pb2.JoinRunRequest(thread_id=first_id, run_id=hello.run.run_id)
        )

    for thread_id in (first_id, second_id):
        old, new = before[thread_id], after[thread_id]
        assert new.thread.thread_id == thread_id
        assert new.thread.metadata == old.thread.metadata
        assert new.thread.status == old.thread.status
        assert new.thread.values == old.thread.values
        assert [(r.run_id, r.status, r.attempt) for r in new.runs] == [
            (r.run_id, r.status, r.attempt) for r in old.runs
        ]
        assert new == old
    assert after[first_id].thread.status == thread_pb2.THREAD_STATUS_IDLE
    assert after[second_id].thread.status == thread_pb2.THREAD_STATUS_INTERRUPTED
    assert contents(after[first_id].state) == [
        ("human", "hello"),
        ("ai", "hello"),
        ("human", "again"),
        ("ai", "again"),
    ]
    assert contents(after[second_id].state) == [
        ("human", "hi"),
        ("ai", "hi"),
        ("human", "wait for it"),
    ]
    assert [r.status for r in after[second_id].runs] == [
        run_pb2.RUN_STATUS_INTERRUPTED,
        run_pb2.RUN_STATUS_SUCCESS,
    ]
    # Input plus two echo steps per run: 3 checkpoints per echo run, 1 for the interrupted one.
    assert len(after[first_id].history) == 6
    assert len(after[second_id].history) == 4
    assert assistant_after == assistant_before
    assert assistant_after.assistant.name == "echoer"
    assert joined.run == hello.run
    assert joined.values == hello.values


async def test_a_finished_runs_events_are_not_retained_across_a_restart(database: str) -> None:
    async with serving(database) as stubs:
        thread = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
        done = await wait_echo(stubs, thread.thread.thread_id, "hi")

    async with serving(database) as stubs:
        request = run_service_pb2.JoinRunStreamRequest(
            thread_id=done.run.thread_id, run_id=done.run.run_id
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream_events(stubs.runs.JoinRunStream(request))

    error = error_info(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.OUT_OF_RANGE, "STREAM_EXPIRED")


async def test_a_run_left_running_at_shutdown_resumes_at_the_next_start(database: str) -> None:
    async with serving(database) as stubs:
        thread = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
        thread_id = thread.thread.thread_id
        run = await start_gated(stubs, thread_id, "g1", "resume me")
        running = await stubs.runs.GetRun(
            run_service_pb2.GetRunRequest(thread_id=thread_id, run_id=run.run_id)
        )
        assert (running.run.status, running.run.attempt) == (run_pb2.RUN_STATUS_RUNNING, 1)
        # The server stops with the run held at its gate.

    support.GATES.arrived("g1").clear()
    async with serving(database) as stubs:
        async with asyncio.timeout(GATE_TIMEOUT):
            await support.GATES.arrived("g1").wait()
        resumed = await stubs.runs.GetRun(
            run_service_pb2.GetRunRequest(thread_id=thread_id, run_id=run.run_id)
        )
        assert (resumed.run.status, resumed.run.attempt) == (run_pb2.RUN_STATUS_RUNNING, 2)
        busy = await stubs.threads.GetThread(
            thread_service_pb2.GetThreadRequest(thread_id=thread_id)
        )
        assert busy.thread.status == thread_pb2.THREAD_STATUS_BUSY

        support.GATES.open("g1")
        joined = await stubs.runs.JoinRun(
            run_service_pb2.JoinRunRequest(thread_id=thread_id, run_id=run.run_id)
        )
        final = await snapshot(stubs, thread_id)
        events = await stream_events(
            stubs.runs.JoinRunStream(
                run_service_pb2.JoinRunStreamRequest(thread_id=thread_id, run_id=run.run_id)
            )
        )

    assert (joined.run.status, joined.run.attempt) == (run_pb2.RUN_STATUS_SUCCESS, 2)
    assert final.thread.status == thread_pb2.THREAD_STATUS_IDLE
    assert contents(final.state) == [("human", "resume me"), ("ai", "passed g1")]
    assert [(c.run_id, c.source, c.step) for c in reversed(final.history)] == [
        (run.run_id, thread_pb2.CHECKPOINT_SOURCE_INPUT, 0),
        (run.run_id, thread_pb2.CHECKPOINT_SOURCE_STEP, 1),
    ]
    # Attempt 2 numbers its events after 2**32, so a position held from attempt 1 reads as
    # expired instead of matching different events.
    base = 1 << 32
    assert [seq for seq, _, _ in events] == list(range(base + 1, base + len(events) + 1))
    assert events[0][1] == "metadata"
    assert events[0][2]["attempt"] == 2
    assert events[-1][1] == "end"
    assert events[-1][2]["status"] == "success"
