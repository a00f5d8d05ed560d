"""Runs' endings: who waits for which run to end, and the last snapshot of rolled-back runs."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from turnstile_server.errors import RunNotFound
from turnstile_server.store import RunRecord

TOMBSTONES = 4096


class Endings:
    """Futures resolved when a run ends, and a bounded memory of rolled-back runs (deleted from
    the store, but still answered to `JoinRun`/`WaitRun` as they were when deleted)."""

    def __init__(self, tombstones: int = TOMBSTONES) -> None:
        self._waiters: dict[str, list[asyncio.Future[RunRecord]]] = {}
        self._nudges: dict[asyncio.Future[RunRecord], asyncio.Event] = {}
        self._tombstones: OrderedDict[str, RunRecord] = OrderedDict()
        self._size = tombstones

    @contextmanager
    def watching(self, run_id: str) -> Iterator[asyncio.Future[RunRecord]]:
        """A future resolved with the run once it has ended here, for the `with` block (and
        its `nudged` event, set when another replica says the run ended there)."""
        future: asyncio.Future[RunRecord] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(run_id, [])
        waiters.append(future)
        self._nudges[future] = asyncio.Event()
        try:
            yield future
        finally:
            waiters.remove(future)
            del self._nudges[future]
            if not waiters:
                self._waiters.pop(run_id, None)

    def nudged(self, future: asyncio.Future[RunRecord]) -> asyncio.Event:
        """Set when the run `watching` gave `future` for may have ended on another replica
        (`nudge`); the waiter clears it before it reads the run."""
        return self._nudges[future]

    def nudge(self, run_id: str) -> None:
        """Another replica ended the run (or it is gone): its waiters here read it now."""
        for future in self._waiters.get(run_id, []):
            self._nudges[future].set()

    def tombstone(self, thread_id: str, run_id: str) -> RunRecord | None:
        """The run of the thread as it was when rolled back, if remembered."""
        run = self._tombstones.get(run_id)
        return run if run is not None and run.thread_id == thread_id else None

    def ended(self, run: RunRecord, *, rolled_back: bool) -> None:
        """Resolves the run's waiters; remembers it if it was rolled back."""
        if rolled_back:
            self._tombstones[run.run_id] = run
            while len(self._tombstones) > self._size:
                self._tombstones.popitem(last=False)
        for future in self._waiters.get(run.run_id, []):
            if not future.done():
                future.set_result(run)

    def gone(self, run_id: str) -> None:
        """Fails the run's waiters with RunNotFound (its thread was deleted)."""
        for future in self._waiters.get(run_id, []):
            if not future.done():
                future.set_exception(RunNotFound(run_id))
