"""Graphs and helpers the tests share: controllable, observable stand-ins for real agents."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from turnstile import TurnstileClient, get_client
from turnstile_server.app import App
from turnstile_server.config import ServerConfig
from turnstile_server.graph import GraphRegistry, RunContext

T = TypeVar("T")


class LoopEvent:
    """An event like `asyncio.Event` that any thread may set and any event loop may wait on:
    graphs execute on the server's graph loop, the tests that open their gates on their own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with self._lock:
            self._set = True
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                loop.call_soon_threadsafe(_wake, waiter)

    def clear(self) -> None:
        with self._lock:
            self._set = False

    async def wait(self) -> bool:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._set:
                return True
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, waiter))
        try:
            await waiter
        finally:
            with self._lock:
                if (loop, waiter) in self._waiters:
                    self._waiters.remove((loop, waiter))
        return True


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Gates:
    """Named events a `gated` graph waits on, so a test decides when a step ends."""

    def __init__(self) -> None:
        self._events: dict[str, LoopEvent] = {}
        self.entered: dict[str, LoopEvent] = {}

    def event(self, name: str) -> LoopEvent:
        return self._events.setdefault(name, LoopEvent())

    def arrived(self, name: str) -> LoopEvent:
        return self.entered.setdefault(name, LoopEvent())

    def open(self, name: str) -> None:
        self.event(name).set()


class StepLog:
    """Records entry and exit of every step, per thread, to detect overlapping runs."""

    def __init__(self) -> None:
        self.inside: dict[str, str] = {}
        self.overlaps: list[tuple[str, str, str]] = []
        self.steps = 0

    def enter(self, thread_id: str, run_id: str) -> None:
        other = self.inside.get(thread_id)
        if other is not None and other != run_id:
            self.overlaps.append((thread_id, other, run_id))
        self.inside[thread_id] = run_id
        self.steps += 1

    def exit(self, thread_id: str, run_id: str) -> None:
        if self.inside.get(thread_id) == run_id:
            del self.inside[thread_id]


GATES = Gates()
STEPS = StepLog()


async def gated(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """One step per name in input `gates`: waits for the gate, then appends an ai message."""
    for name in ctx.input.get("gates", []):
        GATES.arrived(name).set()
        if name == "raise-timeout":
            raise TimeoutError("the graph's own call timed out")
        await GATES.event(name).wait()
        yield {"messages": [{"type": "ai", "content": f"passed {name}"}], "last_gate": name}


async def recording(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """`steps` steps (input), each entering and leaving the step log around a few awaits."""
    for step in range(int(ctx.input.get("steps", 3))):
        pause = float(ctx.input.get("pause", 0.001))
        unwind = float(ctx.input.get("unwind", 0.02))
        STEPS.enter(ctx.thread_id, ctx.run_id)
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            await asyncio.sleep(pause)
        except asyncio.CancelledError:
            # Unwinding takes time too (closing a connection, say): a superseding run must
            # not start before it is over.
            await asyncio.sleep(unwind)
            raise
        finally:
            STEPS.exit(ctx.thread_id, ctx.run_id)
        yield {"messages": [{"type": "ai", "content": f"{ctx.run_id} step {step}"}]}


async def failing(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Yields one step, then raises."""
    yield {"messages": [{"type": "ai", "content": "about to fail"}]}
    raise RuntimeError("the tool exploded")


def registry() -> GraphRegistry:
    """The built-in graphs plus the test graphs."""
    graphs = GraphRegistry.with_builtins()
    graphs.register("gated", gated)
    graphs.register("recording", recording)
    graphs.register("failing", failing)
    return graphs


async def eventually(
    check: Callable[[], Awaitable[T]], *, within: float = 10.0, interval: float = 0.01
) -> T:
    """Retries `check` until it stops raising AssertionError, or fails after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


async def burst(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Emits input `chunks` message chunks of one message and `custom` events at once, then
    yields the whole message: a fast producer for retention and lag tests."""
    count = int(ctx.input.get("chunks", 10))
    customs = int(ctx.input.get("customs", 0))
    message_id = f"burst-{ctx.run_id}"
    for index in range(customs):
        ctx.emit_custom({"custom": index})
    for index in range(count):
        ctx.emit_message_chunk({"id": message_id, "type": "ai", "content": f"t{index} "})
    content = "".join(f"t{index} " for index in range(count))
    yield {"messages": [{"id": message_id, "type": "ai", "content": content}]}


async def chatty(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Per name in input `gates`: a `custom` event and `chunks` message chunks, then waits for
    the gate and yields the message; every stream mode has events before each gate."""
    count = int(ctx.input.get("chunks", 3))
    for name in ctx.input.get("gates", []):
        message_id = f"{ctx.run_id}-{name}"
        ctx.emit_custom({"gate": name})
        for index in range(count):
            ctx.emit_message_chunk({"id": message_id, "type": "ai", "content": f"{name}.{index} "})
        GATES.arrived(name).set()
        await GATES.event(name).wait()
        content = "".join(f"{name}.{index} " for index in range(count))
        yield {"messages": [{"id": message_id, "type": "ai", "content": content}], "gate": name}


def streaming_registry() -> GraphRegistry:
    """`registry()` plus the streaming test graphs `burst` and `chatty`."""
    graphs = registry()
    graphs.register("burst", burst)
    graphs.register("chatty", chatty)
    return graphs


def gates_to_pass(state: dict[str, Any], ctx: RunContext) -> list[str]:
    """The input's `gates` not yet passed since the last human message: a resumed run goes
    on from where it was cut off, as a real resumable graph would."""
    messages = state.get("messages", [])
    humans = [i for i, m in enumerate(messages) if m.get("type") == "human"]
    since = messages[humans[-1] + 1 :] if humans else []
    passed = {m.get("content") for m in since if m.get("type") == "ai"}
    return [name for name in ctx.input.get("gates", []) if f"passed {name}" not in passed]


async def file_gated(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Like `gated`, but a gate is a file: per name in input `gates`, waits until the file
    `<configurable.gate_dir>/<name>` exists, then yields an ai message. Works across processes
    (a server started with `--graph file_gated=tests.support:file_gated`). Resumed on a
    partial state, it skips the gates passed since the last human message."""
    gate_dir = Path(str(ctx.configurable("gate_dir", ".")))
    for name in gates_to_pass(state, ctx):
        (gate_dir / f"{name}.arrived").touch()
        while not (gate_dir / name).exists():  # noqa: ASYNC110 - a file, across processes
            await asyncio.sleep(0.02)
        yield {"messages": [{"type": "ai", "content": f"passed {name}"}]}


@asynccontextmanager
async def client_of(
    config: ServerConfig | str, graphs: GraphRegistry | None = None
) -> AsyncIterator[tuple[App, TurnstileClient]]:
    """A server for the block (stopped at once, runs left RUNNING), and a client of it.

    `config` may be just a database path; `graphs` defaults to `registry()`.
    """
    if isinstance(config, str):
        config = ServerConfig(host="127.0.0.1", port=0, database=config)
    app = await App.start(config, graphs if graphs is not None else registry())
    client = get_client(url=app.address)
    try:
        yield app, client
    finally:
        await client.close()
        await app.stop(grace=0)
