"""The run writes as replicas sharing the database make them: claimed, fenced, signalled.

`Runs` with each write that starts, ends or cancels a run extended, in the same transaction,
by what the other replicas need (`leases.py`): a started run stamped with this incarnation
and the next epoch, a run's end refused unless its attempt still holds it (`fence.py`), a
cancelled running run's owner told, a run left waiting announced. `recover` is the sweeper:
only the runs whose owner's lease expired, never a live replica's.
"""

from __future__ import annotations

import builtins
from typing import Any

from turnstile_server.ids import new_id
from turnstile_server.store.postgres import leases, run_writes
from turnstile_server.store.postgres.database import Conn, Database
from turnstile_server.store.postgres.fence import fence
from turnstile_server.store.postgres.leases import PostgresReplicas
from turnstile_server.store.postgres.locks import lock_thread
from turnstile_server.store.postgres.runs import Runs
from turnstile_server.store.records import (
    Admission,
    Ended,
    Recovery,
    RunError,
    RunRecord,
    RunSpec,
    Start,
    now_us,
)


class ReplicaRuns(Runs):
    """The `runs` table on a database several replicas share."""

    def __init__(self, db: Database, replicas: PostgresReplicas) -> None:
        super().__init__(db)
        self._replicas = replicas

    async def admit(self, spec: RunSpec, *, max_queued: int, start: bool = False) -> Admission:
        """Admits a run (see `RunStore.admit`); a run started with it is this replica's."""
        run_id = new_id()
        now = now_us()

        async def admit(conn: Conn) -> Admission:
            admission = await run_writes.admit(conn, spec, run_id, now, max_queued, start)
            return await leases.admitted(conn, admission, self._replicas.incarnation)

        return await self._db.write(admit)

    async def recover(self, max_attempts: int) -> Recovery:
        """Settles the runs whose owner's lease expired (`leases.sweep`): at a replica's
        start and every beat after, on every replica."""
        now = now_us()
        return await self._db.write(lambda conn: leases.sweep(conn, max_attempts, now))

    async def start_next(self, thread_id: str) -> Start:
        """Starts the thread's earliest pending run (see `RunStore.start_next`) as this
        replica's attempt, if this replica serves its graph."""
        now = now_us()

        async def start(conn: Conn) -> Start:
            started = await run_writes.start_next(
                conn, thread_id, now, graphs=self._replicas.graphs
            )
            return await leases.stamp(conn, started, self._replicas.incarnation)

        return await self._db.write(start)

    async def finish(
        self,
        run: RunRecord,
        status: str,
        *,
        error: RunError | None = None,
        then_start: bool = False,
        interrupts: builtins.list[dict[str, Any]] | None = None,
    ) -> Ended | None:
        """Ends a running run (see `RunStore.finish`); AttemptFenced, and nothing written,
        if its attempt no longer holds it."""
        now = now_us()

        async def finish(conn: Conn) -> Ended | None:
            if await lock_thread(conn, run.thread_id) is not None:
                await fence(conn, run.run_id, run.epoch)
            ended = await run_writes.finish(
                conn, run, status, error, now, then_start, interrupts, self._replicas.graphs
            )
            return await leases.finished(conn, run, ended, self._replicas.incarnation)

        return await self._db.write(finish)

    async def cancel(
        self, thread_id: str, run_id: str, action: str, *, reason: str | None = None
    ) -> tuple[RunRecord, bool]:
        """Cancels a run (see `RunStore.cancel`); a running one's owner is told, wherever
        it is."""
        now = now_us()

        async def cancel(conn: Conn) -> tuple[RunRecord, bool]:
            run, running = await run_writes.cancel(conn, thread_id, run_id, action, reason, now)
            if running:
                await leases.notify_cancel(conn, [run])
            else:  # ended now (or before): its waiters on other replicas look again
                await leases.notify_ended(conn, [run.run_id])
            return run, running

        return await self._db.write(cancel)
