"""A LangGraph run's bad input, bad config and faults (issue 20 point 9): refused at admission
with INVALID_ARGUMENT and a reason where LangGraph would refuse it, else the run ends ERROR with
the fault's type and message; nothing answers INTERNAL."""

from __future__ import annotations

import decimal
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from pydantic import BaseModel

from tests.lg_graphs import lg_registry
from tests.support import client_of
from turnstile import Durability, InvalidArgumentError, TurnstileClient
from turnstile_server.state import MAX_JSON_DEPTH

HI = {"messages": [{"role": "user", "content": "hi"}]}


class Typed(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    count: int
    tags: list[str]


def _typed() -> Any:
    builder = StateGraph(Typed)
    builder.add_node("count", lambda s: {"count": int(s.get("count", 0)) + 1})
    builder.add_edge(START, "count")
    builder.add_edge("count", END)
    return builder.compile()


class Order(BaseModel):
    item: str
    quantity: int = 1


def _ordering() -> Any:
    builder = StateGraph(Order)
    builder.add_node("take", lambda s: {"quantity": s.quantity})
    builder.add_edge(START, "take")
    builder.add_edge("take", END)
    return builder.compile()


class Deep(TypedDict, total=False):
    depth: int
    x: Any


def _nesting() -> Any:
    """Writes `x` as a list `depth` levels deep (itself included): the state, one more."""

    def nest(state: Deep) -> Deep:
        value: Any = "leaf"
        for _ in range(int(state["depth"])):
            value = [value]
        return {"x": value}

    builder = StateGraph(Deep)
    builder.add_node("nest", nest)
    builder.add_edge(START, "nest")
    builder.add_edge("nest", END)
    return builder.compile()


def _non_finite() -> Any:
    """Writes NaN and the infinities, which LangGraph's checkpoints keep and JSON cannot."""

    def compute(state: Deep) -> Deep:
        return {"x": [math.nan, math.inf, -math.inf, decimal.Decimal("NaN"), 1.5]}

    builder = StateGraph(Deep)
    builder.add_node("compute", compute)
    builder.add_edge(START, "compute")
    builder.add_edge("compute", END)
    return builder.compile()


def _looping() -> Any:
    builder = StateGraph(Typed)
    builder.add_node("again", lambda s: {"messages": [AIMessage("again")]})
    builder.add_edge(START, "again")
    builder.add_edge("again", "again")
    return builder.compile()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TurnstileClient]:
    graphs = lg_registry()
    graphs.register("typed", _typed())
    graphs.register("ordering", _ordering())
    graphs.register("looping", _looping())
    graphs.register("nesting", _nesting())
    graphs.register("non_finite", _non_finite())
    async with client_of(str(tmp_path / "t.db"), graphs) as (_, sdk):
        yield sdk


@pytest.mark.parametrize(
    ("graph", "run_input", "says"),
    [
        ("typed", {"count": "many"}, "input.count"),
        ("typed", {"tags": "not a list"}, "input.tags"),
        ("typed", {"unknown": 1}, "none of the keys"),
        ("ordering", {"quantity": 2}, "item"),
        ("ordering", {"item": "tea", "quantity": "lots"}, "quantity"),
    ],
)
async def test_input_the_graphs_schema_refuses_is_invalid_argument_at_admission(
    client: TurnstileClient, graph: str, run_input: dict[str, Any], says: str
) -> None:
    thread = await client.threads.create()
    with pytest.raises(InvalidArgumentError) as refused:
        await client.runs.create(thread["thread_id"], graph, input=run_input)
    assert refused.value.reason == "INVALID_INPUT"
    assert says in str(refused.value)
    assert await client.runs.list(thread["thread_id"]) == [], "nothing was admitted"


