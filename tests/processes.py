"""Real processes for the tests: `turnstile serve` (for what an operator sees: signals, kill)
and any command run to its end with a deadline."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STARTUP = 30.0


async def serve(database: Path, graph: str | None, *options: str) -> asyncio.subprocess.Process:
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
    database: Path, graph: str | None, *options: str
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
