"""The graph API: RunContext, the registry, spec loading, and the built-in graphs."""

from __future__ import annotations

import asyncio
import json
import textwrap
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from turnstile_server.errors import InvalidArgument, InvalidInput, UnknownGraph
from turnstile_server.graph import Graph, GraphRegistry, RunContext, load_graph
from turnstile_server.graphs.agent import TOOL_NAME, agent
from turnstile_server.graphs.echo import echo
from turnstile_server.state import ThreadState, normalize_input, normalize_update

Events = list[tuple[str, Any]]


def make_context(
    events: Events | None = None,
    *,
    input: dict[str, Any] | None = None,
    step_seconds: float | None = 0,
) -> RunContext:
    sink = events if events is not None else []
    config = {"configurable": {"step_seconds": step_seconds}} if step_seconds is not None else {}
    return RunContext(
        run_id="run-1",
        thread_id="thread-1",
        attempt=1,
        input=input,
        config=config,
        emit=lambda kind, data: sink.append((kind, data)),
    )


def start(graph: Graph, state: ThreadState, ctx: RunContext) -> AsyncGenerator[dict[str, Any]]:
    """Call a graph on a snapshot of the state; graphs are async generators, so closable."""
    steps = graph(state.snapshot(), ctx)
    assert isinstance(steps, AsyncGenerator)
    return steps


async def run_graph(graph: Graph, state: ThreadState, ctx: RunContext) -> list[dict[str, Any]]:
    """Drive a graph the way the runtime does: normalize and apply every yielded update."""
    updates: list[dict[str, Any]] = []
    async with aclosing(start(graph, state, ctx)) as steps:
        async for raw in steps:
            update = normalize_update(raw)
            state.apply(update)
            updates.append(update)
    return updates


def state_with_human(text: str) -> ThreadState:
    state = ThreadState()
    state.apply(normalize_input({"messages": [{"role": "user", "content": text}]}))
    return state


