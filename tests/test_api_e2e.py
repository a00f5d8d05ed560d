"""End-to-end behaviour of the thread, run and assistant APIs through the public SDK."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.support import GATES, eventually
from turnstile import (
    FailedPreconditionError,
    NotFoundError,
    TurnstileClient,
    get_sync_client,
)
from turnstile_server.app import App


async def test_threads_are_searchable_by_metadata_and_status_and_paginate(
    client: TurnstileClient,
) -> None:
    ids = [
        (await client.threads.create(metadata={"team": "a", "n": i}))["thread_id"] for i in range(5)
    ]
    await client.threads.create(metadata={"team": "b"})
    found = await client.threads.search(metadata={"team": "a"}, limit=3)
    assert [t["thread_id"] for t in found] == ids[::-1][:3], "newest first, limited"
    rest = await client.threads.search(metadata={"team": "a"}, limit=10, offset=3)
    assert [t["thread_id"] for t in rest] == ids[::-1][3:]
    await client.runs.wait(ids[0], "failing")
    errored = await client.threads.search(status="error")
    assert [t["thread_id"] for t in errored] == [ids[0]]
    updated = await client.threads.update(ids[1], metadata={"extra": True})
    assert updated["metadata"] == {"team": "a", "n": 1.0, "extra": True}


@pytest.mark.parametrize("key", ["line\nbreak", 'q"uote', "back\\slash", "a.b", "$[0]", "é ü"])
async def test_any_storable_metadata_key_is_filterable(client: TurnstileClient, key: str) -> None:
    # A key with a newline was stored escaped and a filter on it matched nothing; quotes
    # and backslashes were refused by the filter though accepted by the write.
    tid = (await client.threads.create(metadata={key: "yes", "other": {"x": [1]}}))["thread_id"]
    await client.threads.create(metadata={key: "no"})
    await client.threads.create(metadata={key.replace(key[0], "_", 1): "yes"})
    found = await client.threads.search(metadata={key: "yes"})
    assert [t["thread_id"] for t in found] == [tid]
    both = await client.threads.search(metadata={key: "yes", "other": {"x": [1]}})
    assert [t["thread_id"] for t in both] == [tid]
    assistant = await client.assistants.create("echo", metadata={key: "yes"})
    matched = await client.assistants.search(metadata={key: "yes"})
    assert [a["assistant_id"] for a in matched] == [assistant["assistant_id"]]


async def test_a_null_metadata_filter_matches_a_null_or_missing_key(
    client: TurnstileClient,
) -> None:
    null = (await client.threads.create(metadata={"k": None, "tag": "t"}))["thread_id"]
    missing = (await client.threads.create(metadata={"tag": "t"}))["thread_id"]
    await client.threads.create(metadata={"k": 1, "tag": "t"})
    found = await client.threads.search(metadata={"k": None, "tag": "t"})
    assert {t["thread_id"] for t in found} == {null, missing}


async def test_delete_thread_stops_its_runs_and_removes_everything(
    client: TurnstileClient,
) -> None:
    tid = (await client.threads.create())["thread_id"]
    running = await client.runs.create(tid, "gated", input={"gates": ["never"]})
    queued = await client.runs.create(tid, "echo")
    await GATES.arrived("never").wait()
    joiner = asyncio.ensure_future(client.runs.join(tid, running["run_id"]))
    await client.threads.delete(tid)
    with pytest.raises(NotFoundError):
        await client.threads.get(tid)
    for run in (running, queued):
        with pytest.raises(NotFoundError):
            await client.runs.get(tid, run["run_id"])
    with pytest.raises(NotFoundError):
        await joiner


async def test_create_run_with_if_not_exists_create_makes_the_thread(
    client: TurnstileClient,
) -> None:
    tid = str(uuid.uuid4())
    with pytest.raises(NotFoundError) as missing:
        await client.runs.create(tid, "echo")
    assert missing.value.reason == "THREAD_NOT_FOUND"
    result = await client.runs.wait_run(tid, "echo", if_not_exists="create")
    assert result.run["status"] == "success"
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_stream_yields_metadata_first_token_chunks_and_end_last(
    client: TurnstileClient,
) -> None:
    tid = (await client.threads.create())["thread_id"]
    parts = [
        part
        async for part in client.runs.stream(
            tid,
            "agent",
            input={"messages": [{"role": "user", "content": "weather in sf?"}]},
            config={"configurable": {"step_seconds": 0}},
            stream_mode=["messages", "values"],
        )
    ]
    assert [p.seq for p in parts] == list(range(1, len(parts) + 1))
    assert parts[0].event == "metadata" and parts[-1].event == "end"
    assert parts[-1].data["status"] == "success"
    final = [p for p in parts if p.event == "values"][-1].data["messages"][-1]
    # The agent is a LangGraph graph: each `messages` event is `[chunk, metadata]`
    # (LangGraph Platform's messages-tuple), the tool's result among them.
    answer = [
        chunk
        for chunk, metadata in (p.data for p in parts if p.event == "messages")
        if chunk["id"] == final["id"]
    ]
    assert len(answer) > 1, "the answer comes token by token"
    assert "".join(chunk["content"] for chunk in answer) == final["content"]
    assert final["type"] == "ai"


async def test_failed_run_reports_its_error_and_the_thread_accepts_new_runs(
    client: TurnstileClient,
) -> None:
    tid = (await client.threads.create())["thread_id"]
    result = await client.runs.wait_run(tid, "failing")
    assert result.run["status"] == "error"
    assert result.run["error"] == {"type": "RuntimeError", "message": "the tool exploded"}
    assert (await client.threads.get(tid))["status"] == "error"
    assert (await client.runs.wait_run(tid, "echo")).run["status"] == "success"
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_a_fault_of_the_server_around_a_graph_ends_the_run_error_and_frees_its_thread(
    app: App,
    client: TurnstileClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not a graph's exception (that is the run's own error, above) but one from the server's
    code driving the graph: the run ends ERROR with a generic error instead of staying RUNNING,
    and its thread with it, until a restart."""
    runner = app.scheduler._runner
    execute = runner.execute
    faults = [RuntimeError("a fault in the runner")]

    async def faulty(run: Any, start: Any) -> Any:
        if faults:
            raise faults.pop()
        return await execute(run, start)

    monkeypatch.setattr(runner, "execute", faulty)
    tid = (await client.threads.create())["thread_id"]
    async with asyncio.timeout(10):
        result = await client.runs.wait_run(tid, "echo")
        assert result.run["status"] == "error"
        assert result.run["error"] == {"type": "InternalError", "message": "internal error"}
        assert (await client.runs.wait_run(tid, "echo")).run["status"] == "success"
    assert (await client.threads.get(tid))["status"] == "idle"
    assert any(
        "failed inside the server" in record.getMessage() and record.exc_info
        for record in caplog.records
    )


