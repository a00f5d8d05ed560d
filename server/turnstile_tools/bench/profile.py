"""Where the CPU of a run goes: one profile of B2's (or B10's) server, all its threads.

The server's threads are measured from `/proc/<pid>/task` (each thread's CPU over the profile)
and sampled by py-spy (`py-spy record --native --threads`); a Python thread's CPU is split over
what its samples were doing, each sample charged to the innermost frame that says whose code
it is (a logging call anywhere in the stack charges logging). Threads that are not Python's
(gRPC's core) count as gRPC machinery. py-spy is no dependency of Turnstile: install it
(`pip install py-spy`) to profile.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from turnstile_tools.bench import latency
from turnstile_tools.bench.langgraph_graphs import project_file
from turnstile_tools.bench.latency import Figures
from turnstile_tools.bench.load import Channels, new_thread
from turnstile_tools.bench.processes import TurnstileProcess, cpu_seconds
from turnstile_tools.bench.sizes import Sizes

CATEGORIES = (
    ("grpc", "gRPC machinery (grpc.aio, cygrpc, C-core threads)"),
    ("handler", "our RPC handlers (api/: validation, admission call, answer)"),
    ("saver", "our LangGraph runtime and saver (runtime/langgraph/)"),
    ("langgraph", "LangGraph and langchain-core themselves (astream's loop, channels, serde)"),
    ("scheduler", "scheduler, runner, graph runtime, events"),
    ("store_loop", "store, on the event loop (records, caches, SQL bodies' callers)"),
    ("handoff", "thread hand-off (queues, call_soon_threadsafe, the loop's wake-up)"),
    ("sqlite", "store, in the SQLite threads (SQL and the bodies run there)"),
    ("encoding", "encoding (protobuf, JSON, our codec)"),
    ("logging", "logging (records, the metrics hooks that log, the writer thread)"),
    ("loop", "asyncio's event loop itself (tasks, futures, selector)"),
    ("other", "other (interpreter, unattributed)"),
)

# Innermost frame first: the first rule that matches a frame names the sample's category.
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "handoff",
        re.compile(
            r"^(call_soon_threadsafe|_write_to_self|_read_from_self|_process_self_data) "
            r"|\(queue\.py|\(threading\.py|store/sqlite/connection\.py"
            r"|store/sqlite/database\.py:\d+\)$"
        ),
    ),
    ("encoding", re.compile(r"google/protobuf|\(json/|api/(codec|json_values|wire|event_frames)")),
    ("store_loop", re.compile(r"turnstile_server/store/")),
    ("saver", re.compile(r"turnstile_server/runtime/langgraph/")),
    (
        "scheduler",
        re.compile(
            r"turnstile_server/(scheduler|dispatcher|replica_duties|runner|endings|events|event_log"
            r"|run_checkpoints|state|policy|thread_states|graph|runtime/|graphs/)"
        ),
    ),
    ("handler", re.compile(r"turnstile_server/api/")),
    (
        "langgraph",
        re.compile(
            r"\((langchain_core|pregel|channels|graph|managed|_internal|serde|base|checkpoint)/"
            r"|langgraph|ormsgpack"
        ),
    ),
    ("grpc", re.compile(r"grpc|cygrpc")),
    ("loop", re.compile(r"\(asyncio/|\(selectors\.py|_asyncio")),
)
_LOGGING = re.compile(r"\(logging/|turnstile_server/(logs|metrics)\.py")
_SAMPLE = re.compile(r"^thread \((\d+)\): ([^;]*);?(.*) (\d+)$")


@dataclass(frozen=True)
class ThreadUse:
    """One thread's CPU over the profile."""

    tid: int
    name: str
    seconds: float


@dataclass
class Profile:
    """The server's CPU over the profile, by category."""

    runs: int
    rate: float
    seconds: float
    cpu: float
    by_category: dict[str, float]
    threads: list[ThreadUse]
    samples: int


