"""The storage interface: what the scheduler, the runner and the services ask of a backend.

A backend (SQLite in `store/sqlite/`) implements `Store`; `open_store(url)` picks one. Its
records are the plain dataclasses of `store/records.py`. Every backend keeps the same rules:

- Each method that changes runs is one transaction: two admissions on one thread never
  interleave, and the multitask policy (`turnstile_server.policy`) decides what they do.
- The store owns the folded-state cache: its own writes advance it or drop it, nobody else
  touches it. A backend whose cache may miss other processes' writes allows one server
  process per database, and refuses a second one when it opens.
- `tests/store_contract/` is the definition: every backend passes it.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from turnstile_server.state import ThreadState
from turnstile_server.store.langgraph_checkpoints import LangGraphCheckpoints, StagedUpdate
from turnstile_server.store.records import (
    Admission,
    AssistantRecord,
    CheckpointRecord,
    Ended,
    Recovery,
    RunError,
    RunRecord,
    RunSpec,
    Start,
    ThreadRecord,
)

Steps = list[tuple[int, str, dict[str, Any]]]
"""Checkpoints to write for a run, in order: `(step, source, update)` each."""


class ThreadStore(Protocol):
    """Threads: create, read, list, update metadata, delete."""

    async def create(
        self,
        thread_id: str,
        metadata: dict[str, Any],
        *,
        if_exists: str = "raise",
        request_id: str = "",
    ) -> ThreadRecord:
        """Creates a thread; a repeated `request_id` or `if_exists="do_nothing"` returns it,
        else AlreadyExists."""
        ...

    async def get(self, thread_id: str) -> ThreadRecord:
        """Returns the thread or raises ThreadNotFound."""
        ...

    async def next_watch_epoch(self, thread_id: str) -> int:
        """Returns the thread's watch epoch (0 at first) and bumps it for the next caller."""
        ...

    async def list(
        self,
        *,
        status: str | None,
        metadata: dict[str, Any],
        limit: int,
        before: int | None,
        interruption: str | None = None,
    ) -> tuple[builtins.list[ThreadRecord], int | None]:
        """Lists threads newest first; returns the page and the cursor of the next one.

        `interruption` ("awaiting_input" or "cancelled") keeps only the interrupted threads
        interrupted so (see `ThreadRecord.interruption`)."""
        ...

    async def update_metadata(self, thread_id: str, metadata: dict[str, Any]) -> ThreadRecord:
        """Merges `metadata` into the thread's metadata."""
        ...

    async def apply_update(self, update: StagedUpdate) -> None:
        """Applies an UpdateThreadState (LangGraph's checkpoints and writes it staged) and
        records what the thread then waits for (`update.interrupts`; None: nothing, the
        thread is IDLE), in one transaction with its checks, so no run starts under it:
        ThreadNotFound; ThreadBusy while a run is inflight; BaseMoved (nothing applied) when
        the thread's newest root checkpoint is no longer `update.base`."""
        ...

    async def delete(self, thread_id: str) -> builtins.list[RunRecord]:
        """Deletes the thread, its runs and checkpoints; returns its inflight runs, as ended."""
        ...


