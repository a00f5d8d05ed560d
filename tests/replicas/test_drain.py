"""SIGTERM drains a replica: it stops claiming, and hands over what did not end in the grace
period to the other replicas."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.replicas.cluster import LEASE_TTL, Cluster, cluster
from tests.replicas.test_cancellation import running_on_a
from tests.replicas.test_failover import WITHIN, ended, never_overlap, texts, user
from tests.support import eventually
from turnstile import UnavailableError

pytestmark = pytest.mark.timeout(60)


async def stream_flags(group: Cluster, run_id: str) -> str:
    """The flag of the last entry of the run's Redis stream (`end` for its end)."""
    client: Any = aioredis.Redis.from_url(group.redis)
    try:
        entries = await client.xrange(f"{group.redis_prefix}run:{run_id}")
    finally:
        await client.aclose()
    assert entries, f"run {run_id}: nothing in its Redis stream"
    return str(entries[-1][1].get(b"e", b"").decode())


async def test_sigterm_hands_a_run_over_that_does_not_end_within_the_grace_period(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, ("a", "b"), "--shutdown-grace-seconds", "0.5") as group:
        a, b = group["a"].client(), group["b"].client()
        thread_id, run_id = await running_on_a(group, a, ["a", "b"])
        await a.close()
        group["a"].signal(signal.SIGTERM)
        async with asyncio.timeout(WITHIN):
            assert await group["a"].process.wait() == 0
        assert group["a"].said("signal received, shutting down")
        group.gate("b")
        final = await ended(b, thread_id, run_id)
        attempts = await group.attempts(run_id)
        assert final["status"] == "success"
        assert [r["owner"] for r in attempts] == [group["a"].incarnation, group["b"].incarnation]
        never_overlap(attempts)
        # a ended its lease as it left (b took the run at its next beat), rather than leaving
        # it to expire a TTL after its last renewal.
        [lease] = await group.query(
            "SELECT expires_at - renew_time AS left FROM replicas WHERE incarnation = $1",
            group["a"].incarnation,
        )
        assert lease["left"].total_seconds() < LEASE_TTL, lease
        assert await texts(b, thread_id) == [
            ("human", "one"),
            ("ai", "passed a"),
            ("ai", "passed b"),
        ]
        # A drained replica claims nothing: the thread's next run runs on b.
        group.gate("c")
        more = await b.runs.create(
            thread_id, "file_gated", input=user("two", "c"), config=group.config
        )
        assert (await ended(b, thread_id, more["run_id"]))["status"] == "success"
        await b.close()


async def test_sigterm_reports_not_serving_refuses_and_claims_nothing_while_its_run_finishes(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, ("a", "b"), "--shutdown-grace-seconds", "30") as group:
        a, b = group["a"].client(), group["b"].client()
        channel = grpc.aio.insecure_channel(group["a"].address)
        try:
            thread_id, run_id = await running_on_a(group, a, ["a", "b"])
            # Queued on a behind a's run: a would start it in the same write as that run's
            # end, but a draining replica starts nothing; b claims it.
            group.gate("c")
            queued = await a.runs.create(
                thread_id,
                "file_gated",
                input=user("two", "c"),
                config=group.config,
                multitask_strategy="enqueue",
            )
            group["a"].signal(signal.SIGTERM)

            async def not_serving() -> None:
                health = health_pb2_grpc.HealthStub(channel)
                reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING

            await eventually(not_serving, within=WITHIN)
            other = (await b.threads.create())["thread_id"]
            with pytest.raises(UnavailableError) as refused:
                await a.runs.create(other, "file_gated", input=user("x"), config=group.config)
            assert refused.value.reason == "SHUTTING_DOWN"
            assert not group["a"].process.returncode
            group.gate("b")
            async with asyncio.timeout(WITHIN):
                assert await group["a"].process.wait() == 0
            first = await ended(b, thread_id, run_id)
            second = await ended(b, thread_id, queued["run_id"])
            # The run ended on a while it drained: its `end` reached Redis before a gave up
            # its lease (after that, b's takeover fence refuses a's publishes), so subscribers
            # on b see the end, not STREAM_EXPIRED.
            assert await stream_flags(group, run_id) == "end"
            assert (first["status"], first["attempt"]) == ("success", 1)
            assert second["status"] == "success"
            assert [r["owner"] for r in await group.attempts(run_id)] == [group["a"].incarnation]
            assert [r["owner"] for r in await group.attempts(queued["run_id"])] == [
                group["b"].incarnation
            ]
            never_overlap([*await group.attempts(run_id), *await group.attempts(queued["run_id"])])
        finally:
            await channel.close()
            await a.close()
            await b.close()
