"""The offline world of the built-in `agent`: its fake search tool, what it finds, its pace.

Everything is a function of its input (a place's forecast of the place's name), so transcripts
are reproducible and a run resumed on a partial state carries on where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypedDict
from urllib.parse import quote

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.prebuilt import InjectedState

from turnstile_server.errors import InvalidInput

TOOL_NAME = "tavily_search_results_json"
DEFAULT_STEP_SECONDS = 0.8
QUERY_PREFIX = "weather in "

_PLACE = re.compile(r"\bin\s+(.+?)[\s?.!]*$", re.IGNORECASE | re.DOTALL)
_CONDITIONS = ("sunny", "partly cloudy", "overcast", "foggy", "drizzly", "clear and breezy")


def place(question: str) -> str:
    """The place a weather question asks about, e.g. 'sf' for "what's the weather in sf?"."""
    match = _PLACE.search(question.strip())
    found = match.group(1).strip() if match else question.strip()
    return found or "your area"


def search_results(query: str) -> list[dict[str, str]]:
    """What the fake search finds for a query: one result with a stable pseudo-forecast."""
    query = query or QUERY_PREFIX + "your area"
    where = query[len(QUERY_PREFIX) :] if query.startswith(QUERY_PREFIX) else query
    seed = zlib.crc32(where.lower().encode())
    celsius = 8 + seed % 22
    condition = _CONDITIONS[seed % len(_CONDITIONS)]
    return [
        {
            "url": f"https://weather.example.com/search?q={quote(where)}",
            "content": (
                f"Current weather in {where}: {condition}, {celsius}°C "
                f"({round(celsius * 9 / 5 + 32)}°F), wind {3 + seed % 15} km/h."
            ),
        }
    ]


def answer(tool_output: str) -> str:
    """The final answer summarising a search's output (its JSON, or any text)."""
    try:
        finding = json.loads(tool_output)[0]["content"]
    except (ValueError, LookupError, TypeError):
        finding = tool_output
    finding = str(finding).strip() or "nothing useful"
    return f"According to the search results: {finding} Let me know if you need anything else."


class Pace(TypedDict):
    """An input's `sleep`, kept for the later steps of the question it came with."""

    seconds: float
    question: str | None
    """The id of the human message it paces: a new question goes at its own pace."""


def question(messages: Sequence[Any]) -> str | None:
    """The id of the last human message (a LangChain message or its dict)."""
    for message in reversed(messages):
        kind = message.get("type") if isinstance(message, Mapping) else message.type
        if kind == "human":
            found = message.get("id") if isinstance(message, Mapping) else message.id
            return str(found) if found is not None else None
    return None


def input_pace(state: Mapping[str, Any]) -> Pace | None:
    """The pace the run's own input asks for (`sleep`, seen only by the run's first step);
    InvalidInput for a bad number."""
    seconds = _seconds(state.get("sleep"), "input.sleep")
    if seconds is None:
        return None
    return Pace(seconds=seconds, question=question(state.get("messages") or ()))


def paced(state: Mapping[str, Any]) -> float | None:
    """The `sleep` every step of this state's question waits: its input's, if it had one."""
    fresh = input_pace(state)
    if fresh is not None:
        return fresh["seconds"]
    kept = state.get("pace")
    if isinstance(kept, Mapping) and kept.get("question") == question(state.get("messages") or ()):
        return float(kept["seconds"])
    return None


def step_delay(sleep: float | None, config: RunnableConfig | None) -> tuple[float, bool]:
    """How long a step takes, and whether it was asked for explicitly (an input's `sleep`,
    which a step waits before it starts) rather than the pace (`step_seconds`, default 0.8,
    which the model spreads over the tokens it streams). InvalidInput for a bad number."""
    if sleep is not None:
        return sleep, True
    configurable = (config or {}).get("configurable")
    step = configurable.get("step_seconds") if isinstance(configurable, Mapping) else None
    seconds = _seconds(step, "config.configurable.step_seconds")
    return (DEFAULT_STEP_SECONDS if seconds is None else seconds), False


@tool(TOOL_NAME)
async def tavily_search_results_json(
    query: str, config: RunnableConfig, state: Annotated[dict[str, Any], InjectedState]
) -> list[dict[str, str]]:
    """A search engine optimized for comprehensive, accurate, and trusted results. Useful for
    when you need to answer questions about current events. Input should be a search query."""
    seconds, _ = step_delay(paced(state), config)
    await asyncio.sleep(seconds)
    return search_results(query)


def _seconds(value: Any, path: str) -> float | None:
    """An optional delay in seconds, checked."""
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
