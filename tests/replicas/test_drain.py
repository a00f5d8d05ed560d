"""SIGTERM drains a replica: it stops claiming, and hands over what did not end in the grace
period to the other replicas."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.replicas.cluster import cluster
from tests.replicas.test_cancellation import running_on_a
from tests.replicas.test_failover import WITHIN, ended, never_overlap, texts, user

pytestmark = pytest.mark.timeout(60)


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
