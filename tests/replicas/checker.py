"""The checker run after chaos: what the database and the clients' acknowledgements must say.

It reads the attempts' audit (`run_attempts`, on the database's clock), the runs, the
rolled-back runs and the checkpoints, and returns every violation it finds (none: the
guarantees held):

- attempts on one thread never overlap (each ended before the next began);
- every acknowledged run ended (or was rolled back: its row is gone, and the rollback kept
  it in `rolled_back_runs`), and every attempted run is one of those;
- no rolled-back run keeps a checkpoint (ours or LangGraph's writes);
- a run's checkpoints are its input once (step 0) then steps 1, 2, ... each once, in order,
  each written by one of the run's own attempts, their epochs never going back; and a run
  has one audited attempt per start (`runs.attempt`).

- each ended or rolled-back run's Redis stream (`<prefix>run:<run_id>`, what every other
  replica's subscribers read): within each attempt (`seq >> 32`) its seqs are 1, 2, ...
  with no `gap` entry, and it ends with one `end`, its last entry. An `end` is excused when
  the run ended within `SILENCED_SLACK` before a replica was killed, or while one was
  stopped (`Chaos.silenced`): the replica that wrote it may have died before publishing it
  (subscribers get STREAM_EXPIRED then, `relay/run_stream.py`).

The checkpoints are the store's side of "seq is contiguous within each attempt"; the streams
are the subscribers' side.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from tests.replicas.cluster import Cluster

ENDED = {"success", "error", "interrupted", "timeout"}
LOW = (1 << 32) - 1  # a seq's low bits: its number within its attempt
SILENCED_SLACK = 2_000_000  # µs from a run's end to a kill that may have lost it


@dataclass(frozen=True)
class Ack:
    """A run a client was told was admitted (CreateRun answered it), and where."""

    run_id: str
    thread_id: str
    strategy: str
    replica: str


async def violations(
    group: Cluster, acks: list[Ack], silenced: list[tuple[int, int]] | None = None
) -> list[str]:
    """Everything the database, Redis and `acks` say that the guarantees forbid."""
    attempts = await group.query(
        "SELECT thread_id, run_id, epoch, owner, start_time, end_time, outcome"
        " FROM run_attempts ORDER BY thread_id, start_time, epoch"
    )
    runs = {r["run_id"]: r for r in await group.query("SELECT run_id, status, attempt FROM runs")}
    rolled_back = {r["run_id"] for r in await group.query("SELECT run_id FROM rolled_back_runs")}
    checkpoints = await group.query(
        "SELECT run_id, seq, step, source, epoch FROM checkpoints ORDER BY run_id, seq"
    )
    found: list[str] = []
    found += _overlaps(attempts)
    found += _unaccounted(acks, attempts, runs, rolled_back)
    leftovers = await group.query(
        "SELECT run_id FROM checkpoints WHERE run_id = ANY($1::text[])"
        " UNION SELECT run_id FROM lg_writes WHERE run_id = ANY($1::text[])",
        sorted(rolled_back),
    )
    found += [f"rolled-back run {r['run_id']} keeps a checkpoint" for r in leftovers]
    found += _steps(checkpoints, attempts)
    found += _attempt_counts(runs, attempts)
    found += await stream_violations(group, silenced)
    return found


async def stream_violations(
    group: Cluster, silenced: list[tuple[int, int]] | None = None, *, ended_by: int | None = None
) -> list[str]:
    """The checks of the Redis streams of the runs that ended (by `ended_by`, µs, if given)."""
    ends = await group.query(
        "SELECT run_id, end_time FROM runs WHERE status <> ALL($1::text[])"
        " UNION ALL SELECT run_id, rolled_back_time FROM rolled_back_runs",
        ["pending", "running"],
    )
    times = {row["run_id"]: row["end_time"] for row in ends}
    if ended_by is not None:
        times = {run_id: end for run_id, end in times.items() if end <= ended_by}
    return await _streams(group, times, silenced)


async def _streams(
    group: Cluster, ends: dict[str, int], silenced: list[tuple[int, int]] | None
) -> list[str]:
    """The checks of the runs' Redis streams (see the module)."""
    client: Any = aioredis.Redis.from_url(group.redis)
    found = []
    try:
        for run_id, end_time in sorted(ends.items()):
            entries = await client.xrange(f"{group.redis_prefix}run:{run_id}")
            seqs = [int(raw_id.split(b"-")[1]) for raw_id, _ in entries]
            flags = [fields.get(b"e", b"").decode() for _, fields in entries]
            for attempt, numbered in itertools.groupby(seqs, key=lambda seq: seq >> 32):
                low = [seq & LOW for seq in numbered]
                if low != list(range(1, len(low) + 1)):
                    found.append(f"run {run_id}: attempt {attempt + 1}'s stream seqs are {low}")
            if "gap" in flags:
                found.append(f"run {run_id}: its stream has a gap entry: {flags}")
            if flags.count("end") > 1 or ("end" in flags and flags[-1] != "end"):
                found.append(f"run {run_id}: its stream's `end` is not its one last entry")
            excused = any(
                start - SILENCED_SLACK <= end_time <= stop for start, stop in silenced or []
            )
            if "end" not in flags and not excused:
                found.append(f"run {run_id} ended, but its stream has no `end`: {seqs}")
    finally:
        await client.aclose()
    return found