def threads_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Every thread of `pid`: its name (`comm`) and the CPU it has used, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[str, float]] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat", encoding="ascii", errors="replace") as f:
                text = f.read()
        except FileNotFoundError:  # ended meanwhile
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rpartition(")")[2].split()
        found[int(task)] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return found


def classify(frames: list[str]) -> str:
    """The category of one sample, its frames outermost first."""
    if any(_LOGGING.search(frame) for frame in frames):
        return "logging"
    for frame in reversed(frames):
        for category, rule in _RULES:
            if rule.search(frame):
                return category
    return "other"


def read_samples(text: str) -> dict[int, tuple[str, Counter[str]]]:
    """py-spy's raw output: per thread id, its Python name and its samples by category."""
    threads: dict[int, tuple[str, Counter[str]]] = {}
    for line in text.splitlines():
        found = _SAMPLE.match(line.strip())
        if not found:
            continue
        tid, name, stack, count = found.groups()
        counts = threads.setdefault(int(tid), (name, Counter()))[1]
        counts[classify(stack.split(";") if stack else [])] += int(count)
    return threads


def attribute(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    samples: dict[int, tuple[str, Counter[str]]],
    total: float,
) -> tuple[dict[str, float], list[ThreadUse]]:
    """Splits the process's CPU `total` over the categories: each thread's own CPU by its
    samples (SQLite's and the log writer's threads whole), gRPC's C-core threads to gRPC."""
    used: dict[str, float] = dict.fromkeys((name for name, _ in CATEGORIES), 0.0)
    threads: list[ThreadUse] = []
    for tid, (comm, seconds) in after.items():
        spent = seconds - before.get(tid, (comm, 0.0))[1]
        python_name, counts = samples.get(tid, ("", Counter()))
        name = python_name or comm
        threads.append(ThreadUse(tid, name, spent))
        if name.startswith("sqlite "):
            used["sqlite"] += spent
        elif name == "turnstile-log-writer":
            used["logging"] += spent
        elif python_name and sum(counts.values()):
            weight = spent / sum(counts.values())
            for category, count in counts.items():
                used[category] += count * weight
        elif python_name:
            used["other"] += spent
        else:
            used["grpc"] += spent
    used["other"] += max(0.0, total - sum(t.seconds for t in threads))  # threads that ended
    threads.sort(key=lambda t: -t.seconds)
    return used, threads


