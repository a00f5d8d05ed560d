"""The LangGraph runtime (SPEC §10): what it registers, how a run executes through `astream`,
and what interrupt, rollback and DeleteThread leave of a run's LangGraph rows."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from tests.lg_graphs import lg_registry
from tests.support import GATES, client_of, eventually
from turnstile import Durability, TurnstileClient
from turnstile_server.errors import InvalidArgument, ThreadNotFound
from turnstile_server.graph import GraphRegistry, prepare_graph
from turnstile_server.run_checkpoints import RunCheckpoints, RunEnded
from turnstile_server.runtime.langgraph.runtime import LangGraphGraph
from turnstile_server.store.langgraph_checkpoints import CheckpointFrame, WriteRecord

HI = {"messages": [{"role": "user", "content": "hi"}]}
SEEN: list[dict[str, Any]] = []


class Chat(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]


async def _remember(state: Chat, config: RunnableConfig) -> dict[str, Any]:
    SEEN.append(dict(config["configurable"]))
    return {"messages": [AIMessage("seen")]}


def _builder() -> StateGraph[Any]:
    builder = StateGraph(Chat)
    builder.add_node("remember", _remember)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", END)
    return builder


def rows(database: str, table: str, where: str = "1", *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as conn:
        return conn.execute(f"SELECT * FROM {table} WHERE {where}", params).fetchall()


@asynccontextmanager
async def serving(
    database: str, graphs: GraphRegistry | None = None
) -> AsyncIterator[TurnstileClient]:
    async with client_of(database, graphs or lg_registry()) as (_, client):
        yield client


@pytest.fixture(autouse=True)
def fresh() -> None:
    SEEN.clear()


# Registration


def test_a_compiled_graph_a_state_graph_and_factories_are_langgraph_graphs() -> None:
    compiled = _builder().compile()

    def zero() -> Any:
        return compiled

    def one(config: RunnableConfig) -> Any:
        return compiled

    async def two(config: RunnableConfig, runtime: Any) -> Any:
        return compiled

    for obj in (compiled, _builder(), zero, one, two):
        assert prepare_graph(obj, "g").runtime == "langgraph"
    builder = prepare_graph(_builder(), "g")
    assert isinstance(builder, LangGraphGraph) and builder.compiled is not None, "compiled once"


def test_native_graphs_stay_native() -> None:
    from turnstile_server.graphs.echo import echo

    assert prepare_graph(echo, "echo").runtime == "native"


def test_a_graph_with_its_own_checkpointer_is_refused_at_registration() -> None:
    """Named by its id (its LangGraph name is `LangGraph`, whatever it is registered as)."""
    with pytest.raises(InvalidArgument, match=r"^graph 'g': .* its own checkpointer"):
        GraphRegistry().register("g", _builder().compile(checkpointer=InMemorySaver()))


def test_what_no_runtime_runs_names_both() -> None:
    with pytest.raises(InvalidArgument, match=r"async generator function.*LangGraph graph"):
        prepare_graph(42, "g")


async def test_each_kind_of_factory_is_called_per_run_with_the_run_config(tmp_path: Path) -> None:
    """(Reads call a factory too, with `threads.read` and no run: only the runs' calls count.)"""
    calls: list[tuple[str, Any]] = []

    def zero() -> Any:
        calls.append(("zero", None))
        return _builder()

    def one(config: RunnableConfig) -> Any:
        if run_id := config["configurable"].get("run_id"):
            calls.append(("one", run_id))
        return _builder().compile()

    async def two(config: RunnableConfig, runtime: Any) -> Any:
        calls.append(("two", runtime.access_context))
        return _builder().compile()

    @asynccontextmanager
    async def managed(config: RunnableConfig) -> AsyncIterator[Any]:
        calls.append(("managed", "enter"))
        yield _builder().compile()
        calls.append(("managed", "exit"))

    graphs = GraphRegistry()
    for name, factory in (("zero", zero), ("one", one), ("two", two), ("managed", managed)):
        graphs.register(name, factory)
    async with serving(str(tmp_path / "t.db"), graphs) as client:
        thread = await client.threads.create()
        run_ids = []
        for name in ("zero", "one", "two", "managed", "one"):
            calls.append(("run", name))
            result = await client.runs.wait_run(thread["thread_id"], name, input=HI)
            assert result.run["status"] == "success", result.run
            assert result.values["messages"][-1]["content"] == "seen"
            run_ids.append(result.run["run_id"])
    runs = [i for i, call in enumerate(calls) if call[0] == "run"]
    per_run = [calls[i + 1 : j] for i, j in zip(runs, [*runs[1:], len(calls)], strict=True)]
    assert per_run[0][0] == ("zero", None)
    assert per_run[1] == [("one", run_ids[1])]
    assert per_run[2][0] == ("two", "threads.create_run")
    assert per_run[2].count(("two", "threads.create_run")) == 1
    assert per_run[3][:2] == [("managed", "enter"), ("managed", "exit")]
    assert per_run[4] == [("one", run_ids[4])]


# Execution


async def test_configurable_is_the_assistants_then_the_runs_then_the_ids(tmp_path: Path) -> None:
    graphs = GraphRegistry()
    graphs.register("remember", _builder())
    async with serving(str(tmp_path / "t.db"), graphs) as client:
        assistant = await client.assistants.create(
            "remember", config={"configurable": {"model": "a", "depth": 1, "run_id": "x"}}
        )
        thread = await client.threads.create()
        result = await client.runs.wait_run(
            thread["thread_id"],
            assistant["assistant_id"],
            input=HI,
            config={"configurable": {"depth": 2, "thread_id": "forged"}},
        )
    langgraphs = {"checkpoint_id", "checkpoint_map", "checkpoint_ns"}
    seen = {k: v for k, v in SEEN[0].items() if not k.startswith("__") and k not in langgraphs}
    assert seen == {
        "model": "a",
        "depth": 2,
        "thread_id": thread["thread_id"],
        "run_id": result.run["run_id"],
        "assistant_id": assistant["assistant_id"],
        "graph_id": "remember",
    }


async def test_every_checkpoint_names_its_run_and_attempt(tmp_path: Path) -> None:
    database = str(tmp_path / "t.db")
    async with serving(database) as client:
        thread = await client.threads.create()
        first = await client.runs.wait_run(thread["thread_id"], "echo", input=HI)
        second = await client.runs.wait_run(thread["thread_id"], "echo", input=HI)
    found = rows(database, "lg_checkpoints", "thread_id = ?", thread["thread_id"])
    metadata = [json.loads(row[8]) for row in found]
    assert {m["run_id"] for m in metadata} == {first.run["run_id"], second.run["run_id"]}
    assert all(m["run_attempt"] == 1 for m in metadata)
    assert {row[4] for row in found} == {first.run["run_id"], second.run["run_id"]}
    assert [m["source"] for m in metadata].count("input") == 2


async def test_durability_exit_writes_fewer_checkpoints_than_sync(tmp_path: Path) -> None:
    database = str(tmp_path / "t.db")
    counts = {}
    async with serving(database) as client:
        for durability in ("sync", "async", "exit"):
            thread = await client.threads.create()
            result = await client.runs.wait_run(
                thread["thread_id"],
                "recording",
                input={"steps": 3},
                durability=durability,
            )
            assert result.run["status"] == "success"
            counts[durability] = len(
                rows(database, "lg_checkpoints", "run_id = ?", result.run["run_id"])
            )
    assert counts["sync"] == counts["async"] > counts["exit"] == 1


async def test_values_and_updates_stream_as_langgraph_platform_names_them(tmp_path: Path) -> None:
    async with serving(str(tmp_path / "t.db")) as client:
        thread = await client.threads.create()
        parts = [
            part
            async for part in client.runs.stream(
                thread["thread_id"], "echo", input=HI, stream_mode=["values", "updates"]
            )
        ]
    assert [p.event for p in parts] == ["metadata", "values", "updates", "values", "end"]
    assert [p.seq for p in parts] == [1, 2, 3, 4, 5]
    assert parts[1].data["messages"][0]["type"] == "human"
    answer = parts[2].data["answer"]["messages"][0]
    assert answer["type"] == "ai" and answer["content"] == "hi"
    kept = parts[3].data["messages"][1]
    assert kept["id"] and {**kept, "id": None} == {**answer, "id": None}
    assert parts[4].data["status"] == "success"


# Cancellation


async def test_interrupt_keeps_completed_supersteps_and_discards_the_one_in_flight(
    tmp_path: Path,
) -> None:
    database = str(tmp_path / "t.db")
    async with serving(database) as client:
        thread = await client.threads.create()
        tid = thread["thread_id"]
        run = await client.runs.create(tid, "gated", input={"gates": ["a", "b"]})
        GATES.open("a")
        await asyncio.wait_for(GATES.arrived("b").wait(), 10)
        await client.runs.cancel(tid, run["run_id"], wait=True)
        assert (await client.runs.get(tid, run["run_id"]))["status"] == "interrupted"
        kept = rows(database, "lg_checkpoints", "run_id = ?", run["run_id"])
        steps = sorted(json.loads(row[8])["step"] for row in kept)
        assert steps == [-1, 0, 1], "the input, START's superstep and gate a's; not gate b's"
        latest = max(row[2] for row in kept)
        assert rows(database, "lg_writes", "checkpoint_id = ?", latest) == [], "gate b's"
        assert rows(database, "lg_writes", "run_id = ?", run["run_id"]), "a's are kept"


@pytest.mark.parametrize("durability", ["sync", "async"])
@pytest.mark.parametrize("how", ["cancel", "double-text"])
async def test_an_interrupted_run_keeps_its_completed_first_superstep_for_the_next_run(
    tmp_path: Path, durability: Durability, how: str
) -> None:
    """Gate a's superstep completes, the run is interrupted in gate b's: the thread's state
    shows a's update and waits at `gate` again, and the run that supersedes it builds on a's
    update, with nothing of b's."""
    first, second = f"a-{how}-{durability}", f"b-{how}-{durability}"
    async with serving(str(tmp_path / "t.db")) as client:
        tid = (await client.threads.create())["thread_id"]
        run = await client.runs.create(
            tid, "gated", input={"gates": [first, second]}, durability=durability
        )
        GATES.open(first)
        await asyncio.wait_for(GATES.arrived(second).wait(), 10)
        if how == "cancel":
            await client.runs.cancel(tid, run["run_id"], wait=True)
        else:
            nxt = await client.runs.create(
                tid,
                "echo",
                input={"messages": [{"role": "user", "content": "next"}]},
                multitask_strategy="interrupt",
            )
            after = await client.runs.join_run(tid, nxt["run_id"])
            assert after.run["status"] == "success"
            contents = [m["content"] for m in after.values["messages"]]
            assert contents == [f"passed {first}", "next", "next"]
        cut = await client.runs.get(tid, run["run_id"])
        assert cut["status"] == "interrupted"
        history = await client.threads.get_history(tid, limit=100)
    kept = [c for c in history if c["metadata"].get("run_id") == run["run_id"]]
    assert [c["metadata"]["step"] for c in kept] == [1, 0, -1], "input, START's, gate a's"
    assert kept[0]["values"]["last_gate"] == first
    assert [m["content"] for m in kept[0]["values"]["messages"]] == [f"passed {first}"]
    if how == "cancel":  # (a new input starts over from START: its run supersedes `next`)
        assert kept[0]["next"] == ["gate"], "gate b's superstep was discarded: it runs again"


class _HoldRunEnd:
    """Fails nothing: holds the writer at the statement that ends run `run_id` until released
    (the writes queued meanwhile are then committed in the group after it)."""

    def __init__(self) -> None:
        self.run_id = ""
        self.arrived = threading.Event()
        self.release = threading.Event()

    def decide(self, sql: str, parameters: Any) -> None:
        ends = sql.startswith("UPDATE runs SET") and "end_time" in sql
        if self.run_id and ends and self.run_id in tuple(parameters):
            self.arrived.set()
            self.release.wait(10)


async def test_a_run_interrupted_as_it_starts_keeps_its_input(tmp_path: Path) -> None:
    """The queued run's cancellation is committed in the write right after the one that ends
    the run before it and starts it: it is stopped before it executes (the scheduler's
    `stop_first` path), and its input is in the thread all the same, as LangGraph's input and
    START checkpoints of that run."""
    from tests.faults import inject

    hold = _HoldRunEnd()
    second_input = {"messages": [{"role": "user", "content": "second"}]}
    async with client_of(str(tmp_path / "t.db"), lg_registry()) as (app, client):
        tid = (await client.threads.create())["thread_id"]
        first = await client.runs.create(tid, "gated", input={"gates": ["as-it-starts"]})
        await asyncio.wait_for(GATES.arrived("as-it-starts").wait(), 10)
        queued = await client.runs.create(tid, "echo", input=second_input)
        assert queued["status"] == "pending"
        with inject(app.store, hold):
            hold.run_id = first["run_id"]
            GATES.open("as-it-starts")
            assert await asyncio.to_thread(hold.arrived.wait, 10)
            cancelling = asyncio.ensure_future(client.runs.cancel(tid, queued["run_id"]))
            db = app.store.db  # type: ignore[attr-defined]

            async def queued_behind() -> None:
                assert db._queue, "the cancellation's write is queued"

            await eventually(queued_behind)
            hold.release.set()
            await cancelling
        ended = await client.runs.join_run(tid, queued["run_id"])
        history = await client.threads.get_history(tid, limit=100)
        state = await client.threads.get_state(tid)
    assert ended.run["status"] == "interrupted"
    mine = [c for c in history if c["metadata"].get("run_id") == queued["run_id"]]
    assert [(c["metadata"]["source"], c["metadata"]["step"]) for c in mine] == [
        ("loop", 3),
        ("input", 2),
    ]
    assert [m["content"] for m in state["values"]["messages"]] == ["passed as-it-starts", "second"]
    assert state["next"] == ["answer"], "stopped before its node, which never ran"


PARALLEL_ENTERED: list[str] = []


class Pair(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]


async def _fast(state: Pair) -> dict[str, Any]:
    PARALLEL_ENTERED.append("fast")
    return {"messages": [AIMessage("fast")]}


async def _slow(state: Pair) -> dict[str, Any]:
    PARALLEL_ENTERED.append("slow")
    GATES.arrived("slow").set()
    await GATES.event("slow").wait()
    return {"messages": [AIMessage("slow")]}


def _pair() -> Any:
    builder = StateGraph(Pair)
    builder.add_node("fast", _fast)
    builder.add_node("slow", _slow)
    builder.add_edge(START, "fast")
    builder.add_edge(START, "slow")
    builder.add_edge("fast", END)
    builder.add_edge("slow", END)
    return builder.compile()


async def test_a_cancelled_superstep_leaves_no_half_for_the_next_run_to_replay(
    tmp_path: Path,
) -> None:
    """`fast` finishes while `slow` waits in the same superstep; the run is interrupted. Were
    `fast`'s pending write stored, the resuming run would take it and run `slow` alone: the
    whole superstep runs again instead."""
    PARALLEL_ENTERED.clear()
    database = str(tmp_path / "t.db")
    graphs = GraphRegistry()
    graphs.register("pair", _pair())
    async with serving(database, graphs) as client:
        thread = await client.threads.create()
        tid = thread["thread_id"]
        run = await client.runs.create(tid, "pair", input=HI, stream_mode=["updates"])
        async for part in client.runs.join_stream(tid, run["run_id"]):
            if part.event == "updates" and "fast" in part.data:
                break  # `fast` is done (its write is taken), `slow` waits
        await asyncio.wait_for(GATES.arrived("slow").wait(), 10)
        await client.runs.cancel(tid, run["run_id"], wait=True)
        latest = max(row[2] for row in rows(database, "lg_checkpoints", "thread_id = ?", tid))
        assert rows(database, "lg_writes", "checkpoint_id = ?", latest) == []
        GATES.open("slow")
        resumed = await client.runs.wait_run(tid, "pair", input=None)
        assert resumed.run["status"] == "success", resumed.run
    assert PARALLEL_ENTERED.count("fast") == 2, "the superstep ran again whole"


async def test_rollback_deletes_the_runs_langgraph_checkpoints_blobs_and_writes(
    tmp_path: Path,
) -> None:
    database = str(tmp_path / "t.db")
    async with serving(database) as client:
        thread = await client.threads.create()
        tid = thread["thread_id"]
        first = await client.runs.wait_run(tid, "echo", input=HI)
        before = {table: rows(database, table) for table in ("lg_checkpoints", "lg_blobs")}
        run = await client.runs.create(tid, "gated", input={"gates": ["a", "b"]})
        GATES.open("a")
        await asyncio.wait_for(GATES.arrived("b").wait(), 10)
        assert rows(database, "lg_checkpoints", "run_id = ?", run["run_id"]), "it wrote some"
        await client.runs.cancel(tid, run["run_id"], wait=True, action="rollback")
        for table in ("lg_checkpoints", "lg_blobs", "lg_writes"):
            assert rows(database, table, "run_id = ?", run["run_id"]) == [], table
        after = {table: rows(database, table) for table in ("lg_checkpoints", "lg_blobs")}
        assert after == before, "exactly the rows of the run before it"
        again = await client.runs.wait_run(tid, "echo", input=HI)
        assert again.run["status"] == "success"
    assert first.run["status"] == "success"


async def test_delete_thread_leaves_no_langgraph_row_even_from_exit_durability(
    tmp_path: Path,
) -> None:
    """`exit` durability writes a run's checkpoint as it unwinds: the thread's deletion
    cancels the run, and what it writes on its way out is refused."""
    database = str(tmp_path / "t.db")
    async with serving(database) as client:
        thread = await client.threads.create()
        tid = thread["thread_id"]
        await client.runs.create(tid, "gated", input={"gates": ["a", "b"]}, durability="exit")
        GATES.open("a")
        await asyncio.wait_for(GATES.arrived("b").wait(), 10)
        await client.threads.delete(tid)
        await client.threads.create(thread_id=tid)
        await client.runs.wait_run(tid, "echo", input=HI)
        for table in ("lg_checkpoints", "lg_blobs"):
            left = rows(database, table, "thread_id = ?", tid)
            assert {row[4] for row in left} <= {r["run_id"] for r in await client.runs.list(tid)}


async def test_a_runs_writes_are_refused_once_it_is_gone_or_settled(tmp_path: Path) -> None:
    from turnstile_server.store import RunSpec
    from turnstile_server.store.url import open_store

    store = await open_store(str(tmp_path / "t.db"))
    try:
        admission = await store.runs.admit(
            RunSpec(
                thread_id="t1",
                assistant_id="echo",
                graph_id="echo",
                input=None,
                multitask_strategy="enqueue",
                config={},
                metadata={},
                stream_mode=["values"],
                create_thread=True,
            ),
            max_queued=10,
            start=True,
        )
        run = admission.run
        checkpoints = RunCheckpoints(store.langgraph, run)
        frame = CheckpointFrame("t1", "", "c1", None, "forged", "json", b"{}", {}, {})
        await checkpoints.put(frame, [])
        assert rows(str(tmp_path / "t.db"), "lg_checkpoints", "run_id = ?", run.run_id)
        write = WriteRecord("task", 0, "ch", "json", b"1")
        await store.threads.delete("t1")
        with pytest.raises(ThreadNotFound):
            await checkpoints.put_writes("t1", "", "c1", run.run_id, [write])
        await checkpoints.settle()
        with pytest.raises(RunEnded):
            await checkpoints.put(frame, [])
    finally:
        await store.close()


class Unwinding(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]


async def _quick(state: Unwinding, config: RunnableConfig) -> dict[str, Any]:
    return {"messages": [AIMessage("quick")]}


async def _stuck(state: Unwinding, config: RunnableConfig) -> dict[str, Any]:
    from tests.support import STEPS

    configurable = config["configurable"]
    STEPS.enter(configurable["thread_id"], configurable["run_id"])
    try:
        GATES.arrived("stuck").set()
        await GATES.event("never").wait()
    except asyncio.CancelledError:
        GATES.arrived("unwinding").set()
        await GATES.event("unwound").wait()  # a second cancellation must not cut this short
        raise
    finally:
        STEPS.exit(configurable["thread_id"], configurable["run_id"])
    return {}


def _unwinding() -> Any:
    builder = StateGraph(Unwinding)
    builder.add_node("quick", _quick)
    builder.add_node("stuck", _stuck)
    builder.add_edge(START, "quick")
    builder.add_edge(START, "stuck")
    return builder.compile()


async def test_a_run_cancelled_twice_ends_only_once_its_nodes_have_unwound(tmp_path: Path) -> None:
    """LangGraph, cancelled a second time while it awaits its cancelled tasks, stops waiting
    for them: the run must not end (and its successor start) before its node has unwound."""
    from tests.support import STEPS

    graphs = GraphRegistry()
    graphs.register("unwinding", _unwinding())
    graphs.register("echo", lg_registry().get("echo"))
    async with serving(str(tmp_path / "t.db"), graphs) as client:
        tid = (await client.threads.create())["thread_id"]
        first = await client.runs.create(tid, "unwinding", input=HI)
        await asyncio.wait_for(GATES.arrived("stuck").wait(), 10)
        second = await client.runs.create(tid, "echo", input=HI, multitask_strategy="interrupt")
        await asyncio.wait_for(GATES.arrived("unwinding").wait(), 10)
        third = await client.runs.create(tid, "echo", input=HI, multitask_strategy="rollback")
        # Cancelled twice by now; a third time, which finds it still running (unwinding).
        await client.runs.cancel(tid, first["run_id"], action="rollback")
        assert (await client.runs.get(tid, first["run_id"]))["status"] == "running"
        assert (await client.runs.get(tid, third["run_id"]))["status"] == "pending"
        GATES.open("unwound")
        result = await client.runs.join_run(tid, third["run_id"])
        assert result.run["status"] == "success"
    assert STEPS.overlaps == []
    assert second["run_id"] != third["run_id"]


async def _slow_start(config: RunnableConfig) -> Any:
    """A factory that waits for gate `factory`: its run has started, LangGraph has not yet
    applied (checkpointed) the run's input."""
    from tests.lg_graphs import GRAPHS

    GATES.arrived("factory").set()
    await GATES.event("factory").wait()
    return GRAPHS["echo"]()


@pytest.mark.parametrize("durability", ["sync", "exit"])
async def test_an_interrupt_keeps_the_input_of_a_run_cut_before_langgraph_applied_it(
    tmp_path: Path, durability: Durability
) -> None:
    """SPEC §3: the interrupted run's input stays in the thread, as a native run's does (its
    store writes it as the run starts), however early the interrupt comes: here while the
    graph's factory runs, before LangGraph has written the run's input checkpoint."""
    from tests.lg_graphs import GRAPHS

    graphs = GraphRegistry()
    graphs.register("slow_start", _slow_start)
    graphs.register("echo", GRAPHS["echo"]())
    first_input = {"messages": [{"role": "user", "content": "first"}]}
    second_input = {"messages": [{"role": "user", "content": "second"}]}
    async with serving(str(tmp_path / "t.db"), graphs) as client:
        tid = (await client.threads.create())["thread_id"]
        first = await client.runs.create(
            tid, "slow_start", input=first_input, durability=durability
        )
        await asyncio.wait_for(GATES.arrived("factory").wait(), 10)
        second = await client.runs.create(
            tid, "echo", input=second_input, multitask_strategy="interrupt"
        )
        GATES.open("factory")  # after the interrupt was requested (at the admission)
        result = await client.runs.join_run(tid, second["run_id"])
        cut = await client.runs.get(tid, first["run_id"])
        history = await client.threads.get_history(tid, limit=100)
    assert cut["status"] == "interrupted"
    assert cut["superseded_by"] == second["run_id"]
    assert result.run["status"] == "success"
    messages = [(m["type"], m["content"]) for m in result.values["messages"]]
    assert messages == [("human", "first"), ("human", "second"), ("ai", "second")]
    # The first run's checkpoints are LangGraph's own: its input (in `__start__`), then START's
    # superstep (the input applied to the state); nothing of the superstep it was cut in.
    firsts = [c for c in history if c["metadata"].get("run_id") == first["run_id"]]
    # (With `exit` durability LangGraph puts one checkpoint, as it exits: START's superstep.)
    expected = [("loop", 0), ("input", -1)] if durability == "sync" else [("loop", 0)]
    assert [(c["metadata"]["source"], c["metadata"]["step"]) for c in firsts] == expected
    assert [m["content"] for m in firsts[0]["values"]["messages"]] == ["first"]
