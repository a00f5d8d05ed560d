"""The `agent` graph: the seeds' weather agent as a LangGraph graph, offline.

A model node and a `ToolNode`, routed by `tools_condition`, as LangGraph's ReAct agent is
built: a question gets a call of the fake `tavily_search_results_json` tool, its result an
answer streamed token by token. The model (`weather_model.WeatherChatModel`) is
deterministic and decides from the last message alone, so a run resumed on a partial state (an
interrupted run's checkpoints plus a new input) carries on where the conversation stopped.

Each step takes `config["configurable"]["step_seconds"]` (default 0.8), spread over the
answer's tokens. An input `sleep` makes every step of its question wait that long first: it is
an `EphemeralValue` (only the run's first step sees it, so it never outlives its run, even an
interrupted one), which the first step keeps as `pace` for its question's later steps.
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired, TypedDict

from langchain_core.messages import AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.channels import EphemeralValue
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from turnstile_server.graphs.weather import (
    Pace,
    input_pace,
    paced,
    step_delay,
    tavily_search_results_json,
)
from turnstile_server.graphs.weather_model import WeatherChatModel

TOOLS = [tavily_search_results_json]


class AgentState(TypedDict):
    """The thread's state: its messages, and the pace an input asked for."""

    messages: Annotated[list[AnyMessage], add_messages]
    sleep: NotRequired[Annotated[float | None, EphemeralValue]]
    pace: NotRequired[Pace | None]


_model = WeatherChatModel().bind_tools(TOOLS)


async def call_model(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Ask the model about the conversation, at its question's pace."""
    fresh = input_pace(state)
    latency, wait_first = step_delay(paced(state), config)
    reply = await _model.ainvoke(state["messages"], config, latency=latency, wait_first=wait_first)
    update: dict[str, Any] = {"messages": [reply]}
    if fresh is not None:
        update["pace"] = fresh
    return update


def build() -> StateGraph[AgentState]:
    """The agent's graph, uncompiled."""
    builder = StateGraph(AgentState)
    builder.add_node("agent", call_model)
    builder.add_node("tools", ToolNode(TOOLS))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder


graph: CompiledStateGraph[AgentState, None, AgentState, AgentState] = build().compile(name="agent")
