"""Turnstile's LangGraph saver under real StateGraphs: what it writes, what it reads back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph

from turnstile_server.runtime.langgraph import blobs
from turnstile_server.runtime.langgraph.saver import TurnstileSaver
from turnstile_server.store.langgraph_checkpoints import BlobRecord, CheckpointFrame
from turnstile_server.store.langgraph_rows import BrokenChain
from turnstile_server.store.sqlite import SqliteStore
from turnstile_server.store.sqlite.database import Database
from turnstile_server.store.sqlite.langgraph import SqliteLangGraphCheckpoints

TABLES = ("lg_checkpoints", "lg_blobs", "lg_writes")


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def reply(state: Chat) -> dict[str, Any]:
    """Appends one AI message with an id that depends only on the thread's length."""
    return {"messages": [AIMessage(content="ok", id=f"ai-{len(state['messages'])}")]}


def chat_graph(saver: Any, nodes: int = 1) -> CompiledStateGraph[Any, Any, Any, Any]:
    """START -> n0 -> ... -> END, each node appending one message."""
    builder = StateGraph(Chat)
    previous = START
    for index in range(nodes):
        builder.add_node(f"n{index}", reply)
        builder.add_edge(previous, f"n{index}")
        previous = f"n{index}"
    builder.add_edge(previous, END)
    return builder.compile(checkpointer=saver)


def run_config(thread_id: str, run_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "run_id": run_id}}


def human(thread_id: str, index: int) -> dict[str, Any]:
    return {"messages": [HumanMessage(content=f"hello {index}", id=f"{thread_id}-h{index}")]}


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "lg.db")
    yield database
    await database.close()


def saver_on(db: Database) -> TurnstileSaver:
    """A saver with an empty channel cache, as a restarted server has."""
    return TurnstileSaver(SqliteLangGraphCheckpoints(db))


async def bytes_of_run(db: Database, run_id: str) -> int:
    row = await db.fetchone(
        "SELECT (SELECT COALESCE(SUM(LENGTH(frame) + LENGTH(versions) + LENGTH(metadata)), 0)"
        " FROM lg_checkpoints WHERE run_id = ?1)"
        " + (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM lg_blobs WHERE run_id = ?1)"
        " + (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM lg_writes WHERE run_id = ?1)",
        (run_id,),
    )
    assert row is not None
    return int(row[0])


