"""A thread's watch log on this replica, fed with what other replicas publish of the thread.

Runs executing here append to the watch log directly (`events.EventHub`); the feed appends
the starts, events and ends that other processes published to the thread's Redis stream
since the log was made, in their order there, numbered by the log (so a watcher's `seq` is
this replica's, resumable here). Redis not answering fails the log with `EventsUnavailable`:
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