async def test_input_that_fits_is_admitted_and_messages_are_left_to_langgraph(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()
    typed = await client.runs.wait_run(thread["thread_id"], "typed", input={**HI, "count": 2})
    assert typed.run["status"] == "success" and typed.values["count"] == 3
    ordered = await client.runs.wait_run(
        (await client.threads.create())["thread_id"], "ordering", input={"item": "tea"}
    )
    assert ordered.run["status"] == "success"


@pytest.mark.parametrize(
    "config",
    [
        {"recursion_limit": 0},
        {"recursion_limit": 2.5},
        {"recursion_limit": "ten"},
        {"max_concurrency": -1},
        {"tags": "one"},
        {"tags": [1]},
        {"configurable": "x"},
    ],
)
async def test_a_config_langgraph_refuses_is_invalid_argument_at_admission(
    client: TurnstileClient, config: dict[str, Any]
) -> None:
    thread = await client.threads.create()
    with pytest.raises(InvalidArgumentError) as refused:
        await client.runs.create(thread["thread_id"], "typed", input=HI, config=config)
    assert refused.value.reason == "INVALID_CONFIG"


async def test_configurable_beside_context_is_refused_as_langgraph_platform_does(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()
    with pytest.raises(InvalidArgumentError) as refused:
        await client.runs.create(
            thread["thread_id"],
            "typed",
            input=HI,
            config={"configurable": {"user": "a"}},
            context={"user": "a"},
        )
    assert refused.value.reason == "INVALID_CONFIG"


async def test_the_recursion_limit_ends_the_run_error_with_reason_recursion_limit(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()
    result = await client.runs.wait_run(
        thread["thread_id"], "looping", input=HI, config={"recursion_limit": 3}
    )
    assert result.run["status"] == "error"
    error = result.run["error"]
    assert error is not None and error["type"] == "RECURSION_LIMIT"
    assert "Recursion limit of 3 reached" in error["message"]  # a whole number, not 3.0
    assert "Traceback" not in error["message"]
    assert (await client.threads.get(thread["thread_id"]))["status"] == "error"


async def test_a_node_that_raises_ends_the_run_error_with_its_type_and_message(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()
    parts = [
        (p.event, p.data)
        async for p in client.runs.stream(thread["thread_id"], "failing", input=HI)
    ]
    assert parts[-1] == (
        "end",
        {"status": "error", "reason": "the tool exploded", "superseded_by": "", "action": ""},
    )
    [run] = await client.runs.list(thread["thread_id"])
    assert run["error"] == {"type": "RuntimeError", "message": "the tool exploded"}


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
@pytest.mark.parametrize(("streamed", "depth"), [(False, MAX_JSON_DEPTH), (True, 40)])
async def test_a_write_nested_past_the_limit_ends_the_run_error_and_stores_none_of_it(
    client: TurnstileClient, durability: Durability, streamed: bool, depth: int
) -> None:
    """Issue 18 point 6 for LangGraph: the saver refuses the task's write (and the checkpoint
    after it) before either is stored, so the thread keeps the state it had and still reads."""
    thread = await client.threads.create()
    thread_id = thread["thread_id"]
    kept = await client.runs.wait_run(thread_id, "nesting", input={"depth": MAX_JSON_DEPTH - 1})
    assert kept.run["status"] == "success", kept.run["error"]
    before = kept.values["x"]

    if streamed:  # the updates and values events carry the write: their own checks come first
        parts = [
            (p.event, p.data)
            async for p in client.runs.stream(
                thread_id,
                "nesting",
                input={"depth": depth},
                stream_mode=["updates", "values"],
                durability=durability,
            )
        ]
        assert parts[-1][0] == "end" and parts[-1][1]["status"] == "error", parts
        [run, _] = await client.runs.list(thread_id)
    else:
        result = await client.runs.wait_run(
            thread_id, "nesting", input={"depth": depth}, durability=durability
        )
        run = result.run
    assert run["status"] == "error"
    state = await client.threads.get_state(thread_id)
    assert state["values"]["x"] == before
    assert (await client.threads.get(thread_id))["status"] == "error"
    assert [t["thread_id"] for t in await client.threads.search()] == [thread_id]
    history = await client.threads.get_history(thread_id)
    assert all(c["values"].get("x") in (None, before) for c in history)
    assert run["error"] == {
        "type": "InvalidInput",
        "message": f"update of 'x': objects and lists nest more than {MAX_JSON_DEPTH} levels deep",
    }


async def test_nan_and_infinities_in_a_graph_s_state_read_as_null_never_internal(
    client: TurnstileClient,
) -> None:
    """As LangGraph Platform sends them (orjson writes them `null`): the run, its stream and
    every read of the thread; before, the step's `updates` event ended the run ERROR after
    its checkpoint was stored, and every read of the thread's state answered INTERNAL."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    parts = [
        part
        async for part in client.runs.stream(
            tid, "non_finite", input={"depth": 1}, stream_mode=["values", "updates"]
        )
    ]
    written = [None, None, None, None, 1.5]
    assert [p.event for p in parts] == ["metadata", "values", "updates", "values", "end"]
    assert parts[2].data == {"compute": {"x": written}}
    assert parts[3].data["x"] == written
    assert parts[-1].data["status"] == "success"
    assert (await client.threads.get_state(tid))["values"]["x"] == written
    assert (await client.threads.get(tid))["values"]["x"] == written
    assert (await client.threads.get_history(tid, limit=10))[0]["values"]["x"] == written
    assert (await client.runs.join(tid, parts[0].data["run_id"]))["x"] == written
    again = await client.runs.wait_run(tid, "non_finite", input={"depth": 2})
    assert again.run["status"] == "success" and again.values["x"] == written
