"""Events between replicas: PostgreSQL alone (an events table and NOTIFY) beside Redis Streams
(the relay's fenced publish), in one run (issue 22 point 1's decision).

A publisher writes N events of one run, each as the relay would: fenced by the run's epoch.
A subscriber on its own connection receives them all, in order:

- **PostgreSQL:** per event (or per batch) one transaction: the fence (`SELECT epoch ... FOR
  SHARE` on the run's row), `INSERT` into an events table, `pg_notify`; the subscriber LISTENs
  and on each notification reads what is new (`seq > last`).
- **Redis:** the relay's Lua publish (`relay/fence.py`: fence check, `XADD 0-<seq>`, the
  thread stream too); the subscriber `XREAD BLOCK`s after its last id.

Each row: events per second from the first publish to the last event received, and the CPU
per event of this process (publisher and subscriber), of the database's two backends or of
the private redis-server (from `/proc`): on two shared cores the rates are bound by the
machine, the CPU per event says what each costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from turnstile_server.event_log import StreamLimits
from turnstile_server.events import EventEncoder
from turnstile_server.relay import Relay
from turnstile_server.relay.fence import Entry
from turnstile_server.store import RunRecord
from turnstile_tools.bench.processes import cpu_seconds

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PAYLOAD = b"x" * 300  # about a small `values` event


@dataclass(frozen=True, slots=True)
class Row:
    """One measured way of relaying events."""

    name: str
    events: int
    seconds: float
    client_cpu: float
    server_cpu: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


class _Frames:
    """The relay's thread framing, without protobuf: the bench measures transport, not codecs."""

    def run_event(self, seq: int, run_id: str, event: str, data: object, *, state: bool) -> bytes:
        return PAYLOAD

    def thread_event(self, seq: int, **parts: object) -> bytes:
        run_event = parts.get("run_event")
        return run_event if isinstance(run_event, bytes) else b"t"

    def relayed_thread_event(self, seq: int, framed: bytes) -> bytes:
        return framed


def _run() -> RunRecord:
    return RunRecord(
        run_id=uuid.uuid4().hex,
        thread_id=uuid.uuid4().hex,
        assistant_id="a",
        graph_id="g",
        status="running",
        multitask_strategy="enqueue",
        input=None,
        config={},
        metadata={},
        stream_mode=["values"],
        create_time=0,
        start_time=None,
        end_time=None,
        not_before=0,
        attempt=1,
        error=None,
        cancel_action=None,
        cancel_reason="",
        superseded_by="",
        seq=1,
        epoch=1,
    )


async def _timed(
    name: str, events: int, servers: Callable[[], float], body: Callable[[], Awaitable[None]]
) -> Row:
    cpu0, server0, wall0 = time.process_time(), servers(), time.perf_counter()
    await body()
    wall, cpu, server = time.perf_counter() - wall0, time.process_time() - cpu0, servers() - server0
    return Row(name, events, wall, cpu, server)


async def postgres_row(url: str, events: int, batch: int) -> Row:
    """Events through an events table and NOTIFY, `batch` per transaction."""
    table = f"bench_events_{uuid.uuid4().hex[:8]}"
    writer = await asyncpg.connect(url, timeout=10)
    listener = await asyncpg.connect(url, timeout=10)
    try:
        await writer.execute(
            f"CREATE TABLE {table} (run_id TEXT, seq BIGINT, data BYTEA,"
            " PRIMARY KEY (run_id, seq));"
            f"CREATE TABLE {table}_runs (run_id TEXT PRIMARY KEY, epoch BIGINT)"
        )
        run_id = uuid.uuid4().hex
        await writer.execute(f"INSERT INTO {table}_runs VALUES ($1, 1)", run_id)
        pids = [await c.fetchval("SELECT pg_backend_pid()") for c in (writer, listener)]
        notified = asyncio.Event()
        await listener.add_listener(table, lambda *_: notified.set())
        received = 0

        async def subscribe() -> None:
            nonlocal received
            while received < events:
                await notified.wait()
                notified.clear()
                rows = await listener.fetch(
                    f"SELECT seq, data FROM {table} WHERE run_id = $1 AND seq > $2 ORDER BY seq",
                    run_id,
                    received,
                )
                received += len(rows)

        async def publish() -> None:
            for start in range(1, events + 1, batch):
                seqs = list(range(start, min(start + batch, events + 1)))
                async with writer.transaction():
                    epoch = await writer.fetchval(
                        f"SELECT epoch FROM {table}_runs WHERE run_id = $1 FOR SHARE", run_id
                    )
                    assert epoch == 1
                    await writer.executemany(
                        f"INSERT INTO {table} VALUES ($1, $2, $3)",
                        [(run_id, seq, PAYLOAD) for seq in seqs],
                    )
                    await writer.execute("SELECT pg_notify($1, $2)", table, str(seqs[-1]))

        async def both() -> None:
            await asyncio.gather(subscribe(), publish())

        return await _timed(
            f"PostgreSQL: events table + NOTIFY, {batch} per transaction",
            events,
            lambda: sum(cpu_seconds(pid) for pid in pids),
            both,
        )
    finally:
        await writer.execute(f"DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {table}_runs")
        await writer.close()
        await listener.close()


