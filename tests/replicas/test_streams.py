"""Streams from any replica (issue 22 point 5): a run's events, read on a replica the run does
not execute on, come through Redis exactly: our `seq`, exact resume, the final `end`; a gap
is STREAM_EXPIRED, and Redis down is UNAVAILABLE while the run goes on."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf import json_format

from tests import redis as test_redis
from tests.event_logs import run_record
from tests.replicas.cluster import Cluster, cluster
from tests.replicas.test_failover import WITHIN, ended, user
from tests.rpc import Stubs, error_info, struct
from tests.support import eventually
from turnstile.v1 import run_service_pb2, thread_service_pb2
from turnstile_server.api.event_frames import EventFrames
from turnstile_server.event_log import StreamLimits
from turnstile_server.relay import Relay
from turnstile_server.relay.fence import Entry

pytestmark = pytest.mark.timeout(60)

Event = tuple[int, str, Any]


@asynccontextmanager
async def stubs(address: str) -> AsyncIterator[Stubs]:
    async with grpc.aio.insecure_channel(address) as channel:
        yield Stubs(channel)


def events_of(response: Any) -> list[Event]:
    return [
        (e.seq, e.event, json_format.MessageToDict(e.data) if e.HasField("data") else None)
        for e in response.events
    ]


async def joined(address: str, thread_id: str, run_id: str, after_seq: int = 0) -> list[Event]:
    """JoinRunStream on `address`, to its end."""
    async with stubs(address) as s:
        request = run_service_pb2.JoinRunStreamRequest(
            thread_id=thread_id, run_id=run_id, after_seq=after_seq
        )
        out: list[Event] = []
        async for response in s.runs.JoinRunStream(request):
            out += events_of(response)
        return out


async def finished_on_a(group: Cluster) -> tuple[str, str]:
    """A run created on and executed by replica a, ended."""
    a = group["a"].client()
    thread_id = (await a.threads.create())["thread_id"]
    group.gate("x")
    group.gate("y")
    run = await a.runs.create(
        thread_id, "file_gated", input=user("hi", "x", "y"), config=group.config
    )
    assert (await ended(a, thread_id, run["run_id"]))["status"] == "success"
    attempts = await group.attempts(run["run_id"])
    assert [row["owner"] for row in attempts] == [group["a"].incarnation]
    await a.close()
    return thread_id, run["run_id"]


async def test_join_run_stream_on_b_is_exactly_a_s_stream_and_its_every_tail(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as group:
        thread_id, run_id = await finished_on_a(group)
        on_a = await joined(group["a"].address, thread_id, run_id)
        assert on_a[-1][1] == "end" and on_a[0][1] == "metadata"
        on_b = await joined(group["b"].address, thread_id, run_id)
        assert on_b == on_a
        for k in range(1, len(on_a) + 1):
            assert await joined(group["b"].address, thread_id, run_id, on_a[k - 1][0]) == on_a[k:]


async def test_join_on_b_of_a_run_executing_on_a_follows_it_live_to_its_end(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as group:
        a = group["a"].client()
        thread_id = (await a.threads.create())["thread_id"]
        group.gate("x")
        run = await a.runs.create(
            thread_id, "file_gated", input=user("hi", "x", "y"), config=group.config
        )
        run_id = run["run_id"]

        async def at_y() -> None:
            assert group.arrived("y")

        await eventually(at_y, within=WITHIN)
        seen: list[Event] = []
        async with stubs(group["b"].address) as s:
            request = run_service_pb2.JoinRunStreamRequest(thread_id=thread_id, run_id=run_id)
            call = s.runs.JoinRunStream(request)
            async for response in call:
                seen += events_of(response)
                if any(kind == "values" for _, kind, _ in seen):  # under way: let it go on
                    group.gate("y")
        assert seen[-1][1] == "end" and seen[-1][2]["status"] == "success"
        assert seen == await joined(group["a"].address, thread_id, run_id)
        await a.close()


async def test_stream_run_on_b_of_a_run_a_executes(tmp_path: Path) -> None:
    async with cluster(tmp_path, ("a",)) as group:
        await group.start("b", "--max-running", "1")
        b = group["b"].client()
        # b's one slot is taken, so the run b admits next is claimed by a.
        busy = (await b.threads.create())["thread_id"]
        await b.runs.create(busy, "file_gated", input=user("hold", "never"), config=group.config)
        thread_id = (await b.threads.create())["thread_id"]
        group.gate("x")
        async with stubs(group["b"].address) as s:
            request = run_service_pb2.StreamRunRequest(
                thread_id=thread_id,
                assistant_id="file_gated",
                config=struct(group.config),
                input=struct(user("hi", "x")),
            )
            responses = [response async for response in s.runs.StreamRun(request)]
        run_id = responses[0].run.run_id
        events = [event for response in responses for event in events_of(response)]
        assert events[0][1] == "metadata"
        assert events[-1][1] == "end" and events[-1][2]["status"] == "success"
        assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
        attempts = await group.attempts(run_id)
        assert [row["owner"] for row in attempts] == [group["a"].incarnation]
        await b.close()


async def test_watch_thread_on_b_sees_a_run_executing_on_a(tmp_path: Path) -> None:
    async with cluster(tmp_path) as group:
        a = group["a"].client()
        thread_id = (await a.threads.create())["thread_id"]
        kinds: list[str] = []
        async with stubs(group["b"].address) as s:
            call = s.threads.WatchThread(thread_service_pb2.WatchThreadRequest(thread_id=thread_id))
            first = await call.read()
            assert first.thread.thread_id == thread_id
            group.gate("x")
            run = await a.runs.create(
                thread_id, "file_gated", input=user("hi", "x"), config=group.config
            )
            seqs: list[int] = []
            while "run_ended" not in kinds:
                response = await call.read()
                for event in response.events:
                    kind = event.WhichOneof("kind")
                    assert kind is not None
                    kinds.append(kind)
                    seqs.append(event.seq)
                    if kind == "run_ended":
                        assert event.run_ended.run_id == run["run_id"]
            call.cancel()
        assert kinds[0] == "run_started" and kinds[-1] == "run_ended"
        assert "run_event" in kinds
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        await a.close()


async def test_a_run_s_events_trimmed_from_redis_are_stream_expired_on_b(tmp_path: Path) -> None:
    async with cluster(tmp_path) as group:
        thread_id, run_id = await finished_on_a(group)
        on_a = await joined(group["a"].address, thread_id, run_id)
        client: Any = aioredis.Redis.from_url(group.redis)
        key = f"{group.redis_prefix}run:{run_id}"
        try:
            await client.xtrim(key, maxlen=2, approximate=False)
            assert await joined(group["b"].address, thread_id, run_id, on_a[-3][0]) == on_a[-2:]
            for after in (0, on_a[0][0]):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await joined(group["b"].address, thread_id, run_id, after)
                error = error_info(caught.value)
                assert (error.code, error.reason) == (
                    grpc.StatusCode.OUT_OF_RANGE,
                    "STREAM_EXPIRED",
                )
            await client.delete(key)  # its TTL ran out
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await joined(group["b"].address, thread_id, run_id)
            assert error_info(caught.value).reason == "STREAM_EXPIRED"
        finally:
            await client.aclose()
        # a, which executed it, still has it in memory.
        assert await joined(group["a"].address, thread_id, run_id) == on_a


async def test_redis_stopped_mid_run_streams_answer_unavailable_and_the_run_finishes(
    tmp_path: Path,
) -> None:
    async with (
        test_redis.own_server(tmp_path) as (redis_url, process),
        cluster(tmp_path, ()) as group,
    ):
        await group.start("a", redis=redis_url)
        await group.start("b", redis=redis_url)
        a = group["a"].client()
        thread_id = (await a.threads.create())["thread_id"]
        group.gate("x")
        run = await a.runs.create(
            thread_id, "file_gated", input=user("hi", "x", "y"), config=group.config
        )
        run_id = run["run_id"]

        async def at_y() -> None:
            assert group.arrived("y")

        await eventually(at_y, within=WITHIN)
        async with stubs(group["b"].address) as s:
            request = run_service_pb2.JoinRunStreamRequest(thread_id=thread_id, run_id=run_id)
            call = s.runs.JoinRunStream(request)
            seen: list[Event] = []
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for response in call:
                    seen += events_of(response)
                    if seen and process.returncode is None:
                        process.kill()
                        await process.wait()
            error = error_info(caught.value)
            assert (error.code, error.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "EVENTS_UNAVAILABLE",
            )
            assert "Traceback" not in error.message
        group.gate("y")
        assert (await ended(a, thread_id, run_id))["status"] == "success"
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await joined(group["b"].address, thread_id, run_id)
        assert error_info(again.value).reason == "EVENTS_UNAVAILABLE"
        # a executed it: its own stream is whole.
        on_a = await joined(group["a"].address, thread_id, run_id)
        assert on_a[-1][1] == "end"
        await a.close()


async def test_a_replica_paused_past_its_lease_publishes_nothing_after_the_takeover(
    tmp_path: Path,
) -> None:
    """a executes a run and is paused (SIGSTOP) past its lease; b's sweeper takes the run
    over (epoch + 1) but has no free slot, so no new attempt starts and publishes. What a's
    attempt publishes from then on (done here by hand at its epoch, as a woken a would) is
    refused; a, resumed, publishes nothing stale either."""
    async with cluster(tmp_path, ("a",)) as group:
        await group.start("b", "--max-running", "1")
        a, b = group["a"].client(), group["b"].client()
        busy = (await b.threads.create())["thread_id"]
        await b.runs.create(busy, "file_gated", input=user("hold", "never"), config=group.config)
        thread_id = (await a.threads.create())["thread_id"]
        group.gate("x")
        run = await a.runs.create(
            thread_id, "file_gated", input=user("hi", "x", "y"), config=group.config
        )
        run_id = run["run_id"]

        async def at_y() -> None:
            assert group.arrived("y")

        await eventually(at_y, within=WITHIN)
        client: Any = aioredis.Redis.from_url(group.redis)
        key = f"{group.redis_prefix}run:{run_id}"
        try:

            async def published_so_far() -> list[Any]:
                entries = await client.xrange(key)
                assert entries and entries[-1][1][b"e"] == b"", entries  # values of x, not end
                assert len(entries) >= 2, entries
                return list(entries)

            before = await eventually(published_so_far, within=WITHIN)
            (row,) = await group.query("SELECT epoch FROM runs WHERE run_id = $1", run_id)
            old_epoch = row["epoch"]
            group["a"].signal(signal.SIGSTOP)

            async def taken_over() -> None:
                (now,) = await group.query(
                    "SELECT epoch, status FROM runs WHERE run_id = $1", run_id
                )
                assert (now["status"], now["epoch"]) == ("pending", old_epoch + 1), now
                fence = await client.get(f"{group.redis_prefix}fence:{run_id}")
                assert fence is not None and int(fence) == old_epoch + 1, fence

            await eventually(taken_over, within=WITHIN, interval=0.05)
            # What a's attempt would publish on waking: its next event, at its own epoch.
            stale = Relay(group.redis, group.redis_prefix, EventFrames(), StreamLimits())
            try:
                last = int(before[-1][0].split(b"-")[1])
                frame = EventFrames().run_event(last + 1, run_id, "values", {}, state=False)
                record = replace(
                    run_record(run_id, thread_id), epoch=old_epoch
                )  # the attempt's own view of its run
                refused = await stale.publish(record, old_epoch, [Entry(last + 1, "", frame)])
            finally:
                await stale.close()
            assert refused.stale and refused.added == 0
            assert list(await client.xrange(key)) == before
            group["a"].signal(signal.SIGCONT)
            group.gate("y")
            final = await ended(b, thread_id, run_id)
            assert final["status"] == "success"

            async def published_to_the_end() -> list[Any]:
                entries = list(await client.xrange(key))
                assert entries[-1][1][b"e"] == b"end", entries[-1]  # published after the row
                return entries

            after = await eventually(published_to_the_end, within=WITHIN)
        finally:
            await client.aclose()
        # The first attempt's entries are the ones it published before the pause; what follows
        # is the next attempt's (a's new incarnation, or b's), from its metadata to its end.
        assert after[: len(before)] == before
        (resumed,) = run_service_pb2.JoinRunStreamResponse.FromString(
            after[len(before)][1][b"f"]
        ).events
        assert resumed.event == "metadata"
        assert json_format.MessageToDict(resumed.data)["attempt"] == 2
        await a.close()
        await b.close()


async def test_watch_thread_opened_on_b_mid_run_starts_with_the_run_under_way_on_a(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as group:
        a = group["a"].client()
        thread_id = (await a.threads.create())["thread_id"]
        group.gate("x")
        run = await a.runs.create(
            thread_id, "file_gated", input=user("hi", "x", "y"), config=group.config
        )

        async def at_y() -> None:
            assert group.arrived("y")

        await eventually(at_y, within=WITHIN)
        kinds: list[str] = []
        run_seqs: list[int] = []
        async with stubs(group["b"].address) as s:
            call = s.threads.WatchThread(thread_service_pb2.WatchThreadRequest(thread_id=thread_id))
            assert (await call.read()).thread.thread_id == thread_id
            group.gate("y")  # the watch is open, seeded with what a published so far
            while "run_ended" not in kinds:
                response = await call.read()
                for event in response.events:
                    kind = event.WhichOneof("kind")
                    assert kind is not None
                    kinds.append(kind)
                    if kind == "run_event":
                        run_seqs.append(event.run_event.seq)
            call.cancel()
        assert kinds[0] == "run_started" and kinds[-1] == "run_ended"
        # Its events from the first (metadata, sent before the watch began) to its end.
        on_a = await joined(group["a"].address, thread_id, run["run_id"])
        assert run_seqs == [seq for seq, _, _ in on_a]
        await a.close()
