"""A replica that dies or is paused past its lease: its runs resume exactly once elsewhere,
and nothing it writes afterwards lands."""

from __future__ import annotations

import itertools
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.replicas.cluster import Cluster, cluster
from tests.support import eventually
from turnstile import TurnstileClient

pytestmark = pytest.mark.timeout(60)

WITHIN = 20.0


def user(text: str, *gates: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "gates": list(gates)}


async def texts(client: TurnstileClient, thread_id: str) -> list[tuple[str, str]]:
    state = await client.threads.get_state(thread_id)
    return [(m["type"], m["content"]) for m in state["values"]["messages"]]


async def ended(client: TurnstileClient, thread_id: str, run_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any]:
        run = await client.runs.get(thread_id, run_id)
        assert run["status"] not in ("pending", "running"), run["status"]
        return dict(run)

    return await eventually(done, within=WITHIN, interval=0.05)


async def taken_over(group: Cluster, run_id: str, by: str) -> list[Any]:
    """Waits until the run's latest attempt is replica `by`'s; returns the attempts."""

    async def check() -> list[Any]:
        attempts = await group.attempts(run_id)
        assert attempts and attempts[-1]["owner"] == group[by].incarnation, attempts
        return attempts

    return await eventually(check, within=WITHIN, interval=0.05)


def never_overlap(attempts: list[Any]) -> None:
    for before, after in itertools.pairwise(attempts):
        assert before["end_time"] is not None, before
        assert before["end_time"] <= after["start_time"], (before, after)


