"""What a graph yields is held to the limits of what a client sends (depth) and of a thread's
state (`--max-state-bytes`): an update that breaks one ends its run ERROR, saying why, before
anything of it is stored; UpdateThreadState past the size limit is refused; a thread stored
larger than an answer carries is refused by reads and left out of list pages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict, cast

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from langchain_core.messages import AIMessage, AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from tests import postgres, support
from tests.rpc import Stubs, struct
from turnstile import ResourceExhaustedError, TurnstileClient, get_client
from turnstile.v1 import run_pb2, run_service_pb2, thread_pb2, thread_service_pb2
from turnstile_server.api import codec
from turnstile_server.app import App
from turnstile_server.config import ServerConfig
from turnstile_server.errors import StateTooLarge
from turnstile_server.graph import RunContext
from turnstile_server.state import MAX_JSON_DEPTH, ThreadState


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


# A thread's state is held to `--max-state-bytes` (issue 18, point 6's principle for sizes).

Durability = Literal["sync", "async", "exit"]
LIMIT = 64 << 10
CHUNK = "s" * (8 << 10)  # a message's content: eight of them pass LIMIT


def test_a_state_s_size_is_its_encoded_size_and_kept_by_each_update() -> None:
    state = ThreadState({"n": 1.5, "flag": True, "none": None, "list": [1, "two", {}, []]})
    updates: list[dict[str, Any]] = [
        {"messages": [{"type": "human", "content": "héllo", "id": "a"}]},
        {"messages": [{"type": "ai", "content": "x" * 300, "id": "b"}], "n": "now text"},
        {"messages": [{"type": "ai", "content": "short", "id": "b"}]},  # replaces b
        {
            "messages": [
                {"type": "ai", "content": "1", "id": "c"},
                {"type": "ai", "content": "22", "id": "c"},
            ]
        },
        {"deep": {"k": [{"v": "é" * 200}] * 70}, "list": []},
    ]
    assert state.size == len(codec.state_body(state))
    for update in updates:
        before = state.size
        state.apply(update, limit=10 << 20)
        assert state.size == len(codec.state_body(state)) == ThreadState(state.values).size
        assert state.size != before
        assert state.copy().size == state.size


def test_an_update_past_the_limit_raises_and_changes_nothing() -> None:
    state = ThreadState({"messages": [{"type": "human", "content": CHUNK, "id": "a"}]})
    with pytest.raises(StateTooLarge) as refused:
        state.apply({"blob": "b" * LIMIT}, limit=LIMIT)
    assert refused.value.size > LIMIT and refused.value.reason == "STATE_TOO_LARGE"
    assert "blob" not in state.values and state.size == len(codec.state_body(state))
    state.apply({"messages": [{"type": "human", "content": "y", "id": "a"}]}, limit=LIMIT // 8)
    assert state.size < LIMIT // 8, "an update that shrinks the state under the limit is taken"


async def growing(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Appends a message of 8 KiB per step, `input.steps` of them."""
    for i in range(int(ctx.input.get("steps", 20))):
        yield {"messages": [{"type": "ai", "content": CHUNK, "id": f"{ctx.run_id}-{i}"}]}


