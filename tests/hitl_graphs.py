"""LangGraph graphs that stop for a human: an approval, two parallel questions, a plain chain
(for `interrupt_before`/`interrupt_after`) and a subgraph that asks."""

from __future__ import annotations

import asyncio
import operator
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from tests.support import GATES
from turnstile_server.graph import GraphRegistry

FINAL: list[dict[str, Any]] = []
"""The state each graph's last node saw plus what it wrote, in order: what the runs did,
read without the thread-state API."""


class Approval(TypedDict, total=False):
    request: str
    steps: Annotated[list[str], operator.add]
    decision: Any


def _draft(state: Approval) -> dict[str, Any]:
    return {"steps": ["draft"]}


async def _held(answer: Any) -> None:
    """Holds a resumed node whose answer is `hold:<name>` until the test opens that gate: a
    resume run stopped there has written nothing yet (its first step is in flight)."""
    if isinstance(answer, str) and answer.startswith("hold:"):
        GATES.arrived(answer).set()
        await GATES.event(answer).wait()


async def _ask(state: Approval) -> dict[str, Any]:
    decision = interrupt({"question": f"approve {state.get('request', '')}?"})
    await _held(decision)
    return {"steps": ["ask"], "decision": decision}


async def _act(state: Approval) -> dict[str, Any]:
    gate = state.get("request", "")
    if gate.startswith("gate:"):  # held, for the tests that race a run
        GATES.arrived(gate).set()
        await GATES.event(gate).wait()
    FINAL.append({**state, "steps": [*state.get("steps", []), "act"]})
    return {"steps": ["act"]}


def approval() -> Any:
    """draft -> ask (interrupt) -> act."""
    builder = StateGraph(Approval)
    builder.add_node("draft", _draft)
    builder.add_node("ask", _ask)
    builder.add_node("act", _act)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "ask")
    builder.add_edge("ask", "act")
    builder.add_edge("act", END)
    return builder.compile()


class Pair(TypedDict, total=False):
    answers: Annotated[list[str], operator.add]


async def _left(state: Pair) -> dict[str, Any]:
    given = interrupt("left?")
    await _held(given)
    answer = f"left={given}"
    FINAL.append({"answers": [answer]})
    return {"answers": [answer]}


async def _right(state: Pair) -> dict[str, Any]:
    given = interrupt("right?")
    await _held(given)
    answer = f"right={given}"
    FINAL.append({"answers": [answer]})
    return {"answers": [answer]}


def parallel() -> Any:
    """Two nodes in one superstep, each asking its own question."""
    builder = StateGraph(Pair)
    builder.add_node("left", _left)
    builder.add_node("right", _right)
    builder.add_edge(START, "left")
    builder.add_edge(START, "right")
    builder.add_edge("left", END)
    builder.add_edge("right", END)
    return builder.compile()


def chain() -> Any:
    """draft -> act, no interrupt of its own."""
    builder = StateGraph(Approval)
    builder.add_node("draft", _draft)
    builder.add_node("act", _act)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "act")
    builder.add_edge("act", END)
    return builder.compile()


def nested() -> Any:
    """draft -> inner (the approval graph as a subgraph node)."""
    builder = StateGraph(Approval)
    builder.add_node("draft", _draft)
    builder.add_node("inner", approval())
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "inner")
    builder.add_edge("inner", END)
    return builder.compile()


def hitl_registry() -> GraphRegistry:
    """The built-in and test graphs plus these."""
    from tests.support import registry

    graphs = registry()
    graphs.register("approval", approval())
    graphs.register("parallel", parallel())
    graphs.register("chain", chain())
    graphs.register("nested", nested())
    return graphs


async def _file_gated_act(state: Approval, config: RunnableConfig) -> dict[str, Any]:
    """`act`, held at the file gate `<configurable.gate_dir>/act` (a server in another
    process: `tests.processes.FileGates`)."""
    gate_dir = Path(str(config["configurable"].get("gate_dir", ".")))
    (gate_dir / "act.arrived").touch()
    while not (gate_dir / "act").exists():  # noqa: ASYNC110 - a file, across processes
        await asyncio.sleep(0.02)
    return {"steps": ["act"]}


def _file_approval() -> Any:
    """ask (interrupt) -> act (file-gated): what a resume run executes, cut between them."""
    builder = StateGraph(Approval)
    builder.add_node("ask", _ask)
    builder.add_node("act", _file_gated_act)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", "act")
    builder.add_edge("act", END)
    return builder.compile()


FILE_APPROVAL = _file_approval()
"""For a server in another process: `--graph approval=tests.hitl_graphs:FILE_APPROVAL`."""
