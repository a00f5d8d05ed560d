"""The `agent` graph: an offline stand-in for the seeds' weather agent.

It decides each step from the last message alone, so a run resumed on a partial state (an
interrupted run's checkpoints plus a new input) carries on where the conversation stopped.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from turnstile_server.errors import InvalidInput
from turnstile_server.state import new_message_id

if TYPE_CHECKING:
    from turnstile_server.runtime.context import RunContext

TOOL_NAME = "tavily_search_results_json"
DEFAULT_STEP_SECONDS = 0.8

_PLACE = re.compile(r"\bin\s+(.+?)[\s?.!]*$", re.IGNORECASE | re.DOTALL)
_QUERY_PREFIX = "weather in "
_TOKEN = re.compile(r"\s*\S+\s*")
_CONDITIONS = ("sunny", "partly cloudy", "overcast", "foggy", "drizzly", "clear and breezy")


async def agent(state: Mapping[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Answer the last human message: tool call, tool result, then a streamed answer."""
    sleep = _seconds(ctx.input.get("sleep"), "input.sleep")
    step = _seconds(ctx.configurable("step_seconds"), "config.configurable.step_seconds")
    delay = sleep if sleep is not None else (step if step is not None else DEFAULT_STEP_SECONDS)

    messages = state.get("messages") or []
    last: Mapping[str, Any] | None = messages[-1] if messages else None
    while last is not None:
        kind = last.get("type")
        if kind == "human":
            await asyncio.sleep(delay)
            call = _tool_call_message(_text(last.get("content")))
            yield {"messages": [call]}
            last = call
        elif kind == "ai" and last.get("tool_calls"):
            await asyncio.sleep(delay)
            results = [_tool_result_message(call) for call in last["tool_calls"]]
            yield {"messages": results}
            last = results[-1]
        elif kind == "tool":
            answer = _answer(_text(last.get("content")))
            # With an explicit `sleep` the step waits first, as in the seeds; otherwise the
            # model's latency is spread over the tokens, as a streaming model would be.
            tokens = _TOKEN.findall(answer) or [answer]
            per_token = 0.0 if sleep is not None else delay / len(tokens)
            if sleep is not None:
                await asyncio.sleep(sleep)
            message_id = new_message_id()
            for token in tokens:
                await asyncio.sleep(per_token)
                ctx.emit_message_chunk({"id": message_id, "type": "ai", "content": token})
            final = {"type": "ai", "content": answer, "id": message_id}
            yield {"messages": [final]}
            last = final
        else:
            return


def _seconds(value: Any, path: str) -> float | None:
    """Validate an optional delay in seconds."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidInput(f"{path}: must be a non-negative number of seconds, got {value!r}")
    return float(value)


def _text(content: Any) -> str:
    """Return the text of a message's content (a string or a list of content blocks)."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, Sequence):  # a list, or the read-only view of one a graph reads
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping) and isinstance(block.get("text"), str):
                parts.append(block["text"])
    return " ".join(parts)


def _place(text: str) -> str:
    """Return the place a weather question asks about, e.g. 'sf' for "weather in sf?"."""
    match = _PLACE.search(text.strip())
    place = match.group(1).strip() if match else text.strip()
    return place or "your area"


def _tool_call_message(question: str) -> dict[str, Any]:
    """Return the AI message calling the search tool for the question's place."""
    call = {
        "name": TOOL_NAME,
        "args": {"query": f"{_QUERY_PREFIX}{_place(question)}"},
        "id": f"call_{uuid.uuid4().hex}",
        "type": "tool_call",
    }
    return {"type": "ai", "content": "", "id": new_message_id(), "tool_calls": [call]}


def _tool_result_message(call: Mapping[str, Any]) -> dict[str, Any]:
    """Return the tool message answering one tool call with a fake search result."""
    args = call.get("args")
    query = args.get("query") if isinstance(args, Mapping) else None
    query = query if isinstance(query, str) and query else _QUERY_PREFIX + "your area"
    place = query[len(_QUERY_PREFIX) :] if query.startswith(_QUERY_PREFIX) else query
    # A stable pseudo-forecast per place, so transcripts are reproducible.
    seed = zlib.crc32(place.lower().encode())
    celsius = 8 + seed % 22
    condition = _CONDITIONS[seed % len(_CONDITIONS)]
    result = {
        "url": f"https://weather.example.com/search?q={quote(place)}",
        "content": (
            f"Current weather in {place}: {condition}, {celsius}°C "
            f"({round(celsius * 9 / 5 + 32)}°F), wind {3 + seed % 15} km/h."
        ),
    }
    return {
        "type": "tool",
        "name": str(call.get("name") or TOOL_NAME),
        "tool_call_id": str(call.get("id") or ""),
        "content": json.dumps([result], ensure_ascii=False),
        "id": new_message_id(),
    }


def _answer(tool_output: str) -> str:
    """Return the final answer summarising a tool result."""
    try:
        results = json.loads(tool_output)
        finding = results[0]["content"]
    except (ValueError, LookupError, TypeError):
        finding = tool_output
    finding = str(finding).strip() or "nothing useful"
    return f"According to the search results: {finding} Let me know if you need anything else."
