"""Runs the workloads, each against a fresh `turnstile serve`, and prints the table."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from turnstile_server.config import ServerConfig
from turnstile_tools.bench import langgraph_runs, latency, scale, sdk, streaming
from turnstile_tools.bench.langgraph_dev import dev_figures as langgraph_dev_figures
from turnstile_tools.bench.langgraph_graphs import project_file
from turnstile_tools.bench.latency import Figures
from turnstile_tools.bench.load import Channels
from turnstile_tools.bench.processes import EchoProcess, TurnstileProcess, pin_self
from turnstile_tools.bench.report import (
    Row,
    b9_table,
    cpu_row,
    judge,
    lg_concurrent_row,
    lg_floor_row,
    table,
    to_json,
    workloads,
)
from turnstile_tools.bench.seed import seed_database
from turnstile_tools.bench.sizes import Sizes

WORKLOADS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10")
OPTIONAL = ("B11",)
"""Workloads that run only when asked for: B11 with `--langgraph-dev`."""

Body = Callable[[TurnstileProcess, Channels, Path], Awaitable[Figures]]


def _parser(prog: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Measures Turnstile against a raw grpc.aio echo server, each in its own"
        " process, and prints every target met or missed. Exits 0 whatever the results;"
        " non-zero only when a workload could not be measured.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (about 30 s)")
    parser.add_argument("--only", default="", metavar="B1,B5", help="run only these workloads")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a size, e.g. --set b1_runs=1000; repeatable",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="put the servers under test on one core and the load generator on the other"
        " (Linux, 2 cores or more), so that they do not take each other's turns",
    )
    parser.add_argument(
        "--langgraph-dev",
        default="",
        metavar="PATH",
        help="the `langgraph` command of an environment with langgraph-cli[inmem] installed:"
        " adds B11, the B10 graph served by `langgraph dev`",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="pass an argument to `turnstile serve`, e.g. --server-arg=--max-running=128",
    )
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Entry point of `turnstile bench` and `scripts/bench.py`."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    try:
        sizes = (Sizes.quick() if args.quick else Sizes()).with_settings(args.set)
        selected = _selection(args.only, langgraph_dev=bool(args.langgraph_dev))
        placement = Placement.pinned() if args.pin else Placement()
    except ValueError as exc:
        parser.error(str(exc))
    machine = _machine(args.quick, placement)
    if placement.load:
        pin_self(placement.load)
    rows, context = asyncio.run(
        run_suite(sizes, selected, args.server_arg, placement, args.langgraph_dev)
    )
    print(f"Turnstile benchmarks — {machine['summary']}")
    print()
    print(table(rows))
    notes = _notes(rows, context)
    if notes:
        print()
        print("\n".join(notes))
    for row in rows:
        if row.id == "B9" and not row.error:
            print()
            print(b9_table(row.figures))
    if args.json:
        Path(args.json).write_text(to_json(rows, machine, sizes, context) + "\n")
    return 1 if any(row.error for row in rows) else 0


def _selection(only: str, *, langgraph_dev: bool = False) -> list[str]:
    known = (*WORKLOADS, *OPTIONAL)
    if not only.strip():
        return [*WORKLOADS, *(OPTIONAL if langgraph_dev else ())]
    chosen = {name.strip().upper() for name in only.split(",") if name.strip()}
    unknown = chosen - set(known)
    if unknown:
        raise ValueError(f"--only: unknown workloads {sorted(unknown)}; known {known}")
    if "B11" in chosen and not langgraph_dev:
        raise ValueError("--only B11 needs --langgraph-dev PATH")
    return [name for name in known if name in chosen]


@dataclass(frozen=True)
class Placement:
    """Where the processes run: `servers` (the echo servers and Turnstile) and `load` (this
    process), each a set of cores; empty sets leave them wherever the kernel puts them."""

    servers: frozenset[int] = frozenset()
    load: frozenset[int] = frozenset()

    @classmethod
    def pinned(cls) -> Placement:
        """The servers on the first core, the load generator on the others."""
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if len(cores) < 2:
            raise ValueError("--pin needs Linux and at least two cores")
        return cls(frozenset(cores[:1]), frozenset(cores[1:]))

    @property
    def cpus(self) -> set[int] | None:
        """The servers' cores, for `start(cpus=...)`."""
        return set(self.servers) or None


