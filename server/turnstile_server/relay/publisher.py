"""One run's publisher: its events, from the run's local log to its Redis streams, in order.

The run's `EventLog` on the replica executing it is the buffer: the publisher follows it as a
subscriber would, so the run never waits for Redis. A batch that fails (Redis down, slow) is
retried while the log still holds it; events trimmed from the log before they were published
leave a `gap` entry, which makes a subscriber on another replica answer STREAM_EXPIRED instead
of skipping them. The run's last event (`end`) is flagged so that subscribers stop there.

Nothing is published once this replica's lease is past its local deadline (`holds`), and the
Lua fence refuses what an attempt publishes once a later epoch has published (`fence.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from turnstile_server.event_log import EventLog
from turnstile_server.relay.fence import Entry, Published
from turnstile_server.relay.keys import LOW_BITS
from turnstile_server.store import RunRecord

if TYPE_CHECKING:
    from turnstile_server.relay.relay import Relay

log = logging.getLogger(__name__)

RETRY_FIRST = 0.05
RETRY_MAX = 1.0


class RunPublisher:
    """Publishes the events of one run's log after `position`, at `epoch`."""

    def __init__(self, relay: Relay, run: RunRecord, events: EventLog, epoch: int) -> None:
        self.relay = relay
        self.run = run
        self.events = events
        self.epoch = epoch
        self.position = events.first_seq - 1
        self.starts: list[Entry] = []  # thread-only entries to publish before the next events
        self.ended: bytes = b""  # the thread's framing of the run's end, once it ended here
        self.stopped = False
        self.task: asyncio.Task[None] | None = None  # set by the relay that spawned it

    async def run_loop(self, holds: Callable[[], bool]) -> None:
        """Publishes until the log has ended and everything in it is out, or it expired, or
        this attempt no longer holds the run."""
        failures = 0
        while not self.stopped:
            entries, done = self._next_batch()
            if not entries:
                if done or self.events.expired:
                    return
                await self.events.changed()
                continue
            if not holds():
                log.warning(
                    "run %s: not publishing %d events, this replica's lease is past its deadline",
                    self.run.run_id,
                    len(entries),
                )
                return
            try:
                published = await self.relay.publish(self.run, self.epoch, entries)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.warning("run %s: publishing its events failed: %r", self.run.run_id, exc)
                await asyncio.sleep(min(RETRY_MAX, RETRY_FIRST * 2 ** min(failures, 10)))
                continue
            if failures:
                log.info("run %s: publishing again after %d failures", self.run.run_id, failures)
                failures = 0
            if not self._advance(entries, published):
                return
            if done and self.position >= self.events.last_seq:
                # (A batch refused as behind moved only past what landed before: what is
                # after it, the end included, is published next.)
                return

    def _next_batch(self) -> tuple[list[Entry], bool]:
        """The next entries to publish, and whether they are the run's last."""
        events = self.events
        entries = list(self.starts)
        if events.expired:
            return entries, True
        limits = self.relay.limits
        if self.position < events.first_seq - 1:  # trimmed before it was published
            entries.append(Entry(self.position + 1, "gap"))
            self.position = events.first_seq - 1
        frames = events.read(self.position, limits.batch_events, limits.batch_bytes)
        seq = self.position
        for frame in frames:
            seq += 1
            last = events.ended and seq == events.last_seq
            watched = self.relay.encoder.thread_event(0, run_event=frame)
            entries.append(Entry(seq, "end" if last else "", frame, watched))
        done = events.ended and seq == events.last_seq
        if done and self.ended:
            entries.append(Entry(0, "ended", watched=self.ended))
        return entries, done

    def _advance(self, entries: list[Entry], published: Published) -> bool:
        """Moves past a published batch; False when this publisher stops."""
        self.starts = []
        last = max((entry.seq for entry in entries), default=0)
        if published.stale:
            log.warning(
                "run %s: epoch %d no longer publishes its events (epoch %d does)",
                self.run.run_id,
                self.epoch,
                published.newest,
            )
            return False
        if published.behind:
            if published.newest >> LOW_BITS > self.position >> LOW_BITS:
                log.warning(
                    "run %s: a later attempt published its events; this one stops",
                    self.run.run_id,
                )
                return False
            # An earlier try of this batch landed (its answer was lost): go on after it.
            self.position = max(self.position, published.newest)
            return True
        self.position = max(self.position, last)
        return True
