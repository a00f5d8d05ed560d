"""Long threads on LangGraph savers: Turnstile's beside `AsyncSqliteSaver`, in one process.

A StateGraph with `messages: Annotated[list, add_messages]` and one node appending one message is
invoked on a thread already holding N messages, one new human message per run, with each saver
in turn (run i on every saver before run i + 1 on any, so a busy machine slows them alike). Per
run: wall time (median), CPU time of the process (all threads), and bytes the process wrote
(`wchar`: SQLite's WAL and database pages, the real write volume). "LangGraph alone" keeps
references in memory and stores nothing: what the graph itself costs, `add_messages` included.

Target (issue 20 point 4): Turnstile's saver at 10,000 messages within 1.5x of 100, in time and
in bytes written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from turnstile_server.runtime.langgraph.saver import TurnstileSaver
from turnstile_server.store.sqlite.database import Database
from turnstile_server.store.sqlite.langgraph import SqliteLangGraphCheckpoints

SIZES = (100, 1_000, 10_000)
TARGET = 1.5
OURS, THEIRS, ALONE = "Turnstile", "AsyncSqliteSaver", "LangGraph alone"


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def _reply(state: Chat) -> dict[str, Any]:
    return {"messages": [AIMessage(content="Here is what I found.")]}


class _ReferenceSaver(BaseCheckpointSaver[str]):
    """Keeps the latest checkpoint's objects in memory: no copy, no serialization, no I/O."""

    def __init__(self) -> None:
        super().__init__()
        self._latest: dict[str, CheckpointTuple] = {}

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        found = self._latest.get(str(config["configurable"]["thread_id"]))
        if found is None:
            return None
        values = {k: list(v) if isinstance(v, list) else v for k, v in _values(found).items()}
        return found._replace(checkpoint={**found.checkpoint, "channel_values": values})

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id = str(config["configurable"]["thread_id"])
        stored: RunnableConfig = {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": "",
                "checkpoint_id": checkpoint["id"],
            }
        }
        self._latest[thread_id] = CheckpointTuple(stored, checkpoint, metadata, None, [])
        return stored

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        return None

    def get_next_version(self, current: str | None, channel: None) -> str:
        return InMemorySaver.get_next_version(self, current, channel)  # type: ignore[arg-type]


def _values(found: CheckpointTuple) -> dict[str, Any]:
    return found.checkpoint["channel_values"]


@dataclass
class _Measured:
    wall: list[float] = field(default_factory=list)
    cpu: float = 0.0
    written: int = 0

    def per_run(self) -> tuple[float, float, float]:
        runs = len(self.wall)
        return statistics.median(self.wall) * 1000, self.cpu / runs * 1000, self.written / runs


def _written() -> int:
    with open("/proc/self/io") as io:
        for line in io:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


@dataclass
class _Subject:
    name: str
    graph: Any
    db_path: Path | None
    measured: _Measured = field(default_factory=_Measured)


async def _subjects(stack: AsyncExitStack, directory: Path) -> AsyncIterator[_Subject]:
    builder = StateGraph(Chat)
    builder.add_node("reply", _reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    ours_path = directory / "turnstile.db"
    db = await Database.open(ours_path)
    stack.push_async_callback(db.close)
    yield _Subject(
        OURS,
        builder.compile(checkpointer=TurnstileSaver(SqliteLangGraphCheckpoints(db))),
        ours_path,
    )
    theirs_path = directory / "langgraph.db"
    theirs = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(theirs_path)))
    yield _Subject(THEIRS, builder.compile(checkpointer=theirs), theirs_path)
    yield _Subject(ALONE, builder.compile(checkpointer=_ReferenceSaver()), None)


