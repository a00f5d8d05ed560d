"""The SDK's `runs.join_stream` on a run that has ended, for native and LangGraph runs (SPEC §5):
resumed after its last event it ends at once with nothing, without reconnecting; after a seq
past its end it raises `OUT_OF_RANGE`.

Against a real server. Reconnect pauses are recorded instead of slept (`sleeps`), so a stream
that reconnects shows up as pauses, not as a slow test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import turnstile
from tests.scripted import sleeps
from tests.support import client_of, streaming_registry
from turnstile import TurnstileClient

__all__ = ["sleeps"]  # the fixture, imported for the tests below

GRAPHS: dict[str, tuple[str, dict[str, Any], str]] = {
    "native": ("burst", {"chunks": 3}, "success"),
    "native, failed": ("failing", {}, "error"),
    "langgraph": (
        "agent",
        {"messages": [{"role": "user", "content": "weather in sf?"}]},
        "success",
    ),
}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TurnstileClient]:
    async with client_of(str(tmp_path / "t.db"), streaming_registry()) as (_, client):
        yield client


async def _ended_run(client: TurnstileClient, case: str) -> tuple[str, str, list[Any]]:
    graph, input, status = GRAPHS[case]
    thread = await client.threads.create()
    parts = [p async for p in client.runs.stream(thread["thread_id"], graph, input=input)]
    assert parts[-1].event == "end" and parts[-1].data["status"] == status
    return thread["thread_id"], parts[0].data["run_id"], parts


@pytest.mark.parametrize("case", list(GRAPHS))
async def test_join_stream_after_the_end_event_ends_at_once_with_nothing(
    client: TurnstileClient, sleeps: list[float], case: str
) -> None:
    thread_id, run_id, parts = await _ended_run(client, case)
    end = parts[-1].seq

    stream = client.runs.join_stream(thread_id, run_id, after_seq=end)
    rest = [p async for p in stream]

    assert rest == []
    assert sleeps == [], "no reconnect"
    assert stream.run is not None and stream.run["status"] == GRAPHS[case][2]
    before_end = [
        p.seq async for p in client.runs.join_stream(thread_id, run_id, after_seq=end - 1)
    ]
    assert before_end == [end]


@pytest.mark.parametrize("case", list(GRAPHS))
async def test_join_stream_past_the_end_event_is_out_of_range_naming_the_last_seq(
    client: TurnstileClient, sleeps: list[float], case: str
) -> None:
    thread_id, run_id, parts = await _ended_run(client, case)
    end = parts[-1].seq

    with pytest.raises(turnstile.OutOfRangeError) as raised:
        [p async for p in client.runs.join_stream(thread_id, run_id, after_seq=end + 5)]

    assert raised.value.reason == "STREAM_EXPIRED"
    assert raised.value.metadata["last_seq"] == str(end)
    assert sleeps == []
