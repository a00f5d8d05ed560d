"""Graphs for the replica tests, driven by files so that they work across processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.support import file_gated, gates_to_pass
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


async def frozen_gate(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """`file_gated`, except that its first attempt freezes its whole process at the gate
    named by input `freeze`, as a long GC pause would: once `<gate>.freeze` exists it touches
    `<gate>.frozen` and blocks the event loop until `<gate>` exists. So when the process is
    also SIGSTOPped there, the step completes the moment it wakes, before its lease's
    heartbeat can notice the lease is gone, and its checkpoint write is certainly tried."""
    gate_dir = Path(str(ctx.configurable("gate_dir", ".")))
    freeze = str(ctx.input.get("freeze", ""))
    for name in gates_to_pass(state, ctx):
        (gate_dir / f"{name}.arrived").touch()
        if name == freeze and ctx.attempt == 1:
            while not (gate_dir / f"{name}.freeze").exists():  # noqa: ASYNC110 - a file
                await asyncio.sleep(0.02)
            (gate_dir / f"{name}.frozen").touch()
            while not (gate_dir / name).exists():
                time.sleep(0.01)  # noqa: ASYNC251 - blocking the loop is the point
        while not (gate_dir / name).exists():  # noqa: ASYNC110 - a file, across processes
            await asyncio.sleep(0.02)
        yield {"messages": [{"type": "ai", "content": f"passed {name}"}]}


async def ticking(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Input `ticks` steps of `tick_seconds` each, every one an ai message `tick i`; resumed
    on a partial state, it goes on after the ticks since the last human message."""
    messages = state.get("messages", [])
    humans = [i for i, m in enumerate(messages) if m.get("type") == "human"]
    done = len(messages) - humans[-1] - 1 if humans else 0
    for tick in range(done, int(ctx.input.get("ticks", 1))):
        await asyncio.sleep(float(ctx.input.get("tick_seconds", 0.1)))
        yield {"messages": [{"type": "ai", "content": f"tick {tick}"}]}
