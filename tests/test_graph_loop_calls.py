"""What a native run on a graph loop asks the server loop for: its state comes with its start,
so the graph side calls over the bridge only to land its steps, and sees the thread's state
all the same."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests import support
from tests.rpc import Stubs, struct
from turnstile.v1 import run_pb2, run_service_pb2, thread_service_pb2
from turnstile_server.app import App
from turnstile_server.config import ServerConfig
from turnstile_server.graph import GraphRegistry, RunContext
from turnstile_server.runtime.loop_bridge import LoopBridge


async def counting(state: Mapping[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Two steps; the second says how many messages the state had as the run started."""
    seen = len(state.get("messages") or [])
    yield {"steps": 1}
    yield {"messages": [{"type": "ai", "content": f"saw {seen}"}]}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the server-side functions the graph side called over the bridge."""
    names: list[str] = []
    call = LoopBridge.call

    async def recorded(self: LoopBridge, start: Callable[[], Any]) -> Any:
        names.append(getattr(start, "__name__", "?"))
        return await call(self, start)

    monkeypatch.setattr(LoopBridge, "call", recorded)
    return names


async def test_a_native_run_calls_the_server_loop_only_to_land_its_steps(
    tmp_path: Path, calls: list[str]
) -> None:
    """Without the state handed over with the start, the run's first call is `state`."""
    graphs: GraphRegistry = support.registry()
    graphs.register("counting", counting)
    config = ServerConfig(host="127.0.0.1", port=0, database=str(tmp_path / "calls.db"))
    app = await App.start(config, graphs)
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stubs = Stubs(channel)
            thread = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
            contents = []
            for text in ("one", "two"):
                calls.clear()
                done = await stubs.runs.WaitRun(
                    run_service_pb2.WaitRunRequest(
                        thread_id=thread.thread.thread_id,
                        assistant_id="counting",
                        input=struct({"messages": [{"type": "human", "content": text}]}),
                    ),
                    timeout=30,
                )
                assert done.run.status == run_pb2.RUN_STATUS_SUCCESS
                assert calls == ["land", "land"]  # one per `sync` step, none for the state
                contents.append([m["content"] for m in _messages(done)])
    finally:
        await app.stop(grace=0)
    # Each run saw the thread's state with its own input: 1 message, then 3.
    assert contents == [["one", "saw 1"], ["one", "saw 1", "two", "saw 3"]]


def _messages(done: run_service_pb2.WaitRunResponse) -> list[dict[str, Any]]:
    from google.protobuf.json_format import MessageToDict

    values: dict[str, Any] = MessageToDict(done.values)
    messages: list[dict[str, Any]] = values["messages"]
    return messages
