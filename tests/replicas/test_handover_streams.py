"""A subscriber on b following a run that a executes, when a stops (issue 22 points 5 and 6):
a drained a (SIGTERM, the grace period past) closes its attempt in the run's Redis stream
before it gives up its lease, so the subscriber goes on into the next attempt's events to the
run's `end`; a killed a (SIGKILL) closes nothing, and the subscriber gets STREAM_EXPIRED at the
attempt boundary, because the killed attempt's tail may never have been relayed. The same
holds for a join opened after the takeover on b itself, which executes the run then: from a
position in a's attempt it reads the run's Redis stream, not its own log (which holds b's
attempt only)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from tests.replicas.cluster import Cluster, cluster
from tests.replicas.test_cancellation import running_on_a
from tests.replicas.test_failover import WITHIN, ended, taken_over
from tests.replicas.test_streams import Event, events_of, stubs
from tests.rpc import error_info
from tests.support import eventually
from turnstile.v1 import run_service_pb2

pytestmark = pytest.mark.timeout(60)

SECOND = 1 << 32  # the base of the second attempt's seqs


async def following(
    group: Cluster,
    thread_id: str,
    run_id: str,
    seen: list[Event],
    after_seq: int = 0,
    name: str = "b",
) -> grpc.aio.AioRpcError | None:
    """JoinRunStream on replica `name` after `after_seq`, each event appended to `seen` as
    it comes; the error it ends with, if any."""
    async with stubs(group[name].address) as s:
        request = run_service_pb2.JoinRunStreamRequest(
            thread_id=thread_id, run_id=run_id, after_seq=after_seq
        )
        try:
            async for response in s.runs.JoinRunStream(request):
                seen += events_of(response)
        except grpc.aio.AioRpcError as exc:
            return exc
    return None


async def stopped_while_followed(
    group: Cluster, sig: int, gates: list[str]
) -> tuple[str, str, list[Event], asyncio.Task[grpc.aio.AioRpcError | None]]:
    """A run on a (its gates `gates`: past `a`, waiting at `b`), followed from b until it is under
    way; then a gets `sig`, exits, and b takes the run over: the thread, the run, what b's
    subscriber has seen so far and its task."""
    a = group["a"].client()
    thread_id, run_id = await running_on_a(group, a, gates)
    await a.close()
    seen: list[Event] = []
    follower = asyncio.create_task(following(group, thread_id, run_id, seen))

    async def under_way() -> None:
        assert any(kind == "values" for _, kind, _ in seen), seen

    await eventually(under_way, within=WITHIN)
    group["a"].signal(sig)
    async with asyncio.timeout(WITHIN):
        assert await group["a"].process.wait() == (0 if sig == signal.SIGTERM else -sig)
    await taken_over(group, run_id, "b")
    return thread_id, run_id, seen, follower


Afterwards = Callable[[Cluster, str, str, list[Event]], Awaitable[None]]
"""A check made once the run has ended on b: of the cluster, the thread, the run and what
b's subscriber saw."""


async def handed_over(
    tmp_path: Path, sig: int, afterwards: Afterwards | None = None
) -> tuple[list[Event], grpc.aio.AioRpcError | None]:
    """A run on a, waiting at gate `b`, followed from b; a gets `sig`, b takes the run over
    and ends it: what b's subscriber saw, and its error."""
    async with cluster(tmp_path, ("a", "b"), "--shutdown-grace-seconds", "0.3") as group:
        b = group["b"].client()
        thread_id, run_id, seen, follower = await stopped_while_followed(group, sig, ["a", "b"])
        group.gate("b")
        final = await ended(b, thread_id, run_id)
        assert (final["status"], final["attempt"]) == ("success", 2)
        async with asyncio.timeout(WITHIN):
            error = await follower
        if afterwards is not None:
            await afterwards(group, thread_id, run_id, seen)
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


async def test_a_join_on_the_replica_a_run_was_handed_over_to_reads_the_handed_over_attempt(
    tmp_path: Path,
) -> None:
    """Joins opened on b after it took the run over, from every position in a's attempt and
    from 0, get exactly what a subscriber that followed the run from the start saw after that
    position: a's tail, b's attempt from its `metadata`, the `end`. Live (opened while the
    run waits at gate `b` on b), and again once the run has ended; from b's own attempt they
    are served from b's log."""
    async with cluster(tmp_path, ("a", "b"), "--shutdown-grace-seconds", "0.3") as group:
        b = group["b"].client()
        thread_id, run_id, seen, follower = await stopped_while_followed(
            group, signal.SIGTERM, ["a", "b", "c"]
        )

        async def second_begun(events: list[Event]) -> None:
            assert SECOND + 1 in [seq for seq, _, _ in events], events

        await eventually(lambda: second_begun(seen), within=WITHIN)  # b executes it now
        first = [seq for seq, _, _ in seen if seq < SECOND]
        assert first == list(range(1, len(first) + 1)), seen
        positions = [0, *first]
        joins: dict[int, list[Event]] = {k: [] for k in positions}
        tasks = {
            k: asyncio.create_task(following(group, thread_id, run_id, joins[k], k))
            for k in positions
        }

        async def all_live() -> None:
            for k, events in joins.items():
                ended_with = tasks[k].result() if tasks[k].done() else "nothing yet"
                assert SECOND + 1 in [seq for seq, _, _ in events], (k, events, ended_with)

        await eventually(all_live, within=WITHIN)  # each read up to b's attempt, live
        group.gate("b")
        group.gate("c")
        final = await ended(b, thread_id, run_id)
        assert (final["status"], final["attempt"]) == ("success", 2)
        async with asyncio.timeout(WITHIN):
            assert await follower is None
            for k, task in tasks.items():
                assert await task is None, k
        assert seen[-1][1] == "end" and seen[len(first)][1] == "metadata", seen
        for k in positions:
            assert joins[k] == seen[k:], k  # seen[k] is the event after seq k
        # Once it has ended, as b retains the run's log: the same from a's attempt; from b's
        # own (its base, its metadata), what b's log holds.
        for k in [*positions, SECOND, SECOND + 1]:
            after: list[Event] = []
            assert await following(group, thread_id, run_id, after, k) is None
            index = k if k < SECOND else len(first) + k - SECOND
            assert after == seen[index:], k
        await b.close()


async def test_a_killed_replica_s_run_is_stream_expired_at_the_attempt_boundary(
    tmp_path: Path,
) -> None:
    async def joined_on_b(group: Cluster, thread_id: str, run_id: str, seen: list[Event]) -> None:
        """b, which executed the run's second attempt, answers a join from a position in
        the killed attempt as a replica reading Redis does: what Redis holds of a's attempt
        after it, then STREAM_EXPIRED with the second attempt's first seq."""
        for k in [0, *(seq for seq, _, _ in seen)]:
            after: list[Event] = []
            error = await following(group, thread_id, run_id, after, k)
            assert error is not None, (k, after)
            info = error_info(error)
            assert (info.code, info.reason) == (grpc.StatusCode.OUT_OF_RANGE, "STREAM_EXPIRED")
            assert info.metadata["first_seq"] == str(SECOND + 1), (k, info)
            assert "Traceback" not in info.message
            assert after == seen[k:], k

    seen, error = await handed_over(tmp_path, signal.SIGKILL, joined_on_b)
    assert error is not None, seen
    info = error_info(error)
    assert (info.code, info.reason) == (grpc.StatusCode.OUT_OF_RANGE, "STREAM_EXPIRED")
    assert f"resume with after_seq={SECOND}" in info.message
    assert all(seq < SECOND for seq, _, _ in seen)
