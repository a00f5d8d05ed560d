"""The LangGraph and human-in-the-loop run options round-trip: SDK -> gRPC -> store -> Run.

A stand-in runtime named `langgraph` (it records the run it is handed and returns) lets the
LangGraph-only options through admission, so every field is seen by the runtime, stored, shown
on `Run`, read back by `GetRun`, and compared by idempotency; a native graph shows the options
it takes. The thread state's new fields are checked on native threads (empty `next`/`tasks`,
parents, metadata) and through `get_state(checkpoint_id=...)`.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import client_of
from turnstile import FailedPreconditionError, TurnstileClient
from turnstile._convert import command_message
from turnstile_server.graph import GraphRegistry
from turnstile_server.runtime.interface import PreparedGraph, RunHost
from turnstile_server.runtime.native import NativeRuntime
from turnstile_server.store import RunRecord

INTERRUPT_A = "0123456789abcdef0123456789abcdef"
INTERRUPT_B = "fedcba9876543210fedcba9876543210"


@dataclass
class Recorded:
    """The runs the stand-in runtime was handed, in order."""

    runs: list[RunRecord] = field(default_factory=list)


class StandInRuntime:
    """Recognises `Recorded` objects as graphs of a runtime named `langgraph`."""

    name = "langgraph"
    expects = "a Recorded stand-in"

    def prepare(self, obj: object) -> PreparedGraph | None:
        return StandInGraph(obj) if isinstance(obj, Recorded) else None


@dataclass(frozen=True)
class StandInGraph:
    graph: Recorded
    runtime: str = StandInRuntime.name

    async def execute(self, host: RunHost) -> None:
        self.graph.runs.append(host.run)
        if (host.run.input or {}).get("wait"):  # stops as a LangGraph run at two interrupts
            interrupts = [
                {"id": i, "value": "?", "task_id": "k"} for i in (INTERRUPT_A, INTERRUPT_B)
            ]
            host.awaiting_input(interrupts, ["tools"])


@pytest.fixture
async def lg(tmp_path: Path) -> AsyncIterator[tuple[TurnstileClient, Recorded]]:
    recorded = Recorded()
    # The built-in agent is a LangGraph graph, which the stand-in runtime does not run.
    graphs = GraphRegistry.with_builtins([NativeRuntime(), StandInRuntime()], omit=("agent",))
    graphs.register("lg", recorded)
    async with client_of(str(tmp_path / "options.db"), graphs) as (_, client):
        yield client, recorded


OPTIONS: dict[str, Any] = {
    "context": {"user": "ada", "limits": {"tokens": 5}},
    "stream_subgraphs": True,
    "interrupt_before": ["tools"],
    "interrupt_after": "*",
    "close_tool_calls": False,
    "on_pending_interrupt": "reject",
}


async def test_every_option_reaches_the_runtime_and_is_shown_and_stored(
    lg: tuple[TurnstileClient, Recorded],
) -> None:
    client, recorded = lg
    thread = await client.threads.create()
    first = await client.runs.wait_run(thread["thread_id"], "lg", input={"wait": True})
    checkpoint_id = (await client.threads.get_state(thread["thread_id"]))["checkpoint_id"]
    assert checkpoint_id and first.run["status"] == "success"

    result = await client.runs.wait_run(
        thread["thread_id"],
        "lg",
        command={"resume": {INTERRUPT_A: "yes", INTERRUPT_B: [1, 2]}, "update": {"n": 2}},
        checkpoint_id=checkpoint_id,
        stream_mode=["debug", "tasks", "checkpoints", "events", "messages-partial"],
        **OPTIONS,
    )

    run = result.run
    assert run["status"] == "success"
    expected = {
        "context": {"user": "ada", "limits": {"tokens": 5.0}},
        "stream_subgraphs": True,
        "command": {"resume": {INTERRUPT_A: "yes", INTERRUPT_B: [1.0, 2.0]}, "update": {"n": 2.0}},
        "interrupt_before": ["tools"],
        "interrupt_after": ["*"],
        "checkpoint_id": checkpoint_id,
        "close_tool_calls": False,
        "discarded_interrupts": [],
        "on_pending_interrupt": "reject",
    }
    assert {key: run[key] for key in expected} == expected  # type: ignore[literal-required]
    again = await client.runs.get(thread["thread_id"], run["run_id"])
    assert {key: again[key] for key in expected} == expected  # type: ignore[literal-required]
    handed = recorded.runs[-1]
    assert handed.command == expected["command"]
    assert handed.context == expected["context"]
    assert handed.interrupt_before == ("tools",)
    assert handed.interrupt_after == ("*",)
    assert handed.checkpoint_id == checkpoint_id
    assert (handed.stream_subgraphs, handed.close_tool_calls) == (True, False)
    assert handed.stream_mode == ["debug", "tasks", "checkpoints", "events", "messages-partial"]


async def test_a_plain_resume_a_goto_and_the_defaults_round_trip(
    lg: tuple[TurnstileClient, Recorded],
) -> None:
    client, _ = lg
    thread = await client.threads.create()
    await client.runs.wait(thread["thread_id"], "lg", input={"wait": True})

    plain = await client.runs.wait_run(
        thread["thread_id"], "lg", command={"resume": {"approved": True}, "goto": "tools"}
    )
    default = await client.runs.wait_run(thread["thread_id"], "lg", input={"x": 1})

    assert plain.run["command"] == {"resume": {"approved": True}, "goto": ["tools"]}
    assert (default.run["command"], default.run["context"]) == (None, None)
    assert (default.run["interrupt_before"], default.run["checkpoint_id"]) == (None, None)
    assert (default.run["close_tool_calls"], default.run["stream_subgraphs"]) == (None, False)
    assert default.run["on_pending_interrupt"] == "discard"  # the server's default


async def test_a_resume_map_is_sent_as_resume_and_read_back_as_the_same_dict() -> None:
    message = command_message({"resume": {INTERRUPT_A: "yes"}})
    assert message is not None and message.HasField("resume")

    null = command_message({"resume": None})
    assert null is not None and null.HasField("resume")  # resuming with null is a value


async def test_a_retry_asking_for_other_options_is_refused_request_id_reused(
    lg: tuple[TurnstileClient, Recorded],
) -> None:
    client, _ = lg
    thread = await client.threads.create()
    await client.runs.create(thread["thread_id"], "lg", request_id="r-1", context={"a": 1})

    with pytest.raises(FailedPreconditionError) as caught:
        await client.runs.create(thread["thread_id"], "lg", request_id="r-1", context={"a": 2})

    assert caught.value.reason == "REQUEST_ID_REUSED"
    assert caught.value.metadata["field"] == "context"
    same = await client.runs.create(thread["thread_id"], "lg", request_id="r-1", context={"a": 1})
    assert same["context"] == {"a": 1.0}


async def test_a_native_graph_takes_context_and_stream_options(client: TurnstileClient) -> None:
    thread = await client.threads.create()

    result = await client.runs.wait_run(
        thread["thread_id"],
        "echo",
        input={"messages": [{"role": "user", "content": "hi"}]},
        context={"k": "v"},
        stream_subgraphs=True,
        close_tool_calls=True,
        stream_mode="messages-tuple",
    )

    assert result.run["status"] == "success"
    assert (result.run["context"], result.run["close_tool_calls"]) == ({"k": "v"}, True)
    assert result.run["stream_subgraphs"] is True


async def test_a_native_threads_state_has_langgraph_keys_and_parents(
    client: TurnstileClient,
) -> None:
    thread = await client.threads.create()
    empty = await client.threads.get_state(thread["thread_id"])
    await client.runs.wait(
        thread["thread_id"], "echo", input={"messages": [{"role": "user", "content": "hi"}]}
    )

    state = await client.threads.get_state(thread["thread_id"])
    history = await client.threads.get_history(thread["thread_id"], limit=10)

    assert empty["checkpoint"] == {
        "thread_id": thread["thread_id"],
        "checkpoint_ns": "",
        "checkpoint_id": None,
        "checkpoint_map": None,
    }
    assert (empty["parent_checkpoint"], empty["next"], empty["tasks"]) == (None, [], [])
    assert (state["next"], state["tasks"], state["interrupts"]) == ([], [], [])
    assert (
        state["checkpoint"]["checkpoint_id"]
        == state["checkpoint_id"]
        == history[0]["checkpoint_id"]
    )
    assert state["metadata"] == {
        "source": state["source"],
        "step": float(state["step"]),
        "run_id": state["run_id"],
    }
    assert state["created_at"] == state["create_time"]
    assert len(history) >= 2
    for newer, older in itertools.pairwise(history):
        assert newer["parent_checkpoint"] is not None
        assert newer["parent_checkpoint"]["checkpoint_id"] == older["checkpoint_id"]
    assert history[-1]["parent_checkpoint"] is None
    assert state["parent_checkpoint"] == history[0]["parent_checkpoint"]


async def test_get_state_at_a_checkpoint_shows_that_earlier_state(client: TurnstileClient) -> None:
    thread = await client.threads.create()
    for text in ("one", "two"):
        await client.runs.wait(
            thread["thread_id"], "echo", input={"messages": [{"role": "user", "content": text}]}
        )
    history = await client.threads.get_history(thread["thread_id"], limit=100)
    earlier = history[len(history) // 2]

    by_id = await client.threads.get_state(
        thread["thread_id"], checkpoint_id=earlier["checkpoint_id"]
    )
    by_ref = await client.threads.get_state(thread["thread_id"], checkpoint=earlier["checkpoint"])

    assert by_id == by_ref == earlier
    assert by_id["values"] != (await client.threads.get_state(thread["thread_id"]))["values"]


async def test_history_pages_keep_their_parents(client: TurnstileClient) -> None:
    thread = await client.threads.create()
    for text in ("one", "two", "three"):
        await client.runs.wait(
            thread["thread_id"], "echo", input={"messages": [{"role": "user", "content": text}]}
        )
    whole = await client.threads.get_history(thread["thread_id"], limit=100)

    paged = []
    for limit in (1, 2, 3):  # get_history pages through with page_size <= limit
        paged.append(await client.threads.get_history(thread["thread_id"], limit=limit))

    for page in paged:
        assert page == whole[: len(page)]


async def test_threads_carry_no_interrupts_until_one_waits(client: TurnstileClient) -> None:
    thread = await client.threads.create()

    got = await client.threads.get(thread["thread_id"])
    waiting = await client.threads.search(interruption="awaiting_input")
    cancelled = await client.threads.search(interruption="cancelled")

    assert (got["interrupts"], got["interruption"]) == ({}, None)
    assert thread["thread_id"] not in {t["thread_id"] for t in waiting + cancelled}
