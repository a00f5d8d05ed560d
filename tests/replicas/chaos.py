"""Bounded chaos over replicas: clients sending mixed strategies, and one fault at a time.

Everything random comes from one seed: each client's choices (strategy, replica, input,
pause) and the faults' order and targets are drawn from `random.Random` streams derived from
it, so a seed names one schedule (the timing of the processes under it still varies).

Faults, each followed by its recovery before the next one:
- `kill`: SIGKILL a replica, then start it again (a new incarnation on a new port);
- `term`: SIGTERM a replica (it drains for its grace), then start it again;
- `stop`: SIGSTOP a replica until its lease has expired on the database's clock, then
  SIGCONT (it finds its lease lost, stops its runs and joins again);
- `cut`: terminate a replica's LISTEN connection (`pg_terminate_backend`), until it listens
  again;
- `redis`: SIGSTOP the cluster's own redis-server for `REDIS_PAUSE` s (past the relay's
  command timeout: every replica's Redis calls fail meanwhile), then SIGCONT. (The `name`
  drawn for it is not used.)
The clients' interrupt and rollback runs, and their CancelRuns, land on any replica, so they
cancel runs executing on the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.replicas.checker import Ack, stream_violations
from tests.replicas.cluster import Cluster, Replica
from tests.support import eventually
from turnstile import (
    ConflictError,
    DeadlineExceededError,
    FailedPreconditionError,
    NotFoundError,
    ResourceExhaustedError,
    TurnstileClient,
    UnavailableError,
    UnknownError,
    get_client,
)

FAULTS = ("kill", "term", "stop", "cut", "redis")
REDIS_PAUSE = 4.0
STRATEGIES = ("enqueue", "interrupt", "rollback", "reject")
CALL_TIMEOUT = 5.0  # a call to a stopped replica gives up, and is sent to another
RECOVERY = 30.0


@dataclass
class Chaos:
    """The workload's and the faults' shared state, and what they did."""

    group: Cluster
    seed: int
    names: tuple[str, ...]
    options: tuple[str, ...] = ()  # the replicas' options, for a restart
    down: set[str] = field(default_factory=set)  # replicas being restarted: not called
    acks: list[Ack] = field(default_factory=list)
    refused: int = 0
    cancels: int = 0
    unanswered: int = 0  # calls no replica answered (their run, if admitted, is not acked)
    faults: list[str] = field(default_factory=list)
    exits: list[float] = field(default_factory=list)  # seconds from SIGKILL/SIGTERM to exit
    # When a replica could not publish what it had (SIGKILL, or SIGSTOP until SIGCONT), as
    # (from, to) in epoch microseconds: the checker excuses a run's unpublished `end` there.
    silenced: list[tuple[int, int]] = field(default_factory=list)
    _clients: dict[str, TurnstileClient] = field(default_factory=dict)
    retired: list[Replica] = field(default_factory=list)  # restarted ones, for their logs

    def client(self, name: str) -> TurnstileClient:
        address = self.group[name].address
        if address not in self._clients:
            self._clients[address] = get_client(url=address, timeout=CALL_TIMEOUT)
        return self._clients[address]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()

    def up(self, rng: random.Random, avoid: str = "") -> str:
        """A replica not being restarted (not `avoid` if another is up)."""
        names = [n for n in self.names if n not in self.down]
        return rng.choice([n for n in names if n != avoid] or names)


async def client_loop(chaos: Chaos, index: int, thread_id: str, stop: asyncio.Event) -> None:
    """One client on one thread: creates runs with random strategies on random replicas,
    now and then cancels its last run, until `stop`."""
    rng = random.Random(f"{chaos.seed}/client/{index}")
    config = chaos.group.config
    number = 0
    last: str | None = None
    while not stop.is_set():
        number += 1
        if last is not None and rng.random() < 0.15:
            await _cancel(chaos, rng, thread_id, last)
        else:
            strategy = rng.choice(STRATEGIES)
            request_id = str(uuid.UUID(int=rng.getrandbits(128)))
            spec: dict[str, Any] = {
                "input": {
                    "messages": [{"role": "user", "content": f"c{index} #{number}"}],
                    "ticks": rng.randint(1, 4),
                    "tick_seconds": rng.choice((0.02, 0.1, 0.3)),
                },
                "config": config,
                "multitask_strategy": strategy,
                "request_id": request_id,
            }
            last = await _create(chaos, rng, thread_id, spec) or last
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(0.05, 0.4))  # the client's pace


async def _create(
    chaos: Chaos, rng: random.Random, thread_id: str, spec: dict[str, Any]
) -> str | None:
    """Sends one CreateRun, again with the same request id to another replica when the one
    called does not answer; the run id once a replica acknowledged it."""
    name = ""
    for _ in range(4):
        name = chaos.up(rng, avoid=name)
        try:
            run = await chaos.client(name).runs.create(thread_id, "ticking", **spec)
        except (UnavailableError, DeadlineExceededError, UnknownError):
            continue
        except (ConflictError, ResourceExhaustedError):
            chaos.refused += 1
            return None
        except FailedPreconditionError as exc:
            if exc.reason != "REQUEST_ID_ROLLED_BACK":
                raise
            # An earlier try was admitted (unanswered), then rolled back: acknowledged now.
            run_id = exc.metadata["run_id"]
            chaos.acks.append(Ack(run_id, thread_id, spec["multitask_strategy"], name))
            return None
        chaos.acks.append(Ack(run["run_id"], thread_id, spec["multitask_strategy"], name))
        return str(run["run_id"])
    chaos.unanswered += 1
    return None


async def _cancel(chaos: Chaos, rng: random.Random, thread_id: str, run_id: str) -> None:
    action: Literal["interrupt", "rollback"] = rng.choice(("interrupt", "rollback"))
    name = chaos.up(rng)
    with contextlib.suppress(
        FailedPreconditionError, NotFoundError, UnavailableError, DeadlineExceededError
    ):
        await chaos.client(name).runs.cancel(thread_id, run_id, action=action)
        chaos.cancels += 1


async def fault_loop(chaos: Chaos, seconds: float) -> None:
    """One fault at a time for `seconds`, each recovered from before the next."""
    rng = random.Random(f"{chaos.seed}/faults")
    # Every kind of fault once, in an order of the seed's, then any.
    order = rng.sample(FAULTS, len(FAULTS))
    begin = time.monotonic()
    while True:
        await asyncio.sleep(rng.uniform(0.5, 1.5))  # the workload alone between faults
        if time.monotonic() - begin >= seconds:
            return
        fault = order.pop(0) if order else rng.choice(FAULTS)
        name = rng.choice(chaos.names)
        at = time.monotonic() - begin
        await FAULT[fault](chaos, name)
        chaos.faults.append(f"{at:5.1f}s {fault} {name} ({time.monotonic() - begin - at:.1f}s)")


async def _kill(chaos: Chaos, name: str) -> None:
    now = time.time_ns() // 1000
    chaos.silenced.append((now, now))
    await _restart(chaos, name, signal.SIGKILL)


async def _term(chaos: Chaos, name: str) -> None:
    await _restart(chaos, name, signal.SIGTERM)


async def _restart(chaos: Chaos, name: str, sig: int) -> None:
    group = chaos.group
    old = group[name]
    chaos.down.add(name)
    old.signal(sig)
    signalled = time.monotonic()
    async with asyncio.timeout(RECOVERY):
        await old.process.wait()
    chaos.exits.append(time.monotonic() - signalled)
    if old.reader is not None:
        with contextlib.suppress(TimeoutError):  # its last lines (its drain) kept
            await asyncio.wait_for(asyncio.shield(old.reader), 2)
        old.reader.cancel()
    group.replicas.remove(old)
    chaos.retired.append(old)
    await group.start(name, *chaos.options)
    chaos.down.discard(name)


async def _stop(chaos: Chaos, name: str) -> None:
    group = chaos.group
    replica = group[name]
    incarnation = await _incarnation(group, name)
    resumed = sum("resumes as incarnation" in line for line in replica.lines)
    stopped = time.time_ns() // 1000
    replica.signal(signal.SIGSTOP)
    try:

        async def expired() -> None:
            rows = await group.query(
                "SELECT expires_at <= clock_timestamp() AS over FROM replicas"
                " WHERE incarnation = $1",
                incarnation,
            )
            assert rows and rows[0]["over"], rows

        await eventually(expired, within=RECOVERY, interval=0.05)
    finally:
        replica.signal(signal.SIGCONT)
        chaos.silenced.append((stopped, time.time_ns() // 1000))

    async def joined_again() -> None:
        assert sum("resumes as incarnation" in line for line in replica.lines) > resumed

    await eventually(joined_again, within=RECOVERY, interval=0.05)


async def _cut(chaos: Chaos, name: str) -> None:
    group = chaos.group
    application = f"turnstile listen {name}"
    cut = await group.query(
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = $1 AND datname = current_database()",
        application,
    )

    async def listening_again() -> None:
        rows = await group.query(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = $1"
            " AND datname = current_database() AND NOT (pid = ANY($2::int[]))",
            application,
            [row["pid"] for row in cut],
        )
        assert rows

    await eventually(listening_again, within=RECOVERY, interval=0.05)


async def _redis(chaos: Chaos, name: str) -> None:
    server = chaos.group.redis_server
    assert server is not None, "the chaos needs a redis-server of its own (own_redis=True)"
    server.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(REDIS_PAUSE)
    finally:
        server.send_signal(signal.SIGCONT)
    resumed = time.time_ns() // 1000

    # Recovered once the relays caught up: every run that ended by now has its `end` in
    # Redis (so a kill next does not take an end still waiting for its retry with it). Not
    # caught up in time is left to the checker, which names what is missing.
    async def caught_up() -> None:
        found = await stream_violations(chaos.group, chaos.silenced, ended_by=resumed)
        assert found == [], found

    with contextlib.suppress(AssertionError):
        await eventually(caught_up, within=RECOVERY / 3, interval=0.2)


async def _incarnation(group: Cluster, name: str) -> str:
    rows = await group.query(
        "SELECT incarnation FROM replicas WHERE name = $1 ORDER BY start_time DESC LIMIT 1", name
    )
    return str(rows[0]["incarnation"])


FAULT = {"kill": _kill, "term": _term, "stop": _stop, "cut": _cut, "redis": _redis}