def messages_of(values: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return [(m.type, m.id, m.content) for m in values.get("messages", [])]


async def seed(graph: Any, thread_id: str, size: int) -> None:
    messages = [HumanMessage(content=f"m{i}", id=f"{thread_id}-s{i}") for i in range(size)]
    await graph.ainvoke({"messages": messages}, run_config(thread_id, f"{thread_id}-seed"))


async def test_a_run_on_a_long_thread_writes_as_much_as_on_a_short_one(db: Database) -> None:
    graph = chat_graph(saver_on(db))
    await seed(graph, "short", 10)
    await seed(graph, "long", 2000)
    for index in range(3):
        for thread in ("short", "long"):
            await graph.ainvoke(human(thread, index), run_config(thread, f"{thread}-{index}"))
    for index in range(3):
        short = await bytes_of_run(db, f"short-{index}")
        long = await bytes_of_run(db, f"long-{index}")
        # The same new messages, ids of other lengths: a few bytes apart, never the 2,000.
        assert short > 0 and abs(long - short) < 64, (short, long)
    kinds = await db.fetchall(
        "SELECT kind FROM lg_blobs WHERE channel = 'messages' AND run_id = 'long-2'"
    )
    assert [row[0] for row in kinds] == ["append", "append"]


async def test_a_restarted_saver_reads_the_same_states_and_history_as_langgraph(
    db: Database,
) -> None:
    ours, reference = chat_graph(saver_on(db), nodes=2), chat_graph(InMemorySaver(), nodes=2)
    for graph in (ours, reference):
        await seed(graph, "t", 5)
        for index in range(4):
            await graph.ainvoke(human("t", index), run_config("t", f"r{index}"))
    restarted = chat_graph(saver_on(db), nodes=2)
    config: RunnableConfig = {"configurable": {"thread_id": "t"}}
    state = await restarted.aget_state(config)
    expected = await reference.aget_state(config)
    assert messages_of(state.values) == messages_of(expected.values)
    assert len(state.values["messages"]) == 5 + 2 + 4 * 3
    history = [messages_of(s.values) async for s in restarted.aget_state_history(config)]
    expected_history = [messages_of(s.values) async for s in reference.aget_state_history(config)]
    assert history == expected_history
    run_ids = [(s.metadata or {}).get("run_id") async for s in restarted.aget_state_history(config)]
    assert run_ids == [
        (s.metadata or {}).get("run_id") async for s in reference.aget_state_history(config)
    ]
    assert run_ids[0] == "r3" and run_ids[-1] == "t-seed"


async def test_every_checkpoint_names_the_run_from_configurable(db: Database) -> None:
    graph = chat_graph(saver_on(db))
    await graph.ainvoke(human("t", 0), run_config("t", "run-a"))
    await graph.ainvoke(human("t", 1), run_config("t", "run-b"))
    rows = await db.fetchall(
        "SELECT run_id, json_extract(metadata, '$.run_id') FROM lg_checkpoints"
    )
    assert sorted(tuple(row) for row in rows) == [("run-a", "run-a")] * 3 + [("run-b", "run-b")] * 3
    tuples = [t async for t in saver_on(db).alist({"configurable": {"thread_id": "t"}})]
    assert {t.metadata["run_id"] for t in tuples} == {"run-a", "run-b"}


async def test_a_replaced_message_is_written_whole_and_read_back(db: Database) -> None:
    graph = chat_graph(saver_on(db))
    await seed(graph, "t", 3)
    replaced = HumanMessage(content="edited", id="t-s1")
    await graph.ainvoke({"messages": [replaced]}, run_config("t", "edit"))
    kinds = await db.fetchall(
        "SELECT kind FROM lg_blobs WHERE channel = 'messages' AND run_id = 'edit' ORDER BY version"
    )
    assert [row[0] for row in kinds] == ["full", "append"]
    state = await chat_graph(saver_on(db)).aget_state({"configurable": {"thread_id": "t"}})
    contents = [m.content for m in state.values["messages"]]
    assert contents == ["m0", "edited", "m2", "ok", "ok"]


async def test_rollback_deletes_every_row_of_the_run_and_the_thread_goes_on(
    db: Database,
) -> None:
    saver = saver_on(db)
    graph = chat_graph(saver)
    await graph.ainvoke(human("t", 0), run_config("t", "kept"))
    kept = messages_of((await graph.aget_state({"configurable": {"thread_id": "t"}})).values)
    await graph.ainvoke(human("t", 1), run_config("t", "rolled-back"))
    task_id = "pending-task"
    latest = await saver.aget_tuple({"configurable": {"thread_id": "t"}})
    assert latest is not None
    await saver.aput_writes(
        {"configurable": {**latest.config["configurable"], "run_id": "rolled-back"}},
        [("messages", [])],
        task_id,
    )
    await saver.adelete_for_runs(["rolled-back"])
    for table in TABLES:
        rows = await db.fetchall(f"SELECT 1 FROM {table} WHERE run_id = 'rolled-back'")
        assert rows == [], table
    # The kept run's blobs are all still there: the thread reads back as that run left it.
    for reader in (graph, chat_graph(saver_on(db))):
        state = await reader.aget_state({"configurable": {"thread_id": "t"}})
        assert messages_of(state.values) == kept
    await graph.ainvoke(human("t", 2), run_config("t", "next"))
    state = await chat_graph(saver_on(db)).aget_state({"configurable": {"thread_id": "t"}})
    assert [m.id for m in state.values["messages"]] == ["t-h0", "ai-1", "t-h2", "ai-3"]


async def test_async_durability_with_many_threads_in_flight_keeps_every_step(
    db: Database,
) -> None:
    graph = chat_graph(saver_on(db), nodes=4)

    async def converse(thread_id: str) -> None:
        for index in range(3):
            await graph.ainvoke(
                human(thread_id, index),
                run_config(thread_id, f"{thread_id}-{index}"),
                durability="async",
            )

    threads = [f"t{i}" for i in range(8)]
    await asyncio.gather(*(converse(t) for t in threads))
    restarted = chat_graph(saver_on(db), nodes=4)
    for thread in threads:
        config: RunnableConfig = {"configurable": {"thread_id": thread}}
        state = await restarted.aget_state(config)
        assert [m.id for m in state.values["messages"]] == [
            f"{thread}-h0",
            "ai-1",
            "ai-2",
            "ai-3",
            "ai-4",
            f"{thread}-h1",
            "ai-6",
            "ai-7",
            "ai-8",
            "ai-9",
            f"{thread}-h2",
            "ai-11",
            "ai-12",
            "ai-13",
            "ai-14",
        ]
        steps = [(s.metadata or {})["step"] async for s in restarted.aget_state_history(config)]
        assert steps == list(range(16, -2, -1))  # an input and 4 steps per run, none lost


async def test_a_growing_list_is_rewritten_whole_only_as_it_doubles(db: Database) -> None:
    graph = chat_graph(saver_on(db))
    runs = 120  # 240 messages, one by one from an empty thread
    for index in range(runs):
        await graph.ainvoke(human("t", index), run_config("t", f"r{index}"))
    rows = await db.fetchall(
        "SELECT kind, COUNT(*) FROM lg_blobs WHERE channel = 'messages' GROUP BY kind"
    )
    counts = {row[0]: row[1] for row in rows}
    # Whole at 1 message, then again once the appends outnumber max(last whole, MIN_WHOLE).
    assert blobs.MIN_WHOLE == 64
    assert counts == {"full": 3, "append": 2 * runs - 3}, counts
    state = await chat_graph(saver_on(db)).aget_state({"configurable": {"thread_id": "t"}})
    assert len(state.values["messages"]) == 2 * runs


async def test_prune_and_copy_keep_what_the_latest_checkpoint_reads(db: Database) -> None:
    graph = chat_graph(saver_on(db))
    await seed(graph, "t", 4)
    for index in range(3):
        await graph.ainvoke(human("t", index), run_config("t", f"r{index}"))
    config: RunnableConfig = {"configurable": {"thread_id": "t"}}
    expected = messages_of((await graph.aget_state(config)).values)
    saver = saver_on(db)
    await saver.acopy_thread("t", "copy")
    await saver.aprune(["t"], strategy="keep_latest")
    for thread in ("t", "copy"):
        state = await chat_graph(saver_on(db)).aget_state({"configurable": {"thread_id": thread}})
        assert messages_of(state.values) == expected
    assert len([t async for t in saver.alist(config)]) == 1
    # The pruned thread keeps only the blobs its one checkpoint reads through its chains.
    pruned = await db.fetchone("SELECT COUNT(*) FROM lg_blobs WHERE thread_id = 't'")
    copied = await db.fetchone("SELECT COUNT(*) FROM lg_blobs WHERE thread_id = 'copy'")
    assert pruned is not None and copied is not None and 0 < pruned[0] < copied[0]


async def test_an_append_whose_base_is_not_stored_is_refused_whole(db: Database) -> None:
    store = SqliteLangGraphCheckpoints(db)
    frame = CheckpointFrame("t", "", "c1", None, "r", "null", b"", {"messages": "2"}, {})
    orphan = BlobRecord("messages", "2", "append", "msgpack", b"\x90", base="1")
    with pytest.raises(BrokenChain):
        await store.put(frame, [orphan])
    for table in TABLES:
        assert await db.fetchall(f"SELECT 1 FROM {table}") == [], table


async def test_deleting_an_earlier_run_keeps_the_blobs_a_later_checkpoint_reads(
    db: Database,
) -> None:
    graph = chat_graph(saver_on(db))
    await seed(graph, "t", 3)
    await graph.ainvoke(human("t", 0), run_config("t", "later"))
    config: RunnableConfig = {"configurable": {"thread_id": "t"}}
    expected = messages_of((await graph.aget_state(config)).values)
    await saver_on(db).adelete_for_runs(["t-seed"])
    assert await db.fetchall("SELECT 1 FROM lg_checkpoints WHERE run_id = 't-seed'") == []
    # The later run's messages chain appends onto the seed's whole list, which stays.
    state = await chat_graph(saver_on(db)).aget_state(config)
    assert messages_of(state.values) == expected


async def test_deleting_a_thread_deletes_its_langgraph_rows(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "store.db")
    try:
        await store.threads.create("t", {})
        await store.threads.create("other", {})
        graph = chat_graph(TurnstileSaver(store.langgraph))
        for thread in ("t", "other"):
            await graph.ainvoke(human(thread, 0), run_config(thread, f"{thread}-run"))
        await store.threads.delete("t")
        for table in TABLES:
            rows = await store.db.fetchall(f"SELECT DISTINCT thread_id FROM {table}")
            assert [row[0] for row in rows] == ["other"], table
    finally:
        await store.close()


async def test_listing_with_a_checkpoint_id_lists_that_checkpoint(db: Database) -> None:
    graph = chat_graph(saver_on(db))
    await graph.ainvoke(human("t", 0), run_config("t", "r"))
    config: RunnableConfig = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    every = [t async for t in saver_on(db).alist(config)]
    assert len(every) == 3
    middle = every[1].config
    listed = [t async for t in saver_on(db).alist(middle)]
    assert [t.config for t in listed] == [middle]
    assert messages_of(listed[0].checkpoint["channel_values"]) == [("human", "t-h0", "hello 0")]