async def serial_b10(channels: Channels, runs: int, per_thread: int) -> Figures:
    """B10's served subject alone: `runs` serial WaitRuns of the two-node LangGraph graph, a
    fresh thread every `per_thread`; its rate."""
    from turnstile_tools.bench.langgraph_runs import served

    run, stubs = served(channels), channels.stubs(0)
    threads = [await new_thread(stubs) for _ in range(math.ceil(runs / per_thread))]
    started = time.perf_counter()
    for number in range(runs):
        await run(threads[number // per_thread])
    return {"runs": runs, "rate": runs / (time.perf_counter() - started)}


async def profile_b2(
    sizes: Sizes,
    directory: Path,
    *,
    rate: int = 100,
    cpus: set[int] | None = None,
    workload: str = "B2",
    native: bool = True,
) -> Profile:
    """Runs B2 (or B10's serial WaitRuns, `sizes.lg_runs` of them) against a fresh server
    while py-spy samples it; returns the CPU by category."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    extra = [f"--config={project_file(directory)}"] if workload == "B10" else []
    server = await TurnstileProcess.start(
        directory / "profile.db", directory / "profile.log", extra, cpus=cpus
    )

    async def measured(runs: Sizes) -> Figures:
        if workload == "B10":
            return await serial_b10(channels, runs.lg_runs, runs.runs_per_thread)
        return await latency.concurrent_wait(channels, runs)

    try:
        channels = Channels(server.address, sizes.channels)
        try:
            await channels.ready()
            warm = replace(sizes, b2_runs_per_client=max(2, sizes.b2_runs_per_client // 10))
            await measured(replace(warm, lg_runs=max(2, sizes.lg_runs // 10)))
            output = directory / "profile.txt"
            recorder = _record(spy, server.pid, rate, output, native)
            try:
                await asyncio.sleep(1.0)  # py-spy attaches
                before, total = threads_cpu(server.pid), cpu_seconds(server.pid)
                figures = await measured(sizes)
                after, total = threads_cpu(server.pid), cpu_seconds(server.pid) - total
            finally:
                recorder.send_signal(signal.SIGINT)
                await asyncio.to_thread(recorder.wait, 30)
        finally:
            await channels.close()
    finally:
        await server.stop()
    samples = read_samples(output.read_text(errors="replace"))
    used, threads = attribute(before, after, samples, total)
    seconds = figures["runs"] / figures["rate"]
    return Profile(
        runs=int(figures["runs"]),
        rate=figures["rate"],
        seconds=seconds,
        cpu=total,
        by_category=used,
        threads=threads,
        samples=sum(sum(c.values()) for _, c in samples.values()),
    )


def _record(spy: str, pid: int, rate: int, output: Path, native: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            spy,
            "record",
            f"--pid={pid}",
            f"--rate={rate}",
            *(["--native"] if native else ["--gil"]),
            "--threads",
            "--format=raw",
            f"--output={output}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def table(profile: Profile) -> str:
    """The profile as a Markdown table: CPU per run and share, by category."""
    per_run = 1000 / profile.runs
    lines = [
        "| where | CPU per run | share |",
        "|---|---|---|",
    ]
    for key, label in _ordered(profile.by_category):
        seconds = profile.by_category[key]
        lines.append(f"| {label} | {seconds * per_run:.3f} ms | {seconds / profile.cpu:.0%} |")
    lines.append(f"| all threads (/proc) | {profile.cpu * per_run:.3f} ms | 100% |")
    return "\n".join(lines)


def _ordered(used: dict[str, float]) -> Iterable[tuple[str, str]]:
    return sorted(CATEGORIES, key=lambda item: -used[item[0]])


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Entry point of `scripts/profile_run.py`."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("B2", "B10"), default="B2")
    parser.add_argument("--runs-per-client", type=int, default=200, help="B2's")
    parser.add_argument("--runs", type=int, default=1200, help="B10's serial runs")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--pin", action="store_true", help="the server on core 0, this on 1")
    parser.add_argument("--threads", action="store_true", help="also list the threads")
    parser.add_argument(
        "--python-only",
        action="store_true",
        help="Python frames only, of the thread holding the GIL (with native frames py-spy"
        " loses the Python stack under asyncio's C task steps)",
    )
    parser.add_argument("--raw", metavar="PATH", help="keep py-spy's raw samples there")
    args = parser.parse_args(argv)
    sizes = replace(Sizes(), b2_runs_per_client=args.runs_per_client, lg_runs=args.runs)
    cpus: set[int] | None = None
    if args.pin:
        cores = sorted(os.sched_getaffinity(0))
        cpus = {cores[0]}
        os.sched_setaffinity(0, set(cores[1:]))
    with tempfile.TemporaryDirectory(prefix="turnstile-profile-") as name:
        profile = asyncio.run(
            profile_b2(
                sizes,
                Path(name),
                rate=args.rate,
                cpus=cpus,
                workload=args.workload,
                native=not args.python_only,
            )
        )
        if args.raw:
            shutil.copyfile(Path(name) / "profile.txt", args.raw)
    print(
        f"{args.workload} profiled: {profile.runs:,} runs at {profile.rate:,.0f} runs/s; server CPU"
        f" {profile.cpu:.2f} s ({profile.cpu / profile.seconds:.0%} of one core),"
        f" {profile.samples:,} py-spy samples"
    )
    print()
    print(table(profile))
    if args.threads:
        print()
        for thread in profile.threads:
            print(f"- {thread.name} ({thread.tid}): {thread.seconds:.2f} s")
    return 0
