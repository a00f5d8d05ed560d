"""The seed notebooks (LangGraph Platform's double-texting guides), ported by changing the import.

Only the import, the exception classes and `get_client(url=...)` differ from the seeds; the
built-in `agent` plays the seeds' weather agent at its default simulated model latency.
"""

from __future__ import annotations

import asyncio

import pytest

from turnstile import ConflictError, NotFoundError, ThreadState, TurnstileClient

pytestmark = pytest.mark.timeout(60)


def contents(state: ThreadState) -> list[tuple[str, str]]:
    values = state["values"]
    assert isinstance(values, dict)
    return [(m["type"], m["content"]) for m in values["messages"]]


async def test_reject_refuses_the_second_run_and_the_first_completes_alone(
    client: TurnstileClient,
) -> None:
    assistant = await client.assistants.create("agent")
    thread = await client.threads.create()
    run = await client.runs.create(
        thread["thread_id"],
        assistant["assistant_id"],
        input={"messages": [{"role": "human", "content": "whats the weather in sf?"}]},
    )
    with pytest.raises(ConflictError) as refused:
        await client.runs.create(
            thread["thread_id"],
            assistant["assistant_id"],
            input={"messages": [{"role": "human", "content": "whats the weather in nyc?"}]},
            multitask_strategy="reject",
        )
    assert refused.value.reason == "THREAD_BUSY"
    assert run["run_id"] in refused.value.metadata["inflight_run_ids"]
    await client.runs.join(thread["thread_id"], run["run_id"])
    state = await client.threads.get_state(thread["thread_id"])
    messages = contents(state)
    assert messages[0] == ("human", "whats the weather in sf?")
    assert [t for t, _ in messages] == ["human", "ai", "tool", "ai"]
    assert all("nyc" not in c for _, c in messages)
    assert (await client.runs.get(thread["thread_id"], run["run_id"]))["status"] == "success"


async def test_interrupt_keeps_the_first_input_and_adds_the_second_run(
    client: TurnstileClient,
) -> None:
    assistant_id = "agent"
    thread = await client.threads.create()
    interrupted_run = await client.runs.create(
        thread["thread_id"],
        assistant_id,
        input={"messages": [{"role": "human", "content": "what's the weather in sf?"}]},
    )
    await asyncio.sleep(2)  # as in the seed: let the first run make partial progress
    run = await client.runs.create(
        thread["thread_id"],
        assistant_id,
        input={"messages": [{"role": "human", "content": "what's the weather in nyc?"}]},
        multitask_strategy="interrupt",
    )
    await client.runs.join(thread["thread_id"], run["run_id"])
    state = await client.threads.get_state(thread["thread_id"])
    messages = contents(state)
    assert messages[0] == ("human", "what's the weather in sf?")
    nyc = messages.index(("human", "what's the weather in nyc?"))
    assert 1 <= nyc < 4, "partial data of the first run, then the second input"
    assert [t for t, _ in messages[nyc:]] == ["human", "ai", "tool", "ai"]
    first = await client.runs.get(thread["thread_id"], interrupted_run["run_id"])
    assert first["status"] == "interrupted"
    assert first["superseded_by"] == run["run_id"]
    assert (await client.runs.get(thread["thread_id"], run["run_id"]))["status"] == "success"


async def test_rollback_leaves_only_the_second_run_and_deletes_the_first(
    client: TurnstileClient,
) -> None:
    assistant = await client.assistants.create("agent")
    thread = await client.threads.create()
    rolled_back_run = await client.runs.create(
        thread["thread_id"],
        assistant["assistant_id"],
        input={"messages": [{"role": "human", "content": "whats the weather in sf?"}]},
    )
    await asyncio.sleep(2)
    run = await client.runs.create(
        thread["thread_id"],
        assistant["assistant_id"],
        input={"messages": [{"role": "human", "content": "whats the weather in nyc?"}]},
        multitask_strategy="rollback",
    )
    await client.runs.join(thread["thread_id"], run["run_id"])
    state = await client.threads.get_state(thread["thread_id"])
    messages = contents(state)
    assert messages[0] == ("human", "whats the weather in nyc?")
    assert [t for t, _ in messages] == ["human", "ai", "tool", "ai"]
    assert all("sf" not in c for _, c in messages)
    with pytest.raises(NotFoundError) as gone:
        await client.runs.get(thread["thread_id"], rolled_back_run["run_id"])
    assert gone.value.reason == "RUN_NOT_FOUND"


async def test_enqueue_runs_both_in_order_and_both_succeed(client: TurnstileClient) -> None:
    assistant = await client.assistants.create("agent")
    thread = await client.threads.create()
    first_run = await client.runs.create(
        thread["thread_id"],
        assistant["assistant_id"],
        input={"messages": [{"role": "human", "content": "whats the weather in sf?"}]},
    )
    second_run = await client.runs.create(
        thread["thread_id"],
        assistant["assistant_id"],
        input={"messages": [{"role": "human", "content": "whats the weather in nyc?"}]},
        multitask_strategy="enqueue",
    )
    await client.runs.join(thread["thread_id"], second_run["run_id"])
    state = await client.threads.get_state(thread["thread_id"])
    messages = contents(state)
    assert [t for t, _ in messages] == ["human", "ai", "tool", "ai"] * 2
    assert messages[0] == ("human", "whats the weather in sf?")
    assert messages[4] == ("human", "whats the weather in nyc?")
    for run in (first_run, second_run):
        assert (await client.runs.get(thread["thread_id"], run["run_id"]))["status"] == "success"
