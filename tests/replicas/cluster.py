"""Several `turnstile serve` processes on one PostgreSQL database and one Redis (a key prefix
of the test's own, deleted afterwards), for the replica tests.

Each replica runs with a short lease (1.5 s, renewed every 0.3 s), so a lost replica's runs
are taken over within seconds; its log lines are kept so a test can read what it said. The
database is the test's own (`tests/postgres.py`) and the attempts' audit (`run_attempts`, on
the database's clock) is what the tests check ordering against.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from tests import postgres
from tests import redis as test_redis
from tests.processes import ROOT, STARTUP
from turnstile import TurnstileClient, get_client

GRAPHS = (
    "--graph",
    "file_gated=tests.support:file_gated",
    "--graph",
    "slow_unwind=tests.replicas.graphs:slow_unwind",
    "--graph",
    "frozen_gate=tests.replicas.graphs:frozen_gate",
    "--graph",
    "ticking=tests.replicas.graphs:ticking",
)
LEASE_TTL = 1.5
LEASE = ("--lease-ttl-seconds", str(LEASE_TTL), "--lease-beat-seconds", "0.3")


@dataclass
class Replica:
    """One `serve` process: its name, address, incarnation and what it logged."""

    name: str
    process: asyncio.subprocess.Process
    address: str = ""
    incarnation: str = ""
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    def client(self) -> TurnstileClient:
        return get_client(url=self.address)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def signal(self, sig: int) -> None:
        os.kill(self.process.pid, sig)


@dataclass
class Cluster:
    """The replicas and their database."""

    url: str
    replicas: list[Replica]
    gates: Path
    redis: str = ""
    redis_prefix: str = ""
    redis_server: asyncio.subprocess.Process | None = None  # a redis-server of the test's own

    def __getitem__(self, name: str) -> Replica:
        return next(r for r in self.replicas if r.name == name)

    @property
    def config(self) -> dict[str, Any]:
        return {"configurable": {"gate_dir": str(self.gates)}}

    def gate(self, name: str) -> None:
        (self.gates / name).touch()

    def arrived(self, name: str) -> bool:
        return (self.gates / f"{name}.arrived").exists()

    async def query(self, sql: str, *args: Any) -> list[Any]:
        conn = await asyncpg.connect(self.url, timeout=10)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def attempts(self, run_id: str) -> list[Any]:
        """The run's attempts (epoch, owner, start and end on the database's clock)."""
        return await self.query(
            "SELECT * FROM run_attempts WHERE run_id = $1 ORDER BY epoch", run_id
        )

    async def start(self, name: str, *options: str, redis: str | None = None) -> Replica:
        """Starts one more replica on the database and waits until it serves (with the
        cluster's Redis, or `redis`)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "turnstile_server.cli",
            "serve",
            "--port",
            "0",
            "--database",
            self.url,
            *GRAPHS,
            "--replica-name",
            name,
            *LEASE,
            "--redis",
            self.redis if redis is None else redis,
            "--redis-key-prefix",
            self.redis_prefix,
            *options,
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        replica = Replica(name, process)
        self.replicas.append(replica)
        assert process.stderr is not None
        async with asyncio.timeout(STARTUP):
            while not replica.address:
                line = (await process.stderr.readline()).decode()
                assert line, f"replica {name} exited before serving: {replica.lines}"
                replica.lines.append(line)
                if match := re.search(r"joined as incarnation (\S+)", line):
                    replica.incarnation = match.group(1)
                if match := re.search(r"serving on (127\.\d+\.\d+\.\d+:\d+)", line):
                    replica.address = match.group(1)
        replica.reader = asyncio.create_task(_read(process, replica.lines))
        return replica


async def _read(process: asyncio.subprocess.Process, lines: list[str]) -> None:
    assert process.stderr is not None
    while line := await process.stderr.readline():
        lines.append(line.decode())


@asynccontextmanager
async def cluster(
    tmp_path: Path, names: Sequence[str] = ("a", "b"), *options: str, own_redis: bool = False
) -> AsyncIterator[Cluster]:
    """Replicas `names` (each with `options`) on a database of their own, and the shared
    Redis (or, `own_redis`, a redis-server of the test's own, which it may stop); every
    process is killed afterwards."""
    gates = tmp_path / "gates"
    gates.mkdir()
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(postgres.database())
        redis, prefix = await stack.enter_async_context(test_redis.key_prefix())
        server = None
        if own_redis:
            redis, server = await stack.enter_async_context(test_redis.own_server(tmp_path))
        group = Cluster(url, [], gates, redis, prefix, server)
        try:
            for name in names:  # one after the other: the first applies the migrations
                await group.start(name, *options)
            yield group
        finally:
            for replica in group.replicas:
                if replica.process.returncode is None:
                    replica.process.send_signal(signal.SIGCONT)
                    replica.process.kill()
                    await replica.process.wait()
                if replica.reader is not None:
                    replica.reader.cancel()
