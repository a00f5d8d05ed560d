"""Executes one run, whatever its runtime: its metadata event, its time limit, its outcome.

The graph's runtime (`turnstile_server.runtime`) drives, reduces, checkpoints and streams the
run; the runner lends it a `RunHost` (the run, its context, events and the store's checkpoint
writes) and turns how `execute` ends into the run's outcome. With graph loops
(`runtime/graph_loops.py`), the runtime executes on one of them and reaches the host over the
bridge; the host itself stays on the server's loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from turnstile_server.errors import GraphFault, RunNotFound
from turnstile_server.events import EventHub
from turnstile_server.graph import GraphRegistry
from turnstile_server.run_checkpoints import RunCheckpoints
from turnstile_server.runtime.context import RunContext
from turnstile_server.runtime.graph_loops import GraphLoops
from turnstile_server.runtime.interface import Step, Write
from turnstile_server.state import ThreadState, check_event_depth
from turnstile_server.store import CheckpointRecord, RunError, RunRecord, Start, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Waiting:
    """What a run that stopped waiting for input waits on: the pending interrupts
    (`{id, value, task_id}`; none for a stop before or after a node) and the next nodes."""

    interrupts: list[dict[str, Any]]
    next: list[str]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended by itself (cancellation is not an outcome: it propagates); `waiting`
    when it succeeded by stopping for a human's input."""

    status: str
    error: RunError | None = None
    waiting: Waiting | None = None


class Runner:
    """Runs graphs against the store, emitting events into the hub."""

    def __init__(
        self,
        store: Store,
        graphs: GraphRegistry,
        hub: EventHub,
        *,
        timeout_seconds: float | None = None,
        close_tool_calls: bool = True,
        loops: GraphLoops | None = None,
        max_state_bytes: int | None = None,
    ) -> None:
        self._store = store
        self._graphs = graphs
        self._hub = hub
        self._timeout_seconds = timeout_seconds
        self._close_tool_calls = close_tool_calls
        self._loops = loops
        self._max_state_bytes = max_state_bytes

    async def execute(self, run: RunRecord, start: Start) -> Outcome:
        """Executes `run`, just started as `start` says, until its graph ends, fails, times out
        or is cancelled; the time limit is the run's own, else the server's, per attempt."""
        metadata: dict[str, Any] = {
            "run_id": run.run_id,
            "thread_id": run.thread_id,
            "attempt": run.attempt,
        }
        if run.discarded_interrupts:  # the thread waited for input; this run's input starts over
            metadata["discarded_interrupts"] = list(run.discarded_interrupts)
        self._hub.emit(run, "metadata", metadata, checked=True)
        limit = run.timeout_seconds or self._timeout_seconds
        deadline = asyncio.timeout(limit or None)
        try:
            async with deadline:
                graph = self._graphs.prepared(run.graph_id)
                if run.close_tool_calls is None:  # the run does not say: the server's default
                    run = replace(run, close_tool_calls=self._close_tool_calls)
                host = _Host(self._store, self._hub, run, start, self._max_state_bytes)
                try:
                    if self._loops is None:  # on the server's loop
                        await graph.execute(host)
                    else:  # on a graph loop, its calls back to the host over the bridge
                        await self._loops.execute(
                            graph.execute, host, state_first=graph.runtime == "native"
                        )
                finally:
                    # Nothing of the run is written once it has unwound (the store finishes it
                    # next, a rollback deletes its rows): its last LangGraph writes land first.
                    await host.langgraph.settle()
                return Outcome("success", waiting=host.waiting)
        except asyncio.CancelledError:
            raise
        except TimeoutError as exc:
            if not deadline.expired():
                return _failed(run, exc)
            log.info("run %s timed out after %s s", run.run_id, limit)
            return Outcome(
                "timeout", RunError("RunTimeout", f"the run exceeded its time limit of {limit} s")
            )
        except Exception as exc:
            return _failed(run, exc)

    async def keep_input(self, run: RunRecord, start: Start) -> None:
        """For a run interrupted before it executed (its cancellation came as it started): lets
        its runtime keep its input in the thread, when the runtime has that to do (`keep_input`
        of a LangGraph graph; a native run's store wrote it as the run started). A failure is
        logged: the run ends INTERRUPTED all the same."""
        graph = self._graphs.prepared(run.graph_id)
        keep = getattr(graph, "keep_input", None)
        if keep is None:
            return
        host = _Host(self._store, self._hub, run, start)
        try:
            if self._loops is None:
                await keep(host)
            else:  # where its graph executes (a LangGraph factory is called there)
                await self._loops.execute(keep, host)
        except Exception:
            log.warning("run %s: its input could not be kept", run.run_id, exc_info=True)
        finally:
            await host.langgraph.settle()


class _Host:
    """The `RunHost` of one run: its events go to the hub, its checkpoints to the store."""

    __slots__ = (
        "_hub",
        "_modes",
        "_store",
        "context",
        "langgraph",
        "max_state_bytes",
        "run",
        "start",
        "waiting",
    )

    def __init__(
        self,
        store: Store,
        hub: EventHub,
        run: RunRecord,
        start: Start,
        max_state_bytes: int | None = None,
    ) -> None:
        self._store = store
        self._hub = hub
        self._modes = frozenset(run.stream_mode)
        self.run = run
        self.start = start
        self.context = RunContext(
            run_id=run.run_id,
            thread_id=run.thread_id,
            emit=self.emit,
            attempt=run.attempt,
            input=run.input,
            config=run.config,
        )
        self.langgraph = RunCheckpoints(store.langgraph, run)
        self.waiting: Waiting | None = None
        self.max_state_bytes = max_state_bytes

    def awaiting_input(self, interrupts: Sequence[Mapping[str, Any]], next: Sequence[str]) -> None:
        self.waiting = Waiting([dict(i) for i in interrupts], list(next))

    def wants(self, event: str) -> bool:
        return event in self._modes

    def emit(
        self, event: str, data: Any, *, checked: bool = False, mode: str | None = None
    ) -> None:
        if not checked:
            check_event_depth(event, data)
        if (mode or event) in self._modes:
            self._hub.emit(self.run, event, data, checked=checked)

    async def state(self) -> ThreadState:
        # The cached state itself is not handed out: a copy of its pointers, once per run.
        # Measured on the cache's own state, once: its applies keep it (see `ThreadState`).
        live = await self._store.checkpoints.live(self.run.thread_id)
        if self.max_state_bytes is not None:
            live.measure()
        return live.copy()

    def write(self, steps: Sequence[Step]) -> Write:
        return self._store.checkpoints.submit(
            self.run.thread_id, self.run.run_id, list(steps), epoch=self.run.epoch
        )

    async def landed(self, write: Write) -> list[CheckpointRecord]:
        return await self._store.checkpoints.landed(write, self.run.thread_id)

    async def cancelled_for(self) -> str | None:
        try:
            current = await self._store.runs.get(self.run.thread_id, self.run.run_id)
        except RunNotFound:  # its thread was deleted
            return None
        return current.cancel_action


def _failed(run: RunRecord, exc: Exception) -> Outcome:
    kind = exc.reason if isinstance(exc, GraphFault) else type(exc).__name__
    log.info("run %s failed: %s: %s", run.run_id, kind, exc)
    return Outcome("error", RunError(kind, str(exc)))
