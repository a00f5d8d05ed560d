"""Graphs the benchmarks register: one that waits, one that streams chunks, one that grows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from turnstile_server.state import new_message_id

if TYPE_CHECKING:
    from turnstile_server.graph import RunContext

MODULE = __name__
GRAPHS = {
    "bench_sleep": f"{MODULE}:sleep",
    "bench_chunks": f"{MODULE}:chunks",
    "bench_grow": f"{MODULE}:grow",
    "bench_spin": f"{MODULE}:spin",
    "bench_yields": f"{MODULE}:yields",
}
"""Graph id -> `module:attribute`, for `turnstile serve --graph`."""


def _number(ctx: RunContext, key: str, default: int) -> int:
    """Reads a count from the run's input (JSON numbers arrive as floats)."""
    value = ctx.input.get(key, default)
    return int(value) if isinstance(value, int | float) else default


async def sleep(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Waits in its one step for `input.seconds` (an hour by default) until cancelled."""
    seconds = ctx.input.get("seconds", 3600.0)
    await asyncio.sleep(float(seconds) if isinstance(seconds, int | float) else 3600.0)
    yield {"slept": True}


async def chunks(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Streams `input.chunks` message chunks, each stamped with `time.time()` in `sent`.

    It yields to the event loop after every chunk, as a graph reading a model's token stream
    does, then writes the whole message as its one step.
    """
    count = _number(ctx, "chunks", 1000)
    message_id = new_message_id()
    for index in range(count):
        ctx.emit_message_chunk(
            {"id": message_id, "type": "ai", "content": f"t{index} ", "sent": time.time()}
        )
        await asyncio.sleep(0)
    yield {"messages": [{"id": message_id, "type": "ai", "content": f"{count} chunks"}]}


async def grow(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Appends `input.grow` messages, `input.batch` (500) per step, alternating human and ai."""
    remaining = _number(ctx, "grow", 0)
    batch = max(1, _number(ctx, "batch", 500))
    index = len(state.get("messages") or [])
    while remaining > 0:
        size = min(batch, remaining)
        messages = [
            {
                "id": new_message_id(),
                "type": "human" if (index + offset) % 2 == 0 else "ai",
                "content": f"message {index + offset} of a long benchmark conversation",
            }
            for offset in range(size)
        ]
        index += size
        remaining -= size
        yield {"messages": messages}


async def spin(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Computes for `input.seconds` (5) without awaiting, then yields once: a CPU-bound step."""
    seconds = ctx.input.get("seconds", 5.0)
    ends = time.monotonic() + (float(seconds) if isinstance(seconds, int | float) else 5.0)
    while time.monotonic() < ends:
        sum(range(1000))
    yield {"spun": True}


async def yields(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Yields `input.steps` (50,000) small updates without ever awaiting."""
    for index in range(_number(ctx, "steps", 50_000)):
        yield {"step": index}
