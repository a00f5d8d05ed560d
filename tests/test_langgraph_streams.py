"""Every stream mode of a LangGraph run (SPEC §10): each mode's events and their shape, the
`|ns` names with subgraphs, and exact resume after every cut point, with `end` last.

Modes the wire does not take yet (`debug`, `tasks`, `checkpoints`, `events`,
`messages-partial`: their enum values come with the `wire` change) are asked for by admitting
the run in-process (`Scheduler.admit` with the mode strings); the stream is read over gRPC
(JoinRunStream), as a client reads it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from tests.support import client_of
from turnstile import TurnstileClient
from turnstile_server.app import App
from turnstile_server.graph import GraphRegistry
from turnstile_server.runtime.langgraph.streams import Streamer
from turnstile_server.store import RunRecord, RunSpec

ANSWER = "the weather is sunny"
HI = {"messages": [{"type": "human", "content": "weather?"}]}


class Chat(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]


async def _model(state: Chat) -> dict[str, Any]:
    get_stream_writer()({"thinking": True})
    model = GenericFakeChatModel(messages=iter([AIMessage(ANSWER)]))
    return {"messages": [await model.ainvoke(state["messages"])]}


async def _note(state: Chat) -> dict[str, Any]:
    get_stream_writer()({"noted": len(state["messages"])})
    return {"messages": [AIMessage("noted", id="note-1")]}


def _inner() -> Any:
    builder = StateGraph(Chat)
    builder.add_node("note", _note)
    builder.add_edge(START, "note")
    builder.add_edge("note", END)
    return builder.compile()


def _talker() -> Any:
    builder = StateGraph(Chat)
    builder.add_node("model", _model)
    builder.add_node("inner", _inner())
    builder.add_edge(START, "model")
    builder.add_edge("model", "inner")
    builder.add_edge("inner", END)
    return builder.compile()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[App, TurnstileClient]]:
    graphs = GraphRegistry()
    graphs.register("talker", _talker())
    async with client_of(str(tmp_path / "t.db"), graphs) as (app, client):
        yield app, client


async def _events(
    app: App, client: TurnstileClient, modes: list[str], *, after_seq: int = 0
) -> tuple[RunRecord, list[tuple[int, str, Any]]]:
    """Admits a talker run asking for `modes` and reads its whole stream over gRPC."""
    thread = await client.threads.create()
    run = await app.scheduler.admit(
        RunSpec(
            thread_id=thread["thread_id"],
            assistant_id="talker",
            graph_id="talker",
            input=HI,
            multitask_strategy="enqueue",
            config={},
            metadata={},
            stream_mode=modes,
        )
    )
    parts = [
        (p.seq, p.event, p.data)
        async for p in client.runs.join_stream(run.thread_id, run.run_id, after_seq=after_seq)
    ]
    return run, parts


def _names(parts: list[tuple[int, str, Any]]) -> list[str]:
    return [name for _, name, _ in parts]


def _well_formed(parts: list[tuple[int, str, Any]]) -> None:
    assert [seq for seq, _, _ in parts] == list(range(1, len(parts) + 1))
    assert parts[0][1] == "metadata" and parts[-1][1] == "end"
    assert parts[-1][2]["status"] == "success"
    json.dumps([data for _, _, data in parts])  # plain JSON all through


async def test_messages_are_chunk_and_metadata_pairs_of_the_models_tokens(
    served: tuple[App, TurnstileClient],
) -> None:
    app, client = served
    _, parts = await _events(app, client, ["messages"])
    _well_formed(parts)
    pairs = [data for _, name, data in parts if name == "messages"]
    tokens = [chunk for chunk, meta in pairs if meta["langgraph_node"] == "model"]
    assert "".join(chunk["content"] for chunk in tokens) == ANSWER
    assert len(tokens) > 1, "streamed token by token"
    assert {chunk["type"] for chunk in tokens} == {"AIMessageChunk"}
    assert len({chunk["id"] for chunk in tokens}) == 1
    assert all(meta["langgraph_step"] == 1 for chunk, meta in pairs if chunk in tokens)


async def test_messages_partial_accumulates_as_langgraph_platform_does(
    served: tuple[App, TurnstileClient],
) -> None:
    app, client = served
    _, parts = await _events(app, client, ["messages-partial"])
    _well_formed(parts)
    names = _names(parts)[1:-1]
    assert names[0] == "messages/metadata"
    partials = [data[0] for _, name, data in parts if name == "messages/partial"]
    assert [p["content"] for p in partials] == [ANSWER[: len(p["content"])] for p in partials], (
        "each is the message so far"
    )
    assert partials[-1]["content"] == ANSWER and partials[-1]["type"] == "ai"
    metadata = [data for _, name, data in parts if name == "messages/metadata"]
    assert list(metadata[0]) == [partials[0]["id"]]
    assert metadata[0][partials[0]["id"]]["metadata"]["langgraph_node"] == "model"
    complete = [data[0] for _, name, data in parts if name == "messages/complete"]
    assert [c["content"] for c in complete] == ["noted"], "a node's whole message"


async def test_values_updates_custom_debug_tasks_and_checkpoints_have_langgraphs_shapes(
    served: tuple[App, TurnstileClient],
) -> None:
    app, client = served
    modes = ["values", "updates", "custom", "debug", "tasks", "checkpoints"]
    run, parts = await _events(app, client, modes)
    _well_formed(parts)
    by_name: dict[str, list[Any]] = {}
    for _, name, data in parts[1:-1]:
        by_name.setdefault(name, []).append(data)
    assert set(by_name) == set(modes)
    assert by_name["values"][-1]["messages"][-1]["content"] == "noted"
    assert [list(u) for u in by_name["updates"]] == [["model"], ["inner"]]
    assert by_name["custom"] == [{"thinking": True}], "not the subgraph's (no stream_subgraphs)"
    assert {d["type"] for d in by_name["debug"]} == {"checkpoint", "task", "task_result"}
    started = [t for t in by_name["tasks"] if "input" in t]
    assert [t["name"] for t in started] == ["model", "inner"]
    assert all(
        {"id", "name", "result", "error", "interrupts"} <= set(t)
        for t in by_name["tasks"]
        if "input" not in t
    )
    checkpoint = by_name["checkpoints"][-1]
    assert {"config", "parent_config", "values", "metadata", "next", "tasks"} <= set(checkpoint)
    assert checkpoint["metadata"]["run_id"] == run.run_id, "as the stored checkpoint's"
    assert checkpoint["next"] == []
    debugged = [d["payload"] for d in by_name["debug"] if d["type"] == "checkpoint"]
    assert {d["metadata"]["run_id"] for d in debugged} == {run.run_id}


async def test_events_mode_streams_astream_events_v2_beside_the_other_modes(
    served: tuple[App, TurnstileClient],
) -> None:
    app, client = served
    _, parts = await _events(app, client, ["events", "updates"])
    _well_formed(parts)
    events = [data for _, name, data in parts if name == "events"]
    kinds = {e["event"] for e in events}
    assert {"on_chain_start", "on_chain_end", "on_chat_model_stream"} <= kinds
    assert all(e.get("run_id") for e in events)
    assert [list(d) for _, name, d in parts if name == "updates"] == [["model"], ["inner"]]


@pytest.mark.parametrize(
    "modes",
    [
        pytest.param(
            [
                "values",
                "updates",
                "messages",
                "custom",
                "debug",
                "tasks",
                "checkpoints",
                "messages-partial",
            ],
            id="astream",
        ),
        pytest.param(["events", "updates", "messages"], id="events"),  # astream_events v2
    ],
)
async def test_every_cut_point_resumes_exactly(
    served: tuple[App, TurnstileClient], modes: list[str]
) -> None:
    app, client = served
    run, parts = await _events(app, client, modes)
    assert {name for _, name, _ in parts} >= {*modes, "metadata", "end"} - {"messages-partial"}
    _well_formed(parts)
    for cut in range(len(parts) + 1):  # after `end` too: nothing, at once
        rest = [
            (p.seq, p.event, p.data)
            async for p in client.runs.join_stream(run.thread_id, run.run_id, after_seq=cut)
        ]
        assert rest == parts[cut:], f"after_seq={cut}"


class _Host:
    """A host recording what a Streamer emits."""

    def __init__(self, modes: list[str]) -> None:
        self.modes = modes
        self.run = None
        self.emitted: list[tuple[str, Any, str | None]] = []

    def wants(self, event: str) -> bool:
        return event in self.modes

    def emit(
        self, event: str, data: Any, *, checked: bool = False, mode: str | None = None
    ) -> None:
        if (mode or event) in self.modes:
            self.emitted.append((event, data, mode))


def test_stream_subgraphs_names_a_subgraphs_events_with_its_namespace() -> None:
    host = _Host(["updates", "messages-partial"])
    with_ns = Streamer(host, subgraphs=True)  # type: ignore[arg-type]
    with_ns.chunk(("inner:1", "deep:2"), "updates", {"note": {"x": 1}})
    with_ns.chunk((), "updates", {"model": {"x": 2}})
    with_ns.chunk(("inner:1",), "messages", (AIMessage("hi", id="m1"), {"langgraph_node": "n"}))
    without = Streamer(host, subgraphs=False)  # type: ignore[arg-type]
    without.chunk(("inner:1",), "updates", {"note": {}})
    assert [name for name, _, _ in host.emitted] == [
        "updates|inner:1|deep:2",
        "updates",
        "messages/metadata|inner:1",
        "messages/complete|inner:1",
    ]


async def test_over_the_wire_every_mode_and_stream_subgraphs_name_events_as_langgraph_platform(
    served: tuple[App, TurnstileClient],
) -> None:
    _, client = served
    thread = await client.threads.create()
    parts = [
        (p.event, p.data)
        async for p in client.runs.stream(
            thread["thread_id"],
            "talker",
            input=HI,
            stream_mode=["updates", "custom", "debug", "messages-partial", "checkpoints"],
            stream_subgraphs=True,
        )
    ]
    names = {name for name, _ in parts}
    inner = [n for n in names if n.startswith("updates|inner:")]
    assert len(inner) == 1, names
    namespace = inner[0].removeprefix("updates")
    assert {"updates", f"custom{namespace}", "custom", "debug", f"debug{namespace}"} <= names
    assert {"messages/partial", f"messages/complete{namespace}", "checkpoints"} <= names
    assert (f"custom{namespace}", {"noted": 2}) in parts
    assert parts[-1][0] == "end"
