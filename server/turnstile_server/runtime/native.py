"""The native runtime: async generator functions `(state, ctx)` that yield state updates.

Each yielded update is validated (`normalize_update`), merged by the native reducer
(`ThreadState.apply`: `messages` appends or replaces by id, other keys overwrite), checkpointed
in the run's durability and streamed as `updates` and `values`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from turnstile_server.errors import StateTooLarge
from turnstile_server.runtime.context import RunContext
from turnstile_server.runtime.interface import PreparedGraph, RunHost, Step, Write
from turnstile_server.runtime.view import ReadOnlyMapping
from turnstile_server.state import ThreadState, normalize_update

HELD_WRITE_STEPS = 256
"""The most steps of `exit` durability written in one write."""

Graph = Callable[[Any, RunContext], AsyncIterator[dict[str, Any]]]
"""An async generator function: given the thread's state and a context, it yields step updates.

The state is a read-only `Mapping` (`Mapping[str, Any]`; its dicts and lists are read-only
too, `copy.deepcopy` gives plain data): the graph changes the thread only by yielding
updates, and the state shows each update once the run has applied it (`sync`: once it is
checkpointed). It is typed `Any` here so that graphs annotated with `dict` still type-check.
"""


def is_graph(obj: object) -> bool:
    """Tell whether obj can be called as a graph (an async generator function or object)."""
    if inspect.isasyncgenfunction(obj):
        return True
    if inspect.isclass(obj) or not callable(obj):
        return False
    return inspect.isasyncgenfunction(type(obj).__call__)


class NativeRuntime:
    """Runs async generator graphs with the native reducer and checkpoints."""

    name = "native"
    expects = "an async generator function, `async def graph(state, ctx): ... yield update`"

    def prepare(self, obj: object) -> PreparedGraph | None:
        """Return obj prepared to run if it is an async generator function (or object)."""
        return NativeGraph(obj) if is_graph(obj) else None


@dataclass(frozen=True, slots=True)
class NativeGraph:
    """An async generator graph, driven step by step."""

    graph: Any
    runtime: str = NativeRuntime.name

    async def execute(self, host: RunHost) -> None:
        """Drive the graph: each update is merged, checkpointed and streamed in turn."""
        run = host.run
        # The input was written when the run started (first attempt): steps continue after the
        # checkpoints the run has, so a resumed run neither repeats its input nor renumbers.
        step = max(0, host.start.checkpoints - 1)
        # The run's own state, never the cache's: the cache may evict or refold the thread
        # meanwhile, and readers must see committed steps only. Copied once per run (pointers:
        # 0.1-0.7 ms at 10,000 messages); each step applies its update to it.
        state = await host.state()
        limit = host.max_state_bytes
        if limit is not None and state.size > limit:
            # Its input landed as it started (at most a request's size): the graph does not
            # run on a thread past the limit, so no run grows it further.
            raise StateTooLarge(
                state.size,
                limit,
                run.thread_id,
                what=f"the thread's state, with the run's input, takes {state.size} bytes",
            )
        if host.start.input is not None:
            _emit_step(host, host.start.input.update, state)
        # The graph reads it through a view that refuses writes (nested dicts included): a
        # deep copy would cost O(thread) per run (20 ms at 10,000 messages).
        steps = self.graph(ReadOnlyMapping(state.values), host.context)
        # `prepare` admits only async generator functions, so what a graph returns is closable.
        assert isinstance(steps, AsyncGenerator)
        if run.durability != "sync":
            await _steps_ahead(host, step, state, steps)
            return
        async with aclosing(steps) as updates:
            async for raw in updates:
                update = normalize_update(raw)
                # Before it is written: past the limit, StateTooLarge, and nothing of it lands.
                state.apply(update, limit=host.max_state_bytes)
                step += 1
                # Lands even if the run is cancelled meanwhile (see `RunHost.landed`).
                await host.landed(host.write([(step, "step", update)]))
                _emit_step(host, update, state)


async def _steps_ahead(
    host: RunHost, step: int, state: ThreadState, steps: AsyncGenerator[Any, None]
) -> None:
    """Drives the graph ahead of its checkpoints: `async` writes a step's checkpoint while the
    next step executes (and the next one only once it is committed, so the run's checkpoints
    never have a gap); `exit` writes them all in one write when the run ends, however it ends.
    Either way they are committed before the run's task has unwound."""
    held: list[Step] = []
    writing: Write | None = None
    try:
        async with aclosing(steps) as updates:
            async for raw in updates:
                update = normalize_update(raw)
                state.apply(update, limit=host.max_state_bytes)  # before it is written
                step += 1
                if host.run.durability == "async":
                    if writing is not None:
                        previous, writing = writing, None  # awaited once, here
                        await host.landed(previous)
                    writing = host.write([(step, "step", update)])
                else:
                    held.append((step, "step", update))
                _emit_step(host, update, state)
    finally:
        if writing is not None:
            await host.landed(writing)
        if held:  # `exit`: the completed steps, kept also when the run is interrupted
            await _land_held(host, held)


async def _land_held(host: RunHost, held: list[Step]) -> None:
    """Writes `exit`'s held steps in writes of at most `HELD_WRITE_STEPS`, one after the
    other, every one of them even if the run is cancelled meanwhile (then re-raised): one
    write of 50,000 steps would hold the store's writer, and every admission behind it, for
    as long as it takes."""
    cancelled = False
    for first in range(0, len(held), HELD_WRITE_STEPS):
        try:
            await host.landed(host.write(held[first : first + HELD_WRITE_STEPS]))
        except asyncio.CancelledError:
            cancelled = True  # landed all the same; the rest follows
    if cancelled:
        raise asyncio.CancelledError


def _emit_step(host: RunHost, update: dict[str, Any], state: ThreadState) -> None:
    if host.wants("updates"):
        host.emit("updates", update, checked=True)
    if host.wants("values"):
        host.emit("values", state.snapshot(), checked=True)
