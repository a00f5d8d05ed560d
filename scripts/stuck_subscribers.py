"""Measures what subscribers that stop reading cost the server (a script, not a test).

Starts `turnstile serve` on a temporary database, runs `echo` once on a thread whose state is
one big message (`--state-kb`, 900 by default), then opens `--subscribers` JoinRunStream calls
on that run that never read, and prints the server's RSS before, while they are stuck and
after they leave. A measurement, not a test: RSS depends on the allocator and the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
from google.protobuf import struct_pb2

from turnstile.v1 import (
    run_service_pb2,
    run_service_pb2_grpc,
    thread_service_pb2,
    thread_service_pb2_grpc,
)


def _rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _measure(address: str, pid: int, subscribers: int, state_kb: int, settle: float) -> None:
    # A client's window grows with its bandwidth-delay estimate (to megabytes per stream on
    # loopback), which would take whole runs' events off the server; a fixed 64 KiB window
    # is what a client that stops reading leaves the server with.
    options = [
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", 64 << 10),
    ]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        threads = thread_service_pb2_grpc.ThreadServiceStub(channel)
        runs = run_service_pb2_grpc.RunServiceStub(channel)
        thread = (await threads.CreateThread(thread_service_pb2.CreateThreadRequest())).thread
        run_input = struct_pb2.Struct()
        run_input.update({"messages": [{"role": "user", "content": "x" * (state_kb << 10)}]})
        waited = await runs.WaitRun(
            run_service_pb2.WaitRunRequest(
                thread_id=thread.thread_id, assistant_id="echo", input=run_input
            )
        )
        run = waited.run
        before = _rss_mib(pid)
        print(f"run {run.run_id} ended {run.status}; server RSS {before:.0f} MiB")
        calls = [
            runs.JoinRunStream(
                run_service_pb2.JoinRunStreamRequest(thread_id=run.thread_id, run_id=run.run_id)
            )
            for _ in range(subscribers)
        ]
        for call in calls:  # each reads its first message (the run), then stops reading
            await call.read()
        await asyncio.sleep(settle)  # lets the server hand them what it will; nothing reads
        stuck = _rss_mib(pid)
        peak = _rss_mib(pid, "VmHWM")
        print(
            f"{subscribers} stuck subscribers: RSS {stuck:.0f} MiB (+{stuck - before:.0f} MiB,"
            f" {(stuck - before) * 1024 / subscribers:.0f} KiB each), peak {peak:.0f} MiB"
        )
        for call in calls:
            call.cancel()
    await asyncio.sleep(settle)
    after = _rss_mib(pid)
    print(f"after they left: RSS {after:.0f} MiB (+{after - before:.0f} MiB)")


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/stuck_subscribers.py", description=__doc__)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--state-kb", type=int, default=900)
    parser.add_argument("--settle", type=float, default=6.0, help="seconds to let RSS settle")
    args = parser.parse_args()
    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        command = [sys.executable, "-m", "turnstile_server.cli", "serve", "--port", str(port)]
        command += ["--database", os.path.join(directory, "turnstile.db")]
        server = subprocess.Popen(command)
        try:
            address = f"127.0.0.1:{port}"
            with grpc.insecure_channel(address) as channel:
                grpc.channel_ready_future(channel).result(timeout=30)
            asyncio.run(_measure(address, server.pid, args.subscribers, args.state_kb, args.settle))
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
