"""LangGraph stand-ins for the native test graphs (`tests.support`): the same gates, step log
and failures, as compiled `StateGraph`s run by the LangGraph runtime."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from tests.support import GATES, STEPS
from turnstile_server.graph import GraphRegistry


class Chat(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    last_gate: str


class GatedInput(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    gates: list[str]


class Gated(Chat, total=False):
    gates: list[str]


async def _gate(state: Gated) -> dict[str, Any]:
    """One superstep per gate of the input: waits for it, then appends an ai message."""
    gates = list(state.get("gates") or [])
    name = gates.pop(0)
    GATES.arrived(name).set()
    if name == "raise-timeout":
        raise TimeoutError("the graph's own call timed out")
    await GATES.event(name).wait()
    return {"messages": [AIMessage(f"passed {name}")], "last_gate": name, "gates": gates}


def _more_gates(state: Gated) -> str:
    return "gate" if state.get("gates") else END


def _gated() -> Any:
    builder = StateGraph(Gated, input_schema=GatedInput, output_schema=Chat)
    builder.add_node("gate", _gate)
    builder.add_conditional_edges(START, _more_gates, ["gate", END])
    builder.add_conditional_edges("gate", _more_gates, ["gate", END])
    return builder.compile()


async def _answer(state: Chat) -> dict[str, Any]:
    """Answers with the last human message's content, as `echo` does."""
    humans = [m for m in state.get("messages") or [] if m.type == "human"]
    return {"messages": [AIMessage(humans[-1].content if humans else "")]}


def _echo() -> Any:
    builder = StateGraph(Chat)
    builder.add_node("answer", _answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder.compile()


class Steps(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    steps: int
    pause: float
    unwind: float


async def _record(state: Steps, config: RunnableConfig) -> dict[str, Any]:
    """One superstep entering and leaving the step log around a few awaits (cf. `recording`)."""
    configurable = config["configurable"]
    thread_id, run_id = configurable["thread_id"], configurable["run_id"]
    STEPS.enter(thread_id, run_id)
    try:
        for _ in range(3):
            await asyncio.sleep(0)
        await asyncio.sleep(float(state.get("pause", 0.001)))
    except asyncio.CancelledError:
        await asyncio.sleep(float(state.get("unwind", 0.02)))
        raise
    finally:
        STEPS.exit(thread_id, run_id)
    left = int(state.get("steps", 3))
    get_stream_writer()({"left": left})
    return {"messages": [AIMessage(f"{run_id} step, {left - 1} left")], "steps": left - 1}


def _recording() -> Any:
    builder = StateGraph(Steps)
    builder.add_node("record", _record)
    builder.add_edge(START, "record")
    builder.add_conditional_edges(
        "record",
        lambda s: "record" if int(s.get("steps", 0)) > 0 else END,
        ["record", END],
    )
    return builder.compile()


async def _fail(state: Chat) -> dict[str, Any]:
    raise RuntimeError("the tool exploded")


def _failing() -> Any:
    builder = StateGraph(Chat)
    builder.add_node("about_to_fail", lambda s: {"messages": [AIMessage("about to fail")]})
    builder.add_node("explode", _fail)
    builder.add_edge(START, "about_to_fail")
    builder.add_edge("about_to_fail", "explode")
    return builder.compile()


GRAPHS = {"gated": _gated, "echo": _echo, "recording": _recording, "failing": _failing}


def lg_registry() -> GraphRegistry:
    """`tests.support.registry()` with each test graph replaced by its LangGraph stand-in,
    and the native ones kept under `native_<id>`."""
    from tests.support import registry

    graphs = registry()
    native = GraphRegistry()
    for graph_id in GRAPHS:
        native.register(f"native_{graph_id}", graphs.get(graph_id))
    mixed = GraphRegistry()
    for graph_id, make in GRAPHS.items():
        mixed.register(graph_id, make())
        mixed.register(f"native_{graph_id}", native.get(f"native_{graph_id}"))
    mixed.register("agent", graphs.get("agent"))
    return mixed


class FileGatedInput(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    gates: list[str]


class FileGated(Chat, total=False):
    gates: list[str]


async def _file_gate(state: FileGated, config: RunnableConfig) -> dict[str, Any]:
    """Like `_gate`, but a gate is a file `<configurable.gate_dir>/<name>` (across processes)."""
    gates = list(state.get("gates") or [])
    name = gates.pop(0)
    gate_dir = Path(str(config["configurable"].get("gate_dir", ".")))
    (gate_dir / f"{name}.arrived").touch()
    while not (gate_dir / name).exists():  # noqa: ASYNC110 - a file, across processes
        await asyncio.sleep(0.02)
    return {"messages": [AIMessage(f"passed {name}")], "gates": gates}


def _file_gated() -> Any:
    builder = StateGraph(FileGated, input_schema=FileGatedInput, output_schema=Chat)
    builder.add_node("gate", _file_gate)
    builder.add_conditional_edges(START, _more_gates, ["gate", END])
    builder.add_conditional_edges("gate", _more_gates, ["gate", END])
    return builder.compile()


FILE_GATED = _file_gated()
"""For a server in another process: `--graph file_gated=tests.lg_graphs:FILE_GATED`."""
