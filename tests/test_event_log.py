"""The event logs behind every stream (`turnstile_server.event_log`), without a server.

A log numbers and keeps encoded events; `follow` is one subscriber's position in it. These
tests pin the numbering, the bounds, and when a subscriber is expired or too slow.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.event_logs import (
    Subscriber,
    collect,
    encoder,
    filled,
    seqs,
)
from turnstile_server.errors import OutOfRange, SubscriberTooSlow
from turnstile_server.event_log import (
    EventLog,
    LazyEvent,
    SendBudget,
    StreamLimits,
    check_position,
    follow,
)
from turnstile_server.events import SEQ_EPOCH_BITS

WHAT = {"run_id": "r"}
EPOCH = 1 << SEQ_EPOCH_BITS
STEP = 5.0  # seconds a subscriber may take to react, so that a hang fails fast


# EventLog: numbering and bounds.


def test_events_are_numbered_from_one_and_read_after_a_position() -> None:
    log = filled(5)

    assert (log.first_seq, log.last_seq, len(log)) == (1, 5, 5)
    assert seqs(log.read(0, 100, 1 << 20)) == [1, 2, 3, 4, 5]
    assert seqs(log.read(3, 100, 1 << 20)) == [4, 5]
    assert log.read(5, 100, 1 << 20) == []


def test_read_stops_at_the_batch_limits_but_always_returns_one_event() -> None:
    log = filled(10)
    size = len(log.read(0, 1, 1 << 20)[0])

    assert seqs(log.read(0, 3, 1 << 20)) == [1, 2, 3]
    assert seqs(log.read(0, 100, 2 * size)) == [1, 2]
    assert seqs(log.read(4, 100, 1)) == [5], "one event even when it alone exceeds max_bytes"


def test_max_events_evicts_the_oldest_and_moves_first_seq() -> None:
    log = filled(25, StreamLimits(max_events=10))

    assert (log.first_seq, log.last_seq, len(log)) == (16, 25, 10)
    assert seqs(log.read(15, 100, 1 << 20)) == list(range(16, 26))


def test_max_bytes_evicts_the_oldest_and_keeps_at_least_the_newest() -> None:
    size = len(encoder()(1))
    log = filled(20, StreamLimits(max_bytes=3 * size + size // 2))

    assert (log.first_seq, log.last_seq) == (18, 20)
    assert log.nbytes == sum(len(f) for f in log.read(17, 100, 1 << 20))
    big = EventLog("run r", StreamLimits(max_bytes=10))
    big.append(encoder("x" * 100))
    big.append(encoder("y" * 100))
    assert (big.first_seq, big.last_seq, len(big)) == (2, 2, 1), "the newest event stays"


def test_reading_lazy_events_counts_their_encoded_bytes_against_max_bytes() -> None:
    class Big(LazyEvent):
        def encode(self, seq: int) -> bytes:
            return encoder("x" * 1000)(seq)

    log = EventLog("run r", StreamLimits(max_bytes=2500))
    for _ in range(5):
        log.append(Big(64))
    assert len(log) == 5, "five estimates fit"
    resized: list[int] = []
    log.resized = lambda: resized.append(log.nbytes)

    assert seqs(log.read(0, 100, 1 << 20)) == [1, 2, 3, 4, 5], "what was read is returned"
    assert log.nbytes <= 2500 and log.first_seq == 4, "then the oldest go, as on append"
    assert resized == [log.nbytes], "the owner is told the new size"


def test_rebase_numbers_the_log_once() -> None:
    log = EventLog("run r", StreamLimits())
    assert not log.numbered
    log.rebase(2 * EPOCH)
    assert log.numbered and log.last_seq == 2 * EPOCH
    log.rebase(7 * EPOCH)  # numbered already (the run started): ignored
    assert log.append(encoder()) == 2 * EPOCH + 1
    log.rebase(9 * EPOCH)  # ignored too
    assert log.append(encoder()) == 2 * EPOCH + 2
    assert (log.first_seq, log.last_seq) == (2 * EPOCH + 1, 2 * EPOCH + 2)


def test_an_ended_log_refuses_appends_and_an_expired_one_holds_nothing() -> None:
    log = filled(3)
    log.end()
    with pytest.raises(RuntimeError):
        log.append(encoder())
    log.expire()
    assert log.expired and len(log) == 0 and log.nbytes == 0


# follow and check_position.


async def test_follow_replays_then_follows_live_until_the_end() -> None:
    log = filled(3)
    subscriber = Subscriber(log, 0, log.limits)
    await subscriber.has(3)
    log.append(encoder())
    await subscriber.has(4)
    log.append(encoder())
    log.append(encoder())
    log.end()

    assert await subscriber.result() == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("after_seq", [0, 1, 2, 5, 8])
async def test_follow_after_seq_gives_exactly_the_events_after_it(after_seq: int) -> None:
    log = filled(8)
    log.end()

    assert await collect(log, after_seq) == list(range(after_seq + 1, 9))


async def test_a_subscriber_waiting_on_an_unnumbered_log_gets_every_event() -> None:
    log = EventLog("run r", StreamLimits())
    subscriber = Subscriber(log, 0, log.limits)
    await subscriber.idle()
    log.append(encoder())
    log.append(encoder())
    log.end()

    assert await subscriber.result() == [1, 2]


async def test_replaying_far_behind_is_never_too_slow() -> None:
    limits = StreamLimits(max_lag=3, batch_events=2)
    log = filled(50, limits)
    log.end()

    assert await collect(log, 0, limits) == list(range(1, 51))


async def test_a_replaying_subscriber_that_new_events_outpace_is_still_not_too_slow() -> None:
    limits = StreamLimits(max_lag=3, batch_events=2)
    log = filled(10, limits)
    out: list[int] = []
    async with asyncio.timeout(STEP):
        async for frames in follow(log, 0, limits, what=WHAT):
            out.extend(seqs(frames))
            if out[-1] < 20:  # still replaying: the log grows faster than it is read
                for _ in range(3):
                    log.append(encoder())
            else:
                log.end()

    assert out == list(range(1, log.last_seq + 1))


async def test_a_live_subscriber_exactly_max_lag_behind_is_not_too_slow() -> None:
    limits = StreamLimits(max_lag=5)
    log = filled(2, limits)
    subscriber = Subscriber(log, 0, limits)
    await subscriber.has(2)
    await subscriber.idle()
    for _ in range(5):
        log.append(encoder())
    log.end()

    assert await subscriber.result() == list(range(1, 8))


async def test_a_live_subscriber_more_than_max_lag_behind_is_too_slow_and_can_resume() -> None:
    limits = StreamLimits(max_lag=5, max_events=20)
    log = filled(2, limits)
    subscriber = Subscriber(log, 0, limits)
    await subscriber.has(2)
    await subscriber.idle()
    for _ in range(6):
        log.append(encoder())
    log.end()

    with pytest.raises(SubscriberTooSlow) as slow:
        await subscriber.result()
    assert slow.value.reason == "SUBSCRIBER_TOO_SLOW"
    assert slow.value.metadata == {**WHAT, "last_seq": "2"}
    assert subscriber.seqs == [1, 2]
    assert await collect(log, 2) == list(range(3, 9)), "what it missed is still retained"


async def test_a_live_subscriber_whose_events_were_evicted_is_too_slow_not_expired() -> None:
    limits = StreamLimits(max_lag=50, max_events=4)
    log = filled(2, limits)
    subscriber = Subscriber(log, 0, limits)
    await subscriber.has(2)
    await subscriber.idle()
    for _ in range(6):
        log.append(encoder())

    with pytest.raises(SubscriberTooSlow):
        await subscriber.result()


async def test_replaying_from_before_the_oldest_retained_event_is_expired() -> None:
    log = filled(10, StreamLimits(max_events=4))  # keeps 7..10
    log.end()

    assert await collect(log, 6) == [7, 8, 9, 10]
    for after_seq in (0, 1, 5):
        with pytest.raises(OutOfRange) as gone:
            await collect(log, after_seq)
        assert gone.value.reason == "STREAM_EXPIRED"
        assert gone.value.metadata["first_seq"] == "7"
        with pytest.raises(OutOfRange):
            check_position(log, after_seq, what=WHAT)
    check_position(log, 6, what=WHAT)


async def test_after_seq_past_the_end_of_an_ended_log_is_out_of_range() -> None:
    log = filled(4)
    log.end()

    with pytest.raises(OutOfRange) as past:
        check_position(log, 5, what=WHAT)
    assert past.value.metadata["last_seq"] == "4"
    with pytest.raises(OutOfRange):
        await collect(log, 5)
    check_position(log, 4, what=WHAT)
    assert await collect(log, 4) == []


async def test_a_subscriber_of_a_log_that_expires_is_told_out_of_range() -> None:
    log = filled(2)
    subscriber = Subscriber(log, 0, log.limits)
    await subscriber.has(2)
    log.expire()

    with pytest.raises(OutOfRange):
        await subscriber.result()
    with pytest.raises(OutOfRange):
        check_position(log, 0, what=WHAT)


async def test_after_seq_zero_of_a_from_oldest_log_starts_at_the_oldest_retained() -> None:
    log = EventLog("thread t", StreamLimits(max_events=3), 4 * EPOCH, from_oldest=True)
    for _ in range(5):
        log.append(encoder())
    log.end()

    check_position(log, 0, what=WHAT)
    assert await collect(log, 0) == [4 * EPOCH + 3, 4 * EPOCH + 4, 4 * EPOCH + 5]
    run_log = filled(5, StreamLimits(max_events=3))
    with pytest.raises(OutOfRange):
        check_position(run_log, 0, what=WHAT)


# Stuck subscribers: what they hold.


async def test_an_event_larger_than_a_batch_goes_alone_shared_and_within_the_send_budget() -> None:
    limits = StreamLimits(batch_bytes=100)
    log = EventLog("run r", limits)
    log.append(encoder())
    log.append(encoder("x" * 1000))
    log.end()
    big = log.read(1, 1, 1 << 20)[0]
    budget = SendBudget(len(big))
    first = follow(log, 0, limits, what=WHAT, budget=budget)
    second = follow(log, 0, limits, what=WHAT, budget=budget)
    async with asyncio.timeout(STEP):
        assert seqs(await anext(first)) == [1], "the small event is not batched with the big"
        assert seqs(await anext(second)) == [1]
        assert budget.used == 0, "a batch within batch_bytes takes nothing from the budget"

        held = await anext(first)  # its client stops reading: gRPC holds this message
        assert held == [big] and held[0] is big, "the log's own bytes, not a copy"
        assert budget.used == len(big)
        waiting = asyncio.ensure_future(anext(second))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done(), "no room: the second waits, holding nothing"

        with pytest.raises(StopAsyncIteration):
            await anext(first)  # gRPC sent it and asks for more: the room is returned
        assert (await waiting)[0] is big
        assert budget.used == len(big)
        with pytest.raises(StopAsyncIteration):
            await anext(second)
    assert budget.used == 0


async def test_a_send_budget_waiter_that_is_cancelled_gives_its_turn_to_the_next() -> None:
    budget = SendBudget(10)
    await budget.acquire(10)
    cancelled = asyncio.ensure_future(budget.acquire(10))
    after = asyncio.ensure_future(budget.acquire(5))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not cancelled.done() and not after.done(), "first come, first served"
    cancelled.cancel()
    budget.release(10)
    async with asyncio.timeout(STEP):
        await after
    assert cancelled.cancelled() and budget.used == 5
