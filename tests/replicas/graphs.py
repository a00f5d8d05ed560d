"""Graphs for the replica tests, driven by files so that they work across processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.support import file_gated
from turnstile_server.runtime.context import RunContext


async def slow_unwind(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """`file_gated`, whose cancellation takes until the file `<gate_dir>/unwind` exists (as
    a graph cleaning up would): it touches `unwinding` first, then waits, then unwinds."""
    gate_dir = Path(str(ctx.configurable("gate_dir", ".")))
    try:
        async for update in file_gated(state, ctx):
            yield update
    except asyncio.CancelledError:
        (gate_dir / "unwinding").touch()
        while not (gate_dir / "unwind").exists():
            try:
                await asyncio.sleep(0.02)
            except asyncio.CancelledError:
                continue  # cancelled again meanwhile: still unwinding
        raise
