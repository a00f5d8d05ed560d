"""An approval graph: it proposes an action, asks a human with `interrupt()`, then acts or not.

The human-in-the-loop example (`examples/approval/langgraph.json` serves it) and the graph of
`turnstile demo`'s last section. Offline and deterministic: the "proposal" is read from the
human's message (`pay bob 100`), the action is only described.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.messages import AIMessage, AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt


class Approval(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    action: dict[str, Any]


def propose(state: Approval) -> dict[str, Any]:
    """Reads the action from the last message (`pay <whom> <amount>`) and says what it does."""
    text = str(state["messages"][-1].content) if state.get("messages") else ""
    found = re.search(r"pay\s+(\w+)\s+\$?(\d+(?:\.\d+)?)", text, re.IGNORECASE)
    to, amount = (found.group(1), float(found.group(2))) if found else ("nobody", 0.0)
    action = {"tool": "send_payment", "to": to, "amount": amount}
    return {
        "action": action,
        "messages": [AIMessage(f"I am about to send ${amount:g} to {to}. Shall I?")],
    }


def review(state: Approval) -> Command[Literal["execute", "cancel"]]:
    """Asks the human; `interrupt()` returns the resume value: true/"yes" or {"approved": ...}."""
    answer = interrupt({"question": "Approve this payment?", "action": state.get("action", {})})
    if isinstance(answer, dict):
        answer = answer.get("approved")
    approved = answer is True or (isinstance(answer, str) and answer.lower() in {"yes", "y"})
    return Command(goto="execute" if approved else "cancel")


def execute(state: Approval) -> dict[str, Any]:
    action = state.get("action", {})
    return {
        "messages": [AIMessage(f"Done: sent ${action.get('amount', 0):g} to {action.get('to')}.")]
    }


def cancel(state: Approval) -> dict[str, Any]:
    return {"messages": [AIMessage("Cancelled: nothing was sent.")]}


def build() -> StateGraph[Any]:
    """propose -> review (interrupt) -> execute | cancel."""
    builder = StateGraph(Approval)
    builder.add_node("propose", propose)
    builder.add_node("review", review)
    builder.add_node("execute", execute)
    builder.add_node("cancel", cancel)
    builder.add_edge(START, "propose")
    builder.add_edge("propose", "review")
    builder.add_edge("execute", END)
    builder.add_edge("cancel", END)
    return builder


graph = build().compile()
