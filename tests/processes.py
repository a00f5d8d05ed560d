"""Real processes for the tests: `turnstile serve` (for what an operator sees: signals, kill),
the kill-and-restart fixture of the crash tests (a served client, SIGKILL, file gates), and
any command run to its end with a deadline."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from turnstile import TurnstileClient, get_client

ROOT = Path(__file__).resolve().parent.parent
STARTUP = 30.0


async def serve(
    database: Path | str, graph: str | None, *options: str
) -> asyncio.subprocess.Process:
    """Starts `turnstile serve` on a free port with one `--graph` (if any) and `options`,
    stderr piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "turnstile_server.cli",
        "serve",
        "--port",
        "0",
        "--database",
        str(database),
        *(["--graph", graph] if graph else []),
        *options,
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )


@asynccontextmanager
async def serving(
    database: Path | str, graph: str | None, *options: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """A `serve` process and the address it logs once serving; killed after the block unless
    it has exited."""
    process = await serve(database, graph, *options)
    try:
        assert process.stderr is not None
        address = ""
        async with asyncio.timeout(STARTUP):
            while not address:
                line = (await process.stderr.readline()).decode()
                assert line, "the server exited before serving"
                if match := re.search(r"serving on (127\.0\.0\.1:\d+)", line):
                    address = match.group(1)
        drain = asyncio.create_task(process.stderr.read())  # keep the pipe from filling
        try:
            yield process, address
        finally:
            drain.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@asynccontextmanager
async def served_client(
    database: Path | str, graph: str | None, *options: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, TurnstileClient]]:
    """`serving`, with an SDK client of it, closed after the block."""
    async with serving(database, graph, *options) as (process, address):
        client = get_client(url=address)
        try:
            yield process, client
        finally:
            await client.close()


async def sigkill(process: asyncio.subprocess.Process) -> None:
    """Kills a `serve` process with SIGKILL (no shutdown of any kind) and waits for it."""
    os.kill(process.pid, signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL


class FileGates:
    """A directory of file gates for a graph in a server process (`tests.support.file_gated`,
    `tests.lg_graphs.FILE_GATED`): a step at gate `name` marks `<name>.arrived` and waits
    for the file `<name>`."""

    def __init__(self, directory: Path, *opened: str) -> None:
        self.directory = directory
        directory.mkdir()
        for name in opened:
            self.open(name)

    @property
    def config(self) -> dict[str, Any]:
        """The run config that points the graph at these gates."""
        return {"configurable": {"gate_dir": str(self.directory)}}

    def open(self, name: str) -> None:
        (self.directory / name).touch()

    def arrived(self, name: str) -> bool:
        return (self.directory / f"{name}.arrived").exists()

    def forget(self, name: str) -> None:
        """Forgets that a step arrived at the gate, to see whether one arrives again."""
        (self.directory / f"{name}.arrived").unlink()


@dataclass(frozen=True)
class Completed:
    """What a finished command printed, and its exit code."""

    returncode: int
    stdout: str
    stderr: str


async def run_command(
    *arguments: str, seconds: float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Completed:
    """Runs a command to its end with its output captured; past `seconds` it is killed and the
    test fails with TimeoutError."""
    process = await asyncio.create_subprocess_exec(
        *arguments,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(seconds):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Completed(process.returncode, stdout.decode(), stderr.decode())
