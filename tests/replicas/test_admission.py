"""Admission across replicas: one transaction on the thread's row, whichever replica."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from tests.replicas.cluster import cluster
from tests.replicas.test_failover import ended, user
from turnstile import ConflictError

pytestmark = pytest.mark.timeout(60)

PER_REPLICA = 20
ROUNDS = 3


async def test_concurrent_rejects_over_three_replicas_admit_one_and_one_request_id_one_run(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, ("a", "b", "c")) as group:
        clients = [replica.client() for replica in group.replicas]
        try:
            for round_number in range(ROUNDS):
                thread_id = (await clients[0].threads.create())["thread_id"]
                outcomes = await asyncio.gather(
                    *(
                        client.runs.create(
                            thread_id,
                            "file_gated",
                            input=user(f"r{round_number}", "never"),
                            config=group.config,
                            multitask_strategy="reject",
                        )
                        for client in clients
                        for _ in range(PER_REPLICA)
                    ),
                    return_exceptions=True,
                )
                admitted = [o for o in outcomes if isinstance(o, dict)]
                refused = [o for o in outcomes if isinstance(o, ConflictError)]
                assert len(admitted) == 1, f"round {round_number}: {len(admitted)} admitted"
                assert len(refused) == len(outcomes) - 1, outcomes
                runs = await clients[1].runs.list(thread_id)
                assert [r["run_id"] for r in runs] == [admitted[0]["run_id"]]

            thread_id = (await clients[0].threads.create())["thread_id"]
            request_id = str(uuid.uuid4())
            same = await asyncio.gather(
                *(
                    client.runs.create(
                        thread_id,
                        "file_gated",
                        input=user("once", "never"),
                        config=group.config,
                        multitask_strategy="enqueue",
                        request_id=request_id,
                    )
                    for client in clients
                    for _ in range(4)
                )
            )
            assert len({run["run_id"] for run in same}) == 1
            assert len(await clients[2].runs.list(thread_id)) == 1
        finally:
            for client in clients:
                await client.close()


async def test_a_run_admitted_on_a_full_replica_is_claimed_by_one_with_a_free_slot(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, ("a", "b"), "--max-running", "1") as group:
        a, b = group["a"].client(), group["b"].client()
        try:
            busy = (await b.threads.create())["thread_id"]
            held = await b.runs.create(
                busy, "file_gated", input=user("hold", "never"), config=group.config
            )
            assert [r["owner"] for r in await group.attempts(held["run_id"])] == [
                group["b"].incarnation
            ]
            thread_id = (await b.threads.create())["thread_id"]
            group.gate("go")
            run = await b.runs.create(
                thread_id, "file_gated", input=user("go", "go"), config=group.config
            )
            final = await ended(b, thread_id, run["run_id"])
            assert final["status"] == "success"
            assert [r["owner"] for r in await group.attempts(run["run_id"])] == [
                group["a"].incarnation
            ]
        finally:
            await a.close()
            await b.close()
