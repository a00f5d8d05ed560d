"""Every list answer is capped in bytes as well as in count: a page stops before the entry that
would pass the cap (one entry always comes), and `next_page_token` carries on from there."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests import support
from tests.lg_graphs import lg_registry
from tests.rpc import Stubs, human_input, struct
from turnstile import TurnstileClient, get_client
from turnstile.v1 import (
    assistant_service_pb2,
    run_service_pb2,
    thread_pb2,
    thread_service_pb2,
)
from turnstile_server.app import App
from turnstile_server.config import ServerConfig

CAP = 16 << 10
TEXT = "x" * 4000  # a human message: the state grows by two of these per echo run


@pytest.fixture(params=["native", "langgraph"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[App]:
    """A server whose `echo` is native, or LangGraph's (`tests/lg_graphs.py`): both write three
    checkpoints per run."""
    server = await App.start(
        ServerConfig(
            host="127.0.0.1", port=0, database=str(tmp_path / "pages.db"), max_page_bytes=CAP
        ),
        support.registry() if request.param == "native" else lg_registry(),
    )
    yield server
    await server.stop(grace=0)


@pytest.fixture
async def stubs(app: App) -> AsyncIterator[Stubs]:
    async with grpc.aio.insecure_channel(app.address) as channel:
        yield Stubs(channel)


@pytest.fixture
async def client(app: App) -> AsyncIterator[TurnstileClient]:
    sdk = get_client(url=app.address)
    yield sdk
    await sdk.close()


Page = tuple[list[Any], str, int]


async def pages(fetch: Callable[[str], Awaitable[Any]], field: str) -> list[Page]:
    """Every page of a listing: its entries, its next token and its encoded size."""
    out: list[Page] = []
    token = ""
    while True:
        response = await fetch(token)
        out.append((list(getattr(response, field)), response.next_page_token, response.ByteSize()))
        token = response.next_page_token
        if not token:
            return out
        assert len(out) < 100, "the tokens go round in circles"


def assert_capped(listing: list[Page]) -> None:
    assert len(listing) > 1, "the listing fit one page: the test proves nothing"
    for entries, _, size in listing:
        assert entries, "a page never comes empty"
        assert size <= CAP or len(entries) == 1, f"{len(entries)} entries, {size} bytes"


async def echo_runs(stubs: Stubs, thread_id: str, count: int) -> None:
    for _ in range(count):
        await stubs.runs.WaitRun(
            run_service_pb2.WaitRunRequest(
                thread_id=thread_id, assistant_id="echo", input=human_input(TEXT)
            )
        )


async def test_history_pages_are_capped_in_bytes_and_carry_on_to_every_checkpoint(
    stubs: Stubs,
) -> None:
    thread = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
    thread_id = thread.thread.thread_id
    await echo_runs(stubs, thread_id, 4)  # 12 checkpoints, the newest holding 8 messages

    def fetch(token: str) -> Any:
        return stubs.threads.GetThreadHistory(
            thread_service_pb2.GetThreadHistoryRequest(
                thread_id=thread_id, page_size=1000, page_token=token
            )
        )

    listing = await pages(fetch, "checkpoints")
    assert_capped(listing)
    seqs = [c.checkpoint_id for entries, _, _ in listing for c in entries]
    whole = await stubs.threads.GetThreadHistory(
        thread_service_pb2.GetThreadHistoryRequest(thread_id=thread_id, page_size=1)
    )
    assert seqs[0] == whole.checkpoints[0].checkpoint_id, "newest first"
    assert len(seqs) == len(set(seqs)) == 12, "every checkpoint once, no gap, no repeat"


async def test_an_entry_larger_than_the_cap_comes_alone(stubs: Stubs) -> None:
    thread = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
    thread_id = thread.thread.thread_id
    await stubs.runs.WaitRun(
        run_service_pb2.WaitRunRequest(
            thread_id=thread_id, assistant_id="echo", input=human_input("y" * (2 * CAP))
        )
    )

    def fetch(token: str) -> Any:
        return stubs.threads.GetThreadHistory(
            thread_service_pb2.GetThreadHistoryRequest(thread_id=thread_id, page_token=token)
        )

    listing = await pages(fetch, "checkpoints")
    assert [len(entries) for entries, _, _ in listing] == [1, 1, 1]
    # (LangGraph's input checkpoint holds no message yet: its input is in the START channel.)
    input_source = thread_pb2.CHECKPOINT_SOURCE_INPUT
    assert all(size > CAP or e[0].source == input_source for e, _, size in listing)


async def test_thread_run_and_assistant_lists_are_capped_in_bytes_too(stubs: Stubs) -> None:
    big = {"note": "z" * 3000}
    thread_ids = []
    for _ in range(8):
        thread = await stubs.threads.CreateThread(
            thread_service_pb2.CreateThreadRequest(metadata=struct(big))
        )
        thread_ids.append(thread.thread.thread_id)
        await stubs.assistants.CreateAssistant(
            assistant_service_pb2.CreateAssistantRequest(graph_id="echo", metadata=struct(big))
        )
    for _ in range(8):
        await stubs.runs.WaitRun(
            run_service_pb2.WaitRunRequest(
                thread_id=thread_ids[0], assistant_id="echo", metadata=struct(big)
            )
        )

    threads = await pages(
        lambda token: stubs.threads.ListThreads(
            thread_service_pb2.ListThreadsRequest(page_size=1000, page_token=token)
        ),
        "threads",
    )
    assert_capped(threads)
    listed = [t.thread_id for entries, _, _ in threads for t in entries]
    assert listed == thread_ids[::-1], "newest first, each once"

    runs = await pages(
        lambda token: stubs.runs.ListRuns(
            run_service_pb2.ListRunsRequest(
                thread_id=thread_ids[0], page_size=1000, page_token=token
            )
        ),
        "runs",
    )
    assert_capped(runs)
    assert len({r.run_id for entries, _, _ in runs for r in entries}) == 8

    assistants = await pages(
        lambda token: stubs.assistants.ListAssistants(
            assistant_service_pb2.ListAssistantsRequest(page_size=1000, page_token=token)
        ),
        "assistants",
    )
    assert_capped(assistants)
    stored = [a for entries, _, _ in assistants for a in entries if "note" in a.metadata.fields]
    assert len({a.assistant_id for a in stored}) == len(stored) == 8


async def test_the_sdk_pages_through_a_history_larger_than_one_page(
    client: TurnstileClient, stubs: Stubs
) -> None:
    thread = await client.threads.create()
    await echo_runs(stubs, thread["thread_id"], 4)

    history = await client.threads.get_history(thread["thread_id"], limit=100)

    assert len(history) == 12
    assert len({h["checkpoint_id"] for h in history}) == 12
