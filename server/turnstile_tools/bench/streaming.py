"""B5: many runs streaming message chunks through the SDK, against a raw gRPC stream."""

from __future__ import annotations

import asyncio
import time

from turnstile import get_client
from turnstile_tools.bench.echo_server import STAMP, STREAM, STREAM_REQUEST
from turnstile_tools.bench.latency import Figures
from turnstile_tools.bench.load import CALL_SECONDS, Channels, Latency
from turnstile_tools.bench.sizes import Sizes

CHUNK_BYTES = 64
"""About the size of one encoded message chunk."""


async def stream_baseline(channels: Channels, sizes: Sizes) -> Figures:
    """Raw gRPC: `b5_streams` server streams of `b5_chunks` messages each, at once."""
    methods = [channel.unary_stream(STREAM) for channel in channels.raw]
    latencies: list[float] = []

    async def stream(index: int, count: int) -> None:
        call = methods[index % len(methods)](
            STREAM_REQUEST.pack(count, CHUNK_BYTES), timeout=CALL_SECONDS
        )
        async for message in call:
            latencies.append(time.time() - STAMP.unpack_from(message)[0])

    await asyncio.gather(*(stream(i, 10) for i in range(sizes.b5_streams)))
    latencies.clear()
    started = time.perf_counter()
    await asyncio.gather(*(stream(i, sizes.b5_chunks) for i in range(sizes.b5_streams)))
    elapsed = time.perf_counter() - started
    latency = Latency.of(latencies)
    return {
        "rate": len(latencies) / elapsed,
        "events": len(latencies),
        "p50": latency.p50,
        "p99": latency.p99,
    }


async def stream_runs(address: str, sizes: Sizes) -> Figures:
    """B5: `b5_streams` StreamRuns at once, each of a run emitting `b5_chunks` chunks.

    Each chunk carries the `time.time()` the graph emitted it at; its latency is the time the
    SDK hands it to the caller minus that.
    """
    clients = [get_client(url=address) for _ in range(sizes.channels)]
    latencies: list[float] = []
    delivered = 0
    try:
        threads = [
            (await clients[i % len(clients)].threads.create())["thread_id"]
            for i in range(sizes.b5_streams)
        ]

        async def stream(index: int, count: int) -> None:
            nonlocal delivered
            client = clients[index % len(clients)]
            chunks, end = 0, None
            async for part in client.runs.stream(
                threads[index], "bench_chunks", input={"chunks": count}, stream_mode="messages"
            ):
                received = time.time()
                delivered += 1
                if part.event == "messages":
                    latencies.append(received - part.data["sent"])
                    chunks += 1
                elif part.event == "end":
                    end = part.data
            if chunks != count or not end or end.get("status") != "success":
                raise RuntimeError(f"stream {index}: {chunks} of {count} chunks, end {end}")

        await asyncio.gather(*(stream(i, 10) for i in range(min(8, sizes.b5_streams))))
        latencies.clear()
        delivered = 0
        started = time.perf_counter()
        await asyncio.gather(*(stream(i, sizes.b5_chunks) for i in range(sizes.b5_streams)))
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            await client.close()
    latency = Latency.of(latencies)
    return {
        "rate": delivered / elapsed,
        "events": delivered,
        "chunks": len(latencies),
        "p50": latency.p50,
        "p99": latency.p99,
    }