async def sized(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Sets `blob` to a string of `input.bytes` bytes."""
    yield {"blob": "b" * int(ctx.input["bytes"])}


async def idle(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Yields nothing: its runs change the thread by their input alone."""
    return
    yield


class Grown(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    steps: int


def _lg_growing() -> Any:
    """A LangGraph graph appending an 8 KiB message per superstep, `steps` of them."""

    async def grow(state: Grown) -> dict[str, Any]:
        return {"messages": [AIMessage(CHUNK)], "steps": int(state.get("steps", 20)) - 1}

    def more(state: Grown) -> str:
        return "grow" if int(state.get("steps", 20)) > 0 else END

    builder = StateGraph(Grown)
    builder.add_node("grow", grow)
    builder.add_edge(START, "grow")
    builder.add_conditional_edges("grow", more, ["grow", END])
    return builder.compile()


def size_registry() -> Any:
    graphs = support.registry()
    graphs.register("growing", growing)
    graphs.register("sized", sized)
    graphs.register("idle", idle)
    graphs.register("lg_growing", _lg_growing())
    return graphs


async def start(database: str, **limits: Any) -> App:
    config = replace(ServerConfig(host="127.0.0.1", port=0, database=database), **limits)
    config.check()
    return await App.start(config, size_registry())


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database on each backend (the PostgreSQL one dropped after)."""
    if request.param == "sqlite":
        yield str(tmp_path / "limits.db")
        return
    async with postgres.database() as url:
        yield url


@pytest.fixture
async def limited(database: str) -> AsyncIterator[TurnstileClient]:
    app = await start(database, max_state_bytes=LIMIT)
    client = get_client(url=app.address)
    try:
        yield client
    finally:
        await client.close()
        await app.stop(grace=0)


async def state_bytes(client: TurnstileClient, thread_id: str) -> tuple[int, int]:
    """The thread's messages and the encoded size of its values."""
    values = (await client.threads.get_state(thread_id))["values"]
    return len(values.get("messages", [])), struct(values).ByteSize()


@pytest.mark.parametrize("graph", ["growing", "lg_growing"])
@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
async def test_a_step_past_the_state_limit_ends_the_run_error_and_stores_nothing_of_it(
    limited: TurnstileClient, graph: str, durability: str
) -> None:
    thread_id = (await limited.threads.create())["thread_id"]
    streamed = [
        part
        async for part in limited.runs.stream(
            thread_id,
            graph,
            input={"steps": 20},
            stream_mode=["values"],
            durability=cast(Durability, durability),
        )
    ]
    assert streamed[-1].event == "end" and streamed[-2].event == "error", streamed[-2:]
    assert streamed[-2].data["type"] == "StateTooLarge", streamed[-2].data
    assert "--max-state-bytes" in streamed[-2].data["message"]
    run = (await limited.runs.list(thread_id))[0]
    assert run["status"] == "error"

    messages, size = await state_bytes(limited, thread_id)
    assert messages < 20, "the step past the limit is not stored"
    if (graph, durability) != ("lg_growing", "exit"):  # LangGraph's exit: one checkpoint
        assert messages >= 1, "the steps before it are kept"
    assert size <= LIMIT * 1.1  # LangGraph's state is measured as stored: a little apart
    history = await limited.threads.get_history(thread_id, limit=100)
    assert max([struct(h["values"]).ByteSize() for h in history], default=0) == size
    thread = await limited.threads.get(thread_id)
    assert thread["status"] == "error"
    assert [t["thread_id"] for t in await limited.threads.search()] == [thread_id]


async def test_one_update_larger_than_the_limit_is_refused_whole(
    limited: TurnstileClient,
) -> None:
    thread_id = (await limited.threads.create())["thread_id"]
    waited = await limited.runs.wait(thread_id, "sized", input={"bytes": 2 * LIMIT})
    run = (await limited.runs.list(thread_id))[0]
    assert run["status"] == "error" and run["error"] is not None, run
    assert run["error"]["type"] == "StateTooLarge", run
    assert "blob" not in (await limited.threads.get_state(thread_id))["values"], waited


async def test_a_native_run_whose_input_takes_the_thread_past_the_limit_ends_error_at_once(
    limited: TurnstileClient,
) -> None:
    thread_id = (await limited.threads.create())["thread_id"]
    await limited.runs.wait(thread_id, "sized", input={"bytes": LIMIT - (4 << 10)})
    text = {"messages": [{"role": "user", "content": CHUNK}]}
    await limited.runs.wait(thread_id, "idle", input=text)
    run = (await limited.runs.list(thread_id))[0]
    assert run["status"] == "error" and run["error"] is not None, run
    assert run["error"]["type"] == "StateTooLarge", run
    await limited.runs.wait(thread_id, "idle", input=text)
    again = (await limited.runs.list(thread_id))[0]
    assert again["status"] == "error", "a thread past the limit runs no graph"


async def test_update_thread_state_past_the_limit_is_refused_and_writes_nothing(
    limited: TurnstileClient,
) -> None:
    thread_id = (await limited.threads.create())["thread_id"]
    await limited.runs.wait(thread_id, "lg_growing", input={"steps": 1})
    before = await limited.threads.get_state(thread_id)

    with pytest.raises(ResourceExhaustedError) as refused:
        await limited.threads.update_state(
            thread_id, {"messages": [{"role": "user", "content": "u" * LIMIT}]}
        )
    assert refused.value.reason == "STATE_TOO_LARGE", refused.value
    assert refused.value.metadata["limit"] == str(LIMIT)
    after = await limited.threads.get_state(thread_id)
    assert after["checkpoint"] == before["checkpoint"] and after["values"] == before["values"]
    await limited.threads.update_state(thread_id, {"messages": [{"role": "user", "content": "ok"}]})
    assert len((await limited.threads.get_state(thread_id))["values"]["messages"]) == 2


async def test_a_thread_stored_larger_than_an_answer_is_refused_by_reads_and_left_out_of_lists(
    database: str,
) -> None:
    app = await start(database, max_state_bytes=1 << 20)  # a server before the limit was low
    client = get_client(url=app.address)
    try:
        small = (await client.threads.create())["thread_id"]
        native = (await client.threads.create())["thread_id"]
        await client.runs.wait(native, "sized", input={"bytes": 300 << 10})
        langgraph = (await client.threads.create())["thread_id"]
        await client.runs.wait(langgraph, "lg_growing", input={"steps": 40})
        newest = (await client.threads.create())["thread_id"]
    finally:
        await client.close()
        await app.stop(grace=0)

    app = await start(
        database, max_state_bytes=LIMIT, max_answer_bytes=128 << 10, max_page_bytes=LIMIT
    )
    client = get_client(url=app.address)
    try:
        for thread_id in (native, langgraph):
            for read in (client.threads.get, client.threads.get_state):
                with pytest.raises(ResourceExhaustedError) as refused:
                    await read(thread_id)
                assert refused.value.reason == "STATE_TOO_LARGE", refused.value
                assert refused.value.metadata["thread_id"] == thread_id
        for thread_id in (native, langgraph):
            run = (await client.runs.list(thread_id))[0]
            with pytest.raises(ResourceExhaustedError) as refused:
                await client.runs.join(thread_id, run["run_id"])
            assert refused.value.reason == "STATE_TOO_LARGE", refused.value
        assert [t["thread_id"] for t in await client.threads.search()] == [newest, small]
        for thread_id in (native, langgraph):  # its entries an answer carries, the rest left out
            history = await client.threads.get_history(thread_id, limit=100)
            assert history and all(struct(h["values"]).ByteSize() < 128 << 10 for h in history)
        paged: list[str] = []
        token = ""
        async with grpc.aio.insecure_channel(app.address) as channel:
            stubs = Stubs(channel)
            while True:
                page = await stubs.threads.ListThreads(
                    thread_service_pb2.ListThreadsRequest(page_size=1, page_token=token)
                )
                paged += [t.thread_id for t in page.threads]
                token = page.next_page_token
                if not token:
                    break
        assert paged == [newest, small], "pages carry on past the threads left out"
    finally:
        await client.close()
        await app.stop(grace=0)


async def test_a_thread_s_state_is_measured_once_not_at_every_run_start(
    limited: TurnstileClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `--max-state-bytes`, each run's start (`_Host.state`, which hands a native run's
    state over with its start) measures the thread's state: a no-op once it was measured, so
    a run's start costs the same on a long thread as on a short one."""
    measured = 0
    original = ThreadState._measured

    def counting(self: ThreadState) -> dict[str, int]:
        nonlocal measured
        if self._entries is None:
            measured += 1
        return original(self)

    monkeypatch.setattr(ThreadState, "_measured", counting)
    thread_id = (await limited.threads.create())["thread_id"]
    say = {"messages": [{"role": "user", "content": "hi"}]}
    await limited.runs.wait(thread_id, "echo", input=say)
    after_first = measured
    for _ in range(4):
        await limited.runs.wait(thread_id, "echo", input=say)
    assert after_first >= 1
    assert measured == after_first, "measured again at a later run's start"
