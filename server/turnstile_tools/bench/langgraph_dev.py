"""B11's other side: `langgraph dev` (langgraph-api's in-memory server) on the bench's graphs.

langgraph-api is not a dependency of Turnstile: `--langgraph-dev PATH` names the `langgraph`
command of another environment (`python -m venv /tmp/lgdev && /tmp/lgdev/bin/pip install
"langgraph-cli[inmem]"`). It runs offline: no LangSmith key is needed for `dev`. Its runs go
through `langgraph_sdk` (a Turnstile test dependency), as its users call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import httpx

from turnstile_tools.bench.langgraph_graphs import SLEEPER, TWO_NODE
from turnstile_tools.bench.langgraph_runs import INPUT
from turnstile_tools.bench.latency import Figures
from turnstile_tools.bench.load import Latency
from turnstile_tools.bench.processes import cpu_seconds
from turnstile_tools.bench.sizes import Sizes

START_SECONDS = 90.0


def _open_log(path: Path) -> IO[bytes]:
    return open(path, "wb")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def langgraph_dev(
    command: str, project: Path, log_path: Path, jobs: int
) -> AsyncIterator[tuple[str, int]]:
    """`langgraph dev` serving `project` with `jobs` runs at once; yields (url, pid)."""
    port = _free_port()
    env = {
        **os.environ,
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    }
    env.pop("PYTHONPATH", None)  # its own environment, not ours
    with _open_log(log_path) as log:
        process = await asyncio.create_subprocess_exec(
            command,
            "dev",
            "--config",
            str(project),
            "--port",
            str(port),
            "--no-browser",
            "--no-reload",
            "--n-jobs-per-worker",
            str(jobs),
            cwd=project.parent,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            await _until_ok(url, process, log_path)
            yield url, process.pid
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    async with asyncio.timeout(15):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def _until_ok(url: str, process: asyncio.subprocess.Process, log_path: Path) -> None:
    async with httpx.AsyncClient() as http, asyncio.timeout(START_SECONDS):
        while True:
            if process.returncode is not None:
                tail = (await asyncio.to_thread(log_path.read_text, errors="replace"))[-2000:]
                raise RuntimeError(f"langgraph dev exited {process.returncode}: {tail}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/ok", timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.2)


async def dev_figures(command: str, project: Path, directory: Path, sizes: Sizes) -> Figures:
    """B11: serial `runs.wait`, `lg_clients` callers, the interrupt handoff, server CPU."""
    from langgraph_sdk import get_client

    log = directory / "langgraph-dev.log"
    async with langgraph_dev(command, project, log, sizes.lg_clients) as (url, pid):
        client = get_client(url=url)
        figures: Figures = {}
        samples: list[float] = []
        thread = ""
        warmup = min(sizes.warmup, 3)  # a second a run: a few warm it up
        used = cpu_seconds(pid)
        for index in range(warmup + sizes.lg_dev_runs):
            if index % sizes.runs_per_thread == 0:
                thread = (await client.threads.create())["thread_id"]
            started = time.perf_counter()
            await _waited(client, thread)
            if index >= warmup:
                samples.append(time.perf_counter() - started)
            if index == warmup - 1:
                used = cpu_seconds(pid)
        latency = Latency.of(samples)
        figures["dev_p50"], figures["dev_p99"] = latency.p50, latency.p99
        figures["dev_mean"] = sum(samples) / len(samples)
        figures["dev_cpu"] = (cpu_seconds(pid) - used) / len(samples)

        async def caller(count: int) -> None:
            own = ""
            for number in range(count):
                if number % sizes.runs_per_thread == 0:
                    own = (await client.threads.create())["thread_id"]
                await _waited(client, own)

        await asyncio.gather(*(caller(2) for _ in range(sizes.lg_clients)))
        started, used = time.perf_counter(), cpu_seconds(pid)
        await asyncio.gather(*(caller(sizes.lg_runs_per_client) for _ in range(sizes.lg_clients)))
        total = sizes.lg_clients * sizes.lg_runs_per_client
        figures["dev_rate"] = total / (time.perf_counter() - started)
        figures["dev_cpu_concurrent"] = (cpu_seconds(pid) - used) / total

        handoffs: list[float] = []
        for _ in range(warmup + sizes.lg_dev_runs):
            handoffs.append(await _handoff(client))
        handoff = Latency.of(handoffs[warmup:])
        figures["dev_handoff_p50"], figures["dev_handoff_p99"] = handoff.p50, handoff.p99
    return figures


async def _waited(client: Any, thread: str) -> None:
    result = await client.runs.wait(thread, TWO_NODE, input=INPUT, raise_error=True)
    if not isinstance(result, dict) or result.get("steps") is None:
        raise RuntimeError(f"langgraph dev answered {result!r}")


async def _handoff(client: Any) -> float:
    """A sleeper run, followed until it runs; then create(interrupt) + join, timed."""
    thread = (await client.threads.create())["thread_id"]
    sleeping = await client.runs.create(thread, SLEEPER, input={"seconds": 3600})
    async with asyncio.timeout(30):
        # A remote server's run: polled, as a langgraph_sdk user would.
        while (await client.runs.get(thread, sleeping["run_id"]))["status"] != "running":  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    started = time.perf_counter()
    run = await client.runs.create(thread, TWO_NODE, input=INPUT, multitask_strategy="interrupt")
    await client.runs.join(thread, run["run_id"])
    elapsed = time.perf_counter() - started
    status = (await client.runs.get(thread, run["run_id"]))["status"]
    old = (await client.runs.get(thread, sleeping["run_id"]))["status"]
    if status != "success" or old != "interrupted":
        raise RuntimeError(f"langgraph dev handoff: new run {status}, old run {old}")
    return elapsed
