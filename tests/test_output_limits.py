"""What a graph yields is held to the limits of what a client sends: an update that breaks one
ends its run ERROR, saying why, before anything of it is stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from tests import support
from tests.rpc import Stubs
from turnstile.v1 import run_pb2, run_service_pb2, thread_pb2, thread_service_pb2
from turnstile_server.app import App
from turnstile_server.config import ServerConfig
from turnstile_server.graph import RunContext
from turnstile_server.state import MAX_JSON_DEPTH


def nested(depth: int) -> dict[str, Any]:
    """An object whose objects nest `depth` levels deep, itself included."""
    bottom: Any = "bottom"
    for _ in range(depth - 1):
        bottom = {"k": bottom}
    return {"deep": bottom}


async def deep(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Yields a step at the depth limit, then one `input.depth` deep."""
    yield {"fine": nested(MAX_JSON_DEPTH - 1)["deep"]}
    yield nested(int(ctx.input.get("depth", 40)))


@pytest.fixture
async def stubs(tmp_path: Path) -> AsyncIterator[Stubs]:
    graphs = support.registry()
    graphs.register("deep", deep)
    graphs.register("deep_custom", deep_custom)
    app = await App.start(
        ServerConfig(host="127.0.0.1", port=0, database=str(tmp_path / "deep.db")), graphs
    )
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            yield Stubs(channel)
    finally:
        await app.stop(grace=0)


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
async def test_an_update_nested_past_the_limit_ends_the_run_error_and_stores_nothing_of_it(
    stubs: Stubs, durability: str
) -> None:
    thread = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
    thread_id = thread.thread.thread_id
    waited = await stubs.runs.WaitRun(
        run_service_pb2.WaitRunRequest(
            thread_id=thread_id,
            assistant_id="deep",
            durability=run_pb2.Durability.Value(f"DURABILITY_{durability.upper()}"),
        )
    )
    assert waited.run.status == run_pb2.RUN_STATUS_ERROR
    assert waited.run.error.type == "InvalidInput"
    assert f"nest more than {MAX_JSON_DEPTH} levels" in waited.run.error.message
    assert "fine" in json_format.MessageToDict(waited.values), "the step before it is kept"

    got = await stubs.threads.GetThread(thread_service_pb2.GetThreadRequest(thread_id=thread_id))
    assert got.thread.status == thread_pb2.THREAD_STATUS_ERROR
    state = await stubs.threads.GetThreadState(
        thread_service_pb2.GetThreadStateRequest(thread_id=thread_id)
    )
    assert "deep" not in json_format.MessageToDict(state.checkpoint.values)
    listed = await stubs.threads.ListThreads(thread_service_pb2.ListThreadsRequest())
    assert [t.thread_id for t in listed.threads] == [thread_id]
    history = await stubs.threads.GetThreadHistory(
        thread_service_pb2.GetThreadHistoryRequest(thread_id=thread_id)
    )
    stored = [json_format.MessageToDict(c.values) for c in history.checkpoints]
    assert stored and all("deep" not in values for values in stored)


async def test_an_update_at_the_depth_limit_is_stored(stubs: Stubs) -> None:
    thread = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
    waited = await stubs.runs.WaitRun(
        run_service_pb2.WaitRunRequest(
            thread_id=thread.thread.thread_id,
            assistant_id="deep",
            input=json_format.ParseDict({"depth": MAX_JSON_DEPTH}, struct_pb2.Struct()),
        )
    )
    assert waited.run.status == run_pb2.RUN_STATUS_SUCCESS, waited.run.error
    values = json_format.MessageToDict(waited.values)
    assert values["deep"] == nested(MAX_JSON_DEPTH)["deep"]


async def deep_custom(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Emits a `custom` event 40 levels deep."""
    ctx.emit_custom(nested(40))
    yield {"never": True}


async def test_an_event_nested_past_the_limit_ends_the_run_error_and_the_stream_decodes(
    stubs: Stubs,
) -> None:
    thread = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
    stream = stubs.runs.StreamRun(
        run_service_pb2.StreamRunRequest(
            thread_id=thread.thread.thread_id,
            assistant_id="deep_custom",
            stream_mode=[run_pb2.STREAM_MODE_CUSTOM],
        )
    )
    events = [event async for message in stream for event in message.events]
    assert [e.event for e in events] == ["metadata", "error", "end"]
    error = json_format.MessageToDict(events[1].data)
    assert error["type"] == "InvalidInput"
    assert f"nest more than {MAX_JSON_DEPTH} levels" in error["message"]
