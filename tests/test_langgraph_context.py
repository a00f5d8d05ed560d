"""A run's `context` reaches LangGraph's `Runtime.context`, filtered by the graph's context
schema as LangGraph Platform filters it (SPEC §10)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime

from tests.support import client_of
from turnstile_server.graph import GraphRegistry

HI = {"messages": [{"role": "user", "content": "hi"}]}
SEEN: list[Any] = []


class Chat(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]


@dataclass
class Caller:
    user: str
    tone: str = "plain"


async def _look(state: Chat, runtime: Runtime[Any]) -> dict[str, Any]:
    SEEN.append(runtime.context)
    return {"messages": [AIMessage("seen")]}


def _graph(context_schema: type[Any] | None) -> Any:
    builder = StateGraph(Chat, context_schema=context_schema)
    builder.add_node("look", _look)
    builder.add_edge(START, "look")
    return builder.compile()


async def test_context_reaches_the_runtime_keeping_only_the_keys_its_schema_declares(
    tmp_path: Path,
) -> None:
    """A key the schema does not declare would make LangGraph's `Caller(**context)` raise."""
    SEEN.clear()
    graphs = GraphRegistry()
    graphs.register("schema", _graph(Caller))
    graphs.register("free", _graph(None))
    context = {"user": "ada", "extra": 1}
    async with client_of(str(tmp_path / "t.db"), graphs) as (_, client):
        thread = await client.threads.create()
        for graph_id in ("schema", "free"):
            result = await client.runs.wait_run(
                thread["thread_id"], graph_id, input=HI, context=context
            )
            assert result.run["status"] == "success", result.run
            assert result.run["context"] == context  # the run keeps what it was given
    seen_by_the_nodes = list(SEEN)
    assert seen_by_the_nodes == [Caller(user="ada"), {"user": "ada", "extra": 1.0}]
