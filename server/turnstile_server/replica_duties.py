"""What a replica sharing the database asks of the scheduler: recovering and sweeping runs
no replica executes any more, claiming runs admitted elsewhere, stopping runs cancelled
elsewhere or no longer its own, pausing while its lease is lost."""

from __future__ import annotations

import asyncio
import logging

from turnstile_server.dispatcher import Dispatcher, _Active
from turnstile_server.errors import (
    Unavailable,
)

log = logging.getLogger(__name__)


class ReplicaDuties(Dispatcher):
    """The scheduler's part in recovery and in sharing a database with other replicas."""

    async def recover(self) -> int:
        """Settles the runs no process executes any more (on a database replicas share: those
        whose replica's lease expired; the sweeper calls this every beat); returns how many
        were requeued."""
        return await self._carried_out(self._recover())

    async def _recover(self) -> int:
        recovery = await self._store.runs.recover(self._max_attempts)
        if recovery.requeued:
            log.info("resuming %d runs no server executes any more", recovery.requeued)
        for run in recovery.taken:
            self._hub.run_taken(run)
        for run in recovery.ended:
            log.warning("run %s ended %s at recovery: %s", run.run_id, run.status, run.error)
            self._settle(run, rolled_back=False)
        for run in recovery.deleted:
            self._settle(run, rolled_back=True)
        return recovery.requeued

    # Replicas sharing the database: what `replica.ReplicaLease` asks of the scheduler.

    def joined(self, name: str, incarnation: str) -> None:
        """This replica (re)joined the database as `incarnation`."""
        self._metrics.replica(name, incarnation)

    def executing(self) -> dict[str, int]:
        """The runs this replica executes: run id -> its attempt's epoch."""
        return {
            a.run.run_id: a.run.epoch
            for a in self._active.values()
            if a.run is not None and not a.abandoned and not a.finishing
        }

    def ended_elsewhere(self, run_id: str) -> None:
        """A run ended (or went) on some replica: the calls here that wait for it read its
        row now, not at their next poll (`Endings.nudge`)."""
        self._endings.nudge(run_id)

    def cancelled_elsewhere(self, thread_id: str, run_id: str) -> None:
        """A run executing here was cancelled (or its thread deleted) on some replica: it
        stops at its next await and is finished once unwound, then its thread's next run
        starts here in the same write."""
        active = self._active.get(thread_id)
        if active is None or active.run is None or active.run.run_id != run_id:
            return
        if active.cancelling or active.abandoned:
            return
        log.info("run %s was cancelled on another replica: stopping it here", run_id)
        self._recheck.add(thread_id)
        self._stop_task(active.run)

    def cancelled_here(self, run_ids: list[str]) -> None:
        """`cancelled_elsewhere` for runs known by id (the heartbeat's report)."""
        for active in list(self._active.values()):
            if active.run is not None and active.run.run_id in run_ids:
                self.cancelled_elsewhere(active.run.thread_id, active.run.run_id)

    def lost(self, run_ids: list[str]) -> None:
        """Runs executing here that are no longer this replica's (ended, deleted or taken
        over): stopped without being finished (their writes would be refused anyway). Not a
        run whose end is being written here: that write is why its row says it ended."""
        for active in list(self._active.values()):
            if active.run is not None and active.run.run_id in run_ids and not active.finishing:
                self._abandon(active)

    async def pause(self, within: float) -> None:
        """The lease is lost: stops every run executing here without finishing it (another
        replica resumes them) and starts none until `resume`; returns once they unwound, or
        after `within` seconds with the ones that did not named in the log (their writes and
        publishes are fenced by their epoch, so the replica may serve again beside them)."""
        self._paused = True
        actives = list(self._active.values())
        for active in actives:
            self._abandon(active)
        if actives:
            log.warning("stopping %d runs: this replica no longer holds them", len(actives))
        try:
            async with asyncio.timeout(within):
                await asyncio.gather(*(active.done.wait() for active in actives))
        except TimeoutError:
            stuck = [a.run.run_id for a in actives if a.run is not None and not a.done.is_set()]
            log.error(
                "%d stopped runs did not unwind within %.1fs (%s): their writes are fenced;"
                " the replica joins again without waiting for them",
                len(stuck),
                within,
                ", ".join(stuck),
            )

    def resume(self) -> None:
        """Starts runs again, under a new lease."""
        self._paused = False
        self.claim_soon()

    async def sweep(self) -> None:
        """Takes over the runs of replicas whose lease expired (see `recover`)."""
        if await self.recover():
            self.claim_soon()
        if self._metrics.enabled:
            self._metrics.pending_now(await self._store.runs.pending_ids())

    def claim_soon(self) -> None:
        """Claims runs admitted on other replicas while slots are free (a NOTIFY, a poll)."""
        if self._replicas is None or self._stopping:
            return
        if self._claimer is not None:
            self._claim_again = True
            return
        self._claimer = asyncio.create_task(self._claim_loop(), name="claim")
        self._own(self._claimer)

    def _may_claim(self) -> bool:
        return (
            not (self._draining or self._paused or self._stopping or self._ready)
            and self._slots + len(self._granted) < self._max_running
        )

    async def _claim_loop(self) -> None:
        assert self._replicas is not None
        try:
            again = True
            while again:
                self._claim_again = False
                while self._may_claim():
                    start = await self._replicas.claim(list(self._active))
                    if start.run is None:
                        break
                    thread_id = start.run.thread_id
                    existing = self._active.get(thread_id)
                    if existing is not None:
                        # A start of this thread began here meanwhile: it finds the run
                        # started, and drives it once its own start (or run) is over.
                        existing.adopted = start
                        continue
                    self._slots += 1
                    active = self._active[thread_id] = _Active(None)
                    self._launch_queued(active, start)
                again = self._claim_again
        except Exception as exc:
            level = logging.WARNING if isinstance(exc, Unavailable) else logging.ERROR
            log.log(level, "claiming runs failed; the next beat tries again", exc_info=exc)
        finally:
            self._claimer = None
