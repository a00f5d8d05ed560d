"""`turnstile demo`: the four multitask strategies on the `agent` graph, printed as the seeds do,
then human in the loop on the approval graph (`demo_approval.py`)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from langchain_core.messages import convert_to_messages

from turnstile import ConflictError, NotFoundError, TurnstileClient, get_client
from turnstile_server.app import App
from turnstile_server.config import ServerConfig
from turnstile_tools import demo_approval


def pretty(message: dict[str, Any]) -> str:
    """Formats one message as the seed notebooks print it: LangChain's `pretty_print` of the
    message the dict is (the seeds' `convert_to_messages(...)`, then `m.pretty_print()`)."""
    [converted] = convert_to_messages([message])
    return converted.pretty_repr()


async def show_state(client: TurnstileClient, thread_id: str) -> None:
    state = await client.threads.get_state(thread_id)
    for message in state["values"].get("messages", []):
        print(pretty(message))


def human(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "human", "content": text}]}


async def reject(client: TurnstileClient, assistant_id: str, pause: float) -> None:
    thread = await client.threads.create()
    run = await client.runs.create(
        thread["thread_id"], assistant_id, input=human("whats the weather in sf?")
    )
    try:
        await client.runs.create(
            thread["thread_id"],
            assistant_id,
            input=human("whats the weather in nyc?"),
            multitask_strategy="reject",
        )
    except ConflictError as exc:
        print(f"Failed to start concurrent run: {exc.code.name} {exc.reason}: {exc.message}")
    await client.runs.join(thread["thread_id"], run["run_id"])
    await show_state(client, thread["thread_id"])
    print((await client.runs.get(thread["thread_id"], run["run_id"]))["status"])


async def interrupt(client: TurnstileClient, assistant_id: str, pause: float) -> None:
    thread = await client.threads.create()
    interrupted_run = await client.runs.create(
        thread["thread_id"], assistant_id, input=human("what's the weather in sf?")
    )
    await asyncio.sleep(pause)
    run = await client.runs.create(
        thread["thread_id"],
        assistant_id,
        input=human("what's the weather in nyc?"),
        multitask_strategy="interrupt",
    )
    await client.runs.join(thread["thread_id"], run["run_id"])
    await show_state(client, thread["thread_id"])
    first = await client.runs.get(thread["thread_id"], interrupted_run["run_id"])
    print(repr(first["status"]), f"(superseded by {first['superseded_by']})")


async def rollback(client: TurnstileClient, assistant_id: str, pause: float) -> None:
    thread = await client.threads.create()
    rolled_back_run = await client.runs.create(
        thread["thread_id"], assistant_id, input=human("whats the weather in sf?")
    )
    await asyncio.sleep(pause)
    run = await client.runs.create(
        thread["thread_id"],
        assistant_id,
        input=human("whats the weather in nyc?"),
        multitask_strategy="rollback",
    )
    await client.runs.join(thread["thread_id"], run["run_id"])
    await show_state(client, thread["thread_id"])
    try:
        await client.runs.get(thread["thread_id"], rolled_back_run["run_id"])
    except NotFoundError:
        print("Original run was correctly deleted")


async def enqueue(client: TurnstileClient, assistant_id: str, pause: float) -> None:
    thread = await client.threads.create()
    first_run = await client.runs.create(
        thread["thread_id"], assistant_id, input=human("whats the weather in sf?")
    )
    second_run = await client.runs.create(
        thread["thread_id"],
        assistant_id,
        input=human("whats the weather in nyc?"),
        multitask_strategy="enqueue",
    )
    await client.runs.join(thread["thread_id"], second_run["run_id"])
    await show_state(client, thread["thread_id"])
    for run in (first_run, second_run):
        print((await client.runs.get(thread["thread_id"], run["run_id"]))["status"])


async def run_demo(*, step_seconds: float = 0.8) -> None:
    """Starts a server on a free port with a temporary database and runs the four scenarios."""
    with tempfile.TemporaryDirectory() as directory:
        config = ServerConfig(
            port=0, database=str(Path(directory) / "demo.db"), graphs=[demo_approval.GRAPH_SPEC]
        )
        app = await App.start(config)
        client = get_client(url=app.address)
        try:
            assistant = await client.assistants.create(
                "agent", config={"configurable": {"step_seconds": step_seconds}}
            )
            print(
                f"turnstile demo: server on {app.address},"
                f" assistant {json.dumps(assistant['assistant_id'])}"
            )
            for title, scenario in (
                ("Reject", reject),
                ("Interrupt", interrupt),
                ("Rollback", rollback),
                ("Enqueue", enqueue),
            ):
                print(f"\n### {title}\n")
                await scenario(client, assistant["assistant_id"], 2.5 * step_seconds)
            print("\n### Human in the loop\n")
            await demo_approval.approval(client)
        finally:
            await client.close()
            await app.stop(grace=0)
