"""`turnstile serve` as a real process, for the tests an operator's view needs (signals, kill)."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STARTUP = 30.0


async def serve(database: Path, graph: str, *options: str) -> asyncio.subprocess.Process:
    """Starts `turnstile serve` on a free port with one `--graph` and `options`, stderr piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "turnstile_server.cli",
        "serve",
        "--port",
        "0",
        "--database",
        str(database),
        "--graph",
        graph,
        *options,
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )


@asynccontextmanager
async def serving(
    database: Path, graph: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """A `serve` process and the address it logs once serving; killed after the block unless
    it has exited."""
    process = await serve(database, graph)
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
