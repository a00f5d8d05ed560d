"""The tail of an attempt its replica never relayed (Redis refusing its publishes, then the
replica killed): a subscriber on another replica gets STREAM_EXPIRED, never a silent gap and
never a hang. Redis restarted (empty) under live streams on another replica: they end with a
clean error, the run finishes, and a stream reopened afterwards resumes exactly or is
STREAM_EXPIRED.

Redis is a server of the test's own whose scripts are forbidden (`ACL SETUSER default
-@scripting`): every fenced publish fails at once, so nothing of the tail is left queued in a
socket to land later (as it would be behind a paused server).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from tests import redis as test_redis
from tests.replicas.cluster import Cluster, cluster
from tests.replicas.test_failover import WITHIN, ended, taken_over, user
from tests.replicas.test_handover_streams import following
from tests.replicas.test_streams import Event, joined
from tests.replicas.test_watch import Watch
from tests.rpc import error_info
from tests.support import eventually

pytestmark = pytest.mark.timeout(90)


@asynccontextmanager
async def two_replicas(tmp_path: Path) -> AsyncIterator[tuple[Cluster, Any]]:
    """Replicas a and b on a Redis of the test's own; yields them and a client of it."""
    async with (
        test_redis.own_server(tmp_path) as (redis_url, _),
        cluster(tmp_path, ()) as group,
    ):
        group.redis = redis_url  # for every replica the test starts
        await group.start("a")
        await group.start("b")
        client: Any = aioredis.Redis.from_url(redis_url)
        try:
            yield group, client
        finally:
            await client.aclose()


async def published(group: Cluster, client: Any, run_id: str) -> list[int]:
    """The seqs of the run's stream in Redis."""
    entries = await client.xrange(f"{group.redis_prefix}run:{run_id}")
    return [int(raw_id.split(b"-")[1]) for raw_id, _ in entries]


async def at_gate(group: Cluster, gate: str) -> None:
    async def arrived() -> None:
        assert group.arrived(gate)

    await eventually(arrived, within=WITHIN)


async def expired(group: Cluster, name: str, thread_id: str, run_id: str, after: int) -> str:
    """JoinRunStream on replica `name` after seq `after`: it must end STREAM_EXPIRED."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(WITHIN):
            await joined(group[name].address, thread_id, run_id, after)
    error = error_info(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.OUT_OF_RANGE, "STREAM_EXPIRED")
    assert "Traceback" not in error.message
    return error.message


async def test_a_run_whose_replica_died_before_relaying_its_end_is_stream_expired_elsewhere(
    tmp_path: Path,
) -> None:
    async with two_replicas(tmp_path) as (group, client):
        a, b = group["a"].client(), group["b"].client()
        thread_id = (await a.threads.create())["thread_id"]
        group.gate("x")
        run = await a.runs.create(
            thread_id, "file_gated", input=user("hi", "x", "y"), config=group.config
        )
        run_id = run["run_id"]
        await at_gate(group, "y")
        await eventually(lambda: _some(published(group, client, run_id)), within=WITHIN)
        await client.execute_command("ACL", "SETUSER", "default", "-@scripting")
        before = await published(group, client, run_id)
        group.gate("y")
        assert (await ended(b, thread_id, run_id))["status"] == "success"
        group["a"].signal(signal.SIGKILL)
        await group["a"].process.wait()
        await client.execute_command("ACL", "SETUSER", "default", "+@all")
        assert await published(group, client, run_id) == before  # its tail died with a
        for after in (0, before[-1]):
            await expired(group, "b", thread_id, run_id, after)
        await b.close()


async def test_an_attempt_cut_off_before_relaying_its_tail_is_stream_expired_not_skipped(
    tmp_path: Path,
) -> None:
    async with two_replicas(tmp_path) as (group, client):
        a, b = group["a"].client(), group["b"].client()
        thread_id = (await a.threads.create())["thread_id"]
        group.gate("x")
        run = await a.runs.create(
            thread_id, "file_gated", input=user("hi", "x", "y", "z"), config=group.config
        )
        run_id = run["run_id"]
        await at_gate(group, "y")
        await eventually(lambda: _some(published(group, client, run_id)), within=WITHIN)
        await client.execute_command("ACL", "SETUSER", "default", "-@scripting")
        before = await published(group, client, run_id)
        group.gate("y")
        await at_gate(group, "z")  # "passed y" is emitted on a, and not relayed
        group["a"].signal(signal.SIGKILL)
        await group["a"].process.wait()
        await client.execute_command("ACL", "SETUSER", "default", "+@all")
        await taken_over(group, run_id, "b")
        group.gate("z")
        assert (await ended(b, thread_id, run_id))["status"] == "success"
        seqs = await published(group, client, run_id)
        assert seqs[: len(before)] == before
        resumed = seqs[len(before)]
        assert resumed == (1 << 32) + 1, seqs  # the second attempt's first event
        # From the middle of the first attempt: its tail is lost, not skipped over, on b (from
        # its own log) and on c, which reads the run's stream from Redis.
        await expired(group, "b", thread_id, run_id, before[-1])
        await group.start("c")
        message = await expired(group, "c", thread_id, run_id, before[-1])
        assert f"resume with after_seq={resumed - 1}" in message
        # From the second attempt's base: the second attempt, whole, to its end.
        events = await joined(group["c"].address, thread_id, run_id, resumed - 1)
        assert [seq for seq, _, _ in events] == seqs[len(before) :]
        assert events[-1][1] == "end"
        await b.close()


async def _some(seqs: Any) -> None:
    assert await seqs


def ended_cleanly(error: grpc.aio.AioRpcError | None, *reasons: str) -> str:
    """The reason of a stream's error, one of `reasons`, without a traceback."""
    assert error is not None
    info = error_info(error)
    assert info.reason in reasons, info
    assert "Traceback" not in info.message
    return info.reason


