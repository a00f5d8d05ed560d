"""StreamRun and JoinRunStream end to end over gRPC (SPEC §5), with raw stubs.

Exact resume at every cut, superseded runs' `end`, many subscribers, disconnects, queued runs.
"""

from __future__ import annotations

import asyncio

import pytest

from tests import support
from tests.rpc import Stubs, human_input, struct
from tests.streams import (
    ALL_MODES,
    QUESTION,
    Event,
    RunStream,
    agent_stream,
    arrived,
    assert_well_formed,
    count,
    create_run,
    get_run,
    has_event,
    join_run,
    join_stream,
    new_thread,
    read_all,
    stream_run,
)
from turnstile.v1 import run_pb2, run_service_pb2

# StreamRun and JoinRunStream: sequences and exact resume.


async def test_agent_stream_in_every_mode_is_metadata_then_steps_then_end_numbered_from_1(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)

    run, events = await read_all(agent_stream(stubs, thread_id))

    assert run.status == run_pb2.RUN_STATUS_PENDING and run.queue_position == 0
    assert_well_formed(events)
    assert events[0][2] == {"run_id": run.run_id, "thread_id": thread_id, "attempt": 1.0}
    kinds = {event for _, event, _ in events}
    assert kinds == {"metadata", "values", "updates", "messages", "end"}
    final = events[-2]
    assert final[1] == "values"
    answer = final[2]["messages"][-1]
    # LangGraph's messages-tuple: `[chunk, metadata]`, the tool's result among them.
    chunks = [data[0] for _, event, data in events if event == "messages"]
    tokens = "".join(chunk["content"] for chunk in chunks if chunk["id"] == answer["id"])
    assert answer["content"] == tokens, "the chunks make up the answer"
    assert events[-1][2] == {"status": "success", "reason": "", "action": "", "superseded_by": ""}


async def test_join_run_stream_after_every_cut_point_gives_exactly_the_rest(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)
    run, events = await read_all(agent_stream(stubs, thread_id))
    assert_well_formed(events)

    for cut in range(len(events) + 1):
        joined_run, rest = await read_all(join_stream(stubs, run, after_seq=cut))
        assert joined_run.run_id == run.run_id
        assert joined_run.status == run_pb2.RUN_STATUS_SUCCESS
        assert rest == events[cut:], f"after_seq={cut}"


async def test_join_run_stream_cut_mid_run_follows_live_to_the_end_without_gap_or_duplicate(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)
    gates = ["g1", "g2", "g3"]
    first = RunStream(
        stream_run(stubs, thread_id, "chatty", {"gates": gates}, stream_mode=ALL_MODES)
    )
    run = await first.opened()
    await arrived("g1")
    support.GATES.open("g1")
    await arrived("g2")
    before = await first.until(has_event("messages", 6))  # g1's and g2's chunks
    cut = before[-1][0]
    # Both the caller and a joiner cut here go on live while the run waits at g2.
    joiner = RunStream(join_stream(stubs, run, after_seq=cut))
    joined_run = await joiner.opened()
    assert joined_run.status == run_pb2.RUN_STATUS_RUNNING
    support.GATES.open("g2")
    await arrived("g3")
    support.GATES.open("g3")

    whole = await first.to_end()
    rest = await joiner.to_end()

    assert_well_formed(whole)
    assert rest == whole[cut:]
    assert [data for _, event, data in whole if event == "custom"] == [{"gate": g} for g in gates]


async def test_every_stream_mode_selects_its_events_and_metadata_and_end_always_come(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)
    by_mode: dict[int, set[str]] = {}
    for mode in ALL_MODES:
        _, events = await read_all(
            stream_run(stubs, thread_id, "burst", {"chunks": 2, "customs": 1}, stream_mode=[mode])
        )
        assert_well_formed(events)
        by_mode[mode] = {event for _, event, _ in events} - {"metadata", "end"}

    assert by_mode == {
        run_pb2.STREAM_MODE_VALUES: {"values"},
        run_pb2.STREAM_MODE_UPDATES: {"updates"},
        run_pb2.STREAM_MODE_MESSAGES: {"messages"},
        run_pb2.STREAM_MODE_CUSTOM: {"custom"},
    }


# Superseded runs.


STRATEGY = {
    "interrupt": run_pb2.MULTITASK_STRATEGY_INTERRUPT,
    "rollback": run_pb2.MULTITASK_STRATEGY_ROLLBACK,
}


