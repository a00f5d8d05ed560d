"""An interrupt leaves a conversation a model accepts (issue 20 point 7): a run cut between its
model step (an AI message asking for a tool) and its tool step closes the call with a tool
message saying it was cancelled, in a checkpoint of its own; off per run or per server; a
rollback leaves no trace at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from tests.support import GATES
from turnstile import MultitaskStrategy, ThreadState, TurnstileClient, get_client
from turnstile_server.app import App
from turnstile_server.config import ServerConfig
from turnstile_server.graph import GraphRegistry
from turnstile_server.runtime.langgraph.repair import CANCELLED, dangling_calls

HI = {"messages": [{"role": "user", "content": "weather in sf?"}]}
SEEN: list[list[Any]] = []


class Chat(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]


async def _model(state: Chat) -> dict[str, Any]:
    SEEN.append(list(state["messages"]))
    if state["messages"][-1].type == "human" and "weather" in str(state["messages"][-1].content):
        call = {"id": f"call-{len(SEEN)}", "name": "search", "args": {"q": "sf"}}
        return {"messages": [AIMessage("", tool_calls=[call])]}
    return {"messages": [AIMessage("done")]}


async def _tools(state: Chat) -> dict[str, Any]:
    GATES.arrived("tools").set()
    await GATES.event("tools").wait()
    call = state["messages"][-1].tool_calls[0]  # type: ignore[union-attr]
    return {"messages": [ToolMessage("sunny", tool_call_id=call["id"])]}


def _route(state: Chat) -> str:
    last = state["messages"][-1]
    return "tools" if isinstance(last, AIMessage) and last.tool_calls else END


def _agent() -> Any:
    builder = StateGraph(Chat)
    builder.add_node("model", _model)
    builder.add_node("tools", _tools)
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", _route, ["tools", END])
    builder.add_edge("tools", "model")
    return builder.compile()


@asynccontextmanager
async def serving(tmp_path: Path, **settings: Any) -> AsyncIterator[TurnstileClient]:
    graphs = GraphRegistry()
    graphs.register("agent", _agent())
    config = ServerConfig(host="127.0.0.1", port=0, database=str(tmp_path / "t.db"), **settings)
    app = await App.start(config, graphs)
    client = get_client(url=app.address)
    try:
        yield client
    finally:
        await client.close()
        await app.stop(grace=0)


@pytest.fixture(autouse=True)
def fresh() -> None:
    SEEN.clear()


async def _cut(client: TurnstileClient, **options: Any) -> tuple[str, str]:
    """A run of `agent` waiting in its tool step, its model's tool call not yet answered."""
    tid = (await client.threads.create())["thread_id"]
    run = await client.runs.create(tid, "agent", input=HI, **options)
    await asyncio.wait_for(GATES.arrived("tools").wait(), 10)
    GATES.arrived("tools").clear()
    return tid, run["run_id"]


def _types(state: ThreadState) -> list[str]:
    return [m["type"] for m in state["values"]["messages"]]


async def test_an_interrupted_run_closes_its_dangling_tool_call_in_its_last_checkpoint(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as client:
        tid, run_id = await _cut(client)
        cancelled = await client.runs.cancel(tid, run_id, wait=True)
        assert cancelled["status"] == "interrupted"
        state = await client.threads.get_state(tid)
    assert _types(state) == ["human", "ai", "tool"]
    tool = state["values"]["messages"][-1]
    assert tool["tool_call_id"] == "call-1" and tool["content"] == CANCELLED
    assert tool["status"] == "error"
    assert state["run_id"] == run_id, "the interrupted run's own checkpoint"
    assert state["metadata"]["source"] == "update"
    assert state["next"] == [], "the conversation is closed: nothing waits to run"


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
async def test_the_run_that_supersedes_sees_a_well_formed_history(
    tmp_path: Path, strategy: MultitaskStrategy
) -> None:
    async with serving(tmp_path) as client:
        tid, cut = await _cut(client)
        before = await client.threads.get_history(tid, limit=100)
        new = await client.runs.wait_run(
            tid,
            "agent",
            input={"messages": [{"role": "user", "content": "thanks"}]},
            multitask_strategy=strategy,
        )
        assert new.run["status"] == "success"
        history = await client.threads.get_history(tid, limit=100)
    seen = SEEN[-1]
    assert dangling_calls(seen) == [], "every tool call the model sees has its result"
    if strategy == "interrupt":
        assert [m.type for m in seen] == ["human", "ai", "tool", "human"]
    else:  # a rollback leaves no trace of the cut run: no repair to see either
        assert [m.type for m in seen] == ["human"]
        assert cut not in {c["run_id"] for c in history}
        assert before and all(c["run_id"] == cut for c in before)


@pytest.mark.parametrize("where", ["run", "server"])
async def test_closing_tool_calls_is_off_per_run_or_per_server(tmp_path: Path, where: str) -> None:
    settings = {"close_tool_calls": "off"} if where == "server" else {}
    options = {"close_tool_calls": False} if where == "run" else {}
    async with serving(tmp_path, **settings) as client:
        tid, run_id = await _cut(client, **options)
        await client.runs.cancel(tid, run_id, wait=True)
        state = await client.threads.get_state(tid)
    assert _types(state) == ["human", "ai"]
    assert state["next"] == ["tools"]


async def test_a_run_that_ends_by_itself_is_not_repaired(tmp_path: Path) -> None:
    async with serving(tmp_path) as client:
        tid, run_id = await _cut(client)
        GATES.open("tools")
        result = await client.runs.join_run(tid, run_id)
        assert result.run["status"] == "success"
        assert [m["type"] for m in result.values["messages"]] == ["human", "ai", "tool", "ai"]
        assert result.values["messages"][2]["content"] == "sunny"
