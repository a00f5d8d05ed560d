"""The graph API: RunContext, the registry, spec loading, and the built-in graphs."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from turnstile_server.errors import InvalidArgument, UnknownGraph
from turnstile_server.graph import Graph, GraphRegistry, RunContext, load_graph
from turnstile_server.graphs.agent import graph
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
    assert registry.prepared("agent").runtime == "langgraph"
    assert registry.prepared("echo").runtime == "native"


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


def test_load_graph_loads_the_builtin_agent_s_langgraph_graph() -> None:
    assert load_graph("weather=turnstile_server.graphs.agent:graph") == ("weather", graph)


async def test_load_graph_imports_a_file_path_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `langgraph.json` names a file: `./graphs/mine.py:graph`, or an absolute path."""
    (tmp_path / "graphs").mkdir()
    (tmp_path / "graphs" / "mine.py").write_text(FIXTURE_SOURCE)
    monkeypatch.chdir(tmp_path)
    for spec in ("g=./graphs/mine.py:graph", f"g={tmp_path}/graphs/mine.py:Holder.graph"):
        name, loaded = load_graph(spec)
        assert name == "g"
        assert await run_graph(loaded, ThreadState(), make_context()) == [{"seen": True}]
    with pytest.raises(InvalidArgument, match=r"no such file '\./graphs/none\.py'"):
        load_graph("g=./graphs/none.py:graph")


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


# Keep the type alias honest: the native builtin graph is assignable to Graph.
_BUILTINS: tuple[Graph, ...] = (echo,)
