"""A thread's watch log on this replica, fed with what other replicas publish of the thread.

Runs executing here append to the watch log directly (`events.EventHub`); the feed appends
the starts, events and ends that other processes published to the thread's Redis stream
since the log was made, in their order there, numbered by the log (so a watcher's `seq` is
this replica's, resumable here). A new log is first seeded, as the hub seeds it with the
runs executing here, with the runs under way elsewhere: each one's start and its events so
far, from the thread stream (a run whose start was trimmed from it shows from its next
event). Redis not answering fails the log with `EventsUnavailable`:
its watchers get UNAVAILABLE and watch again.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from redis.exceptions import RedisError

from turnstile_server.errors import EventsUnavailable
from turnstile_server.event_log import EventLog
from turnstile_server.relay.relay import Relay

log = logging.getLogger(__name__)


async def thread_position(relay: Relay, thread_id: str) -> bytes:
    """The id of the thread stream's newest entry (where a new feed starts)."""
    try:
        newest = await relay.newest(relay.keys.thread(thread_id))
    except (RedisError, OSError, TimeoutError) as exc:
        raise EventsUnavailable(
            f"the events of thread {thread_id} cannot be read: Redis does not answer ({exc})",
            metadata={"thread_id": thread_id},
        ) from None
    return newest[0][0] if newest else b"0-0"


SEED_ENTRIES = 10_000
"""How far back a new watch log looks in the thread stream for runs under way."""


def _order(entry_id: bytes) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition(b"-")
    return int(milliseconds), int(sequence)


async def seed_thread(relay: Relay, thread_id: str, events: EventLog, last: bytes) -> None:
    """Appends the starts and events so far of the runs that other processes publish of the
    thread and that have not ended, up to entry `last`."""
    if last == b"0-0":
        return
    try:
        entries = await relay.before(relay.keys.thread(thread_id), last, SEED_ENTRIES)
    except (RedisError, OSError, TimeoutError) as exc:
        raise EventsUnavailable(
            f"the events of thread {thread_id} cannot be read: Redis does not answer ({exc})",
            metadata={"thread_id": thread_id},
        ) from None
    origin = relay.origin.encode()
    ended: set[bytes] = set()
    decided: set[bytes] = set()
    under_way: dict[bytes, tuple[int, int]] = {}  # run id -> where its latest start is
    for raw_id, fields in entries:  # newest first: a run's latest start decides
        run_id, kind = fields.get(b"r", b""), fields.get(b"k", b"")
        if kind == b"ended":
            ended.add(run_id)
        elif kind == b"start" and run_id not in ended and run_id not in decided:
            decided.add(run_id)
            if fields.get(b"o") != origin:  # else it executes here: the hub seeded it
                under_way[run_id] = _order(raw_id)
    encoder = relay.encoder
    for raw_id, fields in reversed(entries):
        start = under_way.get(fields.get(b"r", b""))
        if start is None or _order(raw_id) < start or fields.get(b"o") == origin:
            continue
        events.append(functools.partial(encoder.relayed_thread_event, framed=fields[b"f"]))


async def feed_thread(relay: Relay, thread_id: str, events: EventLog, after: bytes) -> None:
    """Appends to `events` the thread stream's entries after `after` that other processes
    published, until the log ends."""
    key = relay.keys.thread(thread_id)
    origin = relay.origin.encode()
    encoder = relay.encoder
    position = after
    while not events.ended:
        try:
            entries = await relay.read(key, position, relay.limits.batch_events, block=True)
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            if not events.ended:
                events.fail(
                    EventsUnavailable(
                        f"the events of thread {thread_id} cannot be read: Redis does not"
                        f" answer ({exc}); watch it again",
                        metadata={"thread_id": thread_id},
                    )
                )
            return
        for raw_id, fields in entries:
            position = raw_id
            if fields.get(b"o") == origin or events.ended:
                continue
            events.append(functools.partial(encoder.relayed_thread_event, framed=fields[b"f"]))
