"""gRPC client-side round robin over replicas, as docs/deploy.md shows it: a raw channel,
and the SDK's `get_client(load_balancing="round_robin")`."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from tests import dns
from tests.replicas.cluster import cluster
from tests.replicas.test_failover import WITHIN
from tests.support import eventually
from turnstile import TurnstileClient, get_client
from turnstile.v1 import run_pb2, run_service_pb2, run_service_pb2_grpc

pytestmark = pytest.mark.timeout(60)

ROUND_ROBIN = '{"loadBalancingConfig": [{"round_robin": {}}]}'


async def test_a_round_robin_channel_over_two_replicas_reaches_both(tmp_path: Path) -> None:
    async with cluster(tmp_path) as group:
        # A multi-address target, as a DNS name with one A record per replica resolves to
        # (`dns:///turnstile.internal:50051`): gRPC's `ipv4:` scheme lists them itself.
        target = "ipv4:" + ",".join(r.address for r in group.replicas)
        channel = grpc.aio.insecure_channel(target, options=[("grpc.service_config", ROUND_ROBIN)])
        runs = run_service_pb2_grpc.RunServiceStub(channel)
        created: list[str] = []

        async def both_reached() -> None:
            # Each run starts on the replica that admitted it (both have free slots), so the
            # attempt's owner names the replica the call reached.
            request = run_service_pb2.CreateRunRequest(
                thread_id=str(uuid.uuid4()),
                assistant_id="file_gated",
                input=_struct({"messages": [{"role": "user", "content": "hi"}], "gates": []}),
                if_not_exists=run_pb2.IF_NOT_EXISTS_CREATE,
            )
            reply = await runs.CreateRun(request, timeout=10)
            created.append(reply.run.run_id)
            owners = await group.query(
                "SELECT DISTINCT owner FROM run_attempts WHERE run_id = ANY($1::text[])", created
            )
            assert {row["owner"] for row in owners} == {r.incarnation for r in group.replicas}

        try:
            await eventually(both_reached, within=WITHIN, interval=0.01)
        finally:
            await channel.close()


async def test_the_sdk_s_round_robin_option_spreads_its_calls_over_two_replicas(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as group:
        target = "ipv4:" + ",".join(r.address for r in group.replicas)
        incarnations = {r.incarnation for r in group.replicas}

        async def owners(client: TurnstileClient, runs: int) -> set[str]:
            # One call per run (the thread made by it), so round robin alternates runs.
            created = []
            for _ in range(runs):
                run = await client.runs.create(
                    str(uuid.uuid4()),
                    "file_gated",
                    input=_input(),
                    config=group.config,
                    if_not_exists="create",
                )
                created.append(run["run_id"])
            rows = await group.query(
                "SELECT DISTINCT owner FROM run_attempts WHERE run_id = ANY($1::text[])", created
            )
            return {row["owner"] for row in rows}

        # Each run starts on the replica that admitted it: its attempt's owner names the
        # replica the call reached. By default (pick_first) that is always the first one.
        default = get_client(url=target)
        spread = get_client(url=target, load_balancing="round_robin")
        try:
            assert await owners(default, 6) == {group["a"].incarnation}
            assert await owners(spread, 6) == incarnations
        finally:
            await default.close()
            await spread.close()
        with pytest.raises(ValueError, match="load_balancing must be one of"):
            get_client(url=target, load_balancing="random")


async def test_a_dns_name_with_two_a_records_spreads_the_sdk_s_runs_over_both_replicas(
    tmp_path: Path,
) -> None:
    # Two replicas on one port of two loopback addresses, and one name answered with both:
    # `dns:///` as in docs/deploy.md, through a DNS server of the test's own given in the
    # target's authority (gRPC's default c-ares resolver; its native one ignores authorities).
    if os.environ.get("GRPC_DNS_RESOLVER", "ares") != "ares":
        pytest.skip("GRPC_DNS_RESOLVER is not c-ares: a DNS server in the target is ignored")
    async with cluster(tmp_path, ()) as group:
        first = await group.start("a", "--host", "127.0.0.1")
        port = first.address.rpartition(":")[2]
        await group.start("b", "--host", "127.0.0.2", "--port", port)
        assert [r.address for r in group.replicas] == [f"127.0.0.{n}:{port}" for n in (1, 2)]
        async with dns.zone("turnstile.test", ["127.0.0.1", "127.0.0.2"]) as zone:
            client = get_client(url=zone.target(int(port)), load_balancing="round_robin")
            try:
                created = [
                    (
                        await client.runs.create(
                            str(uuid.uuid4()),
                            "file_gated",
                            input=_input(),
                            config=group.config,
                            if_not_exists="create",
                        )
                    )["run_id"]
                    for _ in range(6)
                ]
            finally:
                await client.close()
            assert ("turnstile.test", dns.A) in zone.asked
        rows = await group.query(
            "SELECT DISTINCT owner FROM run_attempts WHERE run_id = ANY($1::text[])", created
        )
        assert {row["owner"] for row in rows} == {r.incarnation for r in group.replicas}


def _input() -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}], "gates": []}


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message
