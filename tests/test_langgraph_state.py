"""A LangGraph thread's state (`thread_states.ThreadStates`, shown by GetThreadState and
GetThreadHistory): values, `next`, tasks with interrupts, errors and subgraph checkpoints,
checkpoint and parent, metadata; and JoinRun's values being the run's own."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import interrupt

from tests.lg_graphs import lg_registry
from tests.support import client_of
from turnstile import TurnstileClient
from turnstile_server.app import App
from turnstile_server.graph import GraphRegistry
from turnstile_server.thread_states import ThreadStates

HI = {"messages": [{"role": "user", "content": "hi"}]}


class Chat(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]


async def _ask(state: Chat) -> dict[str, Any]:
    answer = interrupt({"question": "sure?"})
    return {"messages": [AIMessage(f"you said {answer}")]}


def _asking() -> Any:
    builder = StateGraph(Chat)
    builder.add_node("ask", _ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    return builder.compile()


def _nesting() -> Any:
    builder = StateGraph(Chat)
    builder.add_node("inner", _asking())
    builder.add_edge(START, "inner")
    builder.add_edge("inner", END)
    return builder.compile()


async def _explode(state: Chat) -> dict[str, Any]:
    raise ValueError("no luck")


def _exploding() -> Any:
    builder = StateGraph(Chat)
    builder.add_node("explode", _explode)
    builder.add_edge(START, "explode")
    return builder.compile()


async def _note(state: Chat) -> dict[str, Any]:
    return {"messages": [AIMessage("noted")]}


def _asking_beside_a_sibling() -> Any:
    """`ask` stops at interrupt() in the superstep where `note` finishes: the last checkpoint
    has the sibling's pending write, which its values do not show."""
    builder = StateGraph(Chat)
    builder.add_node("ask", _ask)
    builder.add_node("note", _note)
    builder.add_edge(START, "ask")
    builder.add_edge(START, "note")
    builder.add_edge("ask", END)
    builder.add_edge("note", END)
    return builder.compile()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[App, TurnstileClient, ThreadStates]]:
    graphs: GraphRegistry = lg_registry()
    graphs.register("asking", _asking())
    graphs.register("nesting", _nesting())
    graphs.register("exploding", _exploding())
    graphs.register("sibling", _asking_beside_a_sibling())
    async with client_of(str(tmp_path / "t.db"), graphs) as (app, client):
        yield app, client, ThreadStates(app.store, graphs)


async def test_an_interrupted_thread_shows_next_its_task_and_the_interrupt(
    served: tuple[App, TurnstileClient, ThreadStates],
) -> None:
    _, client, states = served
    tid = (await client.threads.create())["thread_id"]
    result = await client.runs.wait_run(tid, "asking", input=HI)
    assert result.run["status"] == "success"

    state = await states.latest(tid)
    assert state.next == ("ask",)
    assert state.awaiting_input
    [task] = state.tasks
    assert task.name == "ask" and task.error is None
    [pending] = state.interrupts
    assert pending.value == {"question": "sure?"} and pending.id
    assert state.checkpoint is not None and state.parent_checkpoint is not None
    assert state.metadata["run_id"] == state.run_id == result.run["run_id"]
    assert state.metadata["source"] == "loop"
    assert state.values["messages"][0]["type"] == "human"

    wire = await client.threads.get_state(tid)
    assert wire["checkpoint_id"] == state.checkpoint.checkpoint_id
    assert wire["values"]["messages"][0]["content"] == "hi"
    assert wire["run_id"] == result.run["run_id"]


async def test_a_subgraph_task_points_at_the_subgraphs_checkpoint_namespace(
    served: tuple[App, TurnstileClient, ThreadStates],
) -> None:
    _, client, states = served
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait_run(tid, "nesting", input=HI)
    [task] = (await states.latest(tid)).tasks
    assert task.name == "inner"
    assert task.checkpoint is not None
    assert task.checkpoint.thread_id == tid
    assert task.checkpoint.checkpoint_ns.startswith("inner:")


