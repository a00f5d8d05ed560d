"""Decides when runs execute: one active run per thread, admission order, a global bound.

A run admitted on a thread with nothing active here starts in its admission's own write.
Otherwise scheduling is driven by events: an admission, a cancellation or an `after_seconds`
timer "kicks" a thread, and a short pump task asks the store to start the thread's next run;
a kick that finds a run active is kept until that run is gone. A new run starts only after the
run it supersedes has unwound and been finished in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from turnstile_server.endings import Endings
from turnstile_server.errors import (
    RunNotActive,
    RunNotFound,
    ThreadNotFound,
    TurnstileError,
    Unavailable,
)
from turnstile_server.events import EventHub
from turnstile_server.metrics import Metrics
from turnstile_server.runner import Outcome, Runner, Waiting
from turnstile_server.store import (
    Admission,
    AttemptFenced,
    Ended,
    ReplicaStore,
    RunError,
    RunRecord,
    RunSpec,
    Start,
    Store,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_SECONDS = 0.5  # how soon scheduling is tried again after a store fault


@dataclass(slots=True)
class _Active:
    """A run this process is executing (or about to: `run` is None while it is being started)."""

    run: RunRecord | None
    # Runs to stop as soon as they start: cancelled while their start was being written (by
    # this claim's start, or by `run`'s end, which hands the thread to its next run).
    stop_first: dict[str, RunRecord] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    executing: bool = False
    cancelling: bool = False
    handing_over: bool = False  # `run`'s end is being written with the next run's start
    abandoned: bool = False  # no longer this replica's (lease lost, taken over): not finished
    # Its end is being written: the write's own fence decides whether it is still this
    # replica's, so a heartbeat that finds the run's row already ended (by that very write)
    # must not abandon it, or the run started in the same write would never be driven.
    finishing: bool = False
    # A run of this thread that a claim started while this start was under way (which then
    # finds nothing to start): driven under this claim instead.
    adopted: Start | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Scheduler:
    """Starts, cancels and finishes runs; the store is the source of truth."""

    def __init__(
        self,
        store: Store,
        runner: Runner,
        hub: EventHub,
        *,
        max_running: int,
        max_queued: int = 100,
        max_attempts: int = 3,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics or Metrics()
        self._runner = runner
        self._hub = hub
        self._max_running = max_running
        self._max_queued = max_queued
        self._max_attempts = max_attempts
        self._draining = False
        self._active: dict[str, _Active] = {}  # by thread id
        self._slots = 0
        self._pumping: set[str] = set()
        self._dirty: set[str] = set()
        # Threads kicked while a run of theirs was active: looked at again once it is gone.
        # A thread nobody kicked meanwhile has nothing new to start, so a run's end alone
        # costs no store read.
        self._recheck: set[str] = set()
        # Threads waiting for a slot, first come first served; a slot that frees is granted
        # to the first of them (reserved until its pump claims it), never taken by a thread
        # that did not wait: the thread whose run just ended joins the end of the line.
        self._ready: OrderedDict[str, None] = OrderedDict()
        self._granted: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._endings = Endings()
        self._tasks: set[asyncio.Task[None]] = set()
        self._carrying: set[asyncio.Task[Any]] = set()  # see `_carried_out`
        self._stopping = False
        # Replicas sharing the database (`replica.py` keeps the lease): runs admitted on
        # other replicas are claimed here when slots are free.
        self._replicas: ReplicaStore | None = getattr(store, "replicas", None)
        self._paused = False  # the lease was lost: nothing is started until a new one
        self._claimer: asyncio.Task[None] | None = None
        self._claim_again = False
        self.poll_seconds = RETRY_SECONDS  # the lease's beat, once a replica joined

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

    async def _carried_out(self, work: Coroutine[Any, Any, T]) -> T:
        """Runs `work` (a store write that ends runs, and the announcement of what it did) to
        its end even if the caller is cancelled meanwhile: a client's deadline or disconnect,
        the server's stop, a heartbeat chore's time bound. The write commits all the same (the
        store never withdraws one), so the runs it ended must still get their `end` event, in
        Redis too, and their waiters; otherwise their streams would never end."""
        task = asyncio.ensure_future(work)
        self._carrying.add(task)
        task.add_done_callback(self._uncarry)
        return await asyncio.shield(task)

    def _uncarry(self, task: asyncio.Task[Any]) -> None:
        self._carrying.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that went away cannot (one that stayed has)

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

    async def _ending(
        self, thread_id: str, run_id: str, ended: asyncio.Future[RunRecord]
    ) -> RunRecord:
        """Awaits the run's end as announced here; on a database replicas share, the run may
        end on another replica (it claimed it, or took it over): then its row says so, read
        every `poll_seconds`."""
        if self._replicas is None or not thread_id:
            return await ended
        while True:
            done, _ = await asyncio.wait({ended}, timeout=self.poll_seconds)
            if done:
                return ended.result()
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
        """Deletes a thread after stopping its runs; returns once they have unwound."""
        await self._carried_out(self._delete_thread(thread_id))

    async def _delete_thread(self, thread_id: str) -> None:
        inflight = await self._store.threads.delete(thread_id)
        active = self._active.get(thread_id)
        if active is not None:
            active.cancelling = True
            if active.executing and active.task:
                active.task.cancel()
            await active.done.wait()
        for run in inflight:
            self._metrics.run_finished(run, "deleted")
            self._endings.gone(run.run_id)
            end = {"status": run.status, "reason": run.cancel_reason, "action": "delete"}
            self._hub.run_ended(run, {**end, "superseded_by": ""})
        self._hub.thread_deleted(thread_id)

    def _kick(self, thread_id: str) -> None:
        """Makes sure the thread's next run is considered soon (once its active run is gone)."""
        if self._draining:
            return
        if thread_id in self._active:
            self._recheck.add(thread_id)
            return
        if thread_id in self._pumping:
            self._dirty.add(thread_id)
            return
        self._pumping.add(thread_id)
        self._own(asyncio.create_task(self._pump(thread_id), name=f"pump {thread_id}"))

    def _own(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, thread_id: str) -> None:
        try:
            while not self._draining and thread_id not in self._active:
                self._dirty.discard(thread_id)
                await self._start_next(thread_id)
                if thread_id not in self._dirty:
                    return
        except Exception as exc:
            # A store fault: look at the thread again shortly, or its next run never starts.
            level = logging.WARNING if isinstance(exc, Unavailable) else logging.ERROR
            log.log(level, "scheduling thread %s failed; retrying", thread_id, exc_info=exc)
            if not self._draining:
                loop = asyncio.get_running_loop()
                old = self._timers.pop(thread_id, None)
                if old:
                    old.cancel()
                self._timers[thread_id] = loop.call_later(
                    RETRY_SECONDS, self._timer_fired, thread_id
                )
        finally:
            self._pumping.discard(thread_id)

    async def _start_next(self, thread_id: str) -> None:
        active = self._claim(thread_id)
        if active is None:
            if not self._draining and not self._paused and thread_id not in self._active:
                self._ready[thread_id] = None  # no slot: looked at again when one frees
            return
        start = Start()
        try:
            start = await self._store.runs.start_next(thread_id)
        finally:
            if start.run is None:  # nothing due, cancelled meanwhile, or the store failed
                self._release(thread_id, active)
        if start.run is not None:
            self._launch_queued(active, start)
        elif start.delay > 0:
            old = self._timers.pop(thread_id, None)
            if old:
                old.cancel()
            loop = asyncio.get_running_loop()
            self._timers[thread_id] = loop.call_later(start.delay, self._timer_fired, thread_id)

    def _claim(self, thread_id: str) -> _Active | None:
        """Takes a slot and the thread for a run about to be started, if both are free and no
        other thread waits for a slot ahead of it."""
        if self._draining or self._paused or thread_id in self._active:
            return None
        if thread_id in self._granted:
            self._granted.discard(thread_id)
        elif self._ready or self._slots + len(self._granted) >= self._max_running:
            return None
        self._slots += 1
        active = self._active[thread_id] = _Active(None)
        return active

    def _release(self, thread_id: str, active: _Active) -> None:
        """Gives back a claim under which no run started (or drives the run a claim of
        another thread's start adopted onto it)."""
        if active.adopted is not None and not self._stopping:
            adopted, active.adopted = active.adopted, None
            self._launch_queued(active, adopted)
            return
        del self._active[thread_id]
        self._slots -= 1
        active.done.set()
        self._kick_again(thread_id)
        self._kick_ready()

    def _kick_again(self, thread_id: str) -> None:
        """Kicks a thread that was kicked while it was active."""
        if thread_id in self._recheck:
            self._recheck.discard(thread_id)
            self._kick(thread_id)

    def _launch(self, active: _Active, start: Start) -> None:
        """Drives a run the store has just started under `active`'s claim."""
        assert start.run is not None
        active.run = started = start.run
        self._metrics.run_started(started)
        self._hub.run_started(started)
        if started.run_id in active.stop_first:
            self._stop_task(active.stop_first[started.run_id])
        active.task = asyncio.create_task(self._drive(active, start), name=f"run {started.run_id}")
        if self._paused or active.abandoned:  # started as the lease was lost: not ours to run
            self._abandon(active)

    def _launch_queued(self, active: _Active, start: Start) -> None:
        """Drives a run that was queued, maybe with others behind it: its thread is looked at
        again once it has ended."""
        assert start.run is not None
        self._launch(active, start)
        self._recheck.add(start.run.thread_id)

    def _timer_fired(self, thread_id: str) -> None:
        self._timers.pop(thread_id, None)
        self._kick(thread_id)

    async def _drive(self, active: _Active, start: Start) -> None:
        run = active.run
        assert run is not None
        outcome = Outcome("interrupted")
        ended: Ended | None = None
        try:
            if not active.cancelling:
                active.executing = True
                try:
                    outcome = await self._runner.execute(run, start)
                except asyncio.CancelledError:
                    if not active.cancelling or self._stopping or active.abandoned:
                        raise
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                except Exception:
                    # A fault in the server's own code (a graph's exception is already the
                    # runner's outcome): the run ends ERROR, not RUNNING until a restart with
                    # its thread held and its waiters waiting.
                    log.exception("run %s failed inside the server", run.run_id)
                    outcome = Outcome("error", RunError("InternalError", "internal error"))
                finally:
                    active.executing = False
            elif not self._stopping and not active.abandoned:
                # Interrupted as it started: its input stays all the same (SPEC §3).
                await self._runner.keep_input(run, start)
            active.finishing = True
            ended = await self._finish(run, outcome, active)
        except AttemptFenced as exc:
            # Another replica holds the run now (this one's lease expired), or it ended: this
            # attempt wrote nothing after it lost the run, and announces nothing.
            log.warning("run %s: this attempt lost the run and stops: %s", run.run_id, exc)
            self._hub.run_lost(run)
            return
        except Exception:
            log.exception("finishing run %s failed; it resumes at the next start", run.run_id)
            return
        finally:
            if ended is None and active.abandoned:
                self._hub.run_lost(run)
            following = ended.next if ended is not None else Start()
            adopted, active.adopted = active.adopted, None
            del self._active[run.thread_id]
            self._slots -= 1
            self._metrics.run_stopped(run)
            active.done.set()
            if adopted is not None and following.run is None and not self._stopping:
                # A claim started the thread's next run while this one ended (rare: the
                # thread was not excluded from it in time): driven here now.
                self._slots += 1
                self._launch_queued(self._active.setdefault(run.thread_id, _Active(None)), adopted)
            elif following.run is None:
                self._kick_again(run.thread_id)
                self._kick_ready()
        self._announce(run, ended, outcome)
        if ended is None:
            return
        # (When the server is stopping, a run started so stays RUNNING in the store, like the
        # other runs it stops, and resumes at the next start.)
        if following.run is not None and not self._stopping:
            # Started in the same write as this run's end: the thread and the slot pass to it
            # (announced after this run's end), with any stop that arrived for it meanwhile.
            self._slots += 1
            successor = self._active[run.thread_id] = _Active(None, stop_first=active.stop_first)
            self._launch_queued(successor, following)

    def _announce(self, run: RunRecord, ended: Ended | None, outcome: Outcome) -> None:
        """Announces the end `_finish` recorded (or that the run was gone)."""
        if ended is None:
            self._endings.gone(run.run_id)
            return
        waiting = outcome.waiting if ended.run.status == "success" else None
        self._settle(ended.run, rolled_back=ended.rolled_back, waiting=waiting)

    async def _finish(self, run: RunRecord, outcome: Outcome, active: _Active) -> Ended | None:
        """Records how the run ended, retrying through store faults until it lands (or the
        server stops: then the run stays RUNNING and the next start settles it).

        When runs were admitted on the thread meanwhile and no other thread waits for a slot,
        the thread's next run is started in the same write. Stopped while that write is in
        flight (the server's stop, the lease lost), the run's end is announced all the same
        once it has landed, before the task unwinds (the run it started, if any, is left as a
        stop or a lost lease leaves runs).
        """
        pause = RETRY_SECONDS / 8
        while True:
            active.handing_over = (
                run.thread_id in self._recheck and not self._ready and not self._draining
            )
            writing = asyncio.ensure_future(
                self._store.runs.finish(
                    run,
                    outcome.status,
                    error=outcome.error,
                    then_start=active.handing_over,
                    interrupts=outcome.waiting.interrupts if outcome.waiting else None,
                )
            )
            try:
                return await asyncio.shield(writing)
            except asyncio.CancelledError:
                await asyncio.wait([writing])
                if not writing.cancelled() and writing.exception() is None:
                    self._announce(run, writing.result(), outcome)
                raise
            except Unavailable as exc:
                if self._stopping:
                    raise
                log.warning("finishing run %s failed (%s); retrying", run.run_id, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 4 * RETRY_SECONDS)

    def _kick_ready(self) -> None:
        """Grants the free slots to the threads that have waited longest."""
        while self._ready and self._slots + len(self._granted) < self._max_running:
            thread_id, _ = self._ready.popitem(last=False)
            self._granted.add(thread_id)
            self._kick(thread_id)

    def _stop_task(self, run: RunRecord) -> None:
        """Interrupts a running run's task at its next await (it may not have started yet)."""
        active = self._active.get(run.thread_id)
        if active is None:
            return
        if active.run is None or (active.handing_over and active.run.run_id != run.run_id):
            # Its start is being written (by this claim, or with the active run's end):
            # stopped once it is known.
            active.stop_first[run.run_id] = run
            return
        if active.run.run_id != run.run_id:
            return
        active.cancelling = True
        self._metrics.cancel_requested(run)
        if active.executing and active.task is not None:
            active.task.cancel(f"cancelled: {run.cancel_reason}")

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

    def _abandon(self, active: _Active) -> None:
        active.abandoned = True
        if active.task is not None:
            active.task.cancel("no longer this replica's run")

    def _settle(self, run: RunRecord, *, rolled_back: bool, waiting: Waiting | None = None) -> None:
        """Announces a run's end: its stream's `end` event and its waiters; the end of a run
        that stopped for a human's input says so, with what it waits on."""
        error = run.error
        end: dict[str, Any] = {
            "status": run.status,
            "reason": run.cancel_reason or (run.error.message if run.error else ""),
            "action": "rollback" if rolled_back else (run.cancel_action or ""),
            "superseded_by": run.superseded_by,
        }
        if waiting is not None:
            end["reason"] = "awaiting input"
            end["awaiting_input"] = True
            end["interrupts"] = waiting.interrupts
            end["next"] = waiting.next
        self._hub.run_ended(
            run, end, error={"type": error.type, "message": error.message} if error else None
        )
        self._endings.ended(run, rolled_back=rolled_back)
        self._metrics.run_finished(run, "rolled_back" if rolled_back else run.status)