@pytest.mark.parametrize("action", ["interrupt", "rollback"])
async def test_a_superseded_running_run_stream_ends_with_end_naming_the_new_run(
    stubs: Stubs, action: str
) -> None:
    thread_id = await new_thread(stubs)
    old = RunStream(stream_run(stubs, thread_id, "gated", {"gates": ["held"]}))
    old_run = await old.opened()
    await arrived("held")
    await old.until(has_event("metadata"))

    new_run = await create_run(stubs, thread_id, "echo", {}, multitask_strategy=STRATEGY[action])
    events = await old.to_end()

    assert_well_formed(events)
    end = events[-1][2]
    assert end["status"] == "interrupted"
    assert end["action"] == action
    assert end["superseded_by"] == new_run.run_id
    assert new_run.run_id in end["reason"], end
    assert (await join_run(stubs, new_run)).status == run_pb2.RUN_STATUS_SUCCESS
    assert old.run_ids == {old_run.run_id}


@pytest.mark.parametrize("action", ["interrupt", "rollback"])
async def test_a_superseded_queued_run_stream_is_just_end_naming_the_new_run(
    stubs: Stubs, action: str
) -> None:
    thread_id = await new_thread(stubs)
    await create_run(stubs, thread_id, "gated", {"gates": ["held"]})
    await arrived("held")
    queued = RunStream(stream_run(stubs, thread_id, "echo", {}))
    queued_run = await queued.opened()
    assert queued_run.status == run_pb2.RUN_STATUS_PENDING

    new_run = await create_run(stubs, thread_id, "echo", {}, multitask_strategy=STRATEGY[action])
    events = await queued.to_end()

    assert [(seq, event) for seq, event, _ in events] == [(1, "end")], "never started: no metadata"
    end = events[0][2]
    assert end["status"] == "interrupted"
    assert end["action"] == action
    assert end["superseded_by"] == new_run.run_id
    assert new_run.run_id in end["reason"], end
    assert (await join_run(stubs, new_run)).status == run_pb2.RUN_STATUS_SUCCESS


async def test_under_a_burst_of_interrupting_streams_every_stream_ends_with_its_end(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)

    async def one() -> tuple[run_pb2.Run, list[Event]]:
        return await read_all(
            stream_run(
                stubs,
                thread_id,
                "recording",
                {"steps": 2, "pause": 0.001},
                multitask_strategy=run_pb2.MULTITASK_STRATEGY_INTERRUPT,
            )
        )

    for _ in range(3):
        results = await asyncio.gather(*(one() for _ in range(10)))
        successes = 0
        for run, events in results:
            assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
            end = events[-1]
            assert end[1] == "end" and count(events, "end") == 1, events
            if end[2]["status"] == "success":
                successes += 1
                assert events[0][1] == "metadata"
            else:
                assert end[2]["status"] == "interrupted" and end[2]["action"] == "interrupt"
                assert end[2]["superseded_by"] in {r.run_id for r, _ in results} - {run.run_id}
        assert successes >= 1, "the last admitted run completes"


# Many subscribers.


async def test_twenty_join_subscribers_and_the_caller_see_the_same_agent_sequence(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)
    config = {"configurable": {"step_seconds": 0.15}}  # long enough to join while it runs
    caller = RunStream(
        stubs.runs.StreamRun(
            run_service_pb2.StreamRunRequest(
                thread_id=thread_id,
                assistant_id="agent",
                input=human_input(QUESTION),
                config=struct(config),
                stream_mode=ALL_MODES,
            )
        )
    )
    run = await caller.opened()
    joiners = [RunStream(join_stream(stubs, run)) for _ in range(20)]
    opened = await asyncio.gather(*(j.opened() for j in joiners))
    assert all(o.status != run_pb2.RUN_STATUS_SUCCESS for o in opened), "joined while it ran"

    sequences = await asyncio.gather(caller.to_end(), *(j.to_end() for j in joiners))

    assert_well_formed(sequences[0])
    assert any(event == "messages" for _, event, _ in sequences[0])
    for index, sequence in enumerate(sequences[1:]):
        assert sequence == sequences[0], f"joiner {index}"


# Disconnects.


