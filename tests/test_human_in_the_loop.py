"""Human in the loop (SPEC §11, issue 21), end to end through the SDK: a LangGraph run that
stops at `interrupt()` or `interrupt_before`/`after` ends SUCCESS waiting for input, its thread
says so, a `command` resumes it, and admission refuses what cannot be resumed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.hitl_graphs import FINAL, hitl_registry
from tests.support import GATES, client_of
from turnstile import (
    ConflictError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    TurnstileClient,
)
from turnstile_server.app import App

pytestmark = pytest.mark.timeout(60)

GATE_TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def fresh() -> None:
    FINAL.clear()


def answers() -> list[str]:
    """Every answer the parallel graph's nodes gave, sorted."""
    return sorted(a for state in FINAL for a in state.get("answers", []))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TurnstileClient]:
    async with client_of(str(tmp_path / "hitl.db"), hitl_registry()) as (_, sdk):
        yield sdk


async def ends(client: TurnstileClient, thread_id: str, graph: str, **options: Any) -> Any:
    """Streams a run to its end; returns its parts by event name (lists) and the run."""
    parts: dict[str, list[Any]] = {}
    stream = client.runs.stream(thread_id, graph, stream_mode=["updates"], **options)
    async for part in stream:
        parts.setdefault(part.event, []).append(part.data)
    assert stream.run is not None
    return parts, await client.runs.get(thread_id, stream.run["run_id"])


async def waiting_approval(client: TurnstileClient, request: str = "payment") -> tuple[str, str]:
    """A thread whose approval run stopped at its question; returns it and the interrupt id."""
    thread = await client.threads.create()
    result = await client.runs.wait_run(thread["thread_id"], "approval", input={"request": request})
    assert result.run["status"] == "success"
    got = await client.threads.get(thread["thread_id"])
    [interrupts] = got["interrupts"].values()
    return thread["thread_id"], interrupts[0]["id"]