async def _asyncgen_graph(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    yield {}


# --- RunContext --------------------------------------------------------------------------


def test_context_forwards_message_chunks_and_custom_events_to_emit() -> None:
    events: Events = []
    ctx = make_context(events)
    ctx.emit_message_chunk({"id": "m1", "type": "ai", "content": "hi"})
    ctx.emit_custom({"progress": 0.5})
    assert events == [
        ("messages", {"id": "m1", "type": "ai", "content": "hi"}),
        ("custom", {"progress": 0.5}),
    ]


def test_context_reads_configurable_values_with_defaults() -> None:
    ctx = RunContext(
        run_id="r", thread_id="t", emit=lambda *_: None, config={"configurable": {"k": 1}}
    )
    assert ctx.configurable("k") == 1
    assert ctx.configurable("missing", "fallback") == "fallback"
    assert ctx.input == {}
    assert ctx.attempt == 1


@pytest.mark.parametrize("config", [{}, {"configurable": None}, {"configurable": "x"}])
def test_context_configurable_falls_back_without_a_configurable_object(
    config: dict[str, Any],
) -> None:
    ctx = RunContext(run_id="r", thread_id="t", emit=lambda *_: None, config=config)
    assert ctx.configurable("k", 7) == 7


# --- registry ----------------------------------------------------------------------------


def test_builtin_registry_has_agent_and_echo() -> None:
    registry = GraphRegistry.with_builtins()
    assert registry.ids() == ["agent", "echo"]
    assert "agent" in registry
    assert registry.get("echo") is echo


def test_registry_lists_ids_sorted() -> None:
    registry = GraphRegistry()
    for graph_id in ("zeta", "Alpha", "mid"):
        registry.register(graph_id, _asyncgen_graph)
    assert registry.ids() == ["Alpha", "mid", "zeta"]
    assert "nope" not in registry


def test_unknown_graph_names_the_registered_ones() -> None:
    registry = GraphRegistry.with_builtins()
    with pytest.raises(UnknownGraph, match=r"^unknown graph 'nope'; registered: agent, echo$"):
        registry.get("nope")


@pytest.mark.parametrize("graph_id", ["", "1abc", "a b", "a/b", "x" * 65, "_x"])
def test_register_rejects_a_bad_graph_id(graph_id: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid graph id"):
        GraphRegistry().register(graph_id, _asyncgen_graph)


def test_register_rejects_a_duplicate_id() -> None:
    registry = GraphRegistry.with_builtins()
    with pytest.raises(InvalidArgument, match="already registered"):
        registry.register("agent", _asyncgen_graph)


def test_register_rejects_a_function_that_is_not_an_async_generator() -> None:
    async def coroutine(state: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        return {}

    with pytest.raises(InvalidArgument, match="not an async generator function"):
        GraphRegistry().register("g", coroutine)


# --- load_graph --------------------------------------------------------------------------

FIXTURE_SOURCE = """
from typing import Any

async def graph(state: Any, ctx: Any) -> Any:
    yield {"seen": True}

class Callable:
    async def __call__(self, state: Any, ctx: Any) -> Any:
        yield {"seen": "object"}

class Holder:
    graph = graph

callable_graph = Callable()

async def coroutine(state: Any, ctx: Any) -> Any:
    return {}

def plain(state: Any, ctx: Any) -> Any:
    return {}

not_callable = "graph"
"""


@pytest.fixture
def graph_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Return a writer of importable modules in tmp_path, each under a fresh name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"graph_fixture_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


def test_load_graph_imports_an_async_generator_function(
    graph_module: Callable[[str], str],
) -> None:
    module = graph_module(FIXTURE_SOURCE)
    name, graph = load_graph(f"weather={module}:graph")
    assert name == "weather"
    GraphRegistry().register(name, graph)


@pytest.mark.parametrize("attribute", ["callable_graph", "Holder.graph"])
async def test_load_graph_accepts_callable_objects_and_dotted_attributes(
    graph_module: Callable[[str], str], attribute: str
) -> None:
    module = graph_module(FIXTURE_SOURCE)
    _, graph = load_graph(f"g={module}:{attribute}")
    updates = await run_graph(graph, ThreadState(), make_context())
    assert len(updates) == 1


@pytest.mark.parametrize(
    "spec",
    ["agent", "agent:module", "=module:attr", "name=module", "name=module:", "name=:attr"],
)
def test_load_graph_rejects_a_malformed_spec(spec: str) -> None:
    with pytest.raises(InvalidArgument, match=r"expected name=package\.module:attribute"):
        load_graph(spec)


def test_load_graph_rejects_a_bad_name(graph_module: Callable[[str], str]) -> None:
    module = graph_module(FIXTURE_SOURCE)
    with pytest.raises(InvalidArgument, match="invalid graph id '9lives'"):
        load_graph(f"9lives={module}:graph")


def test_load_graph_rejects_a_module_that_does_not_exist() -> None:
    with pytest.raises(InvalidArgument, match="cannot import module 'no_such_module_xyz'"):
        load_graph("g=no_such_module_xyz:graph")


def test_load_graph_reports_a_module_that_fails_while_importing(
    graph_module: Callable[[str], str],
) -> None:
    module = graph_module("raise RuntimeError('boom')\n")
    with pytest.raises(InvalidArgument, match=r"failed: RuntimeError: boom"):
        load_graph(f"g={module}:graph")


def test_load_graph_rejects_a_missing_attribute(graph_module: Callable[[str], str]) -> None:
    module = graph_module(FIXTURE_SOURCE)
    with pytest.raises(InvalidArgument, match=f"module '{module}' has no attribute 'missing'"):
        load_graph(f"g={module}:missing")


@pytest.mark.parametrize("attribute", ["coroutine", "plain", "not_callable", "Callable"])
def test_load_graph_rejects_what_is_not_an_async_generator_function(
    graph_module: Callable[[str], str], attribute: str
) -> None:
    module = graph_module(FIXTURE_SOURCE)
    with pytest.raises(InvalidArgument, match="is not an async generator function"):
        load_graph(f"g={module}:{attribute}")


def test_load_graph_loads_the_builtin_agent() -> None:
    assert load_graph("weather=turnstile_server.graphs.agent:agent") == ("weather", agent)


# --- agent -------------------------------------------------------------------------------


async def test_agent_answers_a_human_message_with_tool_call_result_and_streamed_answer() -> None:
    events: Events = []
    state = state_with_human("what's the weather in sf?")
    updates = await run_graph(agent, state, make_context(events))

    messages = state.values["messages"]
    assert [m["type"] for m in messages] == ["human", "ai", "tool", "ai"]
    assert len(updates) == 3
    _, call_message, tool_message, answer = messages
    [call] = call_message["tool_calls"]
    assert call_message["content"] == ""
    assert call["name"] == TOOL_NAME
    assert call["args"] == {"query": "weather in sf"}
    assert call["type"] == "tool_call"
    assert call["id"].startswith("call_")
    assert tool_message["tool_call_id"] == call["id"]
    assert tool_message["name"] == TOOL_NAME
    [result] = json.loads(tool_message["content"])
    assert set(result) == {"url", "content"}
    assert "sf" in result["content"]
    assert "sf" in answer["content"]

    chunks = [data for kind, data in events if kind == "messages"]
    assert len(chunks) > 1
    assert {chunk["id"] for chunk in chunks} == {answer["id"]}
    assert {chunk["type"] for chunk in chunks} == {"ai"}
    assert "".join(chunk["content"] for chunk in chunks) == answer["content"]


async def test_agent_falls_back_to_the_whole_text_as_the_place() -> None:
    state = state_with_human("Paris")
    await run_graph(agent, state, make_context())
    assert state.values["messages"][1]["tool_calls"][0]["args"] == {"query": "weather in Paris"}


async def test_agent_resumes_a_state_ending_in_a_tool_call() -> None:
    state = state_with_human("whats the weather in nyc?")
    async with aclosing(start(agent, state, make_context())) as steps:
        state.apply(normalize_update(await anext(steps)))
    call_id = state.values["messages"][-1]["tool_calls"][0]["id"]

    updates = await run_graph(agent, state, make_context())

    assert len(updates) == 2
    tool_message = updates[0]["messages"][0]
    assert (tool_message["type"], tool_message["tool_call_id"]) == ("tool", call_id)
    assert "nyc" in tool_message["content"]
    assert [m["type"] for m in state.values["messages"]] == ["human", "ai", "tool", "ai"]


async def test_agent_answers_for_a_new_human_message_after_an_interrupted_tool_call() -> None:
    state = state_with_human("weather in sf?")
    async with aclosing(start(agent, state, make_context())) as steps:
        state.apply(normalize_update(await anext(steps)))
    state.apply(normalize_input({"messages": [{"role": "user", "content": "weather in nyc?"}]}))

    await run_graph(agent, state, make_context())

    types = [m["type"] for m in state.values["messages"]]
    assert types == ["human", "ai", "human", "ai", "tool", "ai"]
    assert state.values["messages"][3]["tool_calls"][0]["args"]["query"] == "weather in nyc"


async def test_agent_streams_only_the_answer_when_state_ends_in_a_tool_result() -> None:
    events: Events = []
    state = ThreadState()
    state.apply(
        normalize_input(
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "tool", "content": "plain text result", "tool_call_id": "c1"},
                ]
            }
        )
    )
    updates = await run_graph(agent, state, make_context(events))
    assert len(updates) == 1
    assert "plain text result" in updates[0]["messages"][0]["content"]
    assert (
        "".join(d["content"] for k, d in events if k == "messages")
        == (updates[0]["messages"][0]["content"])
    )


