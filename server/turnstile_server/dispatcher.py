"""Starts, drives and finishes runs: the slots, the thread's next run, each run's end announced.

A run admitted on a thread with nothing active here starts in its admission's own write.
Otherwise scheduling is driven by events: an admission, a cancellation or an `after_seconds`
timer "kicks" a thread, and a short pump task asks the store to start the thread's next run;
a kick that finds a run active is kept until that run is gone. A new run starts only after the
run it supersedes has unwound and been finished in the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from turnstile_server.endings import Endings
from turnstile_server.errors import (
    Unavailable,
)
from turnstile_server.events import EventHub
from turnstile_server.metrics import Metrics
from turnstile_server.runner import Outcome, Runner, Waiting
from turnstile_server.store import (
    AttemptFenced,
    Ended,
    ReplicaStore,
    RunError,
    RunRecord,
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


class Dispatcher:
    """The scheduler's state and how its runs start, execute and end (`scheduler.Scheduler`
    is the class to use)."""

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
                self._unwound(run)
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

    def _unwound(self, run: RunRecord) -> None:
        """An abandoned run stopped: if it was abandoned because its thread was deleted, the
        DeleteThread waiting on another replica is told (`ReplicaStore.unwound`), retried
        through store faults. (Abandoned because the lease was lost, this incarnation is
        over: the sweeper releases those waiters once its lease has expired.)"""
        if self._replicas is None or self._paused:
            return
        replicas = self._replicas

        async def tell() -> None:
            pause = RETRY_SECONDS / 8
            while not self._paused:
                try:
                    await replicas.unwound(run)
                    return
                except Unavailable as exc:
                    if self._stopping:
                        log.warning("recording run %s unwound failed: %r", run.run_id, exc)
                        return
                    log.warning("recording run %s unwound failed (%s); retrying", run.run_id, exc)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 4 * RETRY_SECONDS)
                except Exception as exc:
                    # Its waiters are released when this incarnation's lease expires.
                    log.warning("recording run %s unwound failed: %r", run.run_id, exc)
                    return

        self._own(asyncio.create_task(tell(), name=f"unwound {run.run_id}"))

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
