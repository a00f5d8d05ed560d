"""The graph loops: event loops in threads of their own, where graphs execute, away from the
server's loop (gRPC, the store, the event hub).

A graph that computes for seconds without awaiting holds only its graph loop: the server loop
goes on answering health checks, reads, admissions and cancellations. Python runs one thread
at a time, so the server loop's thread gets the interpreter back every `switch_interval_ms`
(`sys.setswitchinterval`) while a graph computes. Runs are spread over the loops (the one with
the fewest runs), and every run of a graph executes on its run's loop from its first line to
its last: its coroutines, its generators and what they create belong to that loop only.

The boundary (`loop_bridge`, `remote_host`): the graph side receives plain values (the run's
record, its start, copies of the state) and sends its events and store calls over the bridge;
nothing of the store, the hub or gRPC is touched from a graph loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future

from turnstile_server.runtime.interface import RunHost
from turnstile_server.runtime.loop_bridge import LoopBridge
from turnstile_server.runtime.remote_host import RemoteHost

log = logging.getLogger(__name__)

STOP_SECONDS = 10.0
"""How long a graph loop's leftover tasks (a graph's own background tasks) get to unwind."""


class _GraphLoop:
    """One event loop running forever in its own (daemon) thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.runs = 0
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def stop(self) -> None:
        """Cancels what is left on the loop, lets it unwind, stops the loop, joins the thread."""
        done: Future[None] = Future()

        async def wind_down() -> None:
            leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)
            await self.loop.shutdown_asyncgens()
            await self.loop.shutdown_default_executor()  # the graphs' `to_thread` workers

        def wound_down(_: object) -> None:
            done.set_result(None)
            self.loop.stop()

        def begin() -> None:
            self.loop.create_task(wind_down()).add_done_callback(wound_down)

        self.loop.call_soon_threadsafe(begin)
        try:
            done.result(timeout=STOP_SECONDS)
        except TimeoutError:  # a graph's own task ignores its cancellation: left to the exit
            log.warning("graph loop %s did not wind down in %s s", self._thread.name, STOP_SECONDS)
            return
        self._thread.join(timeout=STOP_SECONDS)


class GraphLoops:
    """The graph loops of a server, and how a run's graph executes on one of them."""

    def __init__(self, threads: int, *, switch_interval_ms: float = 0.0) -> None:
        """Starts `threads` graph loops (at least 1); a positive `switch_interval_ms` sets the
        interpreter's switch interval (restored by `close`)."""
        self._bridge = LoopBridge(asyncio.get_running_loop())
        self._switch_interval = sys.getswitchinterval()
        if switch_interval_ms > 0:
            sys.setswitchinterval(switch_interval_ms / 1000)
        self._loops = [_GraphLoop(f"turnstile-graphs-{i}") for i in range(max(1, threads))]
        self._closed = False

    async def execute(
        self,
        work: Callable[[RunHost], Awaitable[None]],
        host: RunHost,
        *,
        state_first: bool = False,
    ) -> None:
        """Awaits `work` (a graph's `execute`, or its runtime's `keep_input`) on a graph loop
        with a `RemoteHost` of `host`, and ends as it ends; cancelled, it returns only once the
        graph side has unwound (see `run_on`). With `state_first` (a native graph, whose first
        call is `state()`), the state is read here and goes with the run's start: one round
        trip between the loops fewer per run."""
        if self._closed:
            raise RuntimeError("the graph loops are closed")
        chosen = min(self._loops, key=lambda loop: loop.runs)
        chosen.runs += 1
        try:
            state = await host.state() if state_first else None
        except BaseException:
            chosen.runs -= 1
            raise
        remote = RemoteHost(host, self._bridge, state)
        try:
            await self._bridge.run_on(chosen.loop, lambda: work(remote))
        finally:
            chosen.runs -= 1

    async def close(self) -> None:
        """Stops the loops (once every run on them has ended: the scheduler stops first) and
        restores the switch interval."""
        if self._closed:
            return
        self._closed = True
        for loop in self._loops:
            await asyncio.to_thread(loop.stop)
        sys.setswitchinterval(self._switch_interval)
