"""Dangling tool calls closed when a run is interrupted, so the next model call gets a history
the providers accept (Anthropic and OpenAI refuse an AI tool call without its result:
aegra#191).

An interrupted run may stop between a model step that asked for tools and the step that runs
them: its last checkpoint then has an AI message whose `tool_calls` have no `ToolMessage`. By
default (`RunRecord.close_tool_calls`, the server's `--close-tool-calls`), the interrupted run
writes one more checkpoint of its own, through the graph's reducers (`aupdate_state`, as the
node that wrote last, so the graph's edges see the conversation closed): a `ToolMessage` per
such call saying it was cancelled. A rolled-back run's rows all go, that one included.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

CANCELLED = "Tool call cancelled: the run was interrupted before it returned a result."


def dangling_calls(messages: Any) -> list[dict[str, Any]]:
    """The tool calls of AI messages that no later tool message answers, in order."""
    if not isinstance(messages, list):
        return []
    answered = {getattr(m, "tool_call_id", None) for m in messages if _kind(m) == "tool"}
    return [
        call
        for m in messages
        if _kind(m) == "ai"
        for call in (getattr(m, "tool_calls", None) or [])
        if call.get("id") and call["id"] not in answered
    ]


async def close_dangling(bound: Any, config: dict[str, Any]) -> int:
    """Writes a cancelled `ToolMessage` for each dangling call of the thread's latest state, as
    the run's (`config` is the run's); returns how many. A graph without a `messages` list of
    LangChain messages is left alone."""
    from langchain_core.messages import ToolMessage

    configurable = {k: v for k, v in config["configurable"].items() if k != "checkpoint_id"}
    latest = {**config, "configurable": configurable}
    state = await bound.aget_state(latest)
    values = state.values if isinstance(state.values, dict) else {}
    calls = dangling_calls(values.get("messages"))
    if not calls:
        return 0
    closing = [
        ToolMessage(
            content=CANCELLED, tool_call_id=call["id"], name=call.get("name"), status="error"
        )
        for call in calls
    ]
    at = state.config["configurable"]
    await bound.aupdate_state(
        {**latest, "configurable": {**configurable, "checkpoint_id": at["checkpoint_id"]}},
        {"messages": closing},
    )
    return len(closing)


def _kind(message: Any) -> str | None:
    kind = getattr(message, "type", None)
    return kind if isinstance(kind, str) else None