def _checkpoint_wal(path: Path | None) -> None:
    """Folds the seed's WAL into the database file first, so no measured run pays for it."""
    if path is not None:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def measure(
    sizes: Sequence[int], runs: int
) -> dict[int, dict[str, tuple[float, float, float]]]:
    """Per size, per saver: (median wall ms, CPU ms, bytes written) per run."""
    results: dict[int, dict[str, tuple[float, float, float]]] = {}
    for size in sizes:
        with tempfile.TemporaryDirectory() as directory:
            async with AsyncExitStack() as stack:
                subjects = [s async for s in _subjects(stack, Path(directory))]
                thread: RunnableConfig = {"configurable": {"thread_id": f"long-{size}"}}
                seed = [HumanMessage(content=f"message {i} of the thread") for i in range(size)]
                for subject in subjects:
                    await subject.graph.ainvoke({"messages": seed}, thread)
                    _checkpoint_wal(subject.db_path)
                for index in range(runs + 1):  # the first run of each warms up, uncounted
                    for subject in subjects:
                        config: RunnableConfig = {
                            "configurable": {**thread["configurable"], "run_id": f"run-{index}"}
                        }
                        message = {"messages": [HumanMessage(content=f"question {index}")]}
                        written, cpu, wall = _written(), time.process_time(), time.perf_counter()
                        await subject.graph.ainvoke(message, config)
                        if index:
                            subject.measured.wall.append(time.perf_counter() - wall)
                            subject.measured.cpu += time.process_time() - cpu
                            subject.measured.written += _written() - written
                results[size] = {s.name: s.measured.per_run() for s in subjects}
    return results


def report(results: dict[int, dict[str, tuple[float, float, float]]]) -> str:
    """The table and the ratios, each target met or MISSED."""
    lines = [
        "| messages | saver | wall ms/run (median) | CPU ms/run | written/run |",
        "|---:|---|---:|---:|---:|",
    ]
    for size, by_saver in results.items():
        for name, (wall, cpu, written) in by_saver.items():
            lines.append(f"| {size:,} | {name} | {wall:.1f} | {cpu:.1f} | {_bytes(written)} |")
    small, large = min(results), max(results)
    lines.append("")
    lines.append(f"{large:,} messages against {small:,} (target for {OURS}: within {TARGET}x):")
    for name in (OURS, THEIRS, ALONE):
        ratios = [
            large_v / small_v if small_v else float("inf")
            for large_v, small_v in zip(results[large][name], results[small][name], strict=True)
        ]
        verdicts = [("met" if r <= TARGET else "MISSED") if name == OURS else "" for r in ratios]
        parts = [
            f"{label} {r:.2f}x{f' {v}' if v else ''}"
            for label, r, v in zip(("wall", "CPU", "written"), ratios, verdicts, strict=True)
            if not (name == ALONE and label == "written")
        ]
        lines.append(f"- {name}: " + ", ".join(parts))
    # What the saver adds to the run: the graph's own cost (add_messages is linear in the
    # thread) taken out, in CPU, the measure a shared machine does not blur.
    own = [results[size][OURS][1] - results[size][ALONE][1] for size in (small, large)]
    if own[0] > 0:
        ratio = own[1] / own[0]
        verdict = "met" if ratio <= TARGET else "MISSED"
        lines.append(
            f"- {OURS} minus {ALONE} (the saver's own CPU per run): {own[0]:.1f} ms at"
            f" {small:,}, {own[1]:.1f} ms at {large:,}: {ratio:.2f}x {verdict}"
        )
    for size in results:
        ours, theirs = results[size][OURS], results[size][THEIRS]
        lines.append(
            f"- at {size:,}: {THEIRS} / {OURS}: wall {theirs[0] / ours[0]:.1f}x,"
            f" CPU {theirs[1] / ours[1]:.1f}x, written {theirs[2] / max(ours[2], 1):.1f}x"
        )
    return "\n".join(lines)


def _bytes(count: float) -> str:
    if count >= 1 << 20:
        return f"{count / (1 << 20):.1f} MiB"
    return f"{count / 1024:.0f} KiB"


def main(argv: list[str] | None = None) -> int:
    """Entry point of `scripts/bench_saver.py`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="thread sizes")
    parser.add_argument("--runs", type=int, default=10, help="measured runs per size and saver")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    print(report(asyncio.run(measure(sizes, args.runs))))
    return 0
