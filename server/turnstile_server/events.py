"""Live run event streams: every event of a run gets the next `seq`; subscribers follow them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

RETAIN_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One event of a run's stream."""

    seq: int
    run_id: str
    event: str
    data: Any


class RunStream:
    """The events of one run, kept in memory while the run lives and for a while after."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.events: list[RunEvent] = []
        self.ended = False
        self._changed = asyncio.Event()

    def emit(self, event: str, data: Any) -> RunEvent:
        """Appends an event; after `end` nothing more is recorded."""
        if self.ended:
            raise RuntimeError(f"stream of run {self.run_id} has ended")
        item = RunEvent(len(self.events) + 1, self.run_id, event, data)
        self.events.append(item)
        if event == "end":
            self.ended = True
        self._changed.set()
        return item

    async def follow(self, after_seq: int = 0) -> AsyncIterator[list[RunEvent]]:
        """Yields batches of the events after `after_seq`, then new ones, until `end`."""
        position = max(0, after_seq)
        while True:
            if len(self.events) > position:
                batch = self.events[position:]
                position = len(self.events)
                yield batch
                continue
            if self.ended:
                return
            self._changed.clear()
            await self._changed.wait()


class EventHub:
    """All run streams of the server, by run id, dropped `retain_seconds` after they end."""

    def __init__(self, retain_seconds: float = RETAIN_SECONDS) -> None:
        self._streams: dict[str, RunStream] = {}
        self._retain_seconds = retain_seconds
        self._expiry: dict[str, asyncio.TimerHandle] = {}

    def open(self, run_id: str) -> RunStream:
        """Returns the run's stream, creating it if needed."""
        stream = self._streams.get(run_id)
        if stream is None:
            stream = self._streams[run_id] = RunStream(run_id)
        return stream

    def get(self, run_id: str) -> RunStream | None:
        """Returns the run's stream if it is retained."""
        return self._streams.get(run_id)

    def end(self, run_id: str, data: dict[str, Any], *, error: Any = None) -> None:
        """Emits the run's `error` (if any) and `end` events, once, then schedules removal."""
        stream = self.open(run_id)
        if stream.ended:
            return
        if error is not None:
            stream.emit("error", error)
        stream.emit("end", data)
        loop = asyncio.get_running_loop()
        self._expiry[run_id] = loop.call_later(self._retain_seconds, self._drop, run_id)

    def _drop(self, run_id: str) -> None:
        self._streams.pop(run_id, None)
        self._expiry.pop(run_id, None)

    def close(self) -> None:
        """Cancels the removal timers (on shutdown)."""
        for handle in self._expiry.values():
            handle.cancel()
        self._expiry.clear()