async def test_cancelling_a_cancel_on_disconnect_stream_interrupts_its_run(stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)
    stream = RunStream(
        stream_run(
            stubs,
            thread_id,
            "gated",
            {"gates": ["held"]},
            on_disconnect=run_pb2.ON_DISCONNECT_CANCEL,
        )
    )
    run = await stream.opened()
    await arrived("held")
    watcher = RunStream(join_stream(stubs, run))
    await watcher.opened()

    stream.call.cancel()

    events = await watcher.to_end()
    assert events[-1][2]["status"] == "interrupted"
    ended = await get_run(stubs, run)
    assert ended.status == run_pb2.RUN_STATUS_INTERRUPTED
    assert "disconnect" in ended.cancel_reason, ended.cancel_reason
    assert "disconnect" in events[-1][2]["reason"]


async def test_cancelling_a_continue_stream_or_a_join_stream_leaves_the_run_running(
    stubs: Stubs,
) -> None:
    kept: dict[str, tuple[RunStream, run_pb2.Run]] = {}
    for name, on_disconnect in [
        ("continue", run_pb2.ON_DISCONNECT_CONTINUE),
        ("default", run_pb2.ON_DISCONNECT_UNSPECIFIED),
    ]:
        thread_id = await new_thread(stubs)
        stream = RunStream(
            stream_run(stubs, thread_id, "gated", {"gates": [name]}, on_disconnect=on_disconnect)
        )
        kept[name] = (stream, await stream.opened())
        await arrived(name)
    thread_id = await new_thread(stubs)
    joined_run = await create_run(stubs, thread_id, "gated", {"gates": ["joined"]})
    await arrived("joined")
    join = RunStream(join_stream(stubs, joined_run))
    await join.opened()
    kept["join"] = (join, joined_run)
    # The barrier: a cancel-on-disconnect stream cancelled last; once its run is interrupted,
    # the server has handled the disconnects before it.
    barrier_thread = await new_thread(stubs)
    barrier = RunStream(
        stream_run(
            stubs,
            barrier_thread,
            "gated",
            {"gates": ["barrier"]},
            on_disconnect=run_pb2.ON_DISCONNECT_CANCEL,
        )
    )
    barrier_run = await barrier.opened()
    await arrived("barrier")

    for stream, _ in kept.values():
        stream.call.cancel()
    barrier.call.cancel()

    async def barrier_interrupted() -> None:
        assert (await get_run(stubs, barrier_run)).status == run_pb2.RUN_STATUS_INTERRUPTED

    await support.eventually(barrier_interrupted)
    runs = {name: run for name, (_, run) in kept.items()}
    for name, run in runs.items():
        assert (await get_run(stubs, run)).status == run_pb2.RUN_STATUS_RUNNING, name
    for gate in ("continue", "default", "joined"):
        support.GATES.open(gate)
    for name, run in runs.items():
        assert (await join_run(stubs, run)).status == run_pb2.RUN_STATUS_SUCCESS, name


# Queued runs.


async def test_a_queued_run_stream_answers_at_once_then_follows_the_run_when_it_starts(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)
    running = await create_run(stubs, thread_id, "gated", {"gates": ["first"]})
    await arrived("first")
    queued = RunStream(
        stream_run(stubs, thread_id, "gated", {"gates": ["second"]}, stream_mode=ALL_MODES)
    )

    run = await queued.opened()  # with the first run still held at its gate

    assert run.status == run_pb2.RUN_STATUS_PENDING
    assert run.HasField("queue_position")
    assert run.queue_position == 1, "one run (the running one) goes before it"
    assert not run.HasField("start_time")
    support.GATES.open("first")
    await arrived("second")
    await queued.until(has_event("metadata"))
    assert (await get_run(stubs, running)).status == run_pb2.RUN_STATUS_SUCCESS
    support.GATES.open("second")
    events = await queued.to_end()
    assert_well_formed(events)
    assert events[-1][2]["status"] == "success"


async def test_a_delayed_run_stream_answers_at_once_and_cancelling_it_ends_it_with_end(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)
    stream = RunStream(stream_run(stubs, thread_id, "echo", {}, after_seconds=3600))

    run = await stream.opened()  # an hour before it may start

    assert run.status == run_pb2.RUN_STATUS_PENDING and run.queue_position == 0
    await stubs.runs.CancelRun(
        run_service_pb2.CancelRunRequest(
            thread_id=thread_id, run_id=run.run_id, action=run_pb2.CANCEL_ACTION_INTERRUPT
        )
    )
    end = {
        "status": "interrupted",
        "reason": "cancelled by the client",
        "action": "interrupt",
        "superseded_by": "",
    }
    assert await stream.to_end() == [(1, "end", end)]
