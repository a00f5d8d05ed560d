"""The relay: this replica's connection to Redis, its run publishers and its thread feeds.

`events.EventHub` tells it when a run starts or ends here (`EventRelay`); the streams of runs
executing elsewhere are read through `open_run` and `feed_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from turnstile_server.event_log import EventLog, StreamLimits
from turnstile_server.events import EventEncoder
from turnstile_server.ids import new_id
from turnstile_server.relay import fence
from turnstile_server.relay.fence import Entry, Published
from turnstile_server.relay.keys import Keys
from turnstile_server.relay.publisher import RunPublisher
from turnstile_server.store import RunRecord

log = logging.getLogger(__name__)

Entries = list[tuple[bytes, dict[bytes, bytes]]]
"""Stream entries as Redis answers them: (id, fields)."""

TIMEOUT = 2.0
"""Seconds any one Redis command may take (connecting included) before it counts as down."""
BLOCK_SECONDS = 1.0
"""How long a subscriber's read waits in Redis for new events before it looks again."""


def _reconnect() -> Retry:
    """One more try, at once, of a command whose connection was closed."""
    return Retry(NoBackoff(), 1, (RedisConnectionError,))


def _always() -> bool:
    return True


class RelaySettings:
    """How much Redis keeps, and for how long."""

    def __init__(self, max_events: int = 10_000, ttl_seconds: float = 3600.0) -> None:
        self.max_events = max_events
        self.ttl_seconds = ttl_seconds


