"""A run's events read back from Redis: a subscriber on a replica the run does not execute on,
or on the one it does from before what that replica's log holds (an attempt handed over to it).

The subscriber reads the run's stream after `0-<after_seq>` and checks that every entry comes
right after the one before (`keys.follows`): a missing event (trimmed by `MAXLEN`, the key
expired, Redis restarted empty, a `gap` its publisher left, the unrelayed tail of an attempt
cut off mid-run, which the next attempt's first event would otherwise seem to follow) is
`OutOfRange` (STREAM_EXPIRED), never skipped, raised once the events before it are sent (a
subscriber that joins late gets what one that followed live got). An attempt whose replica
drained and handed the run over ends with a `closed` entry right after its last event
(`Relay.flush`): nothing of it was lost, so the subscriber goes on into the next attempt's
events. Redis not answering is
`EventsUnavailable` (UNAVAILABLE). It stops after the entry flagged `end`. When Redis has
nothing new and the database says the run has ended, the stream's newest entry decides: it is
the end at the subscriber's position (nothing more to send), before it (past the end), or
absent (expired): so a run whose replica died with its tail unpublished (Redis down then) is
STREAM_EXPIRED.

A subscriber holds one batch at a time and reads at its own pace: Redis keeps the events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from redis.exceptions import RedisError

from turnstile_server.errors import EventsUnavailable, OutOfRange
from turnstile_server.event_log import SendBudget, StreamLimits
from turnstile_server.relay.keys import LOW_BITS, entry_id, follows, seq_of
from turnstile_server.relay.relay import Entries, Relay

LOW_MASK = (1 << LOW_BITS) - 1

RunEnded = Callable[[], Awaitable[bool]]
"""Whether the run has ended, per the database."""


class RunStream:
    """One subscriber's read of a run's events from Redis, after `after_seq` (0: from the
    oldest event Redis holds, which must be the first of an attempt)."""

    def __init__(
        self,
        relay: Relay,
        run_id: str,
        after_seq: int,
        ended: RunEnded,
        *,
        what: dict[str, str],
        limits: StreamLimits | None = None,
        budget: SendBudget | None = None,
    ) -> None:
        self._relay = relay
        self._key = relay.keys.run(run_id)
        self._run_id = run_id
        self._position = after_seq
        self._ended = ended
        self._what = what
        self._limits = limits or relay.limits
        self._budget = budget
        self._ready: Entries = []
        self._done = False
        self._broken: OutOfRange | None = None

    async def check(self) -> None:
        """Reads what Redis holds now; raises what the stream would at once (expired, past
        the end, Redis down) before the caller sends anything."""
        self._ready = await self._read(block=False)
        if not self._ready and await self._ended():
            await self._at_end()

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """Yields the events in batches, then returns after `end`."""
        limits = self._limits
        while not self._done:
            if self._broken is not None:
                raise self._broken
            entries, self._ready = self._ready, []
            if not entries:
                entries = await self._read(block=True)
            if not entries:
                if await self._ended():
                    entries = await self._read(block=False)  # the end may have come meanwhile
                    if not entries:
                        await self._at_end()
                        return
                else:
                    continue
            frames = self._take(entries)
            if not frames:
                continue
            held = len(frames[0]) if len(frames) == 1 else 0
            if self._budget is None or held <= limits.batch_bytes:
                yield frames
                continue
            await self._budget.acquire(held)
            try:
                yield frames
            finally:
                self._budget.release(held)

    def _take(self, entries: Entries) -> list[bytes]:
        """The frames of `entries` after the position, checked to be contiguous."""
        frames: list[bytes] = []
        for raw_id, fields in entries:
            seq = seq_of(raw_id)
            if seq <= self._position:
                continue
            flag = fields.get(b"e", b"")
            if not follows(self._position, seq) or flag == b"gap":
                if not frames:
                    raise self._expired(seq)
                self._broken = self._expired(seq)  # raised once the frames before it are sent
                break
            if flag == b"closed":  # its attempt's replica handed it over with nothing lost
                self._position = ((seq >> LOW_BITS) + 1) << LOW_BITS  # the next attempt's base
                continue
            frames.append(fields[b"f"])
            self._position = seq
            if flag == b"end":
                self._done = True
                break
        return frames

    async def _read(self, *, block: bool) -> Entries:
        try:
            return await self._relay.read(
                self._key, entry_id(self._position), self._limits.batch_events, block=block
            )
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._unavailable(exc) from None

    async def _at_end(self) -> None:
        """The run has ended and Redis has nothing after the position: returns if the
        position is its `end`, else raises."""
        try:
            newest = await self._relay.newest(self._key)
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._unavailable(exc) from None
        self._done = True
        if newest:
            raw_id, fields = newest[0]
            last = seq_of(raw_id)
            if fields.get(b"e") == b"end" and last == self._position:
                return
            if fields.get(b"e") == b"end" and last < self._position:
                raise OutOfRange(
                    f"run {self._run_id} ended at seq {last}; after_seq {self._position} is"
                    " past it",
                    metadata={**self._what, "last_seq": str(last)},
                )
        raise OutOfRange(
            f"the events of run {self._run_id} after seq {self._position} are no longer retained",
            metadata={**self._what, "after_seq": str(self._position)},
        )

    def _expired(self, seq: int) -> OutOfRange:
        metadata = {**self._what, "after_seq": str(self._position), "first_seq": str(seq)}
        if seq >> LOW_BITS > self._position >> LOW_BITS and seq & LOW_MASK == 1:
            return OutOfRange(
                f"the attempt of run {self._run_id} that emitted seq {self._position} was cut"
                " off before all its events were relayed (its replica stopped, or Redis was"
                f" down); the run's next attempt begins at seq {seq}: resume with"
                f" after_seq={seq - 1}",
                metadata=metadata,
            )
        return OutOfRange(
            f"the events of run {self._run_id} after seq {self._position} are no longer retained",
            metadata=metadata,
        )

    def _unavailable(self, exc: BaseException) -> EventsUnavailable:
        return EventsUnavailable(
            f"the events of run {self._run_id} cannot be read: Redis does not answer ({exc});"
            f" the run goes on, resume with after_seq={self._position}",
            metadata={**self._what, "last_seq": str(self._position)},
        )