class RunStore(Protocol):
    """Runs: admission with the multitask strategies, starting, finishing, cancelling."""

    async def admit(self, spec: RunSpec, *, max_queued: int, start: bool = False) -> Admission:
        """Admits a run as `policy.plan_admission` decides, in one transaction; with `start`,
        a run due at once is started in it too (`Admission.start`). A `request_id` seen before
        returns its run (`existing`), or RequestIdReused when it asks for something else, or
        RequestIdRolledBack when its run was rolled back (remembered for a day, durably)."""
        ...

    async def get(self, thread_id: str, run_id: str) -> RunRecord:
        """Returns the run or raises RunNotFound."""
        ...

    async def rolled_back(self, thread_id: str, run_id: str) -> RunRecord | None:
        """The run as it was when it was rolled back (ended INTERRUPTED, with its cancel
        reason), if the store remembers it: JoinRun and WaitRun answer it, not NOT_FOUND. A
        database replicas share keeps it a day, so that any replica answers what the one that
        rolled it back answers; a store one process serves may keep nothing (that process
        remembers its own)."""
        ...

    async def list(
        self, thread_id: str, *, status: str | None, limit: int, before: int | None
    ) -> tuple[builtins.list[RunRecord], int | None]:
        """Lists a thread's runs newest first; returns the page and the next cursor."""
        ...

    async def pending_ids(self) -> builtins.list[str]:
        """Returns the ids of every PENDING run."""
        ...

    async def threads_with_inflight(self) -> builtins.list[str]:
        """Returns the threads that have pending or running runs, oldest admission first."""
        ...

    async def recover(self, max_attempts: int) -> Recovery:
        """Settles the runs a previous process left RUNNING, in one transaction: being
        cancelled, they end so; after `max_attempts` attempts, ERROR; else PENDING again."""
        ...

    async def start_next(self, thread_id: str) -> Start:
        """Starts the thread's earliest pending run as a new attempt, if it is due; its first
        attempt writes its input as the thread's next checkpoint in the same transaction."""
        ...

    async def finish(
        self,
        run: RunRecord,
        status: str,
        *,
        error: RunError | None = None,
        then_start: bool = False,
        interrupts: builtins.list[dict[str, Any]] | None = None,
    ) -> Ended | None:
        """Ends a running run as it ended by itself (a cancellation recorded on it overrides
        that), or deletes it with its checkpoints if it is being rolled back; with
        `then_start`, starts the thread's next run in the same transaction. None if the run
        is gone with its thread.

        `interrupts` (`{id, value, task_id}` each, possibly none) says the run stopped waiting
        for input: a success then leaves the thread INTERRUPTED awaiting input with them
        (`ThreadRecord.interrupts`), until a started run's end says otherwise; a rollback
        leaves what the thread waited for before (see `policy.plan_pending` for admission)."""
        ...

    async def cancel(
        self, thread_id: str, run_id: str, action: str, *, reason: str | None = None
    ) -> tuple[RunRecord, bool]:
        """Cancels a run as `policy.plan_cancel` decides; returns the run (final if it ended
        now) and whether it is still running, to be stopped."""
        ...

    async def delete(self, thread_id: str, run_id: str) -> None:
        """Deletes an ended run (RunActive if it is inflight); its checkpoints stay."""
        ...


class CheckpointStore(Protocol):
    """Checkpoints (each holds its step's update) and the thread states folded from them."""

    async def put(
        self,
        thread_id: str,
        run_id: str,
        step: int,
        source: str,
        update: dict[str, Any],
        *,
        epoch: int = 0,
    ) -> CheckpointRecord:
        """Appends a checkpoint; it lands even if the caller is cancelled meanwhile (the
        caller then waits for it). ThreadNotFound if the thread, or the run, is gone: a run's
        writes never outlive it, even into a thread created again under the same id. With
        `epoch` (the attempt's fencing token), AttemptFenced and nothing written unless that
        attempt still holds the run."""
        ...

    def submit(
        self, thread_id: str, run_id: str, steps: Steps, *, epoch: int = 0
    ) -> asyncio.Future[builtins.list[CheckpointRecord]]:
        """Queues `steps` as one write, for good, and returns it at once (await it with
        `landed`); `epoch` as for `put`."""
        ...

    async def landed(
        self, written: asyncio.Future[builtins.list[CheckpointRecord]], thread_id: str
    ) -> builtins.list[CheckpointRecord]:
        """Awaits a submitted write; ThreadNotFound if the thread went."""
        ...

    async def live(self, thread_id: str) -> ThreadState:
        """The thread's cached state itself, for the one run executing on the thread."""
        ...

    def latest_live(self, thread_id: str) -> tuple[CheckpointRecord, ThreadState] | None:
        """The thread's newest checkpoint and cached state when cached, to be read at once."""
        ...

    async def last_of_run(self, run_id: str) -> CheckpointRecord | None:
        """Returns the newest checkpoint a run wrote, or None."""
        ...

    async def find(self, thread_id: str, checkpoint_id: str) -> CheckpointRecord | None:
        """Returns the thread's checkpoint with that id, or None."""
        ...

    async def parent(self, thread_id: str, seq: int) -> CheckpointRecord | None:
        """Returns the thread's checkpoint just before the one numbered `seq`, or None."""
        ...

    async def state(self, thread_id: str) -> tuple[ThreadState, CheckpointRecord | None]:
        """Returns a private copy of the thread's latest state and its checkpoint."""
        ...

    async def values_at(self, thread_id: str, seq: int) -> dict[str, Any]:
        """Returns the thread's values at the checkpoint with sequence number `seq`."""
        ...

    async def history(
        self, thread_id: str, *, limit: int, before: int | None
    ) -> tuple[builtins.list[tuple[CheckpointRecord, dict[str, Any]]], int | None]:
        """Lists checkpoints newest first with the values at each; returns the next cursor."""
        ...


class AttemptFenced(Exception):
    """A write of an attempt that no longer holds its run: its epoch is older than the run's,
    the run is not running, or its replica's lease expired. Nothing of the write is kept; the
    attempt stops and writes nothing more (another replica resumes or finished the run)."""