async def test_sigkill_of_the_owner_mid_run_resumes_it_once_on_another_replica(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as group:
        a, b = group["a"].client(), group["b"].client()
        thread_id = (await a.threads.create())["thread_id"]
        group.gate("a")
        run = await a.runs.create(
            thread_id, "file_gated", input=user("one", "a", "b"), config=group.config
        )
        run_id = run["run_id"]

        async def in_step_two() -> None:
            assert group.arrived("b")
            assert ("ai", "passed a") in await texts(b, thread_id)

        await eventually(in_step_two, within=WITHIN)
        assert [row["owner"] for row in await group.attempts(run_id)] == [group["a"].incarnation]
        group["a"].signal(signal.SIGKILL)
        await group["a"].process.wait()

        attempts = await taken_over(group, run_id, "b")
        group.gate("b")
        final = await ended(b, thread_id, run_id)
        attempts = await group.attempts(run_id)
        assert final["status"] == "success"
        assert final["attempt"] == 2
        assert [r["owner"] for r in attempts] == [group["a"].incarnation, group["b"].incarnation]
        never_overlap(attempts)
        # The input once, each step once: in the state, and in the run's checkpoints (the
        # state alone would not tell: input messages carry ids, so a second input checkpoint
        # replaces its message instead of adding one).
        assert await texts(b, thread_id) == [
            ("human", "one"),
            ("ai", "passed a"),
            ("ai", "passed b"),
        ]
        rows = await group.query(
            "SELECT source, step, epoch FROM checkpoints WHERE run_id = $1 ORDER BY seq", run_id
        )
        assert [tuple(r) for r in rows] == [
            ("input", 0, None),
            ("step", 1, attempts[0]["epoch"]),
            ("step", 2, attempts[1]["epoch"]),
        ]
        await a.close()
        await b.close()


async def test_sigkill_of_the_owner_right_after_create_run_loses_nothing(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as group:
        a, b = group["a"].client(), group["b"].client()
        thread_id = (await a.threads.create())["thread_id"]
        run = await a.runs.create(
            thread_id, "file_gated", input=user("one", "x"), config=group.config
        )
        group["a"].signal(signal.SIGKILL)
        await group["a"].process.wait()
        group.gate("x")

        final = await ended(b, thread_id, run["run_id"])
        attempts = await group.attempts(run["run_id"])
        assert final["status"] == "success"
        assert [r["owner"] for r in attempts][-1] == group["b"].incarnation
        never_overlap(attempts)
        assert await texts(b, thread_id) == [("human", "one"), ("ai", "passed x")]
        # The input once, in the run's checkpoints: the state alone would not tell (a second
        # input checkpoint replaces its message, which carries an id, instead of adding one).
        rows = await group.query(
            "SELECT source, step, epoch FROM checkpoints WHERE run_id = $1 ORDER BY seq",
            run["run_id"],
        )
        assert [tuple(r) for r in rows] == [
            ("input", 0, None),
            ("step", 1, attempts[-1]["epoch"]),
        ]
        await a.close()
        await b.close()


async def test_a_dead_replica_s_run_and_the_runs_queued_behind_it_go_on_in_admission_order(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as group:
        a, b = group["a"].client(), group["b"].client()
        thread_id = (await a.threads.create())["thread_id"]
        group.gate("a")
        first = await a.runs.create(
            thread_id, "file_gated", input=user("one", "a", "b"), config=group.config
        )

        async def in_step_two() -> None:
            assert group.arrived("b")

        await eventually(in_step_two, within=WITHIN)
        queued = [
            await b.runs.create(
                thread_id,
                "file_gated",
                input=user(f"q{i}", f"q{i}"),
                config=group.config,
                multitask_strategy="enqueue",
            )
            for i in range(3)
        ]
        assert [run["status"] for run in queued] == ["pending"] * 3
        group["a"].signal(signal.SIGKILL)
        await group["a"].process.wait()
        for name in ("b", "q0", "q1", "q2"):
            group.gate(name)
        for run in (first, *queued):
            assert (await ended(b, thread_id, run["run_id"]))["status"] == "success"
        attempts = [row for run in (first, *queued) for row in await group.attempts(run["run_id"])]
        assert [row["owner"] for row in attempts] == [
            group["a"].incarnation,
            *[group["b"].incarnation] * 4,
        ]
        # In admission order: each attempt began after the one before it ended.
        never_overlap(attempts)
        assert await texts(b, thread_id) == [
            ("human", "one"),
            ("ai", "passed a"),
            ("ai", "passed b"),
            *[turn for i in range(3) for turn in (("human", f"q{i}"), ("ai", f"passed q{i}"))],
        ]
        await a.close()
        await b.close()


async def test_a_replica_paused_past_its_lease_writes_nothing_after_the_reclaim(
    tmp_path: Path,
) -> None:
    # Graphs on the API's loop (--graph-threads 0): the frozen step then stalls the whole
    # replica as a GC pause would, so that after SIGCONT the step's write is tried before its
    # heartbeat learns of the lost lease. (On a graph loop the heartbeat gets there first and
    # stops the run before it writes: safe too, but it would not exercise the fence.)
    async with cluster(tmp_path, ("a", "b"), "--graph-threads", "0") as group:
        a, b = group["a"].client(), group["b"].client()
        thread_id = (await a.threads.create())["thread_id"]
        group.gate("a")
        run = await a.runs.create(
            thread_id,
            "frozen_gate",
            input={**user("one", "a", "b"), "freeze": "b"},
            config=group.config,
        )
        run_id = run["run_id"]

        async def in_step_two() -> None:
            assert group.arrived("b")
            assert ("ai", "passed a") in await texts(b, thread_id)

        await eventually(in_step_two, within=WITHIN)
        # a's loop freezes at gate b (as in a GC pause), then the process is stopped too: when
        # it is continued, its step b completes before anything else runs there, so its
        # checkpoint write is tried after the reclaim, whatever the timing.
        group.gate("b.freeze")

        async def frozen() -> None:
            assert (group.gates / "b.frozen").exists()

        await eventually(frozen, within=WITHIN)
        group["a"].signal(signal.SIGSTOP)
        attempts = await taken_over(group, run_id, "b")
        first, reclaimed = attempts[0]["epoch"], attempts[-1]["epoch"]
        # The new attempt passes gate b and finishes the run; then the paused one wakes up
        # with its step b done and tries to write it.
        group.gate("b")
        final = await ended(b, thread_id, run_id)
        assert final["status"] == "success"
        group["a"].signal(signal.SIGCONT)

        async def a_gave_up() -> None:
            assert group["a"].said("lost the lease"), group["a"].lines[-5:]
            assert group["a"].said("resumes as incarnation"), group["a"].lines[-5:]
            # Its write was tried, and refused by the fence.
            assert group["a"].said("no longer holds it"), group["a"].lines[-5:]

        await eventually(a_gave_up, within=WITHIN)
        rows = await group.query(
            "SELECT source, step, epoch FROM checkpoints WHERE run_id = $1 ORDER BY seq", run_id
        )
        # The input once (written at admission), step a by the first attempt, step b only by
        # the reclaiming one: nothing of the old epoch after the reclaim.
        assert [tuple(r) for r in rows] == [
            ("input", 0, None),
            ("step", 1, first),
            ("step", 2, reclaimed),
        ]
        assert await texts(b, thread_id) == [
            ("human", "one"),
            ("ai", "passed a"),
            ("ai", "passed b"),
        ]
        # The paused replica serves again, as a new incarnation.
        a_thread = (await a.threads.create())["thread_id"]
        group.gate("c")
        again = await a.runs.create(
            a_thread, "file_gated", input=user("two", "c"), config=group.config
        )
        assert (await ended(a, a_thread, again["run_id"]))["status"] == "success"
        await a.close()
        await b.close()


async def test_max_attempts_ends_a_run_whose_replica_dies_error_on_another(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, ("a", "b"), "--max-attempts", "1") as group:
        a, b = group["a"].client(), group["b"].client()
        thread_id = (await a.threads.create())["thread_id"]
        run = await a.runs.create(
            thread_id, "file_gated", input=user("one", "never"), config=group.config
        )
        group["a"].signal(signal.SIGKILL)
        await group["a"].process.wait()
        final = await ended(b, thread_id, run["run_id"])
        assert final["status"] == "error"
        assert final["error"]["type"] == "MaxAttemptsExceeded"
        assert (await b.threads.get(thread_id))["status"] == "error"
        await a.close()
        await b.close()


async def test_interrupt_of_a_run_on_a_paused_replica_waits_for_its_lease_to_expire(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as group:
        a, b = group["a"].client(), group["b"].client()
        thread_id = (await a.threads.create())["thread_id"]
        group.gate("a")
        old = await a.runs.create(
            thread_id, "file_gated", input=user("one", "a", "b"), config=group.config
        )

        async def in_step_two() -> None:
            assert group.arrived("b")
            assert ("ai", "passed a") in await texts(b, thread_id)

        await eventually(in_step_two, within=WITHIN)
        group["a"].signal(signal.SIGSTOP)
        group.gate("c")
        new = await b.runs.create(
            thread_id,
            "file_gated",
            input=user("two", "c"),
            config=group.config,
            multitask_strategy="interrupt",
        )
        latest = await ended(b, thread_id, new["run_id"])
        stopped = await ended(b, thread_id, old["run_id"])
        assert latest["status"] == "success"
        assert stopped["status"] == "interrupted"
        attempts = [*await group.attempts(old["run_id"]), *await group.attempts(new["run_id"])]
        # The old attempt ended when its lease expired (the sweeper, on b), then the new began.
        assert attempts[0]["outcome"] == "lost"
        never_overlap(attempts)
        lease = await group.query(
            "SELECT expires_at FROM replicas WHERE incarnation = $1", group["a"].incarnation
        )
        assert attempts[1]["start_time"] >= lease[0]["expires_at"]
        group["a"].signal(signal.SIGCONT)
        assert await texts(b, thread_id) == [
            ("human", "one"),
            ("ai", "passed a"),
            ("human", "two"),
            ("ai", "passed c"),
        ]
        await a.close()
        await b.close()