async def redis_row(url: str, pid: int, events: int, batch: int) -> Row:
    """Events through the relay's fenced publish into a Redis Stream, `batch` per call."""
    encoder: EventEncoder = _Frames()
    relay = Relay(url, f"bench_{uuid.uuid4().hex[:8]}:", encoder, StreamLimits())
    run = _run()
    key = relay.keys.run(run.run_id)

    async def subscribe() -> None:
        position = "0-0"
        received = 0
        while received < events:
            entries = await relay.read(key, position, 512, block=True)
            if entries:
                received += len(entries)
                position = entries[-1][0].decode()

    async def publish() -> None:
        for start in range(1, events + 1, batch):
            entries = [
                Entry(seq, "", PAYLOAD, PAYLOAD)
                for seq in range(start, min(start + batch, events + 1))
            ]
            published = await relay.publish(run, 1, entries)
            assert published.added == len(entries), published

    async def both() -> None:
        await asyncio.gather(subscribe(), publish())

    try:
        return await _timed(
            f"Redis Streams: fenced Lua XADD, {batch} per call",
            events,
            lambda: cpu_seconds(pid),
            both,
        )
    finally:
        await relay.client.delete(
            key, relay.keys.fence(run.run_id), relay.keys.thread(run.thread_id)
        )
        await relay.close()


@asynccontextmanager
async def private_redis() -> AsyncIterator[tuple[str, int]]:
    """A redis-server of the bench's own on a free port (its CPU is the bench's alone)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        process = await asyncio.create_subprocess_exec(
            binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "no", "--dir", directory,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        try:
            relay = Relay(url, "probe:", _Frames(), StreamLimits())
            try:
                async with asyncio.timeout(10):
                    while True:
                        try:
                            await relay.ping()
                            break
                        except Exception:
                            await asyncio.sleep(0.02)
            finally:
                await relay.close()
            yield url, process.pid
        finally:
            process.kill()
            await process.wait()


async def measure(events: int, postgres_url: str, batches: tuple[int, ...] = (1, 64)) -> list[Row]:
    """Every row, PostgreSQL's and Redis's alternating per batch size."""
    rows: list[Row] = []
    async with private_redis() as (redis_url, pid):
        for batch in batches:
            rows.append(await postgres_row(postgres_url, events, batch))
            rows.append(await redis_row(redis_url, pid, events, batch))
    return rows


def report(rows: list[Row]) -> str:
    """The table, each row's rate against PostgreSQL's at the same batch size."""
    lines = [
        "| how | events | events/s | vs PostgreSQL | this process CPU/event | server CPU/event |",
        "|---|---|---|---|---|---|",
    ]
    baseline: dict[str, float] = {}
    for row in rows:
        batch = row.name.rsplit(", ", 1)[1].split()[0]
        base = baseline.setdefault(batch, row.rate)
        client_us = row.client_cpu / row.events * 1e6
        server_us = row.server_cpu / row.events * 1e6
        lines.append(
            f"| {row.name} | {row.events} | {row.rate:,.0f} | {row.rate / base:.2f}x"
            f" | {client_us:.0f} µs | {server_us:.0f} µs |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument(
        "--database", default=os.environ.get("TURNSTILE_TEST_POSTGRES_URL") or POSTGRES_URL
    )
    args = parser.parse_args(argv)
    rows = asyncio.run(measure(args.events, args.database))
    print(report(rows))
    return 0
