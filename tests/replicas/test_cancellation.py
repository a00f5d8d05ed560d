"""Interrupt, rollback and deletion sent to one replica reach the run executing on another."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import asyncpg
import pytest

from tests.replicas.cluster import Cluster, cluster
from tests.replicas.test_failover import WITHIN, ended, never_overlap, texts, user
from tests.replicas.test_streams import joined
from tests.support import eventually
from turnstile import DeadlineExceededError, NotFoundError, TurnstileClient, get_client

pytestmark = pytest.mark.timeout(60)


async def running_on_a(
    group: Cluster, client: TurnstileClient, gates: list[str], graph: str = "file_gated"
) -> tuple[str, str]:
    """A thread with a run executing on replica a, passed gate `a`, waiting at gate `b`."""
    thread_id = (await client.threads.create())["thread_id"]
    group.gate("a")
    run = await client.runs.create(thread_id, graph, input=user("one", *gates), config=group.config)

    async def in_step_two() -> None:
        assert group.arrived("b")
        assert ("ai", "passed a") in await texts(client, thread_id)

    await eventually(in_step_two, within=WITHIN)
    attempts = await group.attempts(run["run_id"])
    assert [row["owner"] for row in attempts] == [group["a"].incarnation]
    return thread_id, run["run_id"]


async def test_interrupt_on_b_stops_the_run_on_a_keeping_its_steps_before_the_new_run_starts(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as group:
        a, b = group["a"].client(), group["b"].client()
        thread_id, old_id = await running_on_a(group, a, ["a", "b"], "slow_unwind")
        group.gate("c")
        new = await b.runs.create(
            thread_id,
            "slow_unwind",
            input=user("two", "c"),
            config=group.config,
            multitask_strategy="interrupt",
        )

        async def unwinding() -> None:
            assert (group.gates / "unwinding").exists()

        # The old run is unwinding on a (held there by its graph): the new one waits.
        await eventually(unwinding, within=WITHIN)
        assert (await b.runs.get(thread_id, new["run_id"]))["status"] == "pending"
        assert (await b.runs.get(thread_id, old_id))["status"] == "running"
        group.gate("unwind")
        old = await ended(b, thread_id, old_id)
        latest = await ended(b, thread_id, new["run_id"])
        assert old["status"] == "interrupted"
        assert old["superseded_by"] == new["run_id"]
        assert latest["status"] == "success"
        assert await texts(b, thread_id) == [
            ("human", "one"),
            ("ai", "passed a"),
            ("human", "two"),
            ("ai", "passed c"),
        ]
        # The audit, on the database's clock: the new run began after the old one ended.
        attempts = [*await group.attempts(old_id), *await group.attempts(new["run_id"])]
        never_overlap(attempts)
        assert attempts[0]["outcome"] == "interrupted"
        # Every stream ends with `end`, on the replica that executed the run and on the one
        # that did not (read through Redis there), saying how the run ended.
        for replica in ("a", "b"):
            for run_id, status in ((old_id, "interrupted"), (new["run_id"], "success")):
                async with asyncio.timeout(WITHIN):
                    events = await joined(group[replica].address, thread_id, run_id)
                assert events[-1][1] == "end", (replica, run_id, events)
                assert events[-1][2]["status"] == status, (replica, run_id, events[-1])
        await a.close()
        await b.close()


async def test_rollback_on_c_of_a_run_on_a_leaves_none_of_its_checkpoints(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, ("a", "b", "c")) as group:
        a, c = group["a"].client(), group["c"].client()
        thread_id, old_id = await running_on_a(group, a, ["a", "b"])
        group.gate("d")
        new = await c.runs.create(
            thread_id,
            "file_gated",
            input=user("two", "d"),
            config=group.config,
            multitask_strategy="rollback",
        )
        latest = await ended(c, thread_id, new["run_id"])
        assert latest["status"] == "success"
        with pytest.raises(NotFoundError):
            await c.runs.get(thread_id, old_id)
        assert await group.query("SELECT 1 FROM checkpoints WHERE run_id = $1", old_id) == []
        assert await texts(c, thread_id) == [("human", "two"), ("ai", "passed d")]
        never_overlap([*await group.attempts(old_id), *await group.attempts(new["run_id"])])
        await a.close()
        await c.close()


async def test_cancel_run_on_b_reaches_a_within_a_beat_when_its_listen_connection_is_cut(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as group:
        a, b = group["a"].client(), group["b"].client()
        thread_id, run_id = await running_on_a(group, a, ["a", "b"])
        # Cut a's LISTEN connection, then cancel before it can listen again: the NOTIFY is
        # lost, and the heartbeat's report of the cancellation is what stops the run.
        cut = await group.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'turnstile listen a' AND datname = current_database()"
        )
        assert [row[0] for row in cut] == [True]
        await b.runs.cancel(thread_id, run_id, action="interrupt")
        # JoinRun on b of a run that ends on a: answered once the run's row says it ended.
        async with asyncio.timeout(WITHIN):
            joined = await b.runs.join_run(thread_id, run_id)
        assert joined.run["status"] == "interrupted"
        final = await ended(b, thread_id, run_id)
        assert final["status"] == "interrupted"
        assert await texts(b, thread_id) == [("human", "one"), ("ai", "passed a")]
        await a.close()
        await b.close()


async def test_a_replica_whose_listen_connection_ends_asks_for_its_cancellations_at_once(
    tmp_path: Path,
) -> None:
    # A beat of a minute: the cancellation can reach a in time only if a notices its LISTEN
    # connection ended, listens again and asks the database then, not at its next beat.
    # Without that (replica.py's `_listen_lost`), this fails (the run is still running
    # after WITHIN, 20 s).
    beat = ("--lease-ttl-seconds", "180", "--lease-beat-seconds", "60")
    async with cluster(tmp_path, ("a", "b"), *beat) as group:
        a, b = group["a"].client(), group["b"].client()
        thread_id, run_id = await running_on_a(group, a, ["a", "b"])
        cut = await group.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'turnstile listen a' AND datname = current_database()"
        )
        assert [row[0] for row in cut] == [True]
        await b.runs.cancel(thread_id, run_id, action="interrupt")
        final = await ended(b, thread_id, run_id)
        assert final["status"] == "interrupted"
        assert group["a"].said("the listening connection of replica a was lost")
        assert await texts(b, thread_id) == [("human", "one"), ("ai", "passed a")]
        await a.close()
        await b.close()


async def test_waits_on_b_for_a_run_on_a_answer_as_it_ends_not_at_b_s_next_beat(
    tmp_path: Path,
) -> None:
    # A beat of a minute: b reads a waited-for run's row every beat, so a JoinRun and a
    # CancelRun(wait) on b answer within WITHIN (20 s) only because a's end tells b at once
    # (`leases.notify_ended`, b's `Endings.nudge`). Without it this fails: both still wait.
    beat = ("--lease-ttl-seconds", "180", "--lease-beat-seconds", "60")
    async with cluster(tmp_path, ("a", "b"), *beat) as group:
        a, b = group["a"].client(), group["b"].client()
        thread_id, run_id = await running_on_a(group, a, ["a", "b"], "slow_unwind")
        joining = asyncio.create_task(b.runs.join_run(thread_id, run_id))
        cancelling = asyncio.create_task(
            b.runs.cancel(thread_id, run_id, action="interrupt", wait=True)
        )

        async def unwinding() -> None:
            assert (group.gates / "unwinding").exists()

        # Held on a while it unwinds: both calls on b are waiting for its end by then.
        await eventually(unwinding, within=WITHIN)
        assert not joining.done() and not cancelling.done()
        group.gate("unwind")
        async with asyncio.timeout(WITHIN):
            cancelled = await cancelling
            joined = (await joining).run
        assert cancelled["status"] == joined["status"] == "interrupted"
        assert joined["end_time"] == (await a.runs.get(thread_id, run_id))["end_time"]
        await a.close()
        await b.close()


async def test_delete_thread_on_b_stops_the_run_on_a(tmp_path: Path) -> None:
    # One slot: a's next run can start only once the deleted run has stopped there.
    async with cluster(tmp_path, ("a", "b"), "--max-running", "1") as group:
        a, b = group["a"].client(), group["b"].client()
        thread_id, run_id = await running_on_a(group, a, ["a", "b"])
        await b.threads.delete(thread_id)

        async def stopped_on_a() -> None:
            assert group["a"].said(f"run {run_id} was cancelled on another replica")

        await eventually(stopped_on_a, within=WITHIN)
        with pytest.raises(NotFoundError):
            await a.threads.get(thread_id)
        await b.close()
        group["b"].signal(signal.SIGKILL)  # nobody else could take a's next run
        await group["b"].process.wait()
        other = (await a.threads.create())["thread_id"]
        group.gate("e")
        run = await a.runs.create(other, "file_gated", input=user("e", "e"), config=group.config)
        assert (await ended(a, other, run["run_id"]))["status"] == "success"
        await a.close()


async def test_delete_thread_on_b_answers_once_the_run_has_unwound_on_a(tmp_path: Path) -> None:
    async with cluster(tmp_path) as group:
        a, b = group["a"].client(), group["b"].client()
        thread_id, run_id = await running_on_a(group, a, ["a", "b"], "slow_unwind")
        deleting = asyncio.create_task(b.threads.delete(thread_id))

        async def unwinding() -> None:
            assert (group.gates / "unwinding").exists()

        # Held on a while it unwinds: the deletion on b waits, past several of b's beats.
        await eventually(unwinding, within=WITHIN)
        await asyncio.sleep(1.0)
        assert not deleting.done()
        with pytest.raises(NotFoundError):  # deleted in the database all the same
            await a.threads.get(thread_id)
        group.gate("unwind")
        async with asyncio.timeout(WITHIN):
            await deleting
        assert group["a"].said(f"run {run_id} was cancelled on another replica")
        assert await group.query("SELECT * FROM unwinding_attempts") == []
        await a.close()
        await b.close()


async def test_delete_thread_on_b_of_a_run_on_a_stopped_answers_once_a_s_lease_expired(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as group:
        a, b = group["a"].client(), group["b"].client()
        thread_id, _ = await running_on_a(group, a, ["a", "b"])
        group["a"].signal(signal.SIGSTOP)
        async with asyncio.timeout(WITHIN):
            await b.threads.delete(thread_id)
        # Answered by b's sweeper, once a's lease had expired: a may never stop the run.
        expired = await group.query(
            "SELECT expires_at <= clock_timestamp() FROM replicas WHERE incarnation = $1",
            group["a"].incarnation,
        )
        assert [row[0] for row in expired] == [True]

        async def swept() -> None:  # by the next sweep, if b answered before it
            assert await group.query("SELECT * FROM unwinding_attempts") == []

        await eventually(swept, within=WITHIN)
        group["a"].signal(signal.SIGCONT)
        await b.close()
        await a.close()


async def test_join_run_on_b_of_a_run_rolled_back_on_a_answers_what_a_answers(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as group:
        a, b = group["a"].client(), group["b"].client()
        thread_id, old_id = await running_on_a(group, a, ["a", "b"])
        # A join on b from before the rollback (it reads the run's row every beat) and one
        # after it (the row is gone by then): both answer what a answers, not NOT_FOUND.
        early = asyncio.create_task(b.runs.join_run(thread_id, old_id))
        group.gate("d")
        new = await a.runs.create(
            thread_id,
            "file_gated",
            input=user("two", "d"),
            config=group.config,
            multitask_strategy="rollback",
        )
        async with asyncio.timeout(WITHIN):
            on_a = (await a.runs.join_run(thread_id, old_id)).run
            on_b = (await b.runs.join_run(thread_id, old_id)).run
            before = (await early).run
        assert on_a["status"] == "interrupted"
        assert on_a["superseded_by"] == new["run_id"]
        for joined in (on_b, before):
            assert joined["run_id"] == old_id
            for key in ("status", "cancel_reason", "superseded_by", "attempt", "end_time"):
                assert joined[key] == on_a[key], (key, joined, on_a)
        with pytest.raises(NotFoundError):
            await b.runs.get(thread_id, old_id)
        assert (await ended(b, thread_id, new["run_id"]))["status"] == "success"
        await a.close()
        await b.close()


async def test_a_pending_run_cancelled_by_a_call_whose_deadline_passed_ends_its_redis_stream(
    tmp_path: Path,
) -> None:
    """The chaos test's seed-22 failure forced (issue 22): a CancelRun of a pending run waits
    for the thread's row (another transaction holds it, as a replica paused mid-write does)
    past its caller's deadline, then commits. The run has ended, so its Redis stream, what
    every other replica's subscribers read, must end with its `end`; it used to stay empty
    (the server cancelled the call and the end was never announced), so they answered
    STREAM_EXPIRED for a run that was merely cancelled."""
    from tests.replicas.test_drain import stream_flags

    async with cluster(tmp_path) as group:
        a = group["a"].client()
        hasty = get_client(url=group["b"].address, timeout=0.5)
        thread_id, _ = await running_on_a(group, a, ["a", "b"])
        queued = await a.runs.create(
            thread_id,
            "file_gated",
            input=user("two", "c"),
            config=group.config,
            multitask_strategy="enqueue",
        )
        assert queued["status"] == "pending"
        conn = await asyncpg.connect(group.url)
        try:
            holding = conn.transaction()
            await holding.start()
            await conn.execute("SELECT 1 FROM threads WHERE thread_id = $1 FOR UPDATE", thread_id)
            with pytest.raises(DeadlineExceededError):
                await hasty.runs.cancel(thread_id, queued["run_id"], action="interrupt")
            await holding.rollback()
        finally:
            await conn.close()
        final = await ended(a, thread_id, queued["run_id"])
        assert final["status"] == "interrupted"

        async def end_relayed() -> None:
            assert await stream_flags(group, queued["run_id"]) == "end"

        await eventually(end_relayed, within=WITHIN)
        await hasty.close()
        await a.close()