async def test_cancel_of_a_finished_run_is_refused_and_delete_removes_it(
    client: TurnstileClient,
) -> None:
    tid = (await client.threads.create())["thread_id"]
    run = (await client.runs.wait_run(tid, "echo")).run
    with pytest.raises(FailedPreconditionError) as refused:
        await client.runs.cancel(tid, run["run_id"])
    assert refused.value.reason == "RUN_NOT_ACTIVE"
    await client.runs.delete(tid, run["run_id"])
    with pytest.raises(NotFoundError):
        await client.runs.get(tid, run["run_id"])


async def test_delayed_run_waits_after_seconds_then_runs(client: TurnstileClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    run = await client.runs.create(tid, "echo", after_seconds=0.3)
    assert run["status"] == "pending"
    assert (await client.runs.join_run(tid, run["run_id"])).run["status"] == "success"


async def test_sync_client_works_from_a_script(app: App) -> None:
    def script() -> tuple[str, str]:
        with get_sync_client(url=app.address) as sync:
            thread = sync.threads.create()
            result = sync.runs.wait_run(
                thread["thread_id"], "echo", input={"messages": [{"role": "user", "content": "yo"}]}
            )
            parts = list(sync.runs.join_stream(thread["thread_id"], result.run["run_id"]))
            return result.values["messages"][-1]["content"], parts[-1].event

    assert await asyncio.to_thread(script) == ("yo", "end")


async def test_thread_is_busy_while_a_run_is_inflight(client: TurnstileClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    run = await client.runs.create(tid, "gated", input={"gates": ["b1"]})
    assert (await client.threads.get(tid))["status"] == "busy"
    GATES.open("b1")
    await client.runs.join(tid, run["run_id"])

    async def idle() -> None:
        assert (await client.threads.get(tid))["status"] == "idle"

    await eventually(idle)
