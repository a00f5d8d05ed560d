"""The baseline: a raw `grpc.aio` server with no protobuf, bytes in and bytes out.

`python -m turnstile_tools.bench.echo_server` serves `/bench.Echo/Call` (answers the request's
bytes) and `/bench.Echo/Stream` (a request of `count`, `size` as two big-endian uint32 is
answered by `count` messages of `size` bytes, each starting with the `time.time()` it was sent
as a big-endian double), then prints `port N` on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

SERVICE = "bench.Echo"
CALL = f"/{SERVICE}/Call"
STREAM = f"/{SERVICE}/Stream"
STREAM_REQUEST = struct.Struct(">II")
STAMP = struct.Struct(">d")


async def _call(request: bytes, context: Any) -> bytes:
    return request


async def _stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    count, size = STREAM_REQUEST.unpack(request[: STREAM_REQUEST.size])
    padding = b"x" * max(0, size - STAMP.size)
    for _ in range(count):
        yield STAMP.pack(time.time()) + padding


def handler() -> Any:
    """The generic handler: no (de)serializers, so requests and responses stay bytes."""
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Call": grpc.unary_unary_rpc_method_handler(_call),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        },
    )


async def serve(host: str, port: int) -> None:
    """Serves until SIGTERM or SIGINT, printing the bound port first."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler(),))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"port {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m turnstile_tools.bench.echo_server`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
