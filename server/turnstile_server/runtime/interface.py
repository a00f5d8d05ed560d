"""The graph-runtime interface: what a kind of graph must provide to run on Turnstile.

Modelled on Temporal's workflow runners (a runner prepares each workflow definition once, then
makes an instance per execution and drives it). The parts and their order:

Recognised and prepared (once, at registration).
    The registry offers every registered object (`--graph name=module:attr`, built-ins) to each
    `GraphRuntime` in turn: `prepare(obj)` returns a `PreparedGraph` when the runtime runs such
    objects, None when it does not recognise it, and raises `InvalidArgument` when it recognises
    it but cannot run it (say, a compiled LangGraph graph that brings its own checkpointer).
    When every runtime returns None, the registration fails with an error that names what each
    one expects (`GraphRuntime.expects`). Preparing may do the expensive work once (compile a
    `StateGraph`); nothing per run happens here.

Run (once per attempt): `await prepared.execute(host)`.
    The runner, which is runtime-neutral, has already emitted the run's `metadata` event; it
    calls `execute` inside the run's time limit, and maps how it ends to the run's outcome:
    returning is success, an exception is ERROR (its type and message), the time limit expiring
    is TIMEOUT. Inside `execute` the runtime owns everything that depends on the kind of graph:
    - preparing the run: building what the graph is given from `host.run` (input, config,
      attempt) and `host.context` (a LangGraph factory is called here with the run's config);
    - driving: stepping the graph (an async generator; LangGraph's `astream`);
    - reducing: merging each step's update into the state (the native reducer is
      `ThreadState.apply`; LangGraph reduces through its channels);
    - checkpointing: writing each step through the host (`host.write`, `host.landed`), in the
      run's durability (`host.run.durability`: `sync` commits each step before the next starts,
      `async` writes a step while the next one runs, `exit` writes the steps when the run ends,
      however it ends). A runtime with its own checkpoint format (LangGraph's saver) keeps it in
      the store through the host as well, so that rollback can delete all of it;
    - streaming: `host.emit` for the stream modes the run asked for (`host.wants`), including
      the events a graph emits through `host.context` (`messages`, `custom`).
    The run's input checkpoint was written by the store when the run started (first attempt,
    `host.start.input`); a resumed attempt goes on after the `host.start.checkpoints` it has.

Interrupted before it executed (`await prepared.keep_input(host)`, optional).
    A run whose cancellation came as it started is never executed; its input stays in the
    thread all the same (SPEC §3). The store wrote a native run's; a runtime that writes a
    run's input itself (LangGraph, inside `astream`) has `keep_input` to do it then.

What the graph is handed.
    Never the store's cached state: a copy, or a read-only view of the run's own state (the
    native runtime's `ReadOnlyMapping`), that shows every step the run has applied whatever the
    cache does.

Cancellation.
    Interrupt, rollback, DeleteThread and shutdown cancel the run's task: `CancelledError` is
    raised at the runtime's current await, that is in the graph at its next await (the step in
    flight is discarded) or in a host call. The runtime lets it propagate, never swallows it,
    and before it does: closes the graph (so the graph's own cleanup runs) and lands every
    checkpoint it owes (`host.landed` finishes a write even while being cancelled; `exit`
    writes its held steps now). Nothing may be written after `execute` has unwound: the store
    then finishes the run, and a rollback deletes every checkpoint the run wrote.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from turnstile_server.runtime.context import RunContext
from turnstile_server.state import ThreadState
from turnstile_server.store import CheckpointRecord, LangGraphCheckpoints, RunRecord, Start

Step = tuple[int, str, dict[str, Any]]
"""A checkpoint to write: (step number, source `input`/`step`, the update it stores)."""

Write = asyncio.Future[list[CheckpointRecord]]
"""Checkpoints queued for the database in one write; `RunHost.landed` awaits them."""


class RunHost(Protocol):
    """What the runner lends a runtime for one run: the run, its context, events, checkpoints."""

    @property
    def run(self) -> RunRecord:
        """The run as it was started (ids, input, config, stream modes, durability, attempt)."""
        ...

    @property
    def start(self) -> Start:
        """How the store started it: its input checkpoint (first attempt) and checkpoint count."""
        ...

    @property
    def context(self) -> RunContext:
        """What the graph is told about its run, with its channel for streamed events."""
        ...

    @property
    def max_state_bytes(self) -> int | None:
        """The most bytes the thread's state may take once a step is applied (None: no
        limit): a step past it ends the run ERROR (`StateTooLarge`) before it is stored."""
        ...

    def wants(self, event: str) -> bool:
        """Tell whether the run's stream modes ask for events of this kind."""
        ...

    def emit(
        self, event: str, data: Any, *, checked: bool = False, mode: str | None = None
    ) -> None:
        """Stream an event if the run asked for its kind; `checked` data is known to be JSON.

        `mode` is the stream mode the event belongs to when its name is not the mode's
        (`values|ns` with subgraphs, `messages/partial` of `messages-partial`)."""
        ...

    async def state(self) -> ThreadState:
        """The thread's committed state, as the run's own copy (never the store's cache)."""
        ...

    def write(self, steps: Sequence[Step]) -> Write:
        """Queue checkpoints of this run, in order, in one write, and return it at once."""
        ...

    async def landed(self, write: Write) -> list[CheckpointRecord]:
        """Await a write; it lands even if the caller is cancelled meanwhile (then re-raised).

        Raises ThreadNotFound if the thread was deleted.
        """
        ...

    def awaiting_input(self, interrupts: Sequence[Mapping[str, Any]], next: Sequence[str]) -> None:
        """Say, before returning, that the run stopped to wait for a human's input: at an
        `interrupt()` (`interrupts`: `{id, value, task_id}` each) or before or after a node
        (none); `next` are the nodes that run on resume. The run still ends SUCCESS; its
        thread is then INTERRUPTED awaiting input, and its `end` event says so."""
        ...

    async def cancelled_for(self) -> str | None:
        """Once the run's task is cancelled: what for, as the store has it (`interrupt`,
        `rollback`), or None when no one cancelled the run itself (a shutdown, the time limit,
        its thread deleted). `host.run.close_tool_calls` is resolved (never None)."""
        ...

    @property
    def langgraph(self) -> LangGraphCheckpoints:
        """The store's LangGraph checkpoints, for this run's saver only: each write is refused
        (ThreadNotFound) once the run's row is gone (its thread deleted, the run rolled back),
        and once `execute` has unwound; a write begun lands even if its caller is cancelled,
        and the runner waits for it before the run is finished."""
        ...


class PreparedGraph(Protocol):
    """A registered graph, prepared by its runtime: executed once per attempt of each run."""

    @property
    def graph(self) -> object:
        """The object that was registered."""
        ...

    @property
    def runtime(self) -> str:
        """The name of the runtime that runs it."""
        ...

    async def execute(self, host: RunHost) -> None:
        """Run the graph on the host's run until it ends (return), fails (raise) or is
        cancelled (CancelledError, after closing the graph and landing what it owes)."""
        ...


class GraphRuntime(Protocol):
    """A kind of graph the server can run: it recognises and prepares registered objects."""

    @property
    def name(self) -> str:
        """A short name for logs and errors: `native`, `langgraph`."""
        ...

    @property
    def expects(self) -> str:
        """What it runs, for the error when no runtime recognises an object."""
        ...

    def prepare(self, obj: object) -> PreparedGraph | None:
        """Return obj prepared to run, None if this runtime does not run such objects.

        Raises InvalidArgument when it recognises obj but cannot run it.
        """
        ...
