"""A subscriber on b following a run that a executes, when a stops (issue 22 points 5 and 6):
a drained a (SIGTERM, the grace period past) closes its attempt in the run's Redis stream
before it gives up its lease, so the subscriber goes on into the next attempt's events to the
run's `end`; a killed a (SIGKILL) closes nothing, and the subscriber gets STREAM_EXPIRED at the
attempt boundary, because the killed attempt's tail may never have been relayed."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest

from tests.replicas.cluster import Cluster, cluster
from tests.replicas.test_cancellation import running_on_a
from tests.replicas.test_failover import WITHIN, ended
from tests.replicas.test_streams import Event, events_of, stubs
from tests.rpc import error_info
from tests.support import eventually
from turnstile.v1 import run_service_pb2

pytestmark = pytest.mark.timeout(60)

SECOND = 1 << 32  # the base of the second attempt's seqs


async def following(
    group: Cluster, thread_id: str, run_id: str, seen: list[Event]
) -> grpc.aio.AioRpcError | None:
    """JoinRunStream on b from the start, each event appended to `seen` as it comes; the
    error it ends with, if any."""
    async with stubs(group["b"].address) as s:
        request = run_service_pb2.JoinRunStreamRequest(thread_id=thread_id, run_id=run_id)
        try:
            async for response in s.runs.JoinRunStream(request):
                seen += events_of(response)
        except grpc.aio.AioRpcError as exc:
            return exc
    return None


async def handed_over(tmp_path: Path, sig: int) -> tuple[list[Event], grpc.aio.AioRpcError | None]:
    """A run on a, waiting at gate `b`, followed from b; a gets `sig`, b takes the run over
    and ends it: what b's subscriber saw, and its error."""
    async with cluster(tmp_path, ("a", "b"), "--shutdown-grace-seconds", "0.3") as group:
        a, b = group["a"].client(), group["b"].client()
        thread_id, run_id = await running_on_a(group, a, ["a", "b"])
        await a.close()
        seen: list[Event] = []
        follower = asyncio.create_task(following(group, thread_id, run_id, seen))

        async def under_way() -> None:
            assert any(kind == "values" for _, kind, _ in seen), seen

        await eventually(under_way, within=WITHIN)
        group["a"].signal(sig)
        async with asyncio.timeout(WITHIN):
            assert await group["a"].process.wait() == (0 if sig == signal.SIGTERM else -sig)

        async def taken() -> None:
            attempts = await group.attempts(run_id)
            assert [r["owner"] for r in attempts][-1:] == [group["b"].incarnation]

        await eventually(taken, within=WITHIN)
        group.gate("b")
        final = await ended(b, thread_id, run_id)
        assert (final["status"], final["attempt"]) == ("success", 2)
        async with asyncio.timeout(WITHIN):
            error = await follower
        await b.close()
        return seen, error


async def test_a_drained_replica_s_run_streams_on_into_its_next_attempt_to_its_end(
    tmp_path: Path,
) -> None:
    seen, error = await handed_over(tmp_path, signal.SIGTERM)
    assert error is None, error
    seqs = [seq for seq, _, _ in seen]
    first = [seq for seq in seqs if seq < SECOND]
    second = [seq for seq in seqs if seq > SECOND]
    assert first == list(range(1, len(first) + 1)), seqs
    assert second == list(range(SECOND + 1, SECOND + len(second) + 1)), seqs
    assert first and second and seqs == first + second
    # The first attempt's events end without an `end`; the second's begin with its own
    # `metadata` (attempt 2), as after a restart on one process.
    assert "end" not in [kind for _, kind, _ in seen[: len(first)]]
    kind, data = seen[len(first)][1:]
    assert kind == "metadata" and data["attempt"] == 2, seen[len(first)]
    assert seen[-1][1] == "end" and seen[-1][2]["status"] == "success"
    assert [kind for _, kind, _ in seen].count("end") == 1


async def test_a_killed_replica_s_run_is_stream_expired_at_the_attempt_boundary(
    tmp_path: Path,
) -> None:
    seen, error = await handed_over(tmp_path, signal.SIGKILL)
    assert error is not None, seen
    info = error_info(error)
    assert (info.code, info.reason) == (grpc.StatusCode.OUT_OF_RANGE, "STREAM_EXPIRED")
    assert f"resume with after_seq={SECOND}" in info.message
    assert all(seq < SECOND for seq, _, _ in seen)
