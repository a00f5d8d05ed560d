"""A thread's watch log on this replica, numbered and fed by the thread's Redis stream.

With Redis, every replica publishes its runs' starts, events and ends of a thread to the
thread's stream, whose entry ids `<incarnation>-<n>` Redis numbers atomically (`fence.py`),
and every replica's watch log of the thread is fed from that stream alone, its own runs'
entries included, each numbered `keys.thread_seq(id)`: a watcher's `seq` is the same on every
replica, so a watch opened on one replica resumes exactly on another.

A new log starts at the earliest start of a run under way (within the newest
`SEED_ENTRIES`), else after the stream's newest entry; a watcher resuming from before the
log's first event reads the entries in between from the stream (`backlog`). Entries that are
not contiguous (trimmed from the stream, the stream expired or Redis restarted: a new
incarnation) or a `gap` entry (run events lost before they were published) end the log with
STREAM_EXPIRED, never a silent skip. Redis not answering fails the log with
`EventsUnavailable`: its watchers get UNAVAILABLE and watch again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from redis.exceptions import RedisError

from turnstile_server.errors import EventsUnavailable, OutOfRange
from turnstile_server.event_log import EventLog
from turnstile_server.relay.keys import thread_entry_id, thread_seq
from turnstile_server.relay.relay import Entries, Relay

log = logging.getLogger(__name__)

SEED_ENTRIES = 10_000
"""How far back a new watch log looks in the thread stream for runs under way."""


def _unavailable(thread_id: str, exc: BaseException) -> EventsUnavailable:
    return EventsUnavailable(
        f"the events of thread {thread_id} cannot be read: Redis does not answer ({exc});"
        " watch it again",
        metadata={"thread_id": thread_id},
    )


def _lost(thread_id: str, after_seq: int, why: str) -> OutOfRange:
    return OutOfRange(
        f"the events of thread {thread_id} after seq {after_seq} are no longer retained"
        f" ({why}): watch again with after_seq=0",
        metadata={"thread_id": thread_id, "after_seq": str(after_seq)},
    )


async def thread_position(relay: Relay, thread_id: str) -> bytes:
    """The id of the thread stream's newest entry (where a new feed starts)."""
    try:
        newest = await relay.newest(relay.keys.thread(thread_id))
    except (RedisError, OSError, TimeoutError) as exc:
        raise _unavailable(thread_id, exc) from None
    return newest[0][0] if newest else b"0-0"


async def seed_thread(relay: Relay, thread_id: str, events: EventLog, last: bytes) -> None:
    """Numbers a new log after entry `last`, or from the earliest start of a run that has not
    ended (and after the newest `gap`), appending the entries from there to `last`."""
    if last == b"0-0":
        return  # no stream: the first entry numbers the log
    try:
        entries = await relay.before(relay.keys.thread(thread_id), last, SEED_ENTRIES)
    except (RedisError, OSError, TimeoutError) as exc:
        raise _unavailable(thread_id, exc) from None
    ended: set[bytes] = set()
    start = 0  # how many of the newest entries the log starts with
    for index, (_, fields) in enumerate(entries):  # newest first: a run's latest start decides
        run_id, kind = fields.get(b"r", b""), fields.get(b"k", b"")
        if kind == b"gap":
            break
        if kind == b"ended":
            ended.add(run_id)
        elif kind == b"start" and run_id not in ended:
            start = index + 1
            ended.add(run_id)  # its earlier starts are of earlier attempts
    seeded = list(reversed(entries[:start]))
    events.rebase((thread_seq(seeded[0][0]) if seeded else thread_seq(last) + 1) - 1)
    _append(relay, thread_id, events, seeded)


def _append(relay: Relay, thread_id: str, events: EventLog, entries: Entries) -> bool:
    """Appends entries that follow the log's last; fails the log (False) at one that does
    not, or at a `gap`."""
    encoder = relay.encoder
    for raw_id, fields in entries:
        seq = thread_seq(raw_id)
        if not events.numbered:
            events.rebase(seq - 1)
        if seq != events.last_seq + 1 or fields.get(b"k") == b"gap":
            why = "events were lost" if fields.get(b"k") == b"gap" else "trimmed from Redis"
            if seq >> 32 != events.last_seq >> 32:
                why = "the thread's Redis stream expired or Redis restarted"
            events.fail(_lost(thread_id, events.last_seq, why))
            return False
        events.append(functools.partial(encoder.relayed_thread_event, framed=fields[b"f"]))
    return True


async def feed_thread(relay: Relay, thread_id: str, events: EventLog, after: bytes) -> None:
    """Appends to `events` the thread stream's entries after `after`, until the log ends."""
    key = relay.keys.thread(thread_id)
    position = after
    while not events.ended:
        try:
            entries = await relay.read(key, position, relay.limits.batch_events, block=True)
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            if not events.ended:
                events.fail(_unavailable(thread_id, exc))
            return
        if events.ended:
            return
        if entries:
            position = entries[-1][0]
            if not _append(relay, thread_id, events, entries):
                return


async def backlog(relay: Relay, thread_id: str, after_seq: int, until_seq: int) -> list[bytes]:
    """The framed thread events `after_seq` + 1 ... `until_seq` from the thread stream (for a
    watcher resuming from before this replica's log); STREAM_EXPIRED unless all are there."""
    if after_seq >> 32 != until_seq >> 32:
        raise _lost(thread_id, after_seq, "the thread's Redis stream expired or Redis restarted")
    try:
        reply: Any = await relay.client.xrange(
            relay.keys.thread(thread_id),
            min=thread_entry_id(after_seq + 1),
            max=thread_entry_id(until_seq),
            count=until_seq - after_seq,
        )
    except (RedisError, OSError, TimeoutError) as exc:
        raise _unavailable(thread_id, exc) from None
    entries: Entries = list(reply)
    frames = []
    expected = after_seq + 1
    for raw_id, fields in entries:
        if thread_seq(raw_id) != expected:
            raise _lost(thread_id, after_seq, "trimmed from Redis")
        if fields.get(b"k") == b"gap":
            raise _lost(thread_id, after_seq, "events were lost")
        frames.append(relay.encoder.relayed_thread_event(expected, fields[b"f"]))
        expected += 1
    if expected != until_seq + 1:
        raise _lost(thread_id, after_seq, "trimmed from Redis")
    return frames
