"""Graceful shutdown: NOT_SERVING, new runs refused UNAVAILABLE, running runs get a grace."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests import support
from tests.support import GATES, eventually
from turnstile import UnavailableError, get_client
from turnstile_server.app import App
from turnstile_server.config import ServerConfig


async def test_stopping_refuses_new_runs_and_lets_a_running_run_finish_within_the_grace(
    tmp_path: Path,
) -> None:
    app = await App.start(
        ServerConfig(port=0, database=str(tmp_path / "drain.db")), support.registry()
    )
    client = get_client(url=app.address)
    channel = grpc.aio.insecure_channel(app.address)
    try:
        thread_id = (await client.threads.create())["thread_id"]
        run = await client.runs.create(thread_id, "gated", input={"gates": ["finish"]})
        await asyncio.wait_for(GATES.arrived("finish").wait(), 10)
        queued = await client.runs.create(thread_id, "echo", input={"messages": []})

        stopping = asyncio.create_task(app.stop(grace=30))

        async def not_serving() -> None:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING

        await eventually(not_serving)
        other = (await client.threads.create())["thread_id"]
        try:
            await client.runs.create(other, "echo", input={}, request_id="refused")
            raise AssertionError("a run was admitted while stopping")
        except UnavailableError as refused:
            assert refused.reason == "SHUTTING_DOWN"
        assert not stopping.done()

        GATES.open("finish")
        ended = await client.runs.join_run(thread_id, run["run_id"])
        await asyncio.wait_for(stopping, 10)
    finally:
        await client.close()
        await channel.close()

    assert ended.run["status"] == "success"
    # The queued run did not start; the next start runs it.
    app = await App.start(
        ServerConfig(port=0, database=str(tmp_path / "drain.db")), support.registry()
    )
    client = get_client(url=app.address)
    try:
        later = await client.runs.join_run(thread_id, queued["run_id"])
    finally:
        await client.close()
        await app.stop(grace=0)
    assert (later.run["status"], later.run["attempt"]) == ("success", 1)


async def test_a_run_still_going_after_the_grace_is_stopped_and_resumes_next_time(
    tmp_path: Path,
) -> None:
    database = str(tmp_path / "grace.db")
    app = await App.start(ServerConfig(port=0, database=database), support.registry())
    client = get_client(url=app.address)
    thread_id = (await client.threads.create())["thread_id"]
    run = await client.runs.create(thread_id, "gated", input={"gates": ["slow"]})
    await asyncio.wait_for(GATES.arrived("slow").wait(), 10)
    await client.close()
    await asyncio.wait_for(app.stop(grace=0.2), 10)

    GATES.open("slow")
    app = await App.start(ServerConfig(port=0, database=database), support.registry())
    client = get_client(url=app.address)
    try:
        resumed = await client.runs.join_run(thread_id, run["run_id"])
    finally:
        await client.close()
        await app.stop(grace=0)
    assert (resumed.run["status"], resumed.run["attempt"]) == ("success", 2)
