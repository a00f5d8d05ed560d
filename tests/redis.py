"""Redis for tests: a key prefix of its own per test, its keys deleted afterwards.

The server is `TURNSTILE_TEST_REDIS_URL`; unset, it is the local server every development and
CI machine runs (`DEFAULT_URL`), and set to the empty string it skips the Redis tests. A test
that stops Redis starts a server of its own (`own_server`), never the shared one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.support import eventually

DEFAULT_URL = "redis://127.0.0.1:6379/0"
ENV = "TURNSTILE_TEST_REDIS_URL"


def server_url() -> str:
    """The server's URL, or a skip when the tests were told to do without Redis."""
    url = os.environ.get(ENV, DEFAULT_URL)
    if not url:
        pytest.skip(f"{ENV} is empty: no Redis for this run")
    return url


async def delete_prefix(url: str, prefix: str) -> None:
    """Deletes every key starting with `prefix`."""
    client = aioredis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@asynccontextmanager
async def key_prefix() -> AsyncIterator[tuple[str, str]]:
    """A fresh prefix `turnstile_test_<random>:`; yields (url, prefix), its keys deleted after."""
    url = server_url()
    prefix = f"turnstile_test_{uuid.uuid4().hex[:16]}:"
    try:
        yield url, prefix
    finally:
        await delete_prefix(url, prefix)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def own_server(
    tmp_path: Path, port: int | None = None
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """A `redis-server` of this test's own on a free port, or on `port` (one it stopped, to
    restart it empty); yields its URL and process, which is killed afterwards."""
    server_url()  # skipped like every Redis test
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server on this machine")
    port = free_port() if port is None else port
    process = await asyncio.create_subprocess_exec(
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = aioredis.Redis.from_url(url, socket_timeout=1)

        async def answers() -> None:
            try:
                await client.ping()
            except (OSError, aioredis.ConnectionError) as exc:
                raise AssertionError(f"redis-server does not answer yet: {exc}") from None

        try:
            await eventually(answers, within=10.0, interval=0.02)
        finally:
            await client.aclose()
        yield url, process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