class Relay:
    """Publishes this replica's runs' events to Redis and reads other replicas' from it."""

    def __init__(
        self,
        url: str,
        prefix: str,
        encoder: EventEncoder,
        limits: StreamLimits,
        settings: RelaySettings | None = None,
    ) -> None:
        self.keys = Keys(prefix)
        self.encoder = encoder
        self.limits = limits
        self.settings = settings or RelaySettings()
        self.origin = new_id()  # this process, told apart from the other publishers
        self.holds: Callable[[], bool] = lambda: True
        # A pooled connection to a Redis that restarted fails its next command: that command
        # is tried once more on a new connection (a timeout is not: Redis counts as down).
        # `from_url` would retry nothing.
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, retry=_reconnect()
        )
        # Blocking reads wait in Redis up to BLOCK_SECONDS: their own connections, and deadline.
        self.reader: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=TIMEOUT + BLOCK_SECONDS,
            socket_connect_timeout=TIMEOUT,
            retry=_reconnect(),
        )
        self._publish = self.client.register_script(fence.PUBLISH)
        self._publishers: dict[str, RunPublisher] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def ping(self) -> None:
        """Raises unless Redis answers (at start: a wrong URL fails fast)."""
        async with asyncio.timeout(TIMEOUT * 2):
            await self.client.ping()

    async def read(self, key: str, after: bytes | str, count: int, *, block: bool) -> Entries:
        """The stream's entries after id `after`, waiting up to BLOCK_SECONDS with `block`."""
        reply: Any
        if block:
            reply = await self.reader.xread(
                {key: after}, count=count, block=int(BLOCK_SECONDS * 1000)
            )
        else:
            reply = await self.client.xread({key: after}, count=count)
        return list(reply[0][1]) if reply else []

    async def before(self, key: str, last: bytes | str, count: int) -> Entries:
        """Up to `count` of the stream's entries up to id `last`, newest first."""
        reply: Any = await self.client.xrevrange(key, max=last, min="-", count=count)
        return list(reply)

    async def newest(self, key: str) -> Entries:
        """The stream's newest entry (none if it does not exist)."""
        reply: Any = await self.client.xrevrange(key, count=1)
        return list(reply)

    # What the hub tells it (`events.EventRelay`).

    def run_started(self, run: RunRecord, events: EventLog, started: bytes) -> None:
        """A run started here: its events are published at its epoch from now on."""
        publisher = self._publishers.get(run.run_id)
        if publisher is None or publisher.stopped or publisher.events is not events:
            publisher = self._spawn(run, events, run.epoch)
        publisher.epoch = max(publisher.epoch, run.epoch)
        publisher.run = run
        publisher.starts.append(Entry(0, "start", watched=started))

    def run_ending(self, run: RunRecord, events: EventLog, ended: bytes) -> None:
        """A run ends here (its `end` is about to be appended): published after its events.

        A run that did not execute here (cancelled while pending, settled by the sweeper,
        deleted with its thread) publishes its end one epoch above its last attempt's, so
        that attempt, if it still runs somewhere, publishes nothing more; and whether this
        replica's lease holds does not matter to it (the write that ended the run committed:
        its end is the database's, not an attempt's), so an end a draining replica owes after
        its lease went (a CancelRun the server's stop cut off, `Scheduler.settled`) is out."""
        publisher = self._publishers.get(run.run_id)
        if publisher is None or publisher.stopped or publisher.events is not events:
            publisher = self._spawn(run, events, run.epoch + 1, leased=False)
        publisher.ended = ended

    def run_taken(self, run: RunRecord) -> None:
        """Raises the run's fence to the epoch its takeover gave it, at once: the attempt
        that lost it (a replica paused past its lease that wakes up) publishes nothing more,
        even before the run's next attempt starts. Best effort: if Redis does not answer,
        the next attempt's first publish raises it."""

        async def fence_now() -> None:
            try:
                await self.publish(run, run.epoch, [])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("run %s: raising its fence failed: %r", run.run_id, exc)

        self._own(asyncio.create_task(fence_now(), name=f"fence {run.run_id}"))

    def run_lost(self, run_id: str) -> None:
        """This replica's attempt of the run lost it: its publisher stops where it is (what
        it has not published is the fenced attempt's; the run's end, if it is written here,
        gets a publisher of its own, `run_ending`)."""
        publisher = self._publishers.pop(run_id, None)
        if publisher is not None:
            publisher.stopped = True

    async def watch_thread(self, thread_id: str, events: EventLog) -> asyncio.Task[None]:
        """Numbers a new watch log by the thread's stream and feeds it with the stream's
        entries, every replica's (`thread_feed.py`); EventsUnavailable if Redis does not
        answer."""
        from turnstile_server.relay.thread_feed import feed_thread, seed_thread, thread_position

        after = await thread_position(self, thread_id)
        await seed_thread(self, thread_id, events, after)
        task = asyncio.create_task(
            feed_thread(self, thread_id, events, after), name=f"watch {thread_id}"
        )
        self._own(task)
        return task

    async def thread_backlog(self, thread_id: str, after_seq: int, until_seq: int) -> list[bytes]:
        """The thread's events after `after_seq` up to `until_seq`, from its stream
        (`thread_feed.backlog`)."""
        from turnstile_server.relay.thread_feed import backlog

        return await backlog(self, thread_id, after_seq, until_seq)

    def _spawn(
        self, run: RunRecord, events: EventLog, epoch: int, *, leased: bool = True
    ) -> RunPublisher:
        previous = self._publishers.get(run.run_id)
        if previous is not None:
            previous.stopped = True
        publisher = self._publishers[run.run_id] = RunPublisher(self, run, events, epoch)

        async def publish() -> None:
            try:
                await publisher.run_loop(self.holds if leased else _always)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("run %s: its publisher failed", run.run_id)
            finally:
                publisher.stopped = True
                if self._publishers.get(run.run_id) is publisher:
                    del self._publishers[run.run_id]

        publisher.task = asyncio.create_task(publish(), name=f"publish {run.run_id}")
        self._own(publisher.task)
        return publisher

    def _own(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def publish(self, run: RunRecord, epoch: int, entries: Sequence[Entry]) -> Published:
        """Runs the fenced publish of `entries` (see `fence.py`)."""
        keys = [self.keys.fence(run.run_id), self.keys.run(run.run_id)]
        keys += [self.keys.thread(run.thread_id), self.keys.incarnation(run.thread_id)]
        args = fence.arguments(
            epoch,
            self.settings.max_events,
            max(1, round(self.settings.ttl_seconds)),
            self.origin,
            run.run_id,
            entries,
        )
        async with asyncio.timeout(TIMEOUT):
            reply: Any = await self._publish(keys=keys, args=args)
        return fence.outcome(reply)

    async def flush(self, grace: float) -> None:
        """Waits up to `grace` s for the publishers of runs that ended here to publish their
        tails, their `end` included, and closes the attempts of the runs it stopped (handed
        over). A draining replica calls it after it stopped its runs and before it gives up its
        lease: after that, the takeover's fence refuses this replica's publishes, and a run that
        ended during the drain would leave other replicas' subscribers without its `end`."""
        ending: list[asyncio.Task[None]] = []
        handed: list[RunPublisher] = []
        for publisher in self._publishers.values():
            if publisher.task is None or publisher.stopped:
                continue
            if publisher.ended or publisher.events.ended:
                ending.append(publisher.task)
            elif not publisher.events.expired:
                handed.append(publisher)
        closing = [asyncio.ensure_future(self._close_attempt(p, grace)) for p in handed]
        if ending or closing:
            await asyncio.wait([*ending, *closing], timeout=grace)
        for task in closing:
            task.cancel()

    async def _close_attempt(self, publisher: RunPublisher, grace: float) -> None:
        """A run this replica stopped and hands over: once everything its attempt emitted is
        published, a `closed` entry right after its last event says so, so a subscriber that
        saw up to it goes on into the next attempt (`run_stream.py`) rather than answering
        STREAM_EXPIRED. Not written when the tail is not all out within `grace` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        events = publisher.events
        while publisher.starts or publisher.position < events.last_seq:
            if publisher.stopped or events.expired or loop.time() > deadline:
                return
            await asyncio.sleep(0.01)  # only while draining
        publisher.stopped = True
        if publisher.task is not None:
            publisher.task.cancel()  # caught up: it waits for the next append
            await asyncio.gather(publisher.task, return_exceptions=True)
        if not self.holds():
            return
        closed = publisher.position + 1
        try:
            published = await self.publish(
                publisher.run, publisher.epoch, [Entry(closed, "closed")]
            )
        except Exception as exc:
            log.warning("run %s: marking its attempt closed failed: %r", publisher.run.run_id, exc)
            return
        if published.added:
            log.info(
                "run %s: handed over, its events closed at seq %d", publisher.run.run_id, closed - 1
            )

    async def close(self, grace: float = 1.0) -> None:
        """Lets the publishers finish for up to `grace` s, stops the rest, disconnects."""
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.client.aclose()
        with contextlib.suppress(Exception):
            await self.reader.aclose()