async def test_an_interrupt_ends_the_run_success_and_its_end_says_it_waits_for_input(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()

    parts, run = await ends(client, thread["thread_id"], "approval", input={"request": "pay"})

    assert run["status"] == "success"
    [end] = parts["end"]
    assert end["status"] == "success" and end["awaiting_input"] is True
    assert end["reason"] == "awaiting input" and end["next"] == ["ask"]
    [pending] = end["interrupts"]
    assert pending["value"] == {"question": "approve pay?"}
    assert len(pending["id"]) == 32 and pending["task_id"]
    got = await client.threads.get(thread["thread_id"])
    assert (got["status"], got["interruption"]) == ("interrupted", "awaiting_input")
    assert got["interrupts"] == {
        pending["task_id"]: [{"id": pending["id"], "value": {"question": "approve pay?"}}]
    }
    waiting = await client.threads.search(interruption="awaiting_input")
    cancelled = await client.threads.search(interruption="cancelled")
    assert thread["thread_id"] in {t["thread_id"] for t in waiting}
    assert thread["thread_id"] not in {t["thread_id"] for t in cancelled}


async def test_the_stream_shows_the_interrupt_in_updates_and_values(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()

    parts = [
        (part.event, part.data)
        async for part in client.runs.stream(
            thread["thread_id"],
            "approval",
            input={"request": "pay"},
            stream_mode=["updates", "values"],
        )
    ]

    [(_, end)] = [p for p in parts if p[0] == "end"]
    [pending] = end["interrupts"]
    shown = {"value": {"question": "approve pay?"}, "id": pending["id"]}
    updates = [data for event, data in parts if event == "updates"]
    values = [data for event, data in parts if event == "values"]
    assert [{k: v for k, v in i.items() if k in shown} for i in updates[-1]["__interrupt__"]] == [
        shown
    ]
    assert [{k: v for k, v in i.items() if k in shown} for i in values[-1]["__interrupt__"]] == [
        shown
    ]
    assert values[-1]["steps"] == ["draft"]
    assert [event for event, _ in parts][-3:] == ["updates", "values", "end"]


async def test_a_resume_continues_the_graph_with_the_value_and_the_thread_is_idle_after(
    client: TurnstileClient,
) -> None:
    thread_id, _ = await waiting_approval(client)

    result = await client.runs.wait_run(thread_id, "approval", command={"resume": "yes"})

    assert result.run["status"] == "success"
    assert FINAL[-1]["decision"] == "yes"
    assert FINAL[-1]["steps"] == ["draft", "ask", "act"]
    got = await client.threads.get(thread_id)
    assert (got["status"], got["interruption"], got["interrupts"]) == ("idle", None, {})


async def test_resuming_a_thread_that_waits_for_nothing_is_nothing_to_resume(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()
    await client.runs.wait(thread["thread_id"], "chain", input={"request": "x"})

    with pytest.raises(FailedPreconditionError) as caught:
        await client.runs.create(thread["thread_id"], "approval", command={"resume": "yes"})

    assert caught.value.reason == "NOTHING_TO_RESUME"
    assert await client.runs.list(thread["thread_id"]) != []  # only the first run
    assert len(await client.runs.list(thread["thread_id"])) == 1


async def test_resuming_an_unknown_interrupt_id_is_unknown_interrupt(
    client: TurnstileClient,
) -> None:
    thread_id, interrupt_id = await waiting_approval(client)
    unknown = "f" * 32

    with pytest.raises(FailedPreconditionError) as caught:
        await client.runs.create(thread_id, "approval", command={"resume": {unknown: "yes"}})

    assert caught.value.reason == "UNKNOWN_INTERRUPT"
    assert caught.value.metadata["interrupt_ids"] == unknown
    assert caught.value.metadata["pending_interrupt_ids"] == interrupt_id
    got = await client.threads.get(thread_id)
    assert got["interruption"] == "awaiting_input"  # refused: nothing changed


async def test_two_parallel_interrupts_are_resumed_each_by_its_id(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()
    first = await client.runs.wait_run(thread["thread_id"], "parallel", input={})
    assert first.run["status"] == "success"
    got = await client.threads.get(thread["thread_id"])
    by_value = {i["value"]: i["id"] for group in got["interrupts"].values() for i in group}
    assert set(by_value) == {"left?", "right?"}

    result = await client.runs.wait_run(
        thread["thread_id"],
        "parallel",
        command={"resume": {by_value["left?"]: "L", by_value["right?"]: "R"}},
    )

    assert result.run["status"] == "success"
    assert answers() == ["left=L", "right=R"]
    assert (await client.threads.get(thread["thread_id"]))["status"] == "idle"


async def test_a_plain_resume_of_two_parallel_interrupts_ends_error_and_the_thread_still_waits(
    client: TurnstileClient,
) -> None:
    """As in LangGraph (and langgraph-api): a value not keyed by interrupt id cannot tell two
    pending interrupts apart; the run ends ERROR with LangGraph's reason before any node runs,
    and the thread still waits on both, which a resume by id then answers."""
    thread = await client.threads.create()
    await client.runs.wait(thread["thread_id"], "parallel", input={})
    got = await client.threads.get(thread["thread_id"])
    by_value = {i["value"]: i["id"] for group in got["interrupts"].values() for i in group}

    refused = await client.runs.wait_run(thread["thread_id"], "parallel", command={"resume": "x"})

    error = refused.run["error"]
    assert refused.run["status"] == "error" and error is not None
    assert error["type"] == "RuntimeError" and "specify the interrupt id" in error["message"]
    assert answers() == []
    again = await client.threads.get(thread["thread_id"])
    assert (again["status"], again["interruption"]) == ("interrupted", "awaiting_input")
    assert sorted(pending_of(again)) == sorted(by_value.values())
    await client.runs.wait(
        thread["thread_id"],
        "parallel",
        command={"resume": {by_value["left?"]: "L", by_value["right?"]: "R"}},
    )
    assert answers() == ["left=L", "right=R"]


async def test_one_of_two_parallel_interrupts_resumed_leaves_the_other_pending(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()
    await client.runs.wait(thread["thread_id"], "parallel", input={})
    got = await client.threads.get(thread["thread_id"])
    by_value = {i["value"]: i["id"] for group in got["interrupts"].values() for i in group}

    await client.runs.wait(
        thread["thread_id"], "parallel", command={"resume": {by_value["left?"]: "L"}}
    )

    again = await client.threads.get(thread["thread_id"])
    assert again["interruption"] == "awaiting_input"
    still = [i for group in again["interrupts"].values() for i in group]
    assert [(i["id"], i["value"]) for i in still] == [(by_value["right?"], "right?")]
    await client.runs.wait_run(
        thread["thread_id"], "parallel", command={"resume": {by_value["right?"]: "R"}}
    )
    assert answers() == ["left=L", "right=R"]


async def test_interrupt_before_stops_before_the_node_and_input_none_continues(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()

    parts, run = await ends(
        client, thread["thread_id"], "chain", input={"request": "x"}, interrupt_before=["act"]
    )

    [end] = parts["end"]
    assert run["status"] == "success"
    assert (end["awaiting_input"], end["interrupts"], end["next"]) == (True, [], ["act"])
    got = await client.threads.get(thread["thread_id"])
    assert (got["status"], got["interruption"], got["interrupts"]) == (
        "interrupted",
        "awaiting_input",
        {},
    )
    await client.runs.wait_run(thread["thread_id"], "chain")
    assert FINAL[-1]["steps"] == ["draft", "act"]
    assert (await client.threads.get(thread["thread_id"]))["status"] == "idle"


async def test_interrupt_after_stops_after_the_node(client: TurnstileClient) -> None:
    thread = await client.threads.create()

    parts, _ = await ends(
        client, thread["thread_id"], "chain", input={"request": "x"}, interrupt_after=["draft"]
    )

    assert parts["end"][0]["next"] == ["act"]
    assert (await client.threads.get(thread["thread_id"]))["interruption"] == "awaiting_input"


async def test_an_interrupt_inside_a_subgraph_waits_and_resumes(client: TurnstileClient) -> None:
    thread = await client.threads.create()

    parts, _ = await ends(client, thread["thread_id"], "nested", input={"request": "deep"})

    [end] = parts["end"]
    assert end["awaiting_input"] and end["next"] == ["inner"]
    [pending] = end["interrupts"]
    assert pending["value"] == {"question": "approve deep?"}
    await client.runs.wait_run(
        thread["thread_id"], "nested", command={"resume": {pending["id"]: "ok"}}
    )
    assert FINAL[-1]["decision"] == "ok"
    assert FINAL[-1]["steps"] == ["draft", "draft", "ask", "act"]


async def test_new_input_on_a_waiting_thread_starts_over_and_records_what_it_discarded(
    client: TurnstileClient,
) -> None:
    thread_id, interrupt_id = await waiting_approval(client, "first")

    parts, run = await ends(client, thread_id, "approval", input={"request": "second"})

    assert run["discarded_interrupts"] == [interrupt_id]
    assert parts["metadata"][0]["discarded_interrupts"] == [interrupt_id]
    [end] = parts["end"]
    assert end["interrupts"][0]["value"] == {"question": "approve second?"}


async def test_new_input_on_a_waiting_thread_with_reject_is_awaiting_input(
    client: TurnstileClient,
) -> None:
    thread_id, interrupt_id = await waiting_approval(client)

    with pytest.raises(FailedPreconditionError) as caught:
        await client.runs.create(
            thread_id, "approval", input={"request": "again"}, on_pending_interrupt="reject"
        )
    resumed = await client.runs.wait_run(
        thread_id, "approval", command={"resume": "yes"}, on_pending_interrupt="reject"
    )

    assert caught.value.reason == "AWAITING_INPUT"
    assert caught.value.metadata["pending_interrupt_ids"] == interrupt_id
    assert resumed.run["status"] == "success"  # a command is still admitted
    assert FINAL[-1]["decision"] == "yes"


@pytest.mark.parametrize("strategy", ["reject", "interrupt", "rollback", "enqueue"])
async def test_every_strategy_admits_a_resume_on_a_waiting_thread(
    client: TurnstileClient, strategy: Any
) -> None:
    thread_id, _ = await waiting_approval(client)

    result = await client.runs.wait_run(
        thread_id, "approval", command={"resume": "yes"}, multitask_strategy=strategy
    )

    assert result.run["status"] == "success" and FINAL[-1]["decision"] == "yes"


async def test_concurrent_resumes_with_reject_exactly_one_wins(client: TurnstileClient) -> None:
    thread_id, _ = await waiting_approval(client, "gate:race")

    async def resume(answer: str) -> str:
        try:
            run = await client.runs.create(
                thread_id, "approval", command={"resume": answer}, multitask_strategy="reject"
            )
        except ConflictError:
            return "refused"
        return run["run_id"]

    outcomes = await asyncio.gather(*(resume(f"answer-{n}") for n in range(8)))
    await asyncio.wait_for(GATES.arrived("gate:race").wait(), GATE_TIMEOUT)
    GATES.open("gate:race")

    winners = [o for o in outcomes if o != "refused"]
    assert len(winners) == 1, outcomes
    await client.runs.join(thread_id, winners[0])
    assert [state["decision"] for state in FINAL] == [f"answer-{outcomes.index(winners[0])}"]
    assert len(await client.runs.list(thread_id)) == 2


async def test_a_rolled_back_resume_leaves_the_thread_waiting_again(
    client: TurnstileClient,
) -> None:
    thread_id, interrupt_id = await waiting_approval(client, "gate:rb")
    run = await client.runs.create(thread_id, "approval", command={"resume": "yes"})
    await asyncio.wait_for(GATES.arrived("gate:rb").wait(), GATE_TIMEOUT)

    await client.runs.cancel(thread_id, run["run_id"], wait=True, action="rollback")

    got = await client.threads.get(thread_id)
    assert (got["status"], got["interruption"]) == ("interrupted", "awaiting_input")
    assert [i["id"] for group in got["interrupts"].values() for i in group] == [interrupt_id]


async def test_an_interrupted_resume_leaves_a_cancelled_thread(client: TurnstileClient) -> None:
    thread_id, _ = await waiting_approval(client, "gate:int")
    run = await client.runs.create(thread_id, "approval", command={"resume": "yes"})
    await asyncio.wait_for(GATES.arrived("gate:int").wait(), GATE_TIMEOUT)

    await client.runs.cancel(thread_id, run["run_id"], wait=True)

    got = await client.threads.get(thread_id)
    assert (got["status"], got["interruption"], got["interrupts"]) == (
        "interrupted",
        "cancelled",
        {},
    )


def pending_of(thread: Any) -> list[str]:
    """The ids of a thread's pending interrupts."""
    return [i["id"] for group in thread["interrupts"].values() for i in group]


async def held_resume(client: TurnstileClient, thread_id: str, resume: Any, hold: str) -> Any:
    """A resume run held inside the node it resumed, before its first step has landed."""
    run = await client.runs.create(thread_id, "approval", command={"resume": resume})
    await asyncio.wait_for(GATES.arrived(hold).wait(), GATE_TIMEOUT)
    return run


@pytest.mark.parametrize("action", ["interrupt", "rollback"])
async def test_a_resume_cancelled_before_its_first_step_leaves_the_thread_waiting(
    client: TurnstileClient, action: Any
) -> None:
    thread_id, interrupt_id = await waiting_approval(client)
    hold = f"hold:{uuid.uuid4().hex}"
    run = await held_resume(client, thread_id, hold, hold)

    await client.runs.cancel(thread_id, run["run_id"], wait=True, action=action)

    got = await client.threads.get(thread_id)
    assert (got["status"], got["interruption"]) == ("interrupted", "awaiting_input")
    assert pending_of(got) == [interrupt_id]
    state = await client.threads.get_state(thread_id)
    assert state["next"] == ["ask"] and [i["id"] for i in state["interrupts"]] == [interrupt_id]
    resumed = await client.runs.wait_run(thread_id, "approval", command={"resume": "yes"})
    assert resumed.run["status"] == "success" and FINAL[-1]["decision"] == "yes"
    assert FINAL[-1]["steps"] == ["draft", "ask", "act"]  # the cancelled resume left nothing


async def test_new_input_superseding_a_resume_before_its_first_step_records_the_discarded(
    client: TurnstileClient,
) -> None:
    thread_id, interrupt_id = await waiting_approval(client)
    hold = f"hold:{uuid.uuid4().hex}"
    resume = await held_resume(client, thread_id, hold, hold)

    result = await client.runs.wait_run(
        thread_id, "approval", input={"request": "again"}, multitask_strategy="interrupt"
    )

    assert (await client.runs.get(thread_id, resume["run_id"]))["status"] == "interrupted"
    assert result.run["discarded_interrupts"] == [interrupt_id]  # still pending when it began
    got = await client.threads.get(thread_id)
    assert pending_of(got) != [interrupt_id] and got["interruption"] == "awaiting_input"


async def test_a_resume_superseding_a_resume_before_its_first_step_answers_the_interrupt(
    client: TurnstileClient,
) -> None:
    thread_id, _ = await waiting_approval(client)
    hold = f"hold:{uuid.uuid4().hex}"
    first = await held_resume(client, thread_id, hold, hold)

    second = await client.runs.wait_run(
        thread_id, "approval", command={"resume": "yes"}, multitask_strategy="interrupt"
    )

    superseded = await client.runs.get(thread_id, first["run_id"])
    assert (superseded["status"], superseded["superseded_by"]) == (
        "interrupted",
        second.run["run_id"],
    )
    assert second.run["status"] == "success"
    assert [state["decision"] for state in FINAL] == ["yes"]  # the first answer never landed
    assert FINAL[-1]["steps"] == ["draft", "ask", "act"]
    assert (await client.threads.get(thread_id))["status"] == "idle"


# A resume admitted behind another run cannot be checked at admission: it is when it starts.


async def test_an_enqueued_resume_of_a_thread_that_waits_for_nothing_when_it_starts_ends_error(
    client: TurnstileClient,
) -> None:
    thread_id, _ = await waiting_approval(client)
    hold = f"hold:{uuid.uuid4().hex}"
    first = await held_resume(client, thread_id, hold, hold)
    queued = await client.runs.create(
        thread_id, "approval", command={"resume": "again"}, multitask_strategy="enqueue"
    )  # admitted: the thread is busy, what it will wait for is not known yet

    GATES.open(hold)
    result = await client.runs.join_run(thread_id, queued["run_id"])

    assert (await client.runs.get(thread_id, first["run_id"]))["status"] == "success"
    error = result.run["error"]
    assert result.run["status"] == "error" and error is not None
    assert error["type"] == "NOTHING_TO_RESUME" and "waits for no input" in error["message"]
    assert [state["decision"] for state in FINAL] == [hold]  # the graph did not run again
    got = await client.threads.get(thread_id)
    assert (got["status"], got["interruption"], got["interrupts"]) == ("error", None, {})


async def test_an_enqueued_resume_of_an_interrupt_answered_before_it_starts_ends_error(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()
    thread_id = thread["thread_id"]
    await client.runs.wait(thread_id, "parallel", input={})
    got = await client.threads.get(thread_id)
    by_value = {i["value"]: i["id"] for group in got["interrupts"].values() for i in group}
    hold = f"hold:{uuid.uuid4().hex}"
    first = await client.runs.create(
        thread_id, "parallel", command={"resume": {by_value["left?"]: hold}}
    )
    await asyncio.wait_for(GATES.arrived(hold).wait(), GATE_TIMEOUT)
    queued = await client.runs.create(
        thread_id, "parallel", command={"resume": {by_value["left?"]: "twice"}}
    )

    GATES.open(hold)
    result = await client.runs.join_run(thread_id, queued["run_id"])

    assert (await client.runs.get(thread_id, first["run_id"]))["status"] == "success"
    error = result.run["error"]
    assert result.run["status"] == "error" and error is not None
    assert error["type"] == "UNKNOWN_INTERRUPT" and by_value["left?"] in error["message"]
    assert answers() == [f"left={hold}"]
    after = await client.threads.get(thread_id)  # still waiting for the other answer
    assert (after["status"], after["interruption"]) == ("interrupted", "awaiting_input")
    assert pending_of(after) == [by_value["right?"]]
    await client.runs.wait(thread_id, "parallel", command={"resume": {by_value["right?"]: "R"}})
    assert answers() == [f"left={hold}", "right=R"]


@pytest.mark.parametrize("strategy", ["reject", "interrupt", "rollback", "enqueue"])
async def test_a_resume_on_an_idle_thread_is_refused_at_admission_with_every_strategy(
    client: TurnstileClient, strategy: Any
) -> None:
    thread = await client.threads.create()
    await client.runs.wait(thread["thread_id"], "chain", input={"request": "x"})

    with pytest.raises(FailedPreconditionError) as caught:
        await client.runs.create(
            thread["thread_id"], "approval", command={"resume": "y"}, multitask_strategy=strategy
        )

    assert caught.value.reason == "NOTHING_TO_RESUME"
    assert len(await client.runs.list(thread["thread_id"])) == 1


async def test_the_interrupt_is_still_pending_after_a_restart_and_the_resume_works(
    tmp_path: Path,
) -> None:
    database = str(tmp_path / "restart.db")
    async with client_of(database, hitl_registry()) as (_, first):
        thread = await first.threads.create()
        await first.runs.wait(thread["thread_id"], "approval", input={"request": "later"})

    async with client_of(database, hitl_registry()) as (_, second):
        got = await second.threads.get(thread["thread_id"])
        result = await second.runs.wait_run(
            thread["thread_id"], "approval", command={"resume": "approved"}
        )

    assert got["interruption"] == "awaiting_input"
    assert result.run["status"] == "success" and FINAL[-1]["decision"] == "approved"


# UpdateThreadState: a checkpoint written through the graph's reducers as if a node returned it.


async def test_update_state_as_the_asking_node_answers_it_and_next_moves_on(
    client: TurnstileClient,
) -> None:
    thread_id, _ = await waiting_approval(client)

    written = await client.threads.update_state(
        thread_id, {"decision": "by hand", "steps": ["manual"]}, as_node="ask"
    )

    assert written["checkpoint"]["thread_id"] == thread_id
    assert written["checkpoint"]["checkpoint_id"]
    got = await client.threads.get(thread_id)
    assert (got["status"], got["interruption"], got["interrupts"]) == (
        "interrupted",
        "awaiting_input",
        {},
    )  # stopped before `act` now, as after interrupt_before
    await client.runs.wait(thread_id, "approval")
    assert FINAL[-1]["decision"] == "by hand"
    assert FINAL[-1]["steps"] == ["draft", "manual", "act"]  # through the reducer: appended
    assert (await client.threads.get(thread_id))["status"] == "idle"


async def test_update_state_while_a_run_is_inflight_is_refused_thread_busy(
    client: TurnstileClient,
) -> None:
    thread_id, _ = await waiting_approval(client, "gate:busy")
    run = await client.runs.create(thread_id, "approval", command={"resume": "yes"})
    await asyncio.wait_for(GATES.arrived("gate:busy").wait(), GATE_TIMEOUT)

    with pytest.raises(ConflictError) as caught:
        await client.threads.update_state(thread_id, {"decision": "no"}, as_node="ask")

    GATES.open("gate:busy")
    await client.runs.join(thread_id, run["run_id"])
    assert caught.value.reason == "THREAD_BUSY"
    assert FINAL[-1]["decision"] == "yes"


async def test_update_state_as_an_unknown_node_or_at_an_unknown_checkpoint_is_refused(
    client: TurnstileClient,
) -> None:
    thread_id, _ = await waiting_approval(client)

    with pytest.raises(InvalidArgumentError) as bad_node:
        await client.threads.update_state(thread_id, {"decision": "x"}, as_node="nosuch")
    with pytest.raises(NotFoundError) as bad_checkpoint:
        await client.threads.update_state(
            thread_id, {"decision": "x"}, as_node="ask", checkpoint_id=str(uuid.uuid4())
        )

    assert bad_node.value.reason == "INVALID_NODE_NAMES"
    assert bad_checkpoint.value.reason == "CHECKPOINT_NOT_FOUND"
    assert (await client.threads.get(thread_id))["interruption"] == "awaiting_input"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[App, TurnstileClient]]:
    async with client_of(str(tmp_path / "hitl.db"), hitl_registry()) as (app, sdk):
        yield app, sdk


async def test_a_run_admitted_while_an_update_is_being_written_refuses_the_update(
    served: tuple[App, TurnstileClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced interleaving: the update is computed (the thread had no inflight run), then a
    run is admitted and starts, then the update is written. The check that no run is inflight
    is made in the update's write transaction, so the update is refused whole."""
    app, client = served
    thread_id, _ = await waiting_approval(client)
    hold = f"hold:{uuid.uuid4().hex}"
    threads = app.store.threads
    apply = threads.apply_update
    admitted: list[Any] = []

    async def run_admitted_first(update: Any) -> None:
        admitted.append(await held_resume(client, thread_id, hold, hold))
        await apply(update)

    monkeypatch.setattr(threads, "apply_update", run_admitted_first)
    with pytest.raises(ConflictError) as caught:
        await client.threads.update_state(thread_id, {"decision": "by hand"}, as_node="ask")
    GATES.open(hold)
    result = await client.runs.join_run(thread_id, admitted[0]["run_id"])

    assert caught.value.reason == "THREAD_BUSY"
    assert caught.value.metadata["inflight_run_ids"] == admitted[0]["run_id"]
    assert result.run["status"] == "success" and FINAL[-1]["decision"] == hold
    history = await client.threads.get_history(thread_id, limit=100)
    assert "update" not in {c["metadata"].get("source") for c in history}, "nothing landed"
    assert (await client.threads.get(thread_id))["status"] == "idle"


async def test_an_update_computed_before_a_run_wrote_is_computed_again_on_the_new_state(
    served: tuple[App, TurnstileClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced interleaving: the update is computed, then a run resumes the thread to its end,
    then the update is written: it would fork the history under the run's checkpoints and
    say the thread waits as it no longer does. It is computed again on the run's state."""
    app, client = served
    thread_id, _ = await waiting_approval(client)
    threads = app.store.threads
    apply = threads.apply_update
    calls = 0

    async def run_ended_first(update: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await client.runs.wait(thread_id, "approval", command={"resume": "yes"})
        await apply(update)

    monkeypatch.setattr(threads, "apply_update", run_ended_first)
    written = await client.threads.update_state(
        thread_id, {"decision": "by hand", "steps": ["manual"]}, as_node="ask"
    )

    assert calls == 2
    state = await client.threads.get_state(thread_id)
    assert state["checkpoint"]["checkpoint_id"] == written["checkpoint"]["checkpoint_id"]
    assert state["values"]["steps"] == ["draft", "ask", "act", "manual"]  # on the run's state
    assert state["values"]["decision"] == "by hand" and state["next"] == ["act"]
    got = await client.threads.get(thread_id)
    assert (got["status"], got["interruption"], got["interrupts"]) == (
        "interrupted",
        "awaiting_input",
        {},
    )


# The strategy x situation matrix's row "thread waiting for input", in both modes.


@pytest.mark.parametrize("mode", ["discard", "reject"])
@pytest.mark.parametrize("strategy", ["reject", "enqueue", "interrupt", "rollback"])
async def test_new_input_on_a_thread_waiting_for_input(
    client: TurnstileClient, strategy: Any, mode: Any
) -> None:
    thread_id, interrupt_id = await waiting_approval(client, "first")
    [before] = await client.runs.list(thread_id)

    if mode == "reject":
        with pytest.raises(FailedPreconditionError) as caught:
            await client.runs.create(
                thread_id,
                "approval",
                input={"request": "second"},
                multitask_strategy=strategy,
                on_pending_interrupt=mode,
            )
        assert caught.value.reason == "AWAITING_INPUT"
        assert await client.runs.list(thread_id) == [before]  # nothing written
        got = await client.threads.get(thread_id)
        assert [i["id"] for group in got["interrupts"].values() for i in group] == [interrupt_id]
        return
    result = await client.runs.wait_run(
        thread_id,
        "approval",
        input={"request": "second"},
        multitask_strategy=strategy,
        on_pending_interrupt=mode,
    )
    assert result.run["status"] == "success"
    assert result.run["discarded_interrupts"] == [interrupt_id]
    assert await client.runs.get(thread_id, before["run_id"]) == before  # never touched
    got = await client.threads.get(thread_id)
    [pending] = [i for group in got["interrupts"].values() for i in group]
    assert pending["value"] == {"question": "approve second?"}  # it started over and asks again


# Time travel: a run with checkpoint_id continues from that earlier checkpoint, forking.


async def checkpoints_of(client: TurnstileClient, thread_id: str, **options: Any) -> list[Any]:
    """A chain run's `checkpoints` events, streamed to its end."""
    stream = client.runs.stream(thread_id, "chain", stream_mode="checkpoints", **options)
    return [part.data async for part in stream if part.event == "checkpoints"]


async def test_a_run_from_an_earlier_checkpoint_forks_the_history_there(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()
    original = await checkpoints_of(client, thread["thread_id"], input={"request": "x"})
    [before_act] = [c for c in original if c["next"] == ["act"]]
    fork_point = before_act["config"]["configurable"]["checkpoint_id"]

    forked = await checkpoints_of(client, thread["thread_id"], checkpoint_id=fork_point)

    assert FINAL[-1]["steps"] == ["draft", "act"]  # act ran again on the state at the fork
    assert len(FINAL) == 2
    first, last = forked[0], forked[-1]
    assert first["parent_config"]["configurable"]["checkpoint_id"] == fork_point
    assert last["next"] == [] and last["values"]["steps"] == ["draft", "act"]
    ids = {c["config"]["configurable"]["checkpoint_id"] for c in original}
    assert not ids & {c["config"]["configurable"]["checkpoint_id"] for c in forked}  # a branch


async def test_unknown_nodes_and_an_unknown_checkpoint_are_refused_at_admission(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()

    with pytest.raises(InvalidArgumentError) as before:
        await client.runs.create(thread["thread_id"], "chain", interrupt_before=["nosuch"])
    with pytest.raises(InvalidArgumentError) as goto:
        await client.runs.create(thread["thread_id"], "chain", command={"goto": "nosuch"})
    with pytest.raises(NotFoundError) as checkpoint:
        await client.runs.create(thread["thread_id"], "chain", checkpoint_id=str(uuid.uuid4()))

    assert (before.value.reason, before.value.metadata["field"]) == (
        "INVALID_NODE_NAMES",
        "interrupt_before",
    )
    assert goto.value.metadata["field"] == "command.goto"
    assert checkpoint.value.reason == "CHECKPOINT_NOT_FOUND"
    assert await client.runs.list(thread["thread_id"]) == []


# The thread state of a waiting thread, over gRPC: next, tasks, interrupts, checkpoints.


async def test_the_state_of_a_waiting_thread_shows_next_its_task_and_the_interrupt(
    client: TurnstileClient,
) -> None:
    thread_id, interrupt_id = await waiting_approval(client)

    state = await client.threads.get_state(thread_id)
    parent = state["parent_checkpoint"]
    assert parent is not None
    earlier = await client.threads.get_state(thread_id, checkpoint_id=parent["checkpoint_id"])

    assert state["next"] == ["ask"]
    [task] = state["tasks"]
    assert (task["name"], task["error"], task["checkpoint"]) == ("ask", None, None)
    assert task["id"] and task["interrupts"] == [
        {"id": interrupt_id, "value": {"question": "approve payment?"}}
    ]
    assert [(i["id"], i["value"]) for i in state["interrupts"]] == [
        (interrupt_id, {"question": "approve payment?"})
    ]
    assert state["checkpoint"]["checkpoint_id"] == state["checkpoint_id"]
    assert earlier["checkpoint"]["checkpoint_id"] == parent["checkpoint_id"]
    assert earlier["next"] == ["draft"] and earlier["interrupts"] == []  # a past state
    assert earlier["values"] == {"request": "payment", "steps": []}
    assert state["values"]["steps"] == ["draft"]


async def test_the_task_of_a_subgraph_that_waits_points_at_the_subgraphs_checkpoint(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()
    await client.runs.wait(thread["thread_id"], "nested", input={"request": "deep"})

    state = await client.threads.get_state(thread["thread_id"])

    [task] = state["tasks"]
    assert task["name"] == "inner" and task["checkpoint"] is not None
    assert task["checkpoint"]["thread_id"] == thread["thread_id"]
    assert task["checkpoint"]["checkpoint_ns"].startswith("inner:")
    [pending] = state["interrupts"]
    assert pending["value"] == {"question": "approve deep?"}


# Command's update and goto reach LangGraph's Command.


async def test_a_command_with_update_and_goto_runs_that_node_on_the_updated_state(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()
    await client.runs.wait(thread["thread_id"], "chain", input={"request": "x"})

    result = await client.runs.wait_run(
        thread["thread_id"],
        "chain",
        command={"update": {"steps": ["manual"], "decision": "set"}, "goto": "act"},
    )

    assert result.run["status"] == "success"
    assert len(FINAL) == 2 and FINAL[-1]["decision"] == "set"  # act ran again, on the update
    assert FINAL[-1]["steps"] == ["draft", "act", "manual", "act"]  # through the reducer
    assert result.values["steps"] == ["draft", "act", "manual", "act"]


def parent_id(checkpoint: Any) -> str | None:
    parent = checkpoint["parent_checkpoint"]
    return None if parent is None else str(parent["checkpoint_id"])


# Time travel: both branches in GetThreadHistory, and a rolled-back fork leaves no trace.


async def test_the_history_shows_both_branches_of_a_fork_with_their_parents(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()
    thread_id = thread["thread_id"]
    await client.runs.wait(thread_id, "chain", input={"request": "x"})
    original = await client.threads.get_history(thread_id, limit=100)
    [fork_point] = [c for c in original if c["next"] == ["act"]]

    fork = await client.runs.wait_run(thread_id, "chain", checkpoint_id=fork_point["checkpoint_id"])
    history = await client.threads.get_history(thread_id, limit=100)

    by_id = {c["checkpoint_id"]: c for c in history}
    assert {c["checkpoint_id"] for c in original} < set(by_id), "the first branch stays"
    forked = [c for c in history if c["run_id"] == fork.run["run_id"]]
    assert forked and history[0]["run_id"] == fork.run["run_id"]
    oldest = forked[-1]["parent_checkpoint"]
    assert oldest is not None and oldest["checkpoint_id"] == fork_point["checkpoint_id"]
    for checkpoint in history:  # every parent is in the history: two branches, one root
        parent = checkpoint["parent_checkpoint"]
        assert parent is None or parent["checkpoint_id"] in by_id
    point = fork_point["checkpoint_id"]
    children = [c for c in history if parent_id(c) == point]
    assert {c["run_id"] for c in children} == {original[0]["run_id"], fork.run["run_id"]}
    state = await client.threads.get_state(thread_id)
    assert state["checkpoint_id"] == forked[0]["checkpoint_id"]


async def test_a_rolled_back_fork_restores_the_state_from_before_it(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()
    thread_id = thread["thread_id"]
    gate = f"gate:{uuid.uuid4().hex}"
    GATES.open(gate)  # the first run passes; the fork's act, on the same request, waits
    await client.runs.wait(thread_id, "chain", input={"request": gate})
    GATES.event(gate).clear()
    GATES.arrived(gate).clear()
    before = await client.threads.get_state(thread_id)
    history = await client.threads.get_history(thread_id, limit=100)
    [fork_point] = [c for c in history if c["next"] == ["act"]]

    fork = await client.runs.create(thread_id, "chain", checkpoint_id=fork_point["checkpoint_id"])
    await asyncio.wait_for(GATES.arrived(gate).wait(), GATE_TIMEOUT)
    await client.runs.cancel(thread_id, fork["run_id"], wait=True, action="rollback")

    after = await client.threads.get_state(thread_id)
    assert after["checkpoint_id"] == before["checkpoint_id"]
    assert after["values"] == before["values"] and after["next"] == []
    assert await client.threads.get_history(thread_id, limit=100) == history
    assert (await client.threads.get(thread_id))["status"] == "idle"
