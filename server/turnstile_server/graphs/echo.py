"""The `echo` graph: two instant steps, for benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from turnstile_server.state import new_message_id

if TYPE_CHECKING:
    from turnstile_server.runtime.context import RunContext


async def echo(state: Mapping[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Count the step, then answer with the last human message's content."""
    steps = state.get("steps")
    count = steps if isinstance(steps, int) and not isinstance(steps, bool) else 0
    yield {"steps": count + 1}
    content: Any = ""
    for message in reversed(state.get("messages") or []):
        if message.get("type") == "human":
            content = message.get("content", "")
            break
    yield {"messages": [{"type": "ai", "content": content, "id": new_message_id()}]}
