"""The reference model of `tests/test_model.py` and what it is compared with.

`Model` is plain Python with no I/O: what the multitask strategies (SPEC §3), failures and
restarts do to a thread's runs, checkpoints and status; each method is one thing a client, a
graph or an operator does. Around it: the gated graph the test drives step by step, the event
loop thread that runs the server, the rows and views the test compares, and the check of the
thread watch streams.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

from tests.support import Gates, gates_to_pass
from turnstile import Run, ThreadStream, ThreadStreamPart
from turnstile_server.graph import RunContext

T = TypeVar("T")

MAX_ATTEMPTS = 3  # the server's default `max_attempts`
UNWIND_SECONDS = 0.02  # a cancelled step takes this long to unwind, as real clean-up does
THREAD_STATUS_AFTER = {
    "success": "idle",
    "deleted": "idle",
    "interrupted": "interrupted",
    "error": "error",
}


class GatedGraph:
    """One step per name in input `gates`: waits for the gate, then yields `passed <gate>`.

    A gate named in `faults` when it opens makes the step raise instead. A run resumed after a
    restart skips the gates it passed (those since the last human message, its input). The
    graph records runs of one thread that execute at the same time in `overlaps`.
    """

    def __init__(self) -> None:
        self.gates = Gates()
        self.faults: set[str] = set()
        self.inside: dict[str, str] = {}  # thread id -> run id executing the graph
        self.overlaps: list[tuple[str, str, str]] = []

    async def __call__(
        self, state: dict[str, Any], ctx: RunContext
    ) -> AsyncIterator[dict[str, Any]]:
        other = self.inside.get(ctx.thread_id)
        if other is not None and other != ctx.run_id:
            self.overlaps.append((ctx.thread_id, other, ctx.run_id))
        self.inside[ctx.thread_id] = ctx.run_id
        try:
            for name in gates_to_pass(state, ctx):
                self.gates.arrived(name).set()
                try:
                    await self.gates.event(name).wait()
                except asyncio.CancelledError:
                    await asyncio.sleep(UNWIND_SECONDS)
                    raise
                if name in self.faults:
                    raise RuntimeError(f"gate {name} failed")
                yield {"messages": [{"type": "ai", "content": f"passed {name}"}]}
        finally:
            if self.inside.get(ctx.thread_id) == ctx.run_id:
                del self.inside[ctx.thread_id]


class LoopThread:
    """An event loop in a thread of its own, so synchronous code can drive async code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="model-loop", daemon=True
        )

    def __enter__(self) -> LoopThread:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.run(self.loop.shutdown_asyncgens(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float) -> T:
        """Runs `coro` in the loop and returns its result; fails after `timeout` seconds."""

        async def bounded() -> T:
            async with asyncio.timeout(timeout):
                return await coro

        return asyncio.run_coroutine_threadsafe(bounded(), self.loop).result(timeout + 5)


@dataclass(frozen=True, slots=True)
class Values:
    """A thread's values as the model sees them: each message's (type, content), and the
    `gates` key that the last started run's input set."""

    messages: tuple[tuple[str, str], ...] = ()
    gates: tuple[str, ...] | None = None

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Values:
        """The model's view of values the server returned."""
        assert set(values) <= {"messages", "gates"}, f"unexpected keys in {values}"
        messages = tuple((m["type"], m["content"]) for m in values.get("messages", []))
        gates = values.get("gates")
        return cls(messages, None if gates is None else tuple(gates))

    def plus(self, kind: str, content: str, *, gates: tuple[str, ...] | None = None) -> Values:
        return Values((*self.messages, (kind, content)), self.gates if gates is None else gates)


class RunRow(NamedTuple):
    """What the test compares of a run, as the model expects it or as the API answers."""

    key: str | None
    status: str  # "deleted" runs have no row
    attempt: int
    started: bool
    ended: bool
    queue_position: int | None
    superseded_by: str | None  # the key of the run whose admission ended this one
    cancelled: str | None  # "superseded", "client" or None
    error: str | None  # the error's type

    @classmethod
    def of(cls, run: Run, key: Callable[[str | None], str | None]) -> RunRow:
        """The row of a run the API returned; `key` names a run id as the model does."""
        reason, by = run["cancel_reason"], run["superseded_by"]
        cancelled = None if not reason else "superseded" if by and by in reason else "client"
        return cls(
            key(run["run_id"]),
            run["status"],
            run["attempt"],
            run["start_time"] is not None,
            run["end_time"] is not None,
            run["queue_position"],
            key(by),
            cancelled,
            run["error"]["type"] if run["error"] else None,
        )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint the model expects: who wrote it, at which step, and the values after it."""

    run: str
    step: int
    source: str
    values: Values


@dataclass(eq=False, slots=True)
class ModelRun:
    """A run as the model expects it; `key` names it in failure reports (`r3`)."""

    key: str
    thread: int
    gates: tuple[str, ...]
    run_id: str = ""
    status: str = "pending"  # pending, running, success, error, interrupted, deleted
    passed: int = 0
    attempt: int = 0
    sessions: list[int] = field(default_factory=list)  # server sessions it ran in
    superseded_by: ModelRun | None = None
    cancelled_by_client: bool = False
    error_type: str | None = None
    ended_in: int | None = None  # the session it ended in
    ended_at_recovery: bool = False

    @property
    def inflight(self) -> bool:
        return self.status in ("pending", "running")

    @property
    def gate(self) -> str:
        """The gate the running run waits at."""
        return self.gates[self.passed]

    @property
    def content(self) -> str:
        """The human message its input adds."""
        return f"{self.key} input"

    def input(self) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": self.content}], "gates": list(self.gates)}


@dataclass(slots=True)
class ModelThread:
    """A thread: its runs in admission order, its checkpoints, and its last outcome."""

    index: int
    thread_id: str
    runs: list[ModelRun] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    outcome: str = "idle"  # the status once nothing is inflight

    @property
    def inflight(self) -> list[ModelRun]:
        return [r for r in self.runs if r.inflight]

    @property
    def status(self) -> str:
        return "busy" if self.inflight else self.outcome

    @property
    def values(self) -> Values:
        return self.checkpoints[-1].values if self.checkpoints else Values()

    def rows(self) -> list[RunRow]:
        """The rows `ListRuns` should give, oldest first (deleted runs are gone)."""
        inflight = self.inflight
        return [
            RunRow(
                r.key,
                r.status,
                r.attempt,
                r.attempt > 0,
                not r.inflight,
                inflight.index(r) if r.status == "pending" else None,
                r.superseded_by.key if r.superseded_by else None,
                "superseded" if r.superseded_by else "client" if r.cancelled_by_client else None,
                r.error_type,
            )
            for r in self.runs
            if r.status != "deleted"
        ]


@dataclass(eq=False)
class Watch:
    """A `WatchThread` of one thread during one server session: its runs starting and ending."""

    session: int
    thread: ModelThread
    stream: ThreadStream
    parts: list[ThreadStreamPart] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    error: BaseException | None = None


class Violation(Exception):
    """A safety property broke: waiting longer cannot mend it."""


@dataclass(frozen=True, slots=True)
class View:
    """What the API says about one thread."""

    thread: dict[str, Any]
    state: dict[str, Any]
    history: list[dict[str, Any]]  # oldest first
    runs: list[Run]  # oldest first


class Model:
    """Threads, runs and checkpoints as the SPEC says they evolve; `session` counts restarts."""

    def __init__(self, thread_ids: list[str]) -> None:
        self.threads = [ModelThread(i, tid) for i, tid in enumerate(thread_ids)]
        self.session = 0
        self._counter = 0

    def runs(self) -> list[ModelRun]:
        return [r for t in self.threads for r in t.runs]

    def running(self) -> list[ModelRun]:
        return [r for r in self.runs() if r.status == "running"]

    def new_run(self, thread: int, gates: int) -> ModelRun:
        """A run to admit on `thread` with `gates` steps, with names unique in the model."""
        self._counter += 1
        key = f"r{self._counter}"
        return ModelRun(key, thread, tuple(f"{key}-g{i}" for i in range(gates)))

    def admit(self, run: ModelRun, strategy: str) -> bool:
        """Admits `run` with `strategy`; False if it is refused (`reject` on a busy thread)."""
        thread = self.threads[run.thread]
        if thread.inflight and strategy == "reject":
            return False
        if strategy in ("interrupt", "rollback"):
            for old in thread.inflight:
                old.superseded_by = run
                if strategy == "rollback":
                    self._delete(old)
                else:
                    self._end(old, "interrupted")
        thread.runs.append(run)
        self._start_next(thread)
        return True

    def complete_step(self, run: ModelRun) -> None:
        """The running run's gate opens: its step is checkpointed, then the next one waits."""
        thread = self.threads[run.thread]
        gate = run.gate
        run.passed += 1
        thread.checkpoints.append(
            Checkpoint(run.key, run.passed, "step", thread.values.plus("ai", f"passed {gate}"))
        )
        if run.passed == len(run.gates):
            self._end(run, "success")
            self._start_next(thread)

    def fail_step(self, run: ModelRun) -> None:
        """The running run's step raises: it ends ERROR and the thread's next run starts."""
        self._end(run, "error", error_type="RuntimeError")
        self._start_next(self.threads[run.thread])

    def cancel(self, run: ModelRun, action: str) -> None:
        """A client cancels an inflight run with `action` (interrupt or rollback)."""
        assert run.inflight
        run.cancelled_by_client = True
        if action == "rollback":
            self._delete(run)
        else:
            self._end(run, "interrupted")
        self._start_next(self.threads[run.thread])

    def restart(self) -> None:
        """The server stops and starts again: running runs resume as their next attempt, or
        end ERROR once they have had `MAX_ATTEMPTS`."""
        self.session += 1
        for thread in self.threads:
            for run in [r for r in thread.inflight if r.status == "running"]:
                if run.attempt >= MAX_ATTEMPTS:
                    self._end(run, "error", error_type="MaxAttemptsExceeded")
                    run.ended_at_recovery = True
                    self._start_next(thread)
                else:
                    run.attempt += 1
                    run.sessions.append(self.session)

    def _start_next(self, thread: ModelThread) -> None:
        inflight = thread.inflight
        if not inflight or inflight[0].status != "pending":
            return
        run = inflight[0]
        run.status = "running"
        run.attempt = 1
        run.sessions.append(self.session)
        values = thread.values.plus("human", run.content, gates=run.gates)
        thread.checkpoints.append(Checkpoint(run.key, 0, "input", values))

    def _end(self, run: ModelRun, status: str, *, error_type: str | None = None) -> None:
        run.status = status
        run.error_type = error_type
        run.ended_in = self.session
        self.threads[run.thread].outcome = THREAD_STATUS_AFTER[status]

    def _delete(self, run: ModelRun) -> None:
        thread = self.threads[run.thread]
        thread.checkpoints = [c for c in thread.checkpoints if c.run != run.key]
        self._end(run, "deleted")


def check_watches(watches: list[Watch], key: Callable[[str | None], str | None]) -> None:
    """Checks the runs' starts and ends on the watch streams: one run executing at a time
    per thread, each run ending once, and as the model says."""
    ended: Counter[str] = Counter()
    for watch in watches:
        if watch.error is not None:
            raise Violation(f"the watch of thread {watch.thread.index} failed: {watch.error}")
        executing: str | None = None
        for part in watch.parts:
            if part.event == "run_started":
                if executing not in (None, part.run_id):
                    raise Violation(
                        f"{key(part.run_id)} started while {key(executing)}"
                        f" had not ended (thread {watch.thread.index})"
                    )
                executing = part.run_id
            else:
                ended[part.run_id] += 1
                executing = None if executing == part.run_id else executing
    twice = [key(run_id) for run_id, count in ended.items() if count > 1]
    if twice:
        raise Violation(f"runs ended more than once: {twice}")
    for watch in watches:
        for run in watch.thread.runs:
            parts = [p for p in watch.parts if p.run_id == run.run_id]
            starts = sum(p.event == "run_started" for p in parts)
            ends = [p.data for p in parts if p.event == "run_ended"]
            where = f"{run.key} on the watch of server session {watch.session}"
            assert starts == (watch.session in run.sessions), f"{where}: {starts} starts"
            ends_here = run.ended_in == watch.session and not run.ended_at_recovery
            assert len(ends) == ends_here, f"{where}: {len(ends)} ends"
            if ends:
                status = "interrupted" if run.status == "deleted" else run.status
                by = run.superseded_by.key if run.superseded_by else None
                said = (ends[0]["status"], key(ends[0]["superseded_by"]))
                assert said == (status, by), f"{where}: ended {ends[0]}"
