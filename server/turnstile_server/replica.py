"""This replica's lease on a database replicas share: the heartbeat and its local deadline.

Every `beat` seconds the lease is renewed for `ttl` seconds on the database's clock
(`ReplicaStore.renew`). The renewal also says which of the runs executing here were cancelled
elsewhere (so a lost NOTIFY costs at most one beat) or are no longer this replica's. After
each renewal the replica makes sure it listens for NOTIFYs, sweeps the runs of replicas whose
lease expired, and polls for runs to claim.

When the listening connection ends by itself (terminated, the database restarted), the
heartbeat does not wait for its next beat: it listens again at once and then renews, so a
cancellation NOTIFYed while nobody listened is reported by that renewal (listening first, so
one committed after the renewal's read is NOTIFYed to the new connection). A connection cut
without the replica noticing (no packet back) still costs at most one beat.

The replica also keeps a local deadline on its own monotonic clock: `ttl` after the moment
the last successful renewal was *sent* (the database's expiry is later than that). Past it
without a renewal (the database unreachable, the process paused), the incarnation is over:
the replica stops its runs without writing anything more of them, logs it, and joins again
as a new incarnation once they have unwound. Its stale writes are refused by the database
anyway (`store/postgres/fence.py`); the deadline makes it stop trying.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from turnstile_server.scheduler import Scheduler
from turnstile_server.store import ReplicaStore

log = logging.getLogger(__name__)


class ReplicaLease:
    """Joins, renews and leaves this replica's lease, and drives the scheduler's part in it."""

    def __init__(
        self,
        replicas: ReplicaStore,
        scheduler: Scheduler,
        *,
        name: str,
        ttl: float,
        beat: float,
        graphs: list[str],
    ) -> None:
        self._replicas = replicas
        self._scheduler = scheduler
        self.name = name
        self._graphs = graphs
        self._ttl = ttl
        self._beat = beat
        self._deadline = 0.0
        self._task: asyncio.Task[None] | None = None
        self._listen_lost = asyncio.Event()
        scheduler.poll_seconds = beat

    @property
    def incarnation(self) -> str:
        """The current incarnation's id."""
        return self._replicas.incarnation

    def holding(self) -> bool:
        """Whether the lease is within its local deadline (what this replica writes or
        publishes of its runs is still theirs)."""
        return time.monotonic() < self._deadline

    async def join(self) -> None:
        """Starts an incarnation (before the scheduler starts any run)."""
        sent = time.monotonic()
        async with asyncio.timeout(self._ttl):
            await self._replicas.join(self.name, self._ttl, self._graphs)
        self._deadline = sent + self._ttl
        self._scheduler.joined(self.name, self.incarnation)

    async def agree(self, relay: str, *, alone: bool) -> None:
        """Records how this replica relays its runs' events ("none", "redis:<key prefix>")
        as the deployment's, after `join`; DeploymentMismatch if live replicas relay them
        otherwise (or, `alone`, if any serves). A predecessor that crashed keeps its lease
        up to one TTL: that long (and a beat) is waited out first, renewing this one."""
        deadline = time.monotonic() + self._ttl + self._beat
        blocking = await self._replicas.agree(relay, alone=alone)
        if blocking:
            log.info("waiting up to one lease for %s to expire", _named(blocking))
        while blocking and time.monotonic() < deadline:
            await asyncio.sleep(min(self._beat, max(0.0, deadline - time.monotonic())))
            sent = time.monotonic()
            if await self._replicas.renew(self._ttl, {}) is not None:
                self._deadline = sent + self._ttl
            blocking = await self._replicas.agree(relay, alone=alone)
        if not blocking:
            return
        if alone and all(theirs == relay for _, theirs in blocking):
            raise DeploymentMismatch(
                f"replica {self.name} has no --redis, and other replicas serve this database"
                f" ({_named(blocking)}): replicas sharing a PostgreSQL database relay their"
                " runs' events through Redis (docs/deploy.md). Give every replica --redis"
                " redis://host:port/db, or run one replica alone"
            )
        raise DeploymentMismatch(
            f"replica {self.name} relays its runs' events {_relaying(relay)}, but the"
            f" replicas serving this database relay them otherwise ({_named(blocking)}):"
            " every replica on one database needs the same --redis and --redis-key-prefix"
            " (docs/deploy.md). Restart this one with theirs, or stop them all first"
        )

    async def start(self) -> None:
        """Listens for cancellations and ready runs, and starts the heartbeat."""
        try:
            # Not bounded by a beat, as the heartbeat's reconnections are: a busy database
            # may take longer to accept a connection than a beat, and that is no reason to
            # refuse to start (the heartbeat retries, and reports cancellations meanwhile).
            async with asyncio.timeout(self._ttl):
                await self._replicas.listen(
                    self._scheduler.cancelled_elsewhere,
                    self._scheduler.claim_soon,
                    self._scheduler.ended_elsewhere,
                    self._listen_lost.set,
                )
        except Exception as exc:
            log.warning("listening for other replicas' signals failed (retried): %r", exc)
        self._task = asyncio.create_task(self._beats(), name="lease")

    async def close(self) -> None:
        """Stops the heartbeat and ends the lease, so other replicas take this one's runs
        (left RUNNING by the scheduler's stop) at their next beat instead of after the TTL."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            async with asyncio.timeout(self._ttl):
                await self._replicas.leave()
        except Exception as exc:  # the lease then just expires
            log.warning("could not end the lease of replica %s: %s", self.name, exc)
        await self._replicas.unlisten()

    async def _beats(self) -> None:
        while True:
            pause = max(0.0, min(self._beat, self._deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._listen_lost.wait()
            if time.monotonic() >= self._deadline:
                await self._lost("no renewal before its local deadline")
                continue
            if self._listen_lost.is_set():
                # Listen again before the renewal reads the cancellations (see the module's
                # docstring); failing that, the beats retry.
                self._listen_lost.clear()
                try:
                    await self._listen()
                except Exception as exc:
                    log.warning("listening for other replicas' signals failed: %r", exc)
            sent = time.monotonic()
            try:
                async with asyncio.timeout(self._deadline - sent):
                    renewal = await self._replicas.renew(self._ttl, self._scheduler.executing())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # retried at the next beat, until the deadline
                log.warning("renewing the lease of replica %s failed: %r", self.name, exc)
                continue
            if renewal is None:
                await self._lost("it expired on the database's clock")
                continue
            self._deadline = sent + self._ttl
            if renewal.cancel:
                self._scheduler.cancelled_here(renewal.cancel)
            if renewal.lost:
                self._scheduler.lost(renewal.lost)
            await self._chores()

    async def _chores(self) -> None:
        """Listening, sweeping and the poll, each bounded by a beat."""
        try:
            await self._listen()
        except Exception as exc:
            log.warning("listening for other replicas' signals failed: %r", exc)
        try:
            async with asyncio.timeout(self._beat):
                await self._scheduler.sweep()
        except Exception as exc:
            log.warning("sweeping expired leases failed: %r", exc)
        self._scheduler.claim_soon()

    async def _listen(self) -> None:
        async with asyncio.timeout(self._beat):
            reconnected = await self._replicas.listen(
                self._scheduler.cancelled_elsewhere,
                self._scheduler.claim_soon,
                self._scheduler.ended_elsewhere,
                self._listen_lost.set,
            )
        if reconnected:
            self._scheduler.claim_soon()  # what was announced while nobody listened

    async def _lost(self, why: str) -> None:
        log.error(
            "replica %s lost the lease of incarnation %s (%s): it stops its runs and writes"
            " nothing more of them; other replicas resume them",
            self.name,
            self.incarnation,
            why,
        )
        await self._scheduler.pause(within=self._ttl)
        while True:
            try:
                await self.join()
                break
            except Exception as exc:
                log.warning("replica %s cannot join again yet: %r", self.name, exc)
                await asyncio.sleep(self._beat)
        log.info("replica %s resumes as incarnation %s", self.name, self.incarnation)
        self._scheduler.resume()


class DeploymentMismatch(ValueError):
    """This replica's configuration does not fit the replicas serving its database (the CLI
    prints it and exits 2)."""


def _relaying(relay: str) -> str:
    if relay.startswith("redis:"):
        return f"through Redis under the key prefix {relay.removeprefix('redis:')!r}"
    return "without Redis"


def _named(replicas: list[tuple[str, str]]) -> str:
    return ", ".join(f"{name}: {_relaying(relay)}" for name, relay in replicas)
