"""ThreadService.WatchThread end to end: run lifecycles and events in order, resumable, seeded
mid-run, ended by deleting the thread, expired when idle."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format

from tests import support
from tests.rpc import ErrorDetails, Stubs, error_info, random_id
from tests.streams import (
    ALL_MODES,
    STEP_TIMEOUT,
    Event,
    RunStream,
    agent_stream,
    arrived,
    assert_well_formed,
    create_run,
    failure,
    has_event,
    new_thread,
    read_all,
    serving,
    stream_run,
)
from turnstile.v1 import run_pb2, thread_pb2, thread_service_pb2

# WatchThread.


def watch(stubs: Stubs, thread_id: str, after_seq: int = 0) -> Any:
    return stubs.threads.WatchThread(
        thread_service_pb2.WatchThreadRequest(thread_id=thread_id, after_seq=after_seq)
    )


@dataclass
class Watch:
    """A WatchThread call read message by message (it never ends by itself)."""

    call: Any
    thread: thread_pb2.Thread = field(default_factory=thread_pb2.Thread)
    events: list[thread_service_pb2.ThreadEvent] = field(default_factory=list)

    async def opened(self) -> thread_pb2.Thread:
        async with asyncio.timeout(STEP_TIMEOUT):
            first = await self.call.read()
        assert first is not grpc.aio.EOF
        assert first.HasField("thread") and not first.events
        self.thread = first.thread
        return self.thread

    async def _next(self) -> bool:
        async with asyncio.timeout(STEP_TIMEOUT):
            message = await self.call.read()
        if message is grpc.aio.EOF:
            return False
        assert not message.HasField("thread") and message.events
        self.events.extend(message.events)
        return True

    async def until_ended(self, run_id: str) -> list[thread_service_pb2.ThreadEvent]:
        """Reads until the run's `run_ended`."""
        while not any(e.run_ended.run_id == run_id for e in self.events):
            assert await self._next(), "the watch ended early"
        return self.events

    async def until_count(self, number: int) -> list[thread_service_pb2.ThreadEvent]:
        while len(self.events) < number:
            assert await self._next(), "the watch ended early"
        return self.events

    async def until_seq(self, seq: int) -> list[thread_service_pb2.ThreadEvent]:
        while not self.events or self.events[-1].seq < seq:
            assert await self._next(), "the watch ended early"
        return self.events

    async def to_end(self) -> list[thread_service_pb2.ThreadEvent]:
        while await self._next():
            pass
        return self.events


def describe(events: list[thread_service_pb2.ThreadEvent]) -> list[tuple[str, str, Any]]:
    """(kind, run id, run status or run event name) of each thread event."""
    out: list[tuple[str, str, Any]] = []
    for event in events:
        if event.HasField("run_started"):
            out.append(("run_started", event.run_started.run_id, event.run_started.status))
        elif event.HasField("run_ended"):
            out.append(("run_ended", event.run_ended.run_id, event.run_ended.status))
        else:
            out.append(("run_event", event.run_event.run_id, event.run_event.event))
    return out


def run_events_in(events: list[thread_service_pb2.ThreadEvent], run_id: str) -> list[Event]:
    return [
        (e.run_event.seq, e.run_event.event, json_format.MessageToDict(e.run_event.data))
        for e in events
        if e.HasField("run_event") and e.run_event.run_id == run_id
    ]


def assert_consecutive(events: list[thread_service_pb2.ThreadEvent]) -> None:
    first = events[0].seq
    assert [e.seq for e in events] == list(range(first, first + len(events)))


async def test_watch_sends_the_thread_at_once_then_a_run_start_its_events_and_its_end(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)
    watcher = Watch(watch(stubs, thread_id))

    thread = await watcher.opened()
    assert thread.thread_id == thread_id
    assert thread.status == thread_pb2.THREAD_STATUS_IDLE
    run, run_events = await read_all(agent_stream(stubs, thread_id))
    events = await watcher.until_ended(run.run_id)

    assert_consecutive(events)
    assert describe(events)[0] == ("run_started", run.run_id, run_pb2.RUN_STATUS_RUNNING)
    assert describe(events)[-1] == ("run_ended", run.run_id, run_pb2.RUN_STATUS_SUCCESS)
    assert [kind for kind, _, _ in describe(events[1:-1])] == ["run_event"] * len(run_events)
    assert run_events_in(events, run.run_id) == run_events
    watcher.call.cancel()


async def test_watch_resumed_after_every_seq_gives_exactly_the_rest(stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)
    watcher = Watch(watch(stubs, thread_id))
    await watcher.opened()
    run, _ = await read_all(stream_run(stubs, thread_id, "burst", {"chunks": 3}))
    events = await watcher.until_ended(run.run_id)
    watcher.call.cancel()
    first, last = events[0].seq, events[-1].seq

    for cut in range(first - 1, last):
        resumed = Watch(watch(stubs, thread_id, after_seq=cut))
        await resumed.opened()
        rest = await resumed.until_seq(last)
        resumed.call.cancel()
        assert rest == events[cut - first + 1 :], f"after_seq={cut}"
    from_oldest = Watch(watch(stubs, thread_id, after_seq=0))
    await from_oldest.opened()
    assert await from_oldest.until_seq(last) == events, "after_seq=0: from the oldest retained"
    from_oldest.call.cancel()
    at_last = Watch(watch(stubs, thread_id, after_seq=last))
    await at_last.opened()
    second, _ = await read_all(stream_run(stubs, thread_id, "burst", {"chunks": 1}))
    after = await at_last.until_ended(second.run_id)
    at_last.call.cancel()
    assert after[0].seq == last + 1
    assert describe(after)[0][:2] == ("run_started", second.run_id)


