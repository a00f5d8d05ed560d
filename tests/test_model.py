"""Model-based test: random creates, step completions, failures, cancels and restarts against
the reference model of `tests/model.py` (SPEC §3 and §4).

Each step is followed by a wait until the server is quiescent (every running run waits at its
gate) and matches the model: every run's status, attempt, queue position and cancellation, the
thread's status, state and checkpoint history. Safety properties are checked on what was
recorded, not only on snapshots, so a violation that lasts a moment is caught too: never two
runs of a thread executing (the graph's own log and the thread's watch stream), every run
ending exactly once on the watch stream, ended runs and written checkpoints never changing.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Coroutine
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, currently_in_test_context, settings, target
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests import support
from tests.model import (
    Checkpoint,
    GatedGraph,
    LoopThread,
    Model,
    ModelRun,
    ModelThread,
    RunRow,
    Values,
    View,
    Violation,
    Watch,
    check_watches,
)
from turnstile import (
    CancelAction,
    ConflictError,
    FailedPreconditionError,
    MultitaskStrategy,
    NotFoundError,
    Run,
    TurnstileClient,
    get_client,
)
from turnstile_server.app import App
from turnstile_server.config import ServerConfig

# About 30 s when it passes; when it fails, Hypothesis may shrink for up to 5 minutes.
pytestmark = pytest.mark.timeout(420)

T = TypeVar("T")

GRAPH = "model_gated"
THREADS = 2
# `enqueue` twice: queues of several runs are where order can go wrong.
STRATEGIES: list[MultitaskStrategy] = ["reject", "interrupt", "rollback", "enqueue", "enqueue"]
ACTIONS: list[CancelAction] = ["interrupt", "rollback"]
OUTCOMES = ["passes", "passes", "passes", "fails"]  # most steps pass, so runs live on
CALL_SECONDS = 10.0  # any one call or server start/stop
SETTLE_SECONDS = 10.0  # at most, for the server to reach the model's state after a step
# The server is taken to have settled (so a mismatch is final) once this many polls in a row,
# over at least this long, saw the same thing: every poll goes through the server's loop and
# database thread, so work still under way there shows up as a change.
STABLE_POLLS = 20
STABLE_SECONDS = 0.3
LIMIT = 10_000
RESTARTS = 4  # per example: enough for a run to use up its attempts

SETTINGS = settings(
    max_examples=40,
    stateful_step_count=50,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def pick(items: list[ModelRun], index: int) -> ModelRun | None:
    return items[index % len(items)] if items else None


class TurnstileMachine(RuleBasedStateMachine):
    """Drives a real server on a fresh database and the model side by side, from the event
    loop in `LOOP` (set by a subclass: Hypothesis builds the machine without arguments)."""

    LOOP: LoopThread

    def __init__(self) -> None:
        super().__init__()
        self.loop = self.LOOP
        self.directory = tempfile.TemporaryDirectory(prefix="turnstile-model-")
        self.database = str(Path(self.directory.name) / "turnstile.db")
        self.graph = GatedGraph()
        self.registry = support.registry()
        self.registry.register(GRAPH, self.graph)
        self.app: App | None = None
        self.client: TurnstileClient | None = None
        self.watches: list[Watch] = []
        self.by_id: dict[str, ModelRun] = {}
        self.checkpoints_seen: dict[str, dict[str, Any]] = {}
        self.ended_seen: dict[str, Run] = {}
        self.joined: set[str] = set()  # ended runs joined (or found gone) once
        self.cancelled_ended: set[str] = set()
        self.deepest = 0
        self.call(self._start_server())
        self.model = Model(self.call(self._create_threads()))
        self.call(self._open_watches())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_SECONDS) -> T:
        return self.loop.run(coro, timeout=timeout)

    @property
    def sdk(self) -> TurnstileClient:
        assert self.client is not None
        return self.client

    def teardown(self) -> None:
        try:
            if self.app is not None:
                self.call(self._stop_server())
        finally:
            self.directory.cleanup()
        if currently_in_test_context():
            # Steers generation towards the runs that interact most: deep queues.
            target(float(self.deepest), label="most inflight runs on a thread")

    # Rules: what clients and operators do. A rule that finds nothing to act on does nothing,
    # rather than having a precondition: then deleting a step never changes what the later
    # steps draw, and Hypothesis shrinks failures to the few steps that matter.

    @rule(
        thread=st.integers(0, THREADS - 1),
        strategy=st.sampled_from(STRATEGIES),
        gates=st.integers(2, 3),
    )
    def create(self, thread: int, strategy: MultitaskStrategy, gates: int) -> None:
        """A client creates a run of `gates` steps on a thread, with a strategy."""
        self._admit(thread, strategy, gates)

    @rule(index=st.integers(0, 7), strategy=st.sampled_from(STRATEGIES), gates=st.integers(2, 3))
    def double_text(self, index: int, strategy: MultitaskStrategy, gates: int) -> None:
        """A client creates a run on a thread whose run is still going."""
        if running := pick(self.model.running(), index):
            self._admit(running.thread, strategy, gates)

    def _admit(self, thread: int, strategy: MultitaskStrategy, gates: int) -> None:
        run = self.model.new_run(thread, gates)
        model_thread = self.model.threads[thread]
        busy = [r.run_id for r in model_thread.inflight]
        try:
            created = self.call(
                self.sdk.runs.create(
                    model_thread.thread_id,
                    GRAPH,
                    input=run.input(),
                    multitask_strategy=strategy,
                )
            )
        except ConflictError as refused:
            assert strategy == "reject" and busy, f"{strategy} refused: {refused}"
            assert refused.reason == "THREAD_BUSY"
            assert set(refused.metadata["inflight_run_ids"].split(",")) == set(busy)
            assert not self.model.admit(run, strategy)
            return
        assert self.model.admit(run, strategy), f"reject admitted on a thread running {busy}"
        run.run_id = created["run_id"]
        self.by_id[run.run_id] = run
        assert created["status"] == "pending"
        if strategy == "enqueue":
            assert created["queue_position"] == len(busy)

    @rule(index=st.integers(0, 7), outcome=st.sampled_from(OUTCOMES))
    def step(self, index: int, outcome: str) -> None:
        """A running run's gate opens: its step completes, or raises and the run fails (the
        steps it completed stay)."""
        if not (run := pick(self.model.running(), index)):
            return
        self.call(self._open_gates([run.gate], fail=outcome == "fails"))
        if outcome == "fails":
            self.model.fail_step(run)
        else:
            self.model.complete_step(run)

    @rule(index=st.integers(0, 15), action=st.sampled_from(ACTIONS), wait=st.booleans())
    def cancel(self, index: int, action: CancelAction, wait: bool) -> None:
        """A client cancels a pending or running run, waiting for it to stop or not."""
        if not (run := pick([r for r in self.model.runs() if r.inflight], index)):
            return
        was = run.status
        thread_id = self.model.threads[run.thread].thread_id
        cancelled = self.call(self.sdk.runs.cancel(thread_id, run.run_id, wait=wait, action=action))
        self.model.cancel(run, action)
        assert cancelled["status"] == ("interrupted" if wait or was == "pending" else "running")

    @rule(index=st.integers(0, 15), action=st.sampled_from(ACTIONS))
    def cancel_ended(self, index: int, action: CancelAction) -> None:
        """Cancelling a run that has ended (once per run) is refused and changes nothing."""
        if not (run := pick(self._uncancelled_ended(), index)):
            return
        self.cancelled_ended.add(run.run_id)
        thread_id = self.model.threads[run.thread].thread_id
        expected = NotFoundError if run.status == "deleted" else FailedPreconditionError
        with pytest.raises(expected) as refused:
            self.call(self.sdk.runs.cancel(thread_id, run.run_id, action=action))
        assert refused.value.reason == (
            "RUN_NOT_FOUND" if run.status == "deleted" else "RUN_NOT_ACTIVE"
        )

    def _uncancelled_ended(self) -> list[ModelRun]:
        runs = self.model.runs()
        return [r for r in runs if not r.inflight and r.run_id not in self.cancelled_ended]

    @rule()
    def restart(self) -> None:
        """The server stops (runs still going stay RUNNING) and starts on the same database."""
        if self.model.session >= RESTARTS:
            return
        self.call(self._stop_server())
        for run in self.model.running():
            self.graph.gates.arrived(run.gate).clear()  # to see it arrive again
        before = [r for r in self.model.runs() if r.inflight]
        self.model.restart()
        self.call(self._start_server())
        self.call(self._open_watches())
        for run in before:
            if run.ended_at_recovery:
                self.call(self._check_recovery_end(run))

    # Invariants.

    @invariant()
    def matches_model(self) -> None:
        self.call(self._settle(), SETTLE_SECONDS + 5)
        self.deepest = max([self.deepest, *(len(t.inflight) for t in self.model.threads)])
        for run in self.model.runs():
            if run.inflight or run.run_id in self.joined:
                continue
            self.joined.add(run.run_id)
            thread = self.model.threads[run.thread]
            if run.status == "deleted":
                with pytest.raises(NotFoundError) as gone:
                    self.call(self.sdk.runs.get(thread.thread_id, run.run_id))
                assert gone.value.reason == "RUN_NOT_FOUND"
                continue
            # JoinRun answers the values at the run's own last checkpoint.
            joined = self.call(self.sdk.runs.join_run(thread.thread_id, run.run_id))
            own = [c.values for c in thread.checkpoints if c.run == run.key]
            assert joined.run["status"] == run.status, f"{run.key} joined"
            assert Values.of(joined.values) == (own[-1] if own else Values()), f"{run.key} joined"

    # The server's side.

    async def _start_server(self) -> None:
        config = ServerConfig(host="127.0.0.1", port=0, database=self.database)
        self.app = await App.start(config, self.registry)
        self.client = get_client(url=self.app.address)

    async def _stop_server(self) -> None:
        for watch in self.watches:
            if watch.task is not None and not watch.task.done():
                watch.task.cancel()
                await asyncio.gather(watch.task, return_exceptions=True)
                await watch.stream.aclose()
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.app is not None:
            await self.app.stop(grace=0)
            self.app = None

    async def _create_threads(self) -> list[str]:
        return [(await self.sdk.threads.create())["thread_id"] for _ in range(THREADS)]

    async def _open_watches(self) -> None:
        opened = []
        for thread in self.model.threads:
            watch = Watch(self.model.session, thread, self.sdk.threads.watch(thread.thread_id))
            watch.task = asyncio.create_task(self._follow(watch))
            opened.append(watch)
        self.watches.extend(opened)

        async def subscribed() -> None:
            for watch in opened:
                assert watch.error is None, watch.error
                assert watch.stream.thread is not None, "the watch is not open yet"

        await support.eventually(subscribed)

    async def _follow(self, watch: Watch) -> None:
        try:
            async for part in watch.stream:
                if part.event in ("run_started", "run_ended"):
                    watch.parts.append(part)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            watch.error = exc

    async def _open_gates(self, gates: list[str], *, fail: bool = False) -> None:
        if fail:
            self.graph.faults.update(gates)
        for gate in gates:
            self.graph.gates.open(gate)

    async def _check_recovery_end(self, run: ModelRun) -> None:
        """A run ended at recovery ends on its own stream, once."""
        thread_id = self.model.threads[run.thread].thread_id
        ended = await self.sdk.runs.get(thread_id, run.run_id)
        assert ended["status"] == "error", f"{run.key} after restart: {ended}"
        parts = [p async for p in self.sdk.runs.join_stream(thread_id, run.run_id)]
        assert [p.event for p in parts] == ["error", "end"]
        assert parts[-1].data["status"] == "error"

    async def _view(self, thread: ModelThread) -> View:
        tid = thread.thread_id
        got, state, history, runs = await asyncio.gather(
            self.sdk.threads.get(tid),
            self.sdk.threads.get_state(tid),
            self.sdk.threads.get_history(tid, limit=LIMIT),
            self.sdk.runs.list(tid, limit=LIMIT),
        )
        return View(
            thread=dict(got),
            state=dict(state),
            history=[dict(c) for c in reversed(history)],
            runs=list(reversed(runs)),
        )

    async def _settle(self) -> None:
        """Waits until the server matches the model. Fails on a violation at once, and on a
        mismatch once the server has stopped changing (or after `SETTLE_SECONDS`)."""
        loop = asyncio.get_running_loop()
        start = loop.time()

        # The usual case, cheaply: the graph and the watch streams are the last to catch up.
        async def local() -> None:
            self._check_local()

        with contextlib.suppress(AssertionError):
            await support.eventually(local, within=0.5, interval=0.002)
        previous: tuple[Any, ...] | None = None
        stable_since, polls = start, 0
        while True:
            observation = await self._observe()
            try:
                self._check_local()
                for thread, view in zip(self.model.threads, observation[-1], strict=True):
                    self._check_runs(thread, view.runs)
                    self._check_state(thread, view)
                return
            except AssertionError:
                now = loop.time()
                if observation != previous:
                    previous, stable_since, polls = observation, now, 0
                polls += 1
                stable = polls >= STABLE_POLLS and now - stable_since >= STABLE_SECONDS
                if stable or now - start >= SETTLE_SECONDS:
                    raise
            await asyncio.sleep(0.005)

    async def _observe(self) -> tuple[Any, ...]:
        """Everything the checks look at, comparable from one poll to the next."""
        arrived = frozenset(n for n, e in self.graph.gates.entered.items() if e.is_set())
        parts = tuple(len(w.parts) for w in self.watches)
        views = await asyncio.gather(*(self._view(t) for t in self.model.threads))
        return (len(self.graph.overlaps), arrived, parts, views)

    def _check_local(self) -> None:
        """The checks that need no call: the graph's overlaps, the watches, the gates."""
        if self.graph.overlaps:
            pairs = [(self._key(a), self._key(b)) for _, a, b in self.graph.overlaps]
            raise Violation(f"two runs of a thread executed at once: {pairs}")
        check_watches(self.watches, self._key)
        for run in self.model.running():
            assert self.graph.gates.arrived(run.gate).is_set(), f"{run.key} not at {run.gate}"

    def _key(self, run_id: str | None) -> str | None:
        if not run_id:
            return None
        run = self.by_id.get(run_id)
        return run.key if run else f"unknown {run_id}"

    def _check_runs(self, thread: ModelThread, runs: list[Run]) -> None:
        running = [r["run_id"] for r in runs if r["status"] == "running"]
        if len(running) > 1:
            keys = [self._key(run_id) for run_id in running]
            raise Violation(f"{len(keys)} runs RUNNING on thread {thread.index}: {keys}")
        for run in runs:
            if run["status"] not in ("pending", "running"):
                first = self.ended_seen.setdefault(run["run_id"], run)
                if first != run:
                    raise Violation(f"an ended run changed: {first} -> {run}")
        actual = [RunRow.of(r, self._key) for r in runs]
        assert actual == thread.rows(), f"runs of thread {thread.index}"

    def _check_state(self, thread: ModelThread, view: View) -> None:
        for checkpoint in view.history:
            first = self.checkpoints_seen.setdefault(checkpoint["checkpoint_id"], checkpoint)
            if first != checkpoint:
                raise Violation(f"a checkpoint changed: {first} -> {checkpoint}")
        assert view.thread["status"] == thread.status, f"status of thread {thread.index}"
        assert Values.of(view.state["values"]) == thread.values, f"state of thread {thread.index}"
        assert view.thread["values"] == view.state["values"]
        history = [
            Checkpoint(self._key(c["run_id"]) or "", c["step"], c["source"], Values.of(c["values"]))
            for c in view.history
        ]
        assert history == thread.checkpoints, f"history of thread {thread.index}"
        latest = view.history[-1] if view.history else {"checkpoint_id": None, "values": {}}
        assert view.state["checkpoint_id"] == latest["checkpoint_id"]
        assert view.state["values"] == latest["values"]
        # Each checkpoint extends the one before, message ids included: after a rollback the
        # thread is exactly what it was before the rolled-back run.
        for older, newer in pairwise(view.history):
            kept = older["values"].get("messages", [])
            assert newer["values"].get("messages", [])[: len(kept)] == kept


def test_runs_threads_and_checkpoints_follow_the_reference_model() -> None:
    with LoopThread() as loop:

        class Machine(TurnstileMachine):
            LOOP = loop

        run_state_machine_as_test(Machine, settings=SETTINGS)
