"""WatchThread's `seq` across replicas: with Redis, every replica's watch log of a thread is
numbered and fed by the thread's Redis stream (ids `<incarnation>-<n>` that Redis numbers in
the publish script), so a watch opened on one replica resumes exactly on another: the events
after `after_seq`, no gap and no duplicate, then live. What Redis no longer holds (trimmed,
the stream expired, a new incarnation) is STREAM_EXPIRED, never skipped."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from tests.replicas.cluster import Cluster, cluster
from tests.replicas.test_failover import WITHIN, ended, user
from tests.rpc import Stubs, error_info
from turnstile.v1 import thread_service_pb2

pytestmark = pytest.mark.timeout(90)

Seen = list[tuple[int, str, str]]
"""(watch seq, kind, the run event's run id and seq or the run's id) of each event."""


class Watch:
    """One WatchThread call on a replica."""

    def __init__(self, group: Cluster, name: str, thread_id: str, after_seq: int = 0) -> None:
        self._channel = grpc.aio.insecure_channel(group[name].address)
        request = thread_service_pb2.WatchThreadRequest(thread_id=thread_id, after_seq=after_seq)
        self._call = Stubs(self._channel).threads.WatchThread(request)
        self.seen: Seen = []  # every event read, also by an `until` that failed

    async def opened(self) -> None:
        async with asyncio.timeout(WITHIN):
            await self._call.read()  # the thread

    async def until(self, kind: str, times: int = 1) -> Seen:
        """Each event, up to the `times`-th of `kind`."""
        seen: Seen = []
        async with asyncio.timeout(WITHIN):
            while sum(1 for _, k, _ in seen if k == kind) < times:
                response = await self._call.read()
                for e in response.events:
                    kind_of = str(e.WhichOneof("kind"))
                    if kind_of == "run_event":
                        what = f"{e.run_event.run_id}:{e.run_event.seq}"
                    elif kind_of == "run_started":
                        what = e.run_started.run_id
                    else:
                        what = e.run_ended.run_id
                    seen.append((e.seq, kind_of, what))
                    self.seen.append((e.seq, kind_of, what))
        return seen

    async def close(self) -> None:
        self._call.cancel()
        await self._channel.close()


async def watched(
    group: Cluster, name: str, thread_id: str, after_seq: int, kind: str, times: int = 1
) -> Seen:
    watch = Watch(group, name, thread_id, after_seq)
    try:
        await watch.opened()
        return await watch.until(kind, times)
    finally:
        await watch.close()


async def expired(group: Cluster, name: str, thread_id: str, after_seq: int) -> str:
    """The message of the STREAM_EXPIRED a watch from `after_seq` answers."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watched(group, name, thread_id, after_seq, "run_ended")
    error = error_info(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.OUT_OF_RANGE, "STREAM_EXPIRED")
    return error.message


async def runs_on_a_and_b(group: Cluster, thread_id: str, watch: Watch) -> Seen:
    """One run executing on a, then one on b; what `watch` saw of both."""
    a, b = group["a"].client(), group["b"].client()
    try:
        group.gate("x")
        first = await a.runs.create(
            thread_id, "file_gated", input=user("hi", "x"), config=group.config
        )
        seen = await watch.until("run_ended")
        assert (await ended(a, thread_id, first["run_id"]))["status"] == "success"
        group.gate("y")
        second = await b.runs.create(
            thread_id, "file_gated", input=user("again", "y"), config=group.config
        )
        seen += await watch.until("run_ended")
        assert (await ended(b, thread_id, second["run_id"]))["status"] == "success"
        owners = [row["owner"] for row in await group.attempts(second["run_id"])]
        assert owners == [group["b"].incarnation]
        assert [row["owner"] for row in await group.attempts(first["run_id"])] == [
            group["a"].incarnation
        ]
    finally:
        await a.close()
        await b.close()
    return seen


async def watched_on_a(group: Cluster) -> tuple[str, Seen]:
    """A new thread, and what a watch opened on a saw of a run on a and then one on b."""
    a = group["a"].client()
    thread_id = (await a.threads.create())["thread_id"]
    await a.close()
    watch = Watch(group, "a", thread_id)
    try:
        await watch.opened()
        return thread_id, await runs_on_a_and_b(group, thread_id, watch)
    finally:
        await watch.close()


async def test_a_watch_opened_on_a_resumes_exactly_on_b(tmp_path: Path) -> None:
    async with cluster(tmp_path) as group:
        thread_id, on_a = await watched_on_a(group)
        kinds = [kind for _, kind, _ in on_a]
        assert kinds[0] == "run_started" and kinds.count("run_ended") == 2
        seqs = [seq for seq, _, _ in on_a]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        # Resumed on b after every cut point, and on a: exactly the tail.
        for index in range(len(on_a) - 1):
            for name in ("b", "a"):
                tail = on_a[index + 1 :]
                times = sum(1 for _, kind, _ in tail if kind == "run_ended")
                got = await watched(group, name, thread_id, on_a[index][0], "run_ended", times)
                assert got == tail, (name, index)
        # From its first event's seq minus one too (everything), then live: a run on b.
        resumed = Watch(group, "b", thread_id, seqs[0] - 1)
        try:
            await resumed.opened()
            assert await resumed.until("run_ended", 2) == on_a
            group.gate("z")
            b = group["b"].client()
            third = await b.runs.create(
                thread_id, "file_gated", input=user("more", "z"), config=group.config
            )
            live = await resumed.until("run_ended")
            assert live[0][0] == seqs[-1] + 1 and live[-1][2] == third["run_id"]
            await b.close()
        finally:
            await resumed.close()


async def test_a_watch_resumed_past_what_redis_keeps_is_stream_expired(tmp_path: Path) -> None:
    async with cluster(tmp_path) as group:
        thread_id, on_a = await watched_on_a(group)
        client: Any = aioredis.Redis.from_url(group.redis)
        key = f"{group.redis_prefix}thread:{thread_id}"
        try:
            await client.xtrim(key, maxlen=2, approximate=False)
            # b has no log of the thread yet: it reads what is before its log from Redis.
            assert await watched(group, "b", thread_id, on_a[-3][0], "run_ended") == on_a[-2:]
            for after in (on_a[0][0], on_a[-4][0]):
                assert "trimmed from Redis" in await expired(group, "b", thread_id, after)
            await client.delete(key)  # its TTL ran out
            assert "no longer retained" in await expired(group, "b", thread_id, on_a[-3][0])
            # A new run starts the stream again, under a new incarnation.
            group.gate("z")
            b = group["b"].client()
            third = await b.runs.create(
                thread_id, "file_gated", input=user("more", "z"), config=group.config
            )
            assert (await ended(b, thread_id, third["run_id"]))["status"] == "success"
            await b.close()
            for name in ("a", "b"):
                message = await expired(group, name, thread_id, on_a[-1][0])
                assert "expired, or Redis restarted" in message, message
        finally:
            await client.aclose()
