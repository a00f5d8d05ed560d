"""`runtime/langgraph/staged.Staged`: an update computed on staged writes reads as it will
once applied, and applying it lands exactly what was read, through the real SQLite store and
LangGraph's own `aupdate_state` (the list channel's new version is an `append` on a stored
base, folded from the staged blob and the store's chain)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, TypedDict, cast

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from turnstile_server.runtime.langgraph.blobs import ChannelCache
from turnstile_server.runtime.langgraph.saver import TurnstileSaver
from turnstile_server.runtime.langgraph.staged import Staged
from turnstile_server.store import Store, open_store

pytestmark = pytest.mark.timeout(30)


class Chat(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    note: str


def _reply(state: Chat) -> dict[str, Any]:
    return {"messages": [AIMessage("hi", id="a1")]}


def chat() -> Any:
    builder = StateGraph(Chat)
    builder.add_node("reply", _reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{tmp_path / 'staged.db'}")
    yield opened
    await opened.close()


def config(thread_id: str) -> RunnableConfig:
    return cast("RunnableConfig", {"configurable": {"thread_id": thread_id}})


async def test_a_staged_update_reads_as_it_lands_and_lands_whole(store: Store) -> None:
    await store.threads.create("t", {})
    graph = chat()
    direct = graph.copy(update={"checkpointer": TurnstileSaver(store.langgraph)})
    await direct.ainvoke({"messages": [HumanMessage("hello", id="h1")]}, config("t"))
    head = await direct.aget_state(config("t"))

    staged = Staged(store.langgraph, "t")
    over = graph.copy(update={"checkpointer": TurnstileSaver(staged, cache=ChannelCache())})
    await over.aget_state(config("t"))  # the newest checkpoint read: the update's base
    written = await over.aupdate_state(
        config("t"), {"messages": [HumanMessage("more", id="h2")], "note": "n"}, as_node="reply"
    )
    seen = await over.aget_state(config("t"))
    before_apply = await direct.aget_state(config("t"))
    update = staged.update(None)
    await store.threads.apply_update(update)
    landed = await TurnstileSaver(store.langgraph).aget_tuple(config("t"))

    assert before_apply.config == head.config, "nothing landed before the update was applied"
    assert update.base == head.config["configurable"]["checkpoint_id"]
    assert [frame.parent_id for frame, _ in update.puts] == [update.base]
    blobs = {blob.channel: blob for _, put in update.puts for blob in put}
    assert blobs["messages"].kind == "append"  # the new message only, on the stored list
    assert seen.config["configurable"]["checkpoint_id"] == written["configurable"]["checkpoint_id"]
    assert [m.content for m in seen.values["messages"]] == ["hello", "hi", "more"]
    assert seen.values["note"] == "n"
    assert landed is not None
    assert landed.checkpoint["id"] == written["configurable"]["checkpoint_id"]
    assert landed.checkpoint["channel_values"]["messages"] == seen.values["messages"]
    assert (await store.threads.get("t")).status == "idle"


async def test_staged_checkpoints_come_first_in_a_listing(store: Store) -> None:
    await store.threads.create("t", {})
    graph = chat()
    direct = graph.copy(update={"checkpointer": TurnstileSaver(store.langgraph)})
    await direct.ainvoke({"messages": [HumanMessage("hello", id="h1")]}, config("t"))
    stored = [
        c.config["configurable"]["checkpoint_id"]
        async for c in direct.aget_state_history(config("t"))
    ]

    staged = Staged(store.langgraph, "t")
    over = graph.copy(update={"checkpointer": TurnstileSaver(staged, cache=ChannelCache())})
    await over.aget_state(config("t"))
    written = await over.aupdate_state(config("t"), {"note": "n"}, as_node="reply")
    listed = [
        c.config["configurable"]["checkpoint_id"]
        async for c in over.aget_state_history(config("t"))
    ]
    two = [
        c.config["configurable"]["checkpoint_id"]
        async for c in over.aget_state_history(config("t"), limit=2)
    ]

    assert listed == [written["configurable"]["checkpoint_id"], *stored]
    assert two == listed[:2]