async def run_suite(
    sizes: Sizes,
    selected: list[str],
    server_args: list[str],
    placement: Placement | None = None,
    langgraph_dev: str = "",
) -> tuple[list[Row], dict[str, Figures]]:
    """Measures the echo baselines, then each selected workload on a fresh server."""
    placement = placement or Placement()
    with tempfile.TemporaryDirectory(prefix="turnstile-bench-") as name:
        directory = Path(name)
        context = await _baselines(directory, sizes, placement, stream="B5" in selected)
        context["placement"] = {"pinned": bool(placement.servers)}
        bodies = _bodies(sizes, directory, server_args, placement, langgraph_dev)
        rows: list[Row] = []
        for workload in selected:
            _progress(f"{workload}: {workloads(sizes)[workload]}")
            started = time.perf_counter()
            try:
                figures = await _on_server(
                    directory, workload, bodies[workload], sizes, server_args, placement
                )
                context[workload] = figures
                row = judge(workload, figures, context["echo"], context)
            except Exception as exc:
                row = Row(workload, "", error=_describe(exc))
            row.workload = workloads(sizes)[workload]
            rows.append(row)
            if not row.error and "cpu_per_run" in row.figures:
                rows.append(cpu_row(workload, row.figures, context["echo"]))
            if not row.error and workload == "B10":
                rows.append(lg_concurrent_row(row.figures))
                rows.append(lg_floor_row(row.figures))
            _progress(f"{workload}: {row.result} in {time.perf_counter() - started:.1f} s")
    return rows, context


async def _baselines(
    directory: Path, sizes: Sizes, placement: Placement, *, stream: bool
) -> dict[str, Figures]:
    _progress("echo: raw grpc.aio baseline")
    log = directory / "echo.log"
    async with _echo_server(log, sizes.channels, placement) as (echo, channels):
        with _collector_paused():
            baseline = await latency.echo_baseline(channels, sizes, echo.cpu_seconds)
            context: dict[str, Figures] = {"echo": baseline}
        if stream:
            with _collector_paused():
                context["stream"] = await streaming.stream_baseline(channels, sizes)
        context["echo_memory"] = dict(echo.memory())
    return context


@contextlib.asynccontextmanager
async def _echo_server(
    log: Path, connections: int, placement: Placement
) -> AsyncIterator[tuple[EchoProcess, Channels]]:
    """A raw echo server of its own, and `connections` channels to it, ready."""
    echo = await EchoProcess.start(log, cpus=placement.cpus)
    try:
        channels = Channels(echo.address, connections)
        try:
            await channels.ready()
            yield echo, channels
        finally:
            await channels.close()
    finally:
        await echo.stop()


