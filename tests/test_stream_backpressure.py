"""A stalled subscriber neither slows a run nor grows server memory; it is told, and resumes."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests import support
from tests.rpc import Stubs, error_info, struct
from turnstile.v1 import run_pb2, run_service_pb2, thread_service_pb2
from turnstile_server.app import App
from turnstile_server.config import ServerConfig
from turnstile_server.graph import RunContext

CHUNKS = 100_000
MESSAGE_ID = "msg-flood"
# What the server may add while 100,000 chunks (about 12 MB encoded) go to a subscriber that
# does not read: the run's log plus gRPC's transport buffers (about 16 MiB measured), with
# room for noise. A per-subscriber queue of the backlog measured 135 MiB.
MEMORY_BOUND = 64 << 20


async def flood(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Streams `CHUNKS` message chunks as fast as it can, then answers."""
    for index in range(CHUNKS):
        ctx.emit_message_chunk({"id": MESSAGE_ID, "type": "ai", "content": f"t{index} "})
        if index % 1000 == 999:
            await asyncio.sleep(0)
    yield {"messages": [{"type": "ai", "id": MESSAGE_ID, "content": f"{CHUNKS} chunks"}]}


def rss() -> int:
    """This process's resident memory in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Samples the resident memory in the background and keeps the highest value."""

    def __init__(self) -> None:
        self.peak = rss()
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss())
            await asyncio.sleep(0.02)

    def __enter__(self) -> PeakMemory:
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.peak, rss())


@pytest.fixture
async def flood_app(tmp_path: Path) -> AsyncIterator[App]:
    registry = support.registry()
    registry.register("flood", flood)
    app = await App.start(
        ServerConfig(host="127.0.0.1", port=0, database=str(tmp_path / "flood.db")), registry
    )
    yield app
    await app.stop(grace=0)


def chunk_events(events: Any) -> list[tuple[int, str, str]]:
    return [
        (e.seq, e.event, e.data.struct_value.fields["content"].string_value)
        if e.event == "messages"
        else (e.seq, e.event, "")
        for e in events
    ]


async def test_a_stalled_subscriber_is_ended_too_slow_and_resumes_without_gap(
    flood_app: App,
) -> None:
    async with (
        grpc.aio.insecure_channel(flood_app.address) as control_channel,
        grpc.aio.insecure_channel(flood_app.address) as stalled_channel,
    ):
        control, stalled = Stubs(control_channel), Stubs(stalled_channel)
        thread = await control.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
        thread_id = thread.thread.thread_id
        baseline = rss()

        with PeakMemory() as memory:
            call = stalled.runs.StreamRun(
                run_service_pb2.StreamRunRequest(
                    thread_id=thread_id,
                    assistant_id="flood",
                    stream_mode=[run_pb2.STREAM_MODE_MESSAGES],
                )
            )
            first = await call.read()
            assert isinstance(first, run_service_pb2.StreamRunResponse)
            run_id = first.run.run_id
            # The subscriber stops reading; the run must end all the same.
            joined = await control.runs.JoinRun(
                run_service_pb2.JoinRunRequest(thread_id=thread_id, run_id=run_id)
            )
            assert joined.run.status == run_pb2.RUN_STATUS_SUCCESS
            await asyncio.sleep(0.2)  # let the handler write what the transport takes

        growth = memory.peak - baseline
        assert growth < MEMORY_BOUND, f"server memory grew by {growth >> 20} MiB"

        # Reading again: what the transport held, then the documented error.
        received = chunk_events(first.events)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            while (message := await call.read()) is not grpc.aio.EOF:
                assert isinstance(message, run_service_pb2.StreamRunResponse)
                received.extend(chunk_events(message.events))
        details = error_info(failure.value)
        assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.reason == "SUBSCRIBER_TOO_SLOW"
        last_seq = received[-1][0]
        assert details.metadata["last_seq"] == str(last_seq)
        assert last_seq < CHUNKS, "the subscriber was not behind: the test proves nothing"

        resumed = control.runs.JoinRunStream(
            run_service_pb2.JoinRunStreamRequest(
                thread_id=thread_id, run_id=run_id, after_seq=last_seq
            )
        )
        async for message in resumed:
            received.extend(chunk_events(message.events))

    total = CHUNKS + 2  # metadata, the chunks, end
    assert [seq for seq, _, _ in received] == list(range(1, total + 1))
    assert received[0][1] == "metadata" and received[-1][1] == "end"
    assert [text for _, event, text in received if event == "messages"] == [
        f"t{index} " for index in range(CHUNKS)
    ]


# A client that stops reading: a fixed 64 KiB window (its bandwidth-delay estimate would grow
# it to megabytes per stream on loopback and take a whole run's events off the server).
STUCK = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 64 << 10)]


def _copies_of(content: str) -> int:
    """How many live message lists hold a message carrying `content` (an equal string).

    Lists, as the garbage collector stops tracking a dict of strings, not a list of dicts.
    """
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if type(obj) is list
        and any(type(item) is dict and item.get("content") == content for item in obj)
    )


async def test_subscribers_joining_a_run_do_not_each_hold_a_copy_of_its_input(
    flood_app: App,
) -> None:
    content = "needle " + "x" * 300_000  # the run's `values` events exceed the window
    async with grpc.aio.insecure_channel(flood_app.address, options=STUCK) as channel:
        stubs = Stubs(channel)
        thread = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
        run_input = struct({"messages": [{"role": "user", "content": content}]})
        run = (
            await stubs.runs.WaitRun(
                run_service_pb2.WaitRunRequest(
                    thread_id=thread.thread.thread_id, assistant_id="echo", input=run_input
                )
            )
        ).run
        del run_input
        before = _copies_of(content)
        calls = [
            stubs.runs.JoinRunStream(
                run_service_pb2.JoinRunStreamRequest(thread_id=run.thread_id, run_id=run.run_id)
            )
            for _ in range(10)
        ]
        try:
            for call in calls:  # each reads its run; its handler is left holding `values`
                await call.read()
            held = _copies_of(content) - before
        finally:
            for call in calls:
                call.cancel()
    # Measured: 8 more with a copy each (10, less what WaitRun left), 2 fewer without.
    assert held < 5, f"{held} more copies of the run's input with 10 subscribers"
