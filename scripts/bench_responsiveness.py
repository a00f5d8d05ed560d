"""Measures how the API answers while graphs compute without awaiting (a script, not a test).

For each server setting (`--graph-threads 1`, the default, and `--graph-threads 0`, graphs on
the API's loop as before the graph loops), starts `turnstile serve` on a temporary database
and probes it, one call after another, with a Health check, a GetThread and a CreateRun with
`reject` on a busy thread (refused THREAD_BUSY), and a CancelRun of an ended run (refused
RUN_NOT_ACTIVE), in three phases:

- idle: the baseline, a graph waiting in its step (`bench_sleep`), nothing computing;
- spin: a graph computing `--spin-seconds` without awaiting (`bench_spin`);
- yields: a graph yielding `--steps` updates with no await, `durability=exit` (`bench_yields`).

It prints p50, p99 and the slowest call per phase against the idle phase of the same server
(one stall of the loop delays the one call in flight: the slowest call shows it where p99 may
not), then each server's CPU per `echo` run (serial WaitRun, `/proc/<pid>/stat`), the two
servers taking turns 25 runs at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from turnstile.v1 import (
    run_pb2,
    run_service_pb2,
    run_service_pb2_grpc,
    thread_service_pb2,
    thread_service_pb2_grpc,
)
from turnstile_tools.bench.graphs import GRAPHS

DEADLINE = 30.0
CALLS = ("Health", "GetThread", "CreateRun(reject)", "CancelRun(ended)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Phase:
    """The latencies (ms) of one phase's probe calls."""

    name: str
    samples: list[float] = field(default_factory=list)

    def p(self, q: float) -> float:
        return _percentile(self.samples, q)


