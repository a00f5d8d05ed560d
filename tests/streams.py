"""Helpers for the stream tests: a server with stream settings, raw calls, event checks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from tests import support
from tests.rpc import ErrorDetails, Stubs, error_info, human_input, struct
from turnstile.v1 import run_pb2, run_service_pb2, thread_service_pb2
from turnstile_server.app import App
from turnstile_server.config import ServerConfig

STEP_TIMEOUT = 10.0  # seconds any one awaited thing may take before the test fails
ALL_MODES = [
    run_pb2.STREAM_MODE_VALUES,
    run_pb2.STREAM_MODE_UPDATES,
    run_pb2.STREAM_MODE_MESSAGES,
    run_pb2.STREAM_MODE_CUSTOM,
]
AGENT_CONFIG = {"configurable": {"step_seconds": 0.05}}
QUESTION = "what's the weather in sf"

Event = tuple[int, str, Any]  # (seq, event, data as JSON)


@asynccontextmanager
async def serving(database: str, **settings: Any) -> AsyncIterator[tuple[App, Stubs]]:
    """A server with the streaming test graphs and `settings`, and stubs on a channel to it."""
    app = await App.start(
        ServerConfig(host="127.0.0.1", port=0, database=database, **settings),
        support.streaming_registry(),
    )
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            yield app, Stubs(channel)
    finally:
        await app.stop(grace=0)


async def new_thread(stubs: Stubs) -> str:
    response = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
    thread_id: str = response.thread.thread_id
    return thread_id


def stream_run(
    stubs: Stubs, thread_id: str, assistant_id: str, run_input: dict[str, Any], **fields: Any
) -> Any:
    """Opens a StreamRun call (not yet read)."""
    return stubs.runs.StreamRun(
        run_service_pb2.StreamRunRequest(
            thread_id=thread_id, assistant_id=assistant_id, input=struct(run_input), **fields
        )
    )


def agent_stream(stubs: Stubs, thread_id: str, **fields: Any) -> Any:
    """StreamRun of the built-in agent on the weather question, fast, in every stream mode."""
    return stubs.runs.StreamRun(
        run_service_pb2.StreamRunRequest(
            thread_id=thread_id,
            assistant_id="agent",
            input=human_input(QUESTION),
            config=struct(AGENT_CONFIG),
            stream_mode=ALL_MODES,
            **fields,
        )
    )


def join_stream(stubs: Stubs, run: run_pb2.Run, after_seq: int = 0) -> Any:
    return stubs.runs.JoinRunStream(
        run_service_pb2.JoinRunStreamRequest(
            thread_id=run.thread_id, run_id=run.run_id, after_seq=after_seq
        )
    )


async def create_run(
    stubs: Stubs, thread_id: str, assistant_id: str, run_input: dict[str, Any], **fields: Any
) -> run_pb2.Run:
    response = await stubs.runs.CreateRun(
        run_service_pb2.CreateRunRequest(
            thread_id=thread_id, assistant_id=assistant_id, input=struct(run_input), **fields
        )
    )
    run: run_pb2.Run = response.run
    return run


async def get_run(stubs: Stubs, run: run_pb2.Run) -> run_pb2.Run:
    response = await stubs.runs.GetRun(
        run_service_pb2.GetRunRequest(thread_id=run.thread_id, run_id=run.run_id)
    )
    got: run_pb2.Run = response.run
    return got


async def join_run(stubs: Stubs, run: run_pb2.Run) -> run_pb2.Run:
    response = await stubs.runs.JoinRun(
        run_service_pb2.JoinRunRequest(thread_id=run.thread_id, run_id=run.run_id)
    )
    joined: run_pb2.Run = response.run
    return joined


async def arrived(gate: str) -> None:
    """Waits until a `gated` or `chatty` run waits at `gate`."""
    async with asyncio.timeout(STEP_TIMEOUT):
        await support.GATES.arrived(gate).wait()


async def failure(call: Callable[[], Awaitable[Any]]) -> ErrorDetails:
    """Makes the call, expects it to fail, and returns what the failure said.

    For a stream, `call` reads only the first message: an error about the request comes at
    once, instead of it.
    """
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(STEP_TIMEOUT):
            await call()
    return error_info(caught.value)


def events_of(message: Any) -> list[Event]:
    return [(e.seq, e.event, json_format.MessageToDict(e.data)) for e in message.events]


@dataclass
class RunStream:
    """A StreamRun or JoinRunStream call read message by message."""

    call: Any
    run: run_pb2.Run = field(default_factory=run_pb2.Run)
    events: list[Event] = field(default_factory=list)
    run_ids: set[str] = field(default_factory=set)

    async def opened(self) -> run_pb2.Run:
        """Reads the first message: the run, at once, and no events."""
        async with asyncio.timeout(STEP_TIMEOUT):
            first = await self.call.read()
        assert first is not grpc.aio.EOF, "the stream ended without a first message"
        assert first.HasField("run"), "the first message carries the run"
        assert not first.events, "the first message carries no events"
        self.run = first.run
        return self.run

    async def _next(self) -> bool:
        async with asyncio.timeout(STEP_TIMEOUT):
            message = await self.call.read()
        if message is grpc.aio.EOF:
            return False
        assert not message.HasField("run"), "only the first message carries the run"
        assert message.events, "a message after the first carries events"
        self.events.extend(events_of(message))
        self.run_ids.update(e.run_id for e in message.events)
        return True

    async def until(self, done: Callable[[list[Event]], bool]) -> list[Event]:
        """Reads until `done(events)`; fails if the stream ends first."""
        while not done(self.events):
            assert await self._next(), f"the stream ended early after {self.events}"
        return self.events

    async def to_end(self) -> list[Event]:
        """Reads the rest of the stream, which must complete OK."""
        if not self.run.run_id:
            await self.opened()
        while await self._next():
            pass
        assert self.run_ids <= {self.run.run_id}, "every event carries the stream's run id"
        return self.events


async def read_all(call: Any) -> tuple[run_pb2.Run, list[Event]]:
    stream = RunStream(call)
    await stream.opened()
    return stream.run, await stream.to_end()


def has_event(name: str, times: int = 1) -> Callable[[list[Event]], bool]:
    return lambda events: count(events, name) >= times


def count(events: list[Event], name: str) -> int:
    return sum(event == name for _, event, _ in events)


def assert_well_formed(events: list[Event]) -> None:
    """`metadata` first, `end` last and only there, seqs 1..n."""
    assert events, "no events"
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    assert events[0][1] == "metadata"
    assert events[-1][1] == "end"
    assert [event for _, event, _ in events].count("end") == 1
