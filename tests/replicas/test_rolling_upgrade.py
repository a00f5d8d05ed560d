"""Replicas that serve different graphs, as during a rolling upgrade that adds one: a run of a
graph only some replicas serve is admitted and started only by those (elsewhere UNAVAILABLE,
to be retried there), never claimed and failed by another."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.replicas.cluster import LEASE_TTL, Cluster, cluster
from tests.replicas.test_failover import WITHIN, ended, never_overlap, user
from tests.rpc import Stubs, error_info, struct
from tests.support import eventually
from turnstile import TurnstileClient, get_client
from turnstile.v1 import assistant_service_pb2, run_pb2, run_service_pb2

pytestmark = pytest.mark.timeout(60)

NEWER = ("--graph", "newer=tests.support:file_gated")
"""The graph only the upgraded replica serves."""


async def enqueued(
    client: TurnstileClient, thread_id: str, graph: str, config: dict[str, Any]
) -> dict[str, Any]:
    run = await client.runs.create(
        thread_id, graph, input=user(graph), config=config, multitask_strategy="enqueue"
    )
    return dict(run)


async def owners(group: Cluster, run_id: str) -> list[str]:
    return [row["owner"] for row in await group.attempts(run_id)]


async def test_a_waiting_run_of_a_graph_one_replica_lacks_is_left_to_the_replicas_serving_it(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, ()) as group:
        await group.start("old")
        await group.start("new", *NEWER, "--max-running", "1")
        new = group["new"].client()
        # The upgraded replica's one slot taken: the run of `newer` it admits waits, announced
        # to every replica as ready to be claimed.
        busy = (await new.threads.create())["thread_id"]
        holding = await new.runs.create(
            busy, "file_gated", input=user("hold", "hold"), config=group.config
        )

        async def holds() -> None:
            assert group.arrived("hold")

        await eventually(holds, within=WITHIN)
        thread_id = (await new.threads.create())["thread_id"]
        run = await new.runs.create(thread_id, "newer", input=user("hi"), config=group.config)
        # Waiting behind it, a run of a graph both serve: the old replica takes that one.
        other = (await new.threads.create())["thread_id"]
        later = await new.runs.create(other, "file_gated", input=user("hi"), config=group.config)
        assert (await ended(new, other, later["run_id"]))["status"] == "success"
        assert await owners(group, later["run_id"]) == [group["old"].incarnation]
        # Told at once and polling every beat, the old replica leaves the first run be.
        await asyncio.sleep(LEASE_TTL)
        waiting = await new.runs.get(thread_id, run["run_id"])
        assert waiting["status"] == "pending", waiting
        assert await owners(group, run["run_id"]) == []

        group.gate("hold")
        assert (await ended(new, busy, holding["run_id"]))["status"] == "success"
        final = await ended(new, thread_id, run["run_id"])
        assert final["status"] == "success", final
        assert await owners(group, run["run_id"]) == [group["new"].incarnation]
        await new.close()


async def test_the_next_run_of_a_graph_the_finishing_replica_lacks_starts_where_it_is_served(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, ()) as group:
        await group.start("old")
        await group.start("new", *NEWER)
        old, new = group["old"].client(), group["new"].client()
        thread_id = (await old.threads.create())["thread_id"]
        first = await old.runs.create(
            thread_id, "file_gated", input=user("one", "one"), config=group.config
        )
        second = await enqueued(new, thread_id, "newer", group.config)
        # A run admitted on the old replica behind it: ending the first run, the old replica
        # would start the thread's next one (the second) in the same write, but leaves it to
        # the new replica, which serves its graph.
        third = await enqueued(old, thread_id, "file_gated", group.config)
        assert (second["status"], third["status"]) == ("pending", "pending")
        group.gate("one")
        assert (await ended(old, thread_id, first["run_id"]))["status"] == "success"
        assert await owners(group, first["run_id"]) == [group["old"].incarnation]
        final = await ended(new, thread_id, second["run_id"])
        assert final["status"] == "success", final
        assert await owners(group, second["run_id"]) == [group["new"].incarnation]
        assert (await ended(old, thread_id, third["run_id"]))["status"] == "success"
        # In admission order, one at a time.
        never_overlap([(await group.attempts(r["run_id"]))[0] for r in (first, second, third)])
        await old.close()
        await new.close()


async def test_a_run_of_a_graph_served_only_elsewhere_is_unavailable_here_and_retried_there(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, ()) as group:
        await group.start("old")
        await group.start("new", *NEWER)
        new = group["new"].client()
        made = await new.assistants.create("newer", name="made on new")
        channel = grpc.aio.insecure_channel(group["old"].address)
        stubs = Stubs(channel)
        try:
            for assistant_id in ("newer", made["assistant_id"]):
                request = run_service_pb2.CreateRunRequest(
                    thread_id=str(uuid.uuid4()),
                    assistant_id=assistant_id,
                    input=struct(user("hi")),
                    if_not_exists=run_pb2.IF_NOT_EXISTS_CREATE,
                )
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stubs.runs.CreateRun(request, timeout=10)
                said = error_info(caught.value)
                assert said.code == grpc.StatusCode.UNAVAILABLE, said
                assert said.reason == "GRAPH_NOT_SERVED_HERE", said
                assert said.metadata["graph_id"] == "newer"
                assert said.metadata["replicas"] == "new"
                assert "Traceback" not in said.message
            # So are the graph's assistants: made, or its own read, on the old replica.
            calls: list[Callable[[], Awaitable[Any]]] = [
                lambda: stubs.assistants.CreateAssistant(
                    assistant_service_pb2.CreateAssistantRequest(graph_id="newer"), timeout=10
                ),
                lambda: stubs.assistants.GetAssistant(
                    assistant_service_pb2.GetAssistantRequest(assistant_id="newer"), timeout=10
                ),
            ]
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call()
                said = error_info(caught.value)
                assert (said.code, said.reason) == (
                    grpc.StatusCode.UNAVAILABLE,
                    "GRAPH_NOT_SERVED_HERE",
                ), said
            # A graph no replica serves is not found (or unknown), as before.
            request.assistant_id = "nope"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stubs.runs.CreateRun(request, timeout=10)
            assert error_info(caught.value).reason == "ASSISTANT_NOT_FOUND"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stubs.assistants.CreateAssistant(
                    assistant_service_pb2.CreateAssistantRequest(graph_id="nope"), timeout=10
                )
            assert error_info(caught.value).reason == "UNKNOWN_GRAPH"
        finally:
            await channel.close()
        # The SDK over both replicas, round robin: its retry of UNAVAILABLE reaches `new`.
        target = f"ipv4:{group['old'].address},{group['new'].address}"
        spread = get_client(url=target, load_balancing="round_robin")
        try:
            for _ in range(4):
                thread_id = str(uuid.uuid4())
                run = await spread.runs.create(
                    thread_id,
                    "newer",
                    input=user("hi"),
                    config=group.config,
                    if_not_exists="create",
                )
                final = await ended(new, thread_id, run["run_id"])
                assert final["status"] == "success", final
                assert await owners(group, run["run_id"]) == [group["new"].incarnation]
        finally:
            await spread.close()
        await new.close()