async def test_redis_restarted_under_streams_on_b_ends_them_cleanly_and_never_skips(
    tmp_path: Path,
) -> None:
    """A run on a; a JoinRunStream and a WatchThread on b follow it live. Redis stops: both
    end UNAVAILABLE (EVENTS_UNAVAILABLE) or STREAM_EXPIRED, with what they got before it a
    prefix of the run's events; the run goes on (one step while Redis is down) and, Redis
    restarted empty on the same port, ends. Reopened on b, the join after its last seq, or
    from 0, either goes on exactly or is STREAM_EXPIRED (never EVENTS_UNAVAILABLE once Redis
    answers again)."""
    unavailable = ("EVENTS_UNAVAILABLE", "STREAM_EXPIRED")
    async with (
        test_redis.own_server(tmp_path) as (redis_url, process),
        cluster(tmp_path, ()) as group,
    ):
        group.redis = redis_url
        await group.start("a")
        await group.start("b")
        a = group["a"].client()
        thread_id = (await a.threads.create())["thread_id"]
        watch = Watch(group, "b", thread_id)
        try:
            await watch.opened()
            group.gate("x")
            run = await a.runs.create(
                thread_id, "file_gated", input=user("hi", "x", "y", "z"), config=group.config
            )
            run_id = run["run_id"]
            await at_gate(group, "y")
            seen: list[Event] = []
            join = asyncio.create_task(following(group, thread_id, run_id, seen))

            async def under_way() -> None:
                assert any(kind == "values" for _, kind, _ in seen), seen

            await eventually(under_way, within=WITHIN)
            await watch.until("run_event")
            process.kill()
            await process.wait()
            async with asyncio.timeout(WITHIN):
                ended_cleanly(await join, *unavailable)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await watch.until("run_ended")
            ended_cleanly(caught.value, *unavailable)
        finally:
            await watch.close()
        group.gate("y")  # a step while Redis is down
        await at_gate(group, "z")
        port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        async with test_redis.own_server(tmp_path, port):
            group.gate("z")
            assert (await ended(a, thread_id, run_id))["status"] == "success"
            truth = await joined(group["a"].address, thread_id, run_id)  # a executed it
            assert truth[-1][1] == "end"
            assert seen == truth[: len(seen)]  # no gap before the error
            for k in (seen[-1][0], 0):
                again: list[Event] = []
                error = await following(group, thread_id, run_id, again, k)
                tail = [event for event in truth if event[0] > k]
                if error is None:
                    assert again == tail, k
                else:
                    assert ended_cleanly(error, "STREAM_EXPIRED") and again == tail[: len(again)]
            # What the watch got before its error: the thread's events in order, no gap.
            seqs = [seq for seq, _, _ in watch.seen]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), watch.seen
            assert watch.seen[0][1:] == ("run_started", run_id), watch.seen
            assert [what for _, _, what in watch.seen[1:]] == [
                f"{run_id}:{seq}" for seq, _, _ in truth[: len(watch.seen) - 1]
            ]
        await a.close()