@dataclass(frozen=True, slots=True)
class Renewal:
    """A renewed lease, and the runs the replica executes that it must stop: cancelled
    (`cancel`, finished by the replica once unwound) or no longer its own (`lost`: ended,
    deleted or taken over; nothing more of them is written)."""

    cancel: builtins.list[str] = field(default_factory=list)
    lost: builtins.list[str] = field(default_factory=list)


class ReplicaStore(Protocol):
    """A replica's lease on a database that several replicas share (PostgreSQL): its
    incarnation, renewed on the database's clock, and the signals between replicas."""

    @property
    def incarnation(self) -> str:
        """This incarnation's id ("" before `join`); the owner of the runs it starts."""
        ...

    async def join(self, name: str, ttl: float, graphs: builtins.list[str]) -> str:
        """Starts a new incarnation with a lease of `ttl` s, serving `graphs` (the graph ids
        it can run: it claims and starts only their runs, so a run of a graph some replicas
        lack waits for one that has it); returns its id."""
        ...

    async def agree(self, relay: str, *, alone: bool) -> builtins.list[tuple[str, str]]:
        """Records `relay` ("none", "redis:<key prefix>") as how this deployment relays
        events, unless live replicas agreed to another (or, `alone`, any did): those are
        returned (name, relay) and nothing is recorded."""
        ...

    async def renew(self, ttl: float, running: dict[str, int]) -> Renewal | None:
        """Extends the lease by `ttl` s from now on the database's clock, unless it expired
        (None: the incarnation is over); reports which of `running` (run id -> epoch) to stop."""
        ...

    async def leave(self) -> None:
        """Ends the lease now: its runs are taken over at once by the other replicas."""
        ...

    async def claim(self, exclude: builtins.list[str]) -> Start:
        """Starts the first pending run of a ready thread no other transaction holds (not
        one of `exclude`), if of a graph this incarnation serves, as its, in one transaction."""
        ...

    async def serving(self, graph_id: str) -> builtins.list[str]:
        """The names of the live replicas that serve `graph_id`."""
        ...

    async def unwinding(self, run_ids: builtins.list[str]) -> builtins.list[str]:
        """Which of `run_ids`, deleted with their thread while they executed, are still
        unwinding on a live replica (what DeleteThread waits for on the others)."""
        ...

    async def unwound(self, run: RunRecord) -> None:
        """This replica's attempt of `run`, deleted while it executed, stopped without being
        finished (abandoned): its DeleteThread's waiters on other replicas are told."""
        ...

    async def listen(
        self,
        on_cancel: Callable[[str, str], None],
        on_ready: Callable[[], None],
        on_ended: Callable[[str], None],
        on_lost: Callable[[], None],
    ) -> bool:
        """Makes sure a connection listens for cancellations (thread id, run id), for runs
        ready to be claimed and for runs that ended (run id); returns whether it was
        (re)connected now. `on_lost` is called if that connection ends by itself later (its
        notices since are lost)."""
        ...

    async def unlisten(self) -> None:
        """Closes the listening connection."""
        ...


class AssistantStore(Protocol):
    """Assistants created with CreateAssistant."""

    async def create(self, record: AssistantRecord, *, if_exists: str) -> AssistantRecord:
        """Inserts the assistant; with `if_exists="do_nothing"` an existing one is returned."""
        ...

    async def get(self, assistant_id: str) -> AssistantRecord:
        """Returns the assistant or raises AssistantNotFound."""
        ...

    async def list(
        self, *, graph_id: str, metadata: dict[str, Any], limit: int, before: int | None
    ) -> tuple[builtins.list[AssistantRecord], int | None]:
        """Lists assistants newest first; returns the page and the next cursor."""
        ...

    async def delete(self, assistant_id: str) -> None:
        """Deletes the assistant or raises AssistantNotFound."""
        ...


class Store(Protocol):
    """A storage backend: its tables, opened (by `open_store`) and closed together."""

    @property
    def threads(self) -> ThreadStore:
        """The threads."""
        ...

    @property
    def runs(self) -> RunStore:
        """The runs."""
        ...

    @property
    def checkpoints(self) -> CheckpointStore:
        """The checkpoints and the folded-state cache."""
        ...

    @property
    def assistants(self) -> AssistantStore:
        """The assistants."""
        ...

    @property
    def langgraph(self) -> LangGraphCheckpoints:
        """LangGraph's checkpoints, blobs and writes (`store/langgraph_checkpoints.py`)."""
        ...

    @property
    def replicas(self) -> ReplicaStore | None:
        """The leases of the replicas sharing the database; None for a one-process backend."""
        ...

    async def close(self) -> None:
        """Closes the store once the writes submitted so far have been answered."""
        ...
