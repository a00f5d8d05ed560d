"""WatchThread's `seq` across replicas: it numbers the watch log of the replica the watch was
opened on (each replica's log of a thread has an epoch of its own, from PostgreSQL's
`threads.watch_epoch`), so a watch resumes exactly on that replica, and resumed with its
seq on another replica it is STREAM_EXPIRED: never events of another numbering, never a
wait for a seq that log will not reach."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from tests.replicas.cluster import Cluster, cluster
from tests.replicas.test_failover import WITHIN, ended, user
from tests.rpc import Stubs, error_info
from turnstile.v1 import thread_service_pb2

pytestmark = pytest.mark.timeout(60)


class Watch:
    """One WatchThread call on a replica."""

    def __init__(self, group: Cluster, name: str, thread_id: str, after_seq: int = 0) -> None:
        self._channel = grpc.aio.insecure_channel(group[name].address)
        request = thread_service_pb2.WatchThreadRequest(thread_id=thread_id, after_seq=after_seq)
        self._call = Stubs(self._channel).threads.WatchThread(request)

    async def opened(self) -> None:
        async with asyncio.timeout(WITHIN):
            await self._call.read()  # the thread

    async def until(self, kind: str) -> list[tuple[int, str]]:
        """(seq, kind) of each event, up to one of `kind`."""
        seen: list[tuple[int, str]] = []
        async with asyncio.timeout(WITHIN):
            while not seen or seen[-1][1] != kind:
                response = await self._call.read()
                seen += [(e.seq, str(e.WhichOneof("kind"))) for e in response.events]
        return seen

    async def close(self) -> None:
        self._call.cancel()
        await self._channel.close()


async def watched(
    group: Cluster, name: str, thread_id: str, after_seq: int, kind: str
) -> list[tuple[int, str]]:
    watch = Watch(group, name, thread_id, after_seq)
    try:
        await watch.opened()
        return await watch.until(kind)
    finally:
        await watch.close()


async def test_a_watch_resumes_on_its_own_replica_and_is_stream_expired_on_another(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as group:
        a = group["a"].client()
        thread_id = (await a.threads.create())["thread_id"]
        # b's watch log of the thread first (the lower epoch), then a's.
        on_b, watch = Watch(group, "b", thread_id), Watch(group, "a", thread_id)
        try:
            await on_b.opened()
            await watch.opened()
            group.gate("x")
            run = await a.runs.create(
                thread_id, "file_gated", input=user("hi", "x"), config=group.config
            )
            on_a = await watch.until("run_ended")
            seen_on_b = await on_b.until("run_ended")
            assert (await ended(a, thread_id, run["run_id"]))["status"] == "success"
        finally:
            await on_b.close()
            await watch.close()
        assert on_a[0][1] == "run_started" and on_a[-1][1] == "run_ended"
        # On a, resumed after its run_started: exactly the rest of a's numbering.
        group.gate("y")
        second = await a.runs.create(
            thread_id, "file_gated", input=user("again", "y"), config=group.config
        )
        assert (await ended(a, thread_id, second["run_id"]))["status"] == "success"
        rest = await watched(group, "a", thread_id, on_a[0][0], "run_ended")
        assert rest[: len(on_a) - 1] == on_a[1:]
        # Each replica's seqs name nothing of the other's numbering: STREAM_EXPIRED, at once,
        # whichever log is the older (one of the two is past the other's seqs).
        assert on_a[0][0] >> 32 != seen_on_b[0][0] >> 32
        for name, seen in (("b", on_a), ("a", seen_on_b)):
            for after in (seen[0][0], seen[-1][0]):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await watched(group, name, thread_id, after, "run_ended")
                error = error_info(caught.value)
                assert (error.code, error.reason) == (
                    grpc.StatusCode.OUT_OF_RANGE,
                    "STREAM_EXPIRED",
                )
                assert "the replica it was opened on" in error.message
        await a.close()
