"""Crash recovery: a server killed with SIGKILL mid-run loses nothing when it restarts."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.support import eventually
from turnstile import ThreadState, get_client

ROOT = Path(__file__).resolve().parent.parent
STARTUP = 30.0


@asynccontextmanager
async def server_process(database: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`turnstile serve` on a free port with the file-gated graph; yields it and its address."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "turnstile_server.cli",
        "serve",
        "--port",
        "0",
        "--database",
        str(database),
        "--graph",
        "file_gated=tests.support:file_gated",
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        address = ""
        async with asyncio.timeout(STARTUP):
            while not address:
                line = (await process.stderr.readline()).decode()
                assert line, "the server exited before serving"
                if match := re.search(r"serving on (\S+:\d+)", line):
                    address = match.group(1)
        drain = asyncio.create_task(process.stderr.read())  # keep the pipe from filling
        yield process, address
        drain.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def texts(state: ThreadState) -> list[tuple[str, str]]:
    return [(m["type"], m["content"]) for m in state["values"]["messages"]]


async def test_sigkill_mid_run_then_restart_completes_every_run_in_order_once(
    tmp_path: Path,
) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    (gates / "a").touch()
    (gates / "c").touch()
    config = {"configurable": {"gate_dir": str(gates)}}
    database = tmp_path / "crash.db"

    async with server_process(database) as (process, address):
        client = get_client(url=address)
        thread = await client.threads.create()
        thread_id = thread["thread_id"]
        cut = await client.runs.create(
            thread_id,
            "file_gated",
            input={"messages": [{"role": "user", "content": "one"}], "gates": ["a", "b"]},
            config=config,
        )
        queued = [
            await client.runs.create(
                thread_id,
                "file_gated",
                input={"messages": [{"role": "user", "content": word}], "gates": ["c"]},
                config=config,
                multitask_strategy="enqueue",
            )
            for word in ("two", "three")
        ]

        async def mid_way() -> None:
            assert (gates / "b.arrived").exists()
            state = await client.threads.get_state(thread_id)
            assert ("ai", "passed a") in texts(state)

        await eventually(mid_way, within=STARTUP)
        await client.close()
        os.kill(process.pid, signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL

    (gates / "b").touch()
    async with server_process(database) as (_, address):
        client = get_client(url=address)
        try:
            results = [await client.runs.join_run(thread_id, r["run_id"]) for r in [cut, *queued]]
            state = await client.threads.get_state(thread_id)
            thread = await client.threads.get(thread_id)
            history = await client.threads.get_history(thread_id, limit=100)
        finally:
            await client.close()

    assert [r.run["status"] for r in results] == ["success"] * 3
    assert [r.run["attempt"] for r in results] == [2, 1, 1]
    ends = [r.run["end_time"] or "" for r in results]
    assert ends == sorted(ends), "the queued runs ran after the cut one, in order"
    assert texts(state) == [
        ("human", "one"),
        ("ai", "passed a"),
        ("ai", "passed b"),
        ("human", "two"),
        ("ai", "passed c"),
        ("human", "three"),
        ("ai", "passed c"),
    ]
    assert thread["status"] == "idle"
    # Each input was applied once: one input checkpoint per run, the cut run's steps once each.
    checkpoints = [(c["run_id"], c["source"], c["step"]) for c in reversed(history)]
    assert checkpoints == [
        (cut["run_id"], "input", 0),
        (cut["run_id"], "step", 1),
        (cut["run_id"], "step", 2),
        (queued[0]["run_id"], "input", 0),
        (queued[0]["run_id"], "step", 1),
        (queued[1]["run_id"], "input", 0),
        (queued[1]["run_id"], "step", 1),
    ]
