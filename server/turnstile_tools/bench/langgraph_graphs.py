"""The LangGraph graphs of B10 and B11: a trivial two-node StateGraph, and one that sleeps.

Self-contained (LangGraph only), so `langgraph dev` in another environment serves this very file
from the `langgraph.json` the bench writes (`project_file`), as Turnstile does with `--config`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TypedDict

from langgraph.graph import END, START, StateGraph

TWO_NODE = "lg_two_node"
SLEEPER = "lg_sleeper"


class Counter(TypedDict, total=False):
    """The two-node graph's state: a topic it is given and the steps it counted."""

    topic: str
    steps: int


def first(state: Counter) -> Counter:
    return {"steps": state.get("steps", 0) + 1}


def second(state: Counter) -> Counter:
    return {"steps": state.get("steps", 0) + 1}


def two_node_graph() -> StateGraph[Counter]:
    """START → first → second → END, each adding one to `steps`."""
    builder = StateGraph(Counter)
    builder.add_node("first", first)
    builder.add_node("second", second)
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    builder.add_edge("second", END)
    return builder


class Sleep(TypedDict, total=False):
    """The sleeper's state: how long its one step waits."""

    seconds: float
    slept: bool


async def nap(state: Sleep) -> Sleep:
    await asyncio.sleep(float(state.get("seconds", 3600.0)))
    return {"slept": True}


def sleeper_graph() -> StateGraph[Sleep]:
    """One node that waits `seconds` (an hour by default) until cancelled."""
    builder = StateGraph(Sleep)
    builder.add_node("nap", nap)
    builder.add_edge(START, "nap")
    builder.add_edge("nap", END)
    return builder


lg_two_node = two_node_graph().compile()
lg_sleeper = sleeper_graph().compile()


def project_file(directory: Path) -> Path:
    """Writes a `langgraph.json` serving this file's two graphs; returns its path."""
    source = Path(__file__).resolve()
    config = {
        "dependencies": ["."],
        "graphs": {name: f"{source}:{name}" for name in (TWO_NODE, SLEEPER)},
    }
    path = directory / "langgraph.json"
    path.write_text(json.dumps(config, indent=2))
    return path