async def test_a_failed_task_shows_its_error(
    served: tuple[App, TurnstileClient, ThreadStates],
) -> None:
    _, client, states = served
    tid = (await client.threads.create())["thread_id"]
    result = await client.runs.wait_run(tid, "exploding", input=HI)
    assert result.run["status"] == "error"
    assert result.run["error"] == {"type": "ValueError", "message": "no luck"}
    [task] = (await states.latest(tid)).tasks
    assert task.name == "explode" and task.error == "ValueError('no luck')", "LangGraph's form"
    [wire] = (await client.threads.get_state(tid))["tasks"]  # the same over gRPC
    assert (wire["name"], wire["error"], wire["interrupts"]) == ("explode", task.error, [])


async def test_history_is_newest_first_each_with_its_parent_and_pages_carry_on(
    served: tuple[App, TurnstileClient, ThreadStates],
) -> None:
    _, client, states = served
    tid = (await client.threads.create())["thread_id"]
    runs = [(await client.runs.wait_run(tid, "echo", input=HI)).run["run_id"] for _ in range(3)]
    graph = await states.langgraph_of(tid)
    assert graph is not None
    whole, cursor = await states.langgraph_history(graph, tid, limit=100, before=None)
    assert cursor is None and len(whole) == 9, "three checkpoints per run"
    for newer, older in itertools.pairwise(whole):
        assert newer.parent_checkpoint == older.checkpoint
    assert whole[-1].parent_checkpoint is None
    assert [s.run_id for s in whole] == [r for r in reversed(runs) for _ in range(3)]
    assert [s.metadata["source"] for s in whole[:3]] == ["loop", "loop", "input"]

    paged, before = [], None
    while True:
        page, before = await states.langgraph_history(graph, tid, limit=4, before=before)
        paged += page
        if before is None:
            break
    assert paged == whole

    wire = await client.threads.get_history(tid, limit=100)
    assert [c["checkpoint_id"] for c in wire] == [
        s.checkpoint.checkpoint_id for s in whole if s.checkpoint
    ]
    assert [c["step"] for c in wire] == [7, 6, 5, 4, 3, 2, 1, 0, -1], "LangGraph's, thread-wide"

    old = await states.latest(tid, whole[3].checkpoint.checkpoint_id if whole[3].checkpoint else "")
    assert old.checkpoint == whole[3].checkpoint and old.values == whole[3].values


async def test_join_returns_the_values_at_the_runs_own_last_checkpoint(
    served: tuple[App, TurnstileClient, ThreadStates],
) -> None:
    _, client, _ = served
    tid = (await client.threads.create())["thread_id"]
    first = await client.runs.wait_run(tid, "echo", input=HI)
    await client.runs.wait_run(tid, "echo", input={"messages": [{"role": "user", "content": "2"}]})
    joined = await client.runs.join_run(tid, first.run["run_id"])
    assert [m["content"] for m in joined.values["messages"]] == ["hi", "hi"]
    assert joined.values == first.values
    thread = await client.threads.get(tid)
    assert [m["content"] for m in thread["values"]["messages"]] == ["hi", "hi", "2", "2"]


@pytest.mark.parametrize("graph", ["echo", "asking", "sibling"])
async def test_wait_answers_the_values_join_reads_back_from_the_store(
    served: tuple[App, TurnstileClient, ThreadStates], graph: str
) -> None:
    """WaitRun's values come from the run's own saver as it ended (`last_put`), JoinRun's
    afterwards from the store: the same values, pending writes of a cut superstep left out."""
    _, client, states = served
    tid = (await client.threads.create())["thread_id"]
    waited = await client.runs.wait_run(tid, graph, input=HI)
    assert waited.run["status"] == "success"
    joined = await client.runs.join_run(tid, waited.run["run_id"])
    assert waited.values == joined.values
    latest = await states.latest(tid)
    assert latest.checkpoint is not None
    at_checkpoint = await states.latest(tid, latest.checkpoint.checkpoint_id)
    assert waited.values == at_checkpoint.values
    if graph == "sibling":
        assert [m["content"] for m in waited.values["messages"]] == ["hi"]
        assert [m["content"] for m in latest.values["messages"]] == ["hi", "noted"], "live"