class Server:
    """A `turnstile serve` process with the bench graphs, and stubs on a channel to it."""

    def __init__(self, directory: str, args: list[str]) -> None:
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        command = [sys.executable, "-m", "turnstile_server.cli", "serve", "--port", str(port)]
        command += ["--database", os.path.join(directory, f"{port}.db"), *args]
        for graph_id, target in GRAPHS.items():
            command += ["--graph", f"{graph_id}={target}"]
        self.process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        with grpc.insecure_channel(self.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


class Probe:
    """The calls of one probe round, on a thread kept busy and an ended run."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.health = health_pb2_grpc.HealthStub(channel)
        self.threads = thread_service_pb2_grpc.ThreadServiceStub(channel)
        self.runs = run_service_pb2_grpc.RunServiceStub(channel)

    async def thread(self) -> str:
        created = await self.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
        thread_id: str = created.thread.thread_id
        return thread_id

    async def prepare(self) -> None:
        """A busy thread (a sleeping run) to be refused on, and an ended run to cancel."""
        self.busy = await self.thread()
        await self.runs.CreateRun(
            run_service_pb2.CreateRunRequest(thread_id=self.busy, assistant_id="bench_sleep")
        )
        ended = await self.runs.WaitRun(
            run_service_pb2.WaitRunRequest(thread_id=await self.thread(), assistant_id="echo")
        )
        self.ended = ended.run

    async def round(self, phase: Phase) -> None:
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: self.health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE),
            lambda: self.threads.GetThread(
                thread_service_pb2.GetThreadRequest(thread_id=self.busy), timeout=DEADLINE
            ),
            lambda: self.runs.CreateRun(
                run_service_pb2.CreateRunRequest(
                    thread_id=self.busy,
                    assistant_id="echo",
                    multitask_strategy=run_pb2.MULTITASK_STRATEGY_REJECT,
                ),
                timeout=DEADLINE,
            ),
            lambda: self.runs.CancelRun(
                run_service_pb2.CancelRunRequest(
                    thread_id=self.ended.thread_id, run_id=self.ended.run_id
                ),
                timeout=DEADLINE,
            ),
        ]
        for call in calls:
            began = time.perf_counter()
            try:
                await call()
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
            phase.samples.append((time.perf_counter() - began) * 1000)


async def _probe_while(probe: Probe, phase: Phase, busy: asyncio.Future[object]) -> None:
    while not busy.done():
        await probe.round(phase)
        await asyncio.sleep(0.005)


async def _phases(address: str, args: argparse.Namespace) -> list[Phase]:
    async with grpc.aio.insecure_channel(address) as channel:
        probe = Probe(channel)
        await probe.prepare()
        idle = Phase("idle graphs")
        for _ in range(args.idle_rounds):
            await probe.round(idle)
            await asyncio.sleep(0.005)
        spin = Phase(f"a graph computing {args.spin_seconds:g} s without awaiting")
        waited = asyncio.ensure_future(
            probe.runs.WaitRun(
                run_service_pb2.WaitRunRequest(
                    thread_id=await probe.thread(),
                    assistant_id="bench_spin",
                    input=_struct({"seconds": args.spin_seconds}),
                ),
                timeout=120,
            )
        )
        await _probe_while(probe, spin, waited)
        yields = Phase(f"{args.steps:,} yields without an await, durability exit")
        waited = asyncio.ensure_future(
            probe.runs.WaitRun(
                run_service_pb2.WaitRunRequest(
                    thread_id=await probe.thread(),
                    assistant_id="bench_yields",
                    input=_struct({"steps": args.steps}),
                    durability=run_pb2.DURABILITY_EXIT,
                ),
                timeout=300,
            )
        )
        await _probe_while(probe, yields, waited)
        return [idle, spin, yields]


async def _echo_cpu(servers: dict[str, Server], runs: int) -> dict[str, float]:
    """Each server's CPU (ms) per serial `echo` WaitRun, the servers taking turns 25 runs at a
    time (a fresh thread each turn), so that both see the same background load."""
    spent = dict.fromkeys(servers, 0.0)
    async with contextlib.AsyncExitStack() as stack:
        stubs = {}
        for setting, server in servers.items():
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.address))
            stubs[setting] = (
                run_service_pb2_grpc.RunServiceStub(channel),
                thread_service_pb2_grpc.ThreadServiceStub(channel),
            )
        for turn in range(runs // 25 + 1):  # the first turn warms up, unmeasured
            for setting, server in servers.items():
                runs_stub, threads_stub = stubs[setting]
                created = await threads_stub.CreateThread(thread_service_pb2.CreateThreadRequest())
                before = _cpu_seconds(server.process.pid)
                for _ in range(25):
                    await runs_stub.WaitRun(
                        run_service_pb2.WaitRunRequest(
                            thread_id=created.thread.thread_id, assistant_id="echo"
                        )
                    )
                if turn:
                    spent[setting] += _cpu_seconds(server.process.pid) - before
    measured = runs // 25 * 25
    return {setting: seconds * 1000 / measured for setting, seconds in spent.items()}


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench_responsiveness.py", description=__doc__)
    parser.add_argument("--spin-seconds", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--idle-rounds", type=int, default=200)
    parser.add_argument("--echo-runs", type=int, default=500)
    args = parser.parse_args()
    results: dict[str, list[Phase]] = {}
    with tempfile.TemporaryDirectory() as directory:
        servers = {
            setting: Server(directory, ["--graph-threads", setting]) for setting in ("1", "0")
        }
        try:
            for setting, server in servers.items():
                results[setting] = asyncio.run(_phases(server.address, args))
            cpu = asyncio.run(_echo_cpu(servers, args.echo_runs))
        finally:
            for server in servers.values():
                server.stop()
    print(f"API calls ({', '.join(CALLS)}), one after another, latency in ms")
    print()
    print("| graphs on | phase | calls | p50 | p99 | max | p99 vs idle |")
    print("|---|---|---|---|---|---|---|")
    for setting, label in (("1", "a graph loop (default)"), ("0", "the API's loop (before)")):
        idle = results[setting][0]
        for phase in results[setting]:
            print(
                f"| {label} | {phase.name} | {len(phase.samples)} | {phase.p(0.5):.1f} |"
                f" {phase.p(0.99):.1f} | {max(phase.samples):.1f} |"
                f" {phase.p(0.99) / idle.p(0.99):.1f}x |"
            )
    print()
    print("| server CPU per echo run (serial WaitRun) | ms |")
    print("|---|---|")
    print(f"| graph loop (`--graph-threads 1`) | {cpu['1']:.2f} |")
    print(f"| API's loop (`--graph-threads 0`) | {cpu['0']:.2f} |")
    print(f"| difference | {cpu['1'] - cpu['0']:+.2f} ({cpu['1'] / cpu['0']:.2f}x) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