def _overlaps(attempts: list[Any]) -> list[str]:
    found = []
    for thread_id, rows in itertools.groupby(attempts, key=lambda r: r["thread_id"]):
        for before, after in itertools.pairwise(rows):
            if before["end_time"] is None or before["end_time"] > after["start_time"]:
                found.append(
                    f"thread {thread_id}: attempt {before['run_id']}@{before['epoch']}"
                    f" ({before['start_time']} .. {before['end_time']}) overlaps"
                    f" {after['run_id']}@{after['epoch']} (from {after['start_time']})"
                )
    return found


def _unaccounted(
    acks: list[Ack], attempts: list[Any], runs: dict[str, Any], rolled_back: set[str]
) -> list[str]:
    found = []
    for ack in acks:
        row = runs.get(ack.run_id)
        if row is None and ack.run_id not in rolled_back:
            found.append(f"acknowledged run {ack.run_id} ({ack.strategy}) is lost")
        elif row is not None and row["status"] not in ENDED:
            found.append(f"acknowledged run {ack.run_id} did not end: {row['status']}")
    for run_id in {r["run_id"] for r in attempts} - set(runs) - rolled_back:
        found.append(f"run {run_id} had attempts but is neither a run nor rolled back")
    return found


def _steps(checkpoints: list[Any], attempts: list[Any]) -> list[str]:
    epochs: dict[str, set[int]] = defaultdict(set)
    for row in attempts:
        epochs[row["run_id"]].add(row["epoch"])
    found = []
    for run_id, group in itertools.groupby(checkpoints, key=lambda r: r["run_id"]):
        rows = list(group)
        shape = [(r["source"], r["step"]) for r in rows]
        expected = [("input", 0)] + [("step", n) for n in range(1, len(rows))]
        if shape != expected:
            found.append(f"run {run_id}: checkpoints {shape}, not input once then 1, 2, ...")
        written = [r["epoch"] for r in rows if r["source"] == "step"]
        if written != sorted(written):
            found.append(f"run {run_id}: checkpoint epochs go back: {written}")
        strangers = set(written) - epochs[run_id]
        if strangers:
            found.append(f"run {run_id}: checkpoints of epochs {strangers} it never started")
    return found


def _attempt_counts(runs: dict[str, Any], attempts: list[Any]) -> list[str]:
    audited: dict[str, int] = defaultdict(int)
    for row in attempts:
        audited[row["run_id"]] += 1
    return [
        f"run {run_id}: attempt {row['attempt']} but {audited[run_id]} audited attempts"
        for run_id, row in runs.items()
        if row["attempt"] != audited[run_id]
    ]
