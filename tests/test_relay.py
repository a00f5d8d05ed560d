"""The relay on a real Redis: a run's events published from its hub, read back exactly by a
subscriber elsewhere, every gap an error, and the epoch fence."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests import redis as test_redis
from tests.event_logs import run_record, seqs
from tests.support import eventually
from turnstile_server.api.event_frames import EventFrames
from turnstile_server.errors import EventsUnavailable, OutOfRange
from turnstile_server.event_log import StreamLimits
from turnstile_server.events import SEQ_EPOCH_BITS, EventHub
from turnstile_server.relay import Relay, RunStream
from turnstile_server.relay.fence import Entry, Published
from turnstile_server.store import RunRecord

pytestmark = pytest.mark.timeout(30)

WHAT = {"run_id": "r"}


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with test_redis.key_prefix() as (url, prefix):
        relay = Relay(url, prefix, EventFrames(), StreamLimits())
        try:
            yield relay
        finally:
            await relay.close()


def running(epoch: int = 1, attempt: int = 1) -> RunRecord:
    return replace(run_record(attempt=attempt), epoch=epoch)


async def play(hub: EventHub, run: RunRecord, events: int, *, end: bool = True) -> None:
    hub.run_started(run)
    for n in range(events):
        hub.emit(run, "custom", {"n": n})
    if end:
        hub.run_ended(replace(run, status="success"), {"status": "success"})


async def published(relay: Relay, run_id: str = "r") -> list[int]:
    entries: Any = await relay.client.xrange(relay.keys.run(run_id))
    return [int(raw_id.split(b"-")[1]) for raw_id, _ in entries]


async def until_published(relay: Relay, count: int) -> list[int]:
    async def check() -> list[int]:
        ids = await published(relay)
        assert len(ids) == count, ids
        return ids

    return await eventually(check, within=10.0)


async def read(
    relay: Relay, after_seq: int, ended: bool = True, out: list[int] | None = None
) -> list[int]:
    """The seqs read after `after_seq` (also put into `out` as they come)."""

    async def done() -> bool:
        return ended

    stream = RunStream(relay, "r", after_seq, done, what=WHAT)
    await stream.check()
    out = [] if out is None else out
    async for batch in stream.batches():
        out.extend(seqs(batch))
    return out


async def test_a_run_s_events_read_back_from_redis_whole_and_from_any_seq(relay: Relay) -> None:
    hub = EventHub(EventFrames(), relay=relay)
    await play(hub, running(), 5)  # 5 events, then end
    ids = await until_published(relay, 6)
    assert ids == [1, 2, 3, 4, 5, 6]
    assert await read(relay, 0) == [1, 2, 3, 4, 5, 6]
    for k in range(1, 6):
        assert await read(relay, k) == list(range(k + 1, 7))
    assert await read(relay, 6) == []  # resumed after the end: nothing, no error
    with pytest.raises(OutOfRange) as past:
        await read(relay, 7)
    assert past.value.reason == "STREAM_EXPIRED"
    hub.close()


async def test_a_later_attempt_s_events_are_read_from_its_base_not_across_a_cut(
    relay: Relay,
) -> None:
    """Whether the first attempt emitted more than it relayed is unknown once it was cut off
    (here it did not), so a subscriber in its middle gets STREAM_EXPIRED at the next attempt
    (after the first attempt's events it asked for), told where that attempt begins; from
    there it reads it whole."""
    hub = EventHub(EventFrames(), relay=relay)
    first = running(epoch=1, attempt=1)
    await play(hub, first, 3, end=False)
    await until_published(relay, 3)
    # The replica that took the run over, at epoch 3 (the sweeper's requeue was 2).
    taker = Relay(test_redis.server_url(), relay.keys.prefix, EventFrames(), StreamLimits())
    other = EventHub(EventFrames(), relay=taker)
    await play(other, running(epoch=3, attempt=2), 2)
    base = 1 << SEQ_EPOCH_BITS
    await until_published(relay, 6)
    for after in (0, 2, 3):
        got: list[int] = []
        with pytest.raises(OutOfRange) as cut:
            await read(relay, after, out=got)
        assert got == list(range(after + 1, 4)), after
        assert cut.value.metadata["after_seq"] == "3"
        assert cut.value.reason == "STREAM_EXPIRED"
        assert cut.value.metadata["first_seq"] == str(base + 1)
        assert f"resume with after_seq={base}" in cut.value.message
    assert await read(relay, base) == [base + 1, base + 2, base + 3]
    hub.close()
    other.close()
    await taker.close()


async def test_trimmed_events_are_stream_expired_never_a_gap(relay: Relay) -> None:
    hub = EventHub(EventFrames(), relay=relay)
    await play(hub, running(), 9)
    await until_published(relay, 10)
    await relay.client.xtrim(
        relay.keys.run("r"), maxlen=4, approximate=False
    )  # as MAXLEN does to a long run
    assert await read(relay, 6) == [7, 8, 9, 10]
    for after in (0, 2, 5):
        with pytest.raises(OutOfRange) as expired:
            await read(relay, after)
        assert expired.value.reason == "STREAM_EXPIRED"
        assert expired.value.metadata["first_seq"] == "7"
    await relay.client.delete(relay.keys.run("r"))  # its TTL passed
    with pytest.raises(OutOfRange):
        await read(relay, 0)
    hub.close()


async def test_a_gap_the_publisher_left_is_stream_expired(relay: Relay) -> None:
    run = running()
    await relay.publish(run, 1, [Entry(1, "", b"\x0a\x02\x08\x01"), Entry(2, "gap")])
    with pytest.raises(OutOfRange):
        await read(relay, 1, ended=False)


async def test_a_publish_from_an_older_epoch_is_refused(relay: Relay) -> None:
    """The attempt at epoch 1 lost its run (its replica was paused past its lease); the run's
    next attempt, epoch 2, has started and published its start. What the old one publishes
    after that lands nowhere: neither in the run's stream nor the thread's."""
    new = running(epoch=2, attempt=2)
    started = await relay.publish(new, 2, [Entry(0, "start", watched=b"started")])
    assert not started.stale
    old = running(epoch=1, attempt=1)
    frames = EventFrames()
    stale = [
        Entry(seq, "", frames.run_event(seq, "r", "custom", {"n": seq}, state=False), b"w")
        for seq in (4, 5)
    ]
    refused = await relay.publish(old, 1, stale)
    assert refused.stale and refused.added == 0
    assert await published(relay) == []
    thread: Any = await relay.client.xrange(relay.keys.thread("t"))
    assert [fields[b"k"] for _, fields in thread] == [b"start"]
    # The old attempt's publisher stops at the refusal: a hub on that replica publishes none.
    hub = EventHub(EventFrames(), relay=relay)
    hub.run_started(old)
    hub.emit(old, "custom", {"n": 1})

    async def stopped() -> None:
        assert "r" not in relay._publishers

    await eventually(stopped, within=10.0)
    assert await published(relay) == []
    hub.close()


async def test_a_retried_batch_that_landed_is_not_published_twice(relay: Relay) -> None:
    run = running()
    frames = EventFrames()
    batch = [
        Entry(seq, "", frames.run_event(seq, "r", "custom", {}, state=False)) for seq in (1, 2)
    ]
    assert (await relay.publish(run, 1, batch)).added == 2
    again = await relay.publish(run, 1, batch)
    assert again.behind and again.newest == 2
    assert await published(relay) == [1, 2]


async def test_a_batch_whose_answer_was_lost_while_the_run_ended_still_publishes_the_end(
    relay: Relay,
) -> None:
    """Redis paused past the relay's timeout: a batch lands but its answer is lost, and the
    run ends meanwhile. The retry (the batch and the end) is refused as behind: the
    publisher goes on after what landed, to the end (it stopped there, the end unpublished)."""
    real = relay.publish
    calls: list[list[int]] = []
    hub = EventHub(EventFrames(), relay=relay)
    run = running()

    async def answer_lost(run: RunRecord, epoch: int, entries: Sequence[Entry]) -> Published:
        calls.append([entry.seq for entry in entries if entry.seq])
        published = await real(run, epoch, entries)
        if len(calls) == 1:
            hub.run_ended(replace(run, status="success"), {"status": "success"})
            raise TimeoutError("Timeout reading from socket")
        return published

    relay.publish = answer_lost  # type: ignore[method-assign]
    await play(hub, run, 3, end=False)
    assert await until_published(relay, 4) == [1, 2, 3, 4]
    assert calls[:2] == [[1, 2, 3], [1, 2, 3, 4]]
    entries: Any = await relay.client.xrange(relay.keys.run("r"))
    assert entries[-1][1][b"e"] == b"end"
    hub.close()


async def test_redis_down_is_events_unavailable(tmp_path: Path) -> None:
    async with test_redis.own_server(tmp_path) as (url, process):
        relay = Relay(url, "t:", EventFrames(), StreamLimits())
        try:
            hub = EventHub(EventFrames(), relay=relay)
            await play(hub, running(), 2, end=False)
            await until_published(relay, 2)
            process.kill()
            await process.wait()

            async def inflight() -> bool:
                return False

            stream = RunStream(relay, "r", 0, inflight, what=WHAT)
            with pytest.raises(EventsUnavailable) as down:
                await stream.check()
            assert down.value.reason == "EVENTS_UNAVAILABLE"
            hub.emit(running(), "custom", {"n": 3})  # the run goes on: its hub takes events
            hub.close()
        finally:
            await relay.close(grace=0.1)


async def test_keys_carry_the_prefix(relay: Relay) -> None:
    hub = EventHub(EventFrames(), relay=relay)
    await play(hub, running(), 1)
    await until_published(relay, 2)
    client: Any = aioredis.Redis.from_url(test_redis.server_url())
    try:
        keys = sorted([key async for key in client.scan_iter(match=f"{relay.keys.prefix}*")])
    finally:
        await client.aclose()
    prefix = relay.keys.prefix.encode()
    assert keys == [
        prefix + b"fence:r",
        prefix + b"incarnation:t",
        prefix + b"run:r",
        prefix + b"thread:t",
    ]
    ttl = await relay.client.ttl(relay.keys.run("r"))
    assert 0 < ttl <= 3600
    # Every key expires; the thread's incarnation outlives its stream.
    for key in keys:
        assert await relay.client.ttl(key) > 0, key
    assert await relay.client.ttl(relay.keys.incarnation("t")) > 3600
    hub.close()


async def test_the_end_of_a_run_that_never_executed_here_is_published_past_the_lease(
    relay: Relay,
) -> None:
    """A run cancelled while pending on a replica whose lease is past its local deadline (it
    drains: the cancellation of a call its server's stop cut off lands after the lease went).
    The cancel committed, so the run's end is the database's, not a stale attempt's: it is
    published (one epoch above the run's last), while an attempt of this replica's is not."""
    relay.holds = lambda: False
    hub = EventHub(EventFrames(), relay=relay)
    pending = replace(run_record(attempt=0), epoch=0, status="interrupted")
    hub.run_ended(pending, {"status": "interrupted"})
    assert await until_published(relay, 1) == [1]
    executing = replace(run_record(attempt=1), run_id="x", epoch=1)
    hub.run_started(executing)
    hub.emit(executing, "custom", {"n": 1})

    async def stopped() -> None:
        assert "x" not in relay._publishers

    await eventually(stopped, within=10.0)
    assert await published(relay, "x") == []
    hub.close()


async def test_a_run_taken_from_an_attempt_here_and_cancelled_here_publishes_its_end(
    relay: Relay,
) -> None:
    """Chaos found it: the attempt here (epoch 1) published seqs 1-2, then its replica was
    paused past its lease; a takeover raised the run's fence to epoch 2 and left it pending,
    and an admission here cancelled it before the old attempt unwound. The end must reach
    Redis (one epoch above the taken run's, after the attempt's numbering), not go to the
    fenced attempt's publisher, which Redis refuses; the attempt's unpublished event stays
    out; the local log of the lost attempt goes (its followers get STREAM_EXPIRED)."""
    hub = EventHub(EventFrames(), relay=relay)
    executing = running(epoch=1, attempt=1)
    await play(hub, executing, 2, end=False)
    assert await until_published(relay, 2) == [1, 2]
    taken = replace(executing, status="pending", epoch=2)
    assert not (await relay.publish(taken, 2, [])).stale  # the takeover's fence, elsewhere
    lost = hub.get("r")
    assert lost is not None
    hub.emit(executing, "custom", {"n": "after the lease"})  # never published
    hub.run_ended(replace(taken, status="interrupted"), {"status": "interrupted"})
    ids = await until_published(relay, 3)
    assert ids == [1, 2, (1 << SEQ_EPOCH_BITS) + 1]
    entries: Any = await relay.client.xrange(relay.keys.run("r"))
    assert entries[-1][1][b"e"] == b"end"
    assert lost.expired and hub.get("r") is not lost
    with pytest.raises(OutOfRange):
        await read(relay, 2)  # from the middle of the lost attempt: not known whole
    assert await read(relay, 1 << SEQ_EPOCH_BITS) == [(1 << SEQ_EPOCH_BITS) + 1]
    hub.close()


async def test_many_new_threads_keep_their_incarnations_at_the_clock(relay: Relay) -> None:
    """Each thread stream's incarnation is the clock's second (or one more than its own
    previous one), not one more than any thread's: a deployment creating 60 threads in a
    second must not push the incarnations (the watch seq's high bits) a minute ahead, or a
    busy one would overflow the int64 seq within months."""
    from turnstile_server.relay.fence import EPOCH_OFFSET

    before = int((await relay.client.time())[0]) - EPOCH_OFFSET
    for i in range(60):
        run = replace(running(), run_id=f"r{i}", thread_id=f"t{i}")
        await relay.publish(run, run.epoch, [Entry(0, "start", watched=b"x")])
    after = int((await relay.client.time())[0]) - EPOCH_OFFSET
    incarnations = set()
    for i in range(60):
        newest: Any = await relay.client.xrevrange(relay.keys.thread(f"t{i}"), count=1)
        incarnations.add(int(newest[0][0].split(b"-")[0]))
    assert before <= min(incarnations) and max(incarnations) <= after, (before, after)


async def test_a_thread_stream_recreated_within_its_second_gets_a_newer_incarnation(
    relay: Relay,
) -> None:
    """Deleted and created again in the same second, a thread's stream still gets an
    incarnation above its previous one: an old seq never names an entry of the new one."""
    run = replace(running(), run_id="r", thread_id="t")
    seen = []
    for _ in range(3):
        await relay.publish(run, run.epoch, [Entry(0, "start", watched=b"x")])
        newest: Any = await relay.client.xrevrange(relay.keys.thread("t"), count=1)
        seen.append(int(newest[0][0].split(b"-")[0]))
        await relay.client.delete(relay.keys.thread("t"))
    assert seen == sorted(set(seen)), seen
