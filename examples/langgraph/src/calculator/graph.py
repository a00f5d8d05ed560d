"""`calculator`: reads "what is A / B?", calls the `divide` tool, answers with its result.

The `plan` node plays the model: it turns the question into a tool call, or answers from the
tool's result; `tools_condition` routes a tool call to the `ToolNode` and back.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition

from calculator.tools import divide

_QUESTION = re.compile(r"(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?)")


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def plan(state: State) -> dict[str, Any]:
    """Call the tool for a new question; answer once the tool has replied."""
    last = state["messages"][-1]
    if isinstance(last, ToolMessage):
        return {"messages": [AIMessage(f"The answer is {last.content}.")]}
    numbers = _QUESTION.search(str(last.content))
    if numbers is None:
        return {"messages": [AIMessage("Ask me to divide two numbers, like 'what is 7 / 2?'")]}
    call = {
        "name": divide.name,
        "args": {"dividend": float(numbers[1]), "divisor": float(numbers[2])},
        "id": f"call_{uuid.uuid4().hex[:12]}",
    }
    return {"messages": [AIMessage("", tool_calls=[call])]}


builder = StateGraph(State)
builder.add_node("plan", plan)
builder.add_node("tools", ToolNode([divide]))
builder.add_edge(START, "plan")
builder.add_conditional_edges("plan", tools_condition)
builder.add_edge("tools", "plan")
graph = builder.compile()