def _bodies(
    sizes: Sizes,
    directory: Path,
    server_args: list[str],
    placement: Placement,
    langgraph_dev: str = "",
) -> dict[str, Body]:
    async def b1(server: TurnstileProcess, channels: Channels, database: Path) -> Figures:
        async with _echo_server(directory / "B1-echo.log", 1, placement) as (_, calls):
            return await latency.serial_wait_and_echo(channels, calls, sizes)

    async def b2(server: TurnstileProcess, channels: Channels, database: Path) -> Figures:
        return await latency.concurrent_wait(channels, sizes, server.cpu_seconds)

    async def b3(server: TurnstileProcess, channels: Channels, database: Path) -> Figures:
        return await latency.enqueue_order(channels, sizes, server.cpu_seconds)

    async def b4(server: TurnstileProcess, channels: Channels, database: Path) -> Figures:
        return await latency.interrupt_join(channels, sizes)

    async def b5(server: TurnstileProcess, channels: Channels, database: Path) -> Figures:
        return await streaming.stream_runs(server.address, sizes)

    async def b6(server: TurnstileProcess, channels: Channels, database: Path) -> Figures:
        async def interleaved(empty: TurnstileProcess, reference: Channels, _: Path) -> Figures:
            seeded, baseline = await latency.serial_wait(
                [channels, reference], sizes, sizes.b1_runs
            )
            return {**seeded, "empty_p50": baseline["p50"], "empty_p99": baseline["p99"]}

        return await _on_server(directory, "B6-empty", interleaved, sizes, server_args, placement)

    async def b7(server: TurnstileProcess, channels: Channels, database: Path) -> Figures:
        return await scale.queued_memory(server, channels, sizes)

    async def b8(server: TurnstileProcess, channels: Channels, database: Path) -> Figures:
        return await scale.long_thread(channels, sizes, database)

    async def b9(server: TurnstileProcess, channels: Channels, database: Path) -> Figures:
        return await sdk.sdk_against_stub(channels, server.address, sizes)

    async def b10(server: TurnstileProcess, channels: Channels, database: Path) -> Figures:
        figures = await langgraph_runs.turnstile_b10(channels, sizes, directory, server.cpu_seconds)
        return {**figures, **await langgraph_runs.turnstile_handoff(channels, sizes)}

    async def b11(server: TurnstileProcess, channels: Channels, database: Path) -> Figures:
        project = project_file(directory)
        figures = await langgraph_dev_figures(langgraph_dev, project, directory, sizes)
        return {**figures, "clients": sizes.lg_clients}

    return {
        "B1": b1,
        "B2": b2,
        "B3": b3,
        "B4": b4,
        "B5": b5,
        "B6": b6,
        "B7": b7,
        "B8": b8,
        "B9": b9,
        "B10": b10,
        "B11": b11,
    }


async def _on_server(
    directory: Path,
    workload: str,
    body: Body,
    sizes: Sizes,
    server_args: list[str],
    placement: Placement,
) -> Figures:
    """Runs `body` against a fresh server on its own database (B6's seeded first)."""
    database = directory / f"{workload}.db"
    seeded: Figures = {}
    if workload == "B6":
        started = time.perf_counter()
        await seed_database(database, sizes.b6_threads, sizes.b6_checkpoints)
        seeded = {
            "seed_seconds": time.perf_counter() - started,
            "database_bytes": database.stat().st_size,
        }
        _progress(
            f"B6: seeded {sizes.b6_threads:,} threads and {sizes.b6_checkpoints:,} checkpoints"
            f" ({seeded['database_bytes'] / 1e6:,.0f} MB) in {seeded['seed_seconds']:.1f} s"
        )
    arguments = [*_workload_args(workload, sizes, directory), *server_args]  # the caller's win
    server = await TurnstileProcess.start(
        database, directory / f"{workload}.log", arguments, cpus=placement.cpus
    )
    try:
        channels = Channels(server.address, sizes.channels)
        try:
            await channels.ready()
            started, server_cpu, own_cpu = time.perf_counter(), server.cpu_seconds(), _own_cpu()
            with _collector_paused():
                figures = await body(server, channels, database)
            elapsed = time.perf_counter() - started
            figures["server_cpu"] = (server.cpu_seconds() - server_cpu) / elapsed
            figures["client_cpu"] = (_own_cpu() - own_cpu) / elapsed
        finally:
            await channels.close()
    finally:
        await server.stop()
        await asyncio.to_thread(_remove, database)
    return {**figures, **seeded}


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No garbage collection in the load generator while it measures (as `timeit` does): a
    full collection of its own heap paused its event loop for up to a second and was counted
    as the server's latency. Collected before and after."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def _workload_args(workload: str, sizes: Sizes, directory: Path) -> list[str]:
    """What a workload changes of the server's defaults: B5's runs all execute at once, so
    the limit of runs executing at once (64 by default) is raised to their number; B10
    serves the LangGraph graphs of a langgraph.json written into `directory`."""
    default = ServerConfig().max_running
    if workload == "B5" and sizes.b5_streams > default:
        return [f"--max-running={sizes.b5_streams}"]
    if workload == "B10":  # the LangGraph graphs, from the langgraph.json B11 serves too
        return [f"--config={project_file(directory)}"]
    return []


