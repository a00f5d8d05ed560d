"""Decides when runs execute: one active run per thread, admission order, a global bound.

`Scheduler` is the one class to use. How runs start, execute and end is `dispatcher.py`'s;
recovery and what replicas sharing a database ask of it, `replica_duties.py`'s; admission,
cancellation and waiting for a run's end are here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from turnstile_server.dispatcher import _Active
from turnstile_server.errors import (
    RunNotActive,
    RunNotFound,
    ThreadNotFound,
    TurnstileError,
    Unavailable,
)
from turnstile_server.replica_duties import ReplicaDuties
from turnstile_server.store import (
    Admission,
    RunRecord,
    RunSpec,
)

log = logging.getLogger(__name__)


class Scheduler(ReplicaDuties):
    """Starts, cancels and finishes runs; the store is the source of truth."""

    @property
    def running(self) -> int:
        """How many runs execute in this process now."""
        return len(self._active)

    async def start(self) -> None:
        """Settles the runs a previous process left RUNNING and starts every thread's next run.

        They resume from their last checkpoint as a new attempt, unless they were being
        cancelled (they end so) or have had `max_attempts` attempts (they end ERROR).
        """
        await self.recover()
        if self._metrics.enabled:  # the queued gauge counts the runs left pending too
            self._metrics.runs_recovered(await self._store.runs.pending_ids())
        for thread_id in await self._store.runs.threads_with_inflight():
            self._kick(thread_id)

    async def drain(self, grace: float) -> None:
        """Refuses new runs and starts no queued one; waits up to `grace` s for running runs."""
        self._draining = True
        if not self._active or grace <= 0:
            return
        log.info("waiting up to %.1f s for %d running runs", grace, len(self._active))
        waits = [asyncio.ensure_future(a.done.wait()) for a in self._active.values()]
        try:
            await asyncio.wait(waits, timeout=grace)
        finally:
            for wait in waits:
                wait.cancel()

    async def stop(self) -> None:
        """Stops every run (they stay RUNNING in the store, to resume at the next start)."""
        self._draining = True
        self._stopping = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        tasks = [a.task for a in self._active.values() if a.task] + list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.settled()

    async def settled(self) -> None:
        """Waits until every store write that ended runs has been announced (`_carried_out`):
        the app's stop calls it again once the gRPC server has stopped, before the relay
        closes, for the cancellations that calls in flight wrote meanwhile."""
        await asyncio.gather(*self._carrying, return_exceptions=True)

    async def admit(self, spec: RunSpec) -> RunRecord:
        """Admits a run with its strategy and lets the thread's next run start."""
        admission = await self._admit(spec)
        return admission.run

    async def run_to_end(self, spec: RunSpec) -> RunRecord:
        """Admits a run and returns it once it has ended (as `wait` does)."""
        admission = await self._admit(spec)
        run = admission.run
        if admission.existing:  # admitted earlier: it may have ended meanwhile
            return await self.wait(run.thread_id, run.run_id)
        # Nothing ran since the admission, so the run has not ended: no read needed.
        return await self._settled(run.run_id, run.thread_id)

    async def _admit(self, spec: RunSpec) -> Admission:
        # A thread with nothing running here is claimed, so that its run starts in the same
        # write as its admission when it is the thread's next.
        claim = self._claim(spec.thread_id)
        try:
            if self._draining:
                raise Unavailable("the server is shutting down; retry on another instance or later")
            writing = asyncio.ensure_future(
                self._store.runs.admit(spec, max_queued=self._max_queued, start=claim is not None)
            )
            try:
                admission = await asyncio.shield(writing)
            except asyncio.CancelledError:
                # The caller went away (its deadline, a disconnect) while the admission was
                # being written. It may have committed, with its run started under `claim`:
                # left undriven, that run would stay RUNNING under this replica's live lease,
                # its thread held, until a restart. Carried out as if the caller had stayed.
                await asyncio.wait([writing])
                if writing.cancelled() or writing.exception() is not None:
                    raise
                self._admitted(spec, claim, writing.result())
                claim = None
                raise
        except BaseException as exc:
            if claim is not None:
                self._release(spec.thread_id, claim)
            if isinstance(exc, TurnstileError):
                self._metrics.run_refused(spec, exc.reason)
            raise
        self._admitted(spec, claim, admission)
        return admission

    def _admitted(self, spec: RunSpec, claim: _Active | None, admission: Admission) -> None:
        """What follows an admission here: its run's stream opened, the runs it ended
        announced, those it supersedes stopped, its run driven if it started under `claim`
        (which is released otherwise), else its thread looked at."""
        run = admission.run
        if not admission.existing:
            self._hub.open(run.run_id)
            self._metrics.run_admitted(run)
            for ended in admission.ended:
                self._settle(ended, rolled_back=False)
            for deleted in admission.deleted:
                self._settle(deleted, rolled_back=True)
            for running in admission.cancelling:
                self._stop_task(running)
        started = False
        if claim is not None:
            start = admission.start
            if start is not None and start.run is not None:
                started = True
                self._launch(claim, start)
            else:
                self._release(spec.thread_id, claim)
        if not admission.existing and not started:  # a started run is the thread's only one
            self._kick(run.thread_id)

    async def cancel(
        self, thread_id: str, run_id: str, action: str, *, wait: bool, reason: str | None = None
    ) -> RunRecord:
        """Cancels a pending or running run; with `wait`, returns once it has stopped."""
        run, running = await self._carried_out(self._cancel(thread_id, run_id, action, reason))
        return await self.wait(thread_id, run_id) if running and wait else run

    async def _cancel(
        self, thread_id: str, run_id: str, action: str, reason: str | None
    ) -> tuple[RunRecord, bool]:
        run, running = await self._store.runs.cancel(thread_id, run_id, action, reason=reason)
        if not running:
            self._settle(run, rolled_back=action == "rollback")
            self._kick(thread_id)
        else:
            self._stop_task(run)
        return run, running

    def cancel_soon(self, run: RunRecord, reason: str) -> None:
        """Interrupts the run in the background unless it has ended (or the server stops)."""
        if self._stopping:
            return

        async def interrupt() -> None:
            with contextlib.suppress(RunNotFound, RunNotActive, ThreadNotFound):
                # It may have ended (or gone) meanwhile.
                await self.cancel(run.thread_id, run.run_id, "interrupt", wait=False, reason=reason)

        self._own(asyncio.create_task(interrupt(), name=f"cancel {run.run_id}"))

    async def wait(self, thread_id: str, run_id: str) -> RunRecord:
        """Returns the run once it has ended (a rolled-back run as it was when deleted)."""
        with self._endings.watching(run_id) as ended:
            try:
                run = await self._store.runs.get(thread_id, run_id)
            except RunNotFound:
                if ended.done():
                    return ended.result()
                tombstone = self._endings.tombstone(thread_id, run_id)
                if tombstone is not None:
                    return tombstone
                active = self._active.get(thread_id)
                if active is not None and active.run is not None and active.run.run_id == run_id:
                    return await ended  # rolled back just now: settled once it has unwound
                gone = await self._store.runs.rolled_back(thread_id, run_id)
                if gone is not None:  # rolled back by another replica
                    return gone
                raise
            if not run.inflight:
                return run
            return await self._ending(thread_id, run_id, ended)

    async def _settled(self, run_id: str, thread_id: str = "") -> RunRecord:
        """Returns the run once `_settle` announces its end (the caller knows it is inflight)."""
        with self._endings.watching(run_id) as ended:
            return await self._ending(thread_id, run_id, ended)

    async def _unwound_elsewhere(self, run_ids: list[str]) -> None:
        """Returns once none of the runs (just deleted with their thread) is unwinding on
        another replica: read as that replica's NOTIFY says it stopped one (or the sweeper,
        that its lease expired), and every `poll_seconds` in case that notice was lost; up to
        one lease TTL if that replica is cut off."""
        assert self._replicas is not None
        with contextlib.ExitStack() as watches:
            nudges = [
                self._endings.nudged(watches.enter_context(self._endings.watching(r)))
                for r in run_ids
            ]
            while True:
                for nudge in nudges:
                    nudge.clear()
                with contextlib.suppress(Unavailable):  # looked at again at the next poll
                    run_ids = await self._replicas.unwinding(run_ids)
                if not run_ids or self._stopping:  # a stopping server waits no longer
                    return
                waits = [asyncio.ensure_future(nudge.wait()) for nudge in nudges]
                try:
                    await asyncio.wait(
                        waits, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for wait in waits:
                        wait.cancel()

    async def _ending(
        self, thread_id: str, run_id: str, ended: asyncio.Future[RunRecord]
    ) -> RunRecord:
        """Awaits the run's end as announced here; on a database replicas share, the run may
        end on another replica (it claimed it, or took it over): then its row says so, read
        as that replica's NOTIFY says it ended (`ended_elsewhere`), and every `poll_seconds`
        in case that notice was lost."""
        if self._replicas is None or not thread_id:
            return await ended
        nudged = self._endings.nudged(ended)
        while True:
            nudge: asyncio.Future[Any] = asyncio.ensure_future(nudged.wait())
            waiting: set[asyncio.Future[Any]] = {ended, nudge}
            try:
                await asyncio.wait(
                    waiting, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                nudge.cancel()
            if ended.done():
                return ended.result()
            nudged.clear()
            try:
                run = await self._store.runs.get(thread_id, run_id)
            except Unavailable:
                continue
            except RunNotFound:
                if ended.done():
                    return ended.result()
                gone = await self._store.runs.rolled_back(thread_id, run_id)
                if gone is None:  # its thread was deleted
                    raise
                return gone
            if not run.inflight:
                return run

    async def delete_thread(self, thread_id: str) -> None:
        """Deletes a thread after stopping its runs; returns once they have unwound, here or
        on the replica executing them."""
        await self._carried_out(self._delete_thread(thread_id))

    async def _delete_thread(self, thread_id: str) -> None:
        inflight = await self._store.threads.delete(thread_id)
        active = self._active.get(thread_id)
        if active is not None:
            active.cancelling = True
            if active.executing and active.task:
                active.task.cancel()
            await active.done.wait()
        if self._replicas is not None and inflight:
            await self._unwound_elsewhere([run.run_id for run in inflight])
        for run in inflight:
            self._metrics.run_finished(run, "deleted")
            self._endings.gone(run.run_id)
            end = {"status": run.status, "reason": run.cancel_reason, "action": "delete"}
            self._hub.run_ended(run, {**end, "superseded_by": ""})
        self._hub.thread_deleted(thread_id)
