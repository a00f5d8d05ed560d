"""Replicas on PostgreSQL beside SQLite, in one run: `python scripts/bench_replicas.py [--quick]`.

Rows (`turnstile_tools/bench/replicas.py` says how each is measured): runs/s and server CPU per
run on SQLite (the baseline), on PostgreSQL with one replica and with two; CancelRun sent to
replica b of a run executing on a, by NOTIFY and with a's LISTEN connection cut (a listens
again and asks at once); CreateRun(interrupt) on b of a run on a. Exits non-zero only when
something could not be measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from turnstile_tools.bench import replicas as bench
from turnstile_tools.bench.latency import Figures

CANCEL_TARGET = 0.100  # SPEC §12: cancellation reaches the owner within 100 ms p99
BEAT = 2.0  # the default --lease-beat-seconds: a lost NOTIFY costs at most this


async def measure(args: argparse.Namespace) -> dict[str, Figures]:
    results: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="turnstile-replicas-") as name:
        directory = Path(name)
        _progress("SQLite, one process")
        async with bench.serving(str(directory / "bench.db"), 1, directory, "sqlite") as r:
            results["sqlite"] = await bench.throughput(r, args.clients, args.runs)
        for count in (1, 2):
            async with bench.postgres_database(args.postgres) as url:
                _progress(f"PostgreSQL, {count} replica(s)")
                # Replicas on one database relay their runs' events through Redis: a replica
                # without it refuses to join another (docs/deploy.md).
                prefix = f"turnstile-bench-{url.rpartition('/')[2]}:"
                relay = ("--redis", args.redis, "--redis-key-prefix", prefix)
                async with bench.serving(url, count, directory, f"pg{count}", relay) as r:
                    results[f"pg{count}"] = await bench.throughput(r, args.clients, args.runs)
                    if count == 2:
                        _progress("CancelRun on b of a run on a")
                        results["cancel"] = await bench.cancellation(
                            r, args.trials, cut_listen=False
                        )
                        _progress("CreateRun(interrupt) on b of a run on a")
                        results["handoff"] = await bench.handoff(r, args.trials)
                        _progress("CancelRun on b with a's LISTEN connection cut")
                        results["cut"] = await bench.cancellation(
                            r, args.cut_trials, cut_listen=True, spread=BEAT
                        )
    return results


def table(results: dict[str, Figures], clients: int) -> str:
    base = results["sqlite"]
    rows: list[tuple[str, str, str, str, str]] = []
    for key, label in (
        ("sqlite", "SQLite, 1 process"),
        ("pg1", "PostgreSQL, 1 replica"),
        ("pg2", "PostgreSQL, 2 replicas"),
    ):
        f = results[key]
        database = (
            f"; PostgreSQL backends {f['database_cpu_per_run'] * 1000:.2f} ms"
            if "database_cpu_per_run" in f
            else ""
        )
        rows.append(
            (
                f"{label}: {clients} callers, WaitRun of echo ({f['runs']:,} runs)",
                f"{f['rate']:,.0f} runs/s; server CPU {f['cpu_per_run'] * 1000:.2f} ms/run"
                f"{database}",
                "baseline"
                if key == "sqlite"
                else f"{f['rate'] / base['rate']:.2f}x runs/s,"
                f" {f['cpu_per_run'] / base['cpu_per_run']:.2f}x CPU/run",
                "",
                "",
            )
        )
    cancel, cut, handoff = results["cancel"], results["cut"], results["handoff"]
    rows.append(
        (
            f"CancelRun on b of a run on a, until its attempt ended ({cancel['trials']} times)",
            _latency(cancel),
            "",
            f"p99 ≤ {CANCEL_TARGET * 1000:.0f} ms",
            _met(cancel["p99"] <= CANCEL_TARGET),
        )
    )
    rows.append(
        (
            f"CreateRun(interrupt) on b of a run on a ({handoff['trials']} times)",
            f"old run ended p50 {handoff['stop_p50'] * 1000:.1f} / p99"
            f" {handoff['stop_p99'] * 1000:.1f} ms; new run began p50"
            f" {handoff['start_p50'] * 1000:.1f} / p99 {handoff['start_p99'] * 1000:.1f} ms",
            "",
            f"old run ended p99 ≤ {CANCEL_TARGET * 1000:.0f} ms",
            _met(handoff["stop_p99"] <= CANCEL_TARGET),
        )
    )
    rows.append(
        (
            f"CancelRun on b, a's LISTEN connection cut first ({cut['trials']} times)",
            _latency(cut),
            "",
            f"max ≤ one beat ({BEAT:.0f} s)",
            _met(cut["max"] <= BEAT),
        )
    )
    head = ("workload", "measured", "against SQLite", "target", "result")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _latency(f: Figures) -> str:
    return (
        f"p50 {f['p50'] * 1000:.1f} ms / p99 {f['p99'] * 1000:.1f} ms / max"
        f" {f['max'] * 1000:.1f} ms"
    )


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench_replicas.py", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "TURNSTILE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server to make (and drop) the bench's databases on",
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get("TURNSTILE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="the Redis the PostgreSQL replicas relay events through (keys under a prefix of"
        " the bench's own, expiring after the servers' --redis-stream-ttl-seconds)",
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--runs", type=int, default=0, help="runs per setup (default 1,600)")
    parser.add_argument("--trials", type=int, default=0, help="cancellations (default 200)")
    parser.add_argument("--cut-trials", type=int, default=0, help="with LISTEN cut (20)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    args.runs = args.runs or (320 if args.quick else 1600)
    args.trials = args.trials or (50 if args.quick else 200)
    args.cut_trials = args.cut_trials or (5 if args.quick else 20)
    results = asyncio.run(measure(args))
    cores = os.cpu_count() or 0
    print(f"Turnstile replicas — {cores} cores, shared by the servers, PostgreSQL and the bench")
    print()
    print(table(results, args.clients))
    if args.json:
        document: dict[str, Any] = {"cores": cores, "results": results}
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