def _describe(exc: Exception) -> str:
    """One line saying what went wrong (an RPC error by its code and details)."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        text = f"{type(exc).__name__} {getattr(code(), 'name', code())}: {details()}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def _own_cpu() -> float:
    """The CPU time this process (the load generator, all its threads) has used."""
    return time.process_time()


def _remove(database: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _machine(quick: bool, placement: Placement) -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    cores = os.cpu_count() or 0
    python = platform.python_version()
    summary = f"{cores} cores{f' ({model})' if model else ''}, Python {python}, {platform.system()}"
    if placement.servers:
        summary += (
            f"; --pin: servers on core {_cores(placement.servers)}, load generator on"
            f" {_cores(placement.load)}"
        )
    else:
        summary += "; shared: servers and load generator on any core"
    if quick:
        summary += "; --quick sizes (the targets are stated for the full ones)"
    return {
        "cores": cores,
        "cpu": model,
        "python": python,
        "platform": platform.platform(),
        "quick": quick,
        "pinned": bool(placement.servers),
        "summary": summary,
    }


def _cores(cores: frozenset[int]) -> str:
    return ",".join(str(core) for core in sorted(cores))


def _notes(rows: list[Row], context: dict[str, Figures]) -> list[str]:
    """Figures behind the table that help reading it."""
    notes: list[str] = []
    echo = context.get("echo")
    if echo:
        notes.append(
            f"- echo baseline: serial call p50 {echo['p50'] * 1000:.3f} ms / p99"
            f" {echo['p99'] * 1000:.3f} ms; {echo['clients']}-way {echo['rate']:,.0f} calls/s"
        )
    usage = [
        f"{row.id} {row.figures['server_cpu']:.0%} / {row.figures['client_cpu']:.0%}"
        for row in rows
        if "server_cpu" in row.figures
    ]
    if usage:
        notes.append(
            "- CPU used while measuring, server / load generator (100% = one core): "
            + ", ".join(usage)
        )
    for row in rows:
        f = row.figures
        if row.error or not f:
            continue
        if row.id == "B2":
            notes.append(
                f"- B2: per-run WaitRun latency p50 {f['p50'] * 1000:.2f} ms,"
                f" p99 {f['p99'] * 1000:.2f} ms"
            )
        if row.id == "B6":
            notes.append(
                f"- B6: seeding took {f['seed_seconds']:.1f} s"
                f" ({f['database_bytes'] / 1e6:,.0f} MB database)"
            )
        if row.id == "B7":
            notes.append(
                f"- B7: peak RSS {f['peak_rss'] / 1e6:,.0f} MB; runs admitted at"
                f" {f['admit_rate']:,.0f}/s"
            )
        if row.id == "B8":
            notes.append(
                "- B8 with stream_mode=updates (no whole-state `values` event per step): step"
                f" {f['small_updates_step'] * 1000:.2f} → {f['large_updates_step'] * 1000:.2f} ms"
                f" ({f['updates_step_ratio']:.2f}x), growth {f['small_updates_growth']:,.0f} →"
                f" {f['large_updates_growth']:,.0f} B/step; WaitRun p50"
                f" {f['small_values_wait_p50'] * 1000:.1f} →"
                f" {f['large_values_wait_p50'] * 1000:.1f} ms"
                " (the answer carries the whole thread)"
            )
    return notes