async def test_a_watch_opened_mid_run_starts_with_the_run_started_and_its_events_so_far(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)
    stream = RunStream(
        stream_run(stubs, thread_id, "chatty", {"gates": ["g1", "g2"]}, stream_mode=ALL_MODES)
    )
    run = await stream.opened()
    await arrived("g1")
    so_far = list(await stream.until(has_event("messages", 3)))  # all it emits before g1

    watcher = Watch(watch(stubs, thread_id))
    thread = await watcher.opened()
    assert thread.status == thread_pb2.THREAD_STATUS_BUSY
    seeded = list(await watcher.until_count(1 + len(so_far)))
    assert describe(seeded)[0] == ("run_started", run.run_id, run_pb2.RUN_STATUS_RUNNING)
    assert run_events_in(seeded, run.run_id) == so_far
    support.GATES.open("g1")
    await arrived("g2")
    support.GATES.open("g2")
    everything = await stream.to_end()
    events = await watcher.until_ended(run.run_id)
    watcher.call.cancel()

    assert_consecutive(events)
    assert run_events_in(events, run.run_id) == everything
    assert describe(events)[-1] == ("run_ended", run.run_id, run_pb2.RUN_STATUS_SUCCESS)


async def test_a_watch_shows_enqueued_runs_one_after_the_other(stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)
    watcher = Watch(watch(stubs, thread_id))
    await watcher.opened()
    first = await create_run(stubs, thread_id, "gated", {"gates": ["first"]})
    second = await create_run(
        stubs, thread_id, "echo", {}, multitask_strategy=run_pb2.MULTITASK_STRATEGY_ENQUEUE
    )
    await arrived("first")
    support.GATES.open("first")

    events = await watcher.until_ended(second.run_id)
    watcher.call.cancel()

    assert_consecutive(events)
    order = [(kind, run_id) for kind, run_id, _ in describe(events) if kind != "run_event"]
    assert order == [
        ("run_started", first.run_id),
        ("run_ended", first.run_id),
        ("run_started", second.run_id),
        ("run_ended", second.run_id),
    ]
    started_second = next(i for i, e in enumerate(events) if e.run_started.run_id == second.run_id)
    assert {e.run_event.run_id for e in events[:started_second] if e.HasField("run_event")} == {
        first.run_id
    }
    for run in (first, second):
        seqs = [seq for seq, _, _ in run_events_in(events, run.run_id)]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_deleting_the_thread_ends_its_watch_and_its_runs_streams(stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)
    running = RunStream(stream_run(stubs, thread_id, "gated", {"gates": ["held"]}))
    run = await running.opened()
    await arrived("held")
    watcher = Watch(watch(stubs, thread_id))
    await watcher.opened()

    await stubs.threads.DeleteThread(thread_service_pb2.DeleteThreadRequest(thread_id=thread_id))

    events = await watcher.to_end()  # completes OK: no error
    run_events = await running.to_end()
    assert describe(events)[-1] == ("run_ended", run.run_id, run_pb2.RUN_STATUS_INTERRUPTED)
    assert_well_formed(run_events)
    assert run_events[-1][2]["status"] == "interrupted"
    assert run_events[-1][2]["action"] == "delete"


async def test_watching_an_unknown_thread_is_not_found(stubs: Stubs) -> None:
    thread_id = random_id()

    error = await failure(lambda: Watch(watch(stubs, thread_id)).opened())

    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "THREAD_NOT_FOUND")


async def test_watching_with_a_negative_after_seq_is_invalid_argument(stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)

    error = await failure(lambda: Watch(watch(stubs, thread_id, after_seq=-1)).opened())

    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NUMBER")


async def test_an_idle_thread_watch_log_expires_and_an_old_position_is_out_of_range(
    database: str,
) -> None:
    async with serving(database, stream_retain_seconds=0.2) as (_, stubs):
        thread_id = await new_thread(stubs)
        watcher = Watch(watch(stubs, thread_id))
        await watcher.opened()
        run, _ = await read_all(stream_run(stubs, thread_id, "burst", {"chunks": 1}))
        events = await watcher.until_ended(run.run_id)
        watcher.call.cancel()
        last = events[-1].seq

        async def expired() -> ErrorDetails:
            # A watch keeps the log while it is open and restarts its idle timer when it
            # leaves: close at once, and look again only after more than retain_seconds.
            call = watch(stubs, thread_id, after_seq=last)
            try:
                await Watch(call).opened()
            except grpc.aio.AioRpcError as error:
                return error_info(error)
            finally:
                call.cancel()
            raise AssertionError("still retained")

        error = await support.eventually(expired, interval=0.5)
        assert (error.code, error.reason) == (grpc.StatusCode.OUT_OF_RANGE, "STREAM_EXPIRED")
        assert int(error.metadata["first_seq"]) > last, "a new log, in a new epoch"