@pytest.mark.parametrize(
    "messages", [[], [{"role": "user", "content": "q"}, {"role": "ai", "content": "done"}]]
)
async def test_agent_stops_without_a_step_when_there_is_nothing_to_answer(
    messages: list[dict[str, Any]],
) -> None:
    state = ThreadState()
    state.apply(normalize_input({"messages": messages}))
    assert await run_graph(agent, state, make_context()) == []


@pytest.fixture
def recorded_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record every asyncio.sleep delay while sleeping for no time at all."""
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, result: Any = None) -> Any:
        delays.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    return delays


async def test_agent_waits_the_input_sleep_before_every_step(recorded_sleeps: list[float]) -> None:
    state = state_with_human("weather in sf?")
    await run_graph(agent, state, make_context(input={"sleep": 5}, step_seconds=None))
    # Tool call and tool result wait 5 s; the answer waits 5 s, then streams its tokens.
    assert recorded_sleeps[:3] == [5.0, 5.0, 5.0]
    assert set(recorded_sleeps[3:]) == {0.0}


async def test_agent_spreads_the_step_latency_over_the_answer_tokens(
    recorded_sleeps: list[float],
) -> None:
    events: Events = []
    state = state_with_human("weather in sf?")
    await run_graph(agent, state, make_context(events, step_seconds=None))
    tokens = [d for k, d in events if k == "messages"]
    assert recorded_sleeps[:2] == [0.8, 0.8]
    assert len(recorded_sleeps) == 2 + len(tokens)
    assert sum(recorded_sleeps[2:]) == pytest.approx(0.8)


@pytest.mark.parametrize("sleep", ["5", -1, True, float("inf"), [1]])
async def test_agent_rejects_a_bad_sleep(sleep: Any) -> None:
    ctx = make_context(input={"sleep": sleep})
    with pytest.raises(InvalidInput, match=r"^input\.sleep: must be a non-negative number"):
        await run_graph(agent, state_with_human("hi"), ctx)


@pytest.mark.parametrize("step_seconds", ["fast", -0.5])
async def test_agent_rejects_a_bad_step_seconds(step_seconds: Any) -> None:
    ctx = make_context()
    ctx.config["configurable"]["step_seconds"] = step_seconds
    with pytest.raises(InvalidInput, match=r"configurable\.step_seconds: must be a non-negative"):
        await run_graph(agent, state_with_human("hi"), ctx)


async def test_agent_cancelled_during_its_sleep_raises_cancelled_error_without_a_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeping = asyncio.Event()
    real_sleep = asyncio.sleep

    async def signalling_sleep(delay: float, result: Any = None) -> Any:
        sleeping.set()
        return await real_sleep(delay, result)

    monkeypatch.setattr(asyncio, "sleep", signalling_sleep)
    state = state_with_human("weather in sf?")
    updates: list[dict[str, Any]] = []

    async def consume() -> None:
        async with aclosing(start(agent, state, make_context(input={"sleep": 3600}))) as steps:
            async for update in steps:
                updates.append(update)

    task = asyncio.create_task(consume())
    await sleeping.wait()
    task.cancel()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert updates == []


# --- echo --------------------------------------------------------------------------------


async def test_echo_yields_exactly_two_updates() -> None:
    state = state_with_human("ping")
    updates = await run_graph(echo, state, make_context())
    assert len(updates) == 2
    assert updates[0] == {"steps": 1}
    [reply] = updates[1]["messages"]
    assert (reply["type"], reply["content"]) == ("ai", "ping")


async def test_echo_counts_steps_across_runs_and_answers_empty_without_a_human() -> None:
    state = ThreadState({"steps": 4})
    updates = await run_graph(echo, state, make_context())
    assert updates[0] == {"steps": 5}
    assert updates[1]["messages"][0]["content"] == ""


# Keep the type alias honest: a builtin graph is assignable to Graph.
_BUILTINS: tuple[Graph, ...] = (agent, echo)
