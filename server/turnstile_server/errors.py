"""Domain errors: plain exceptions with a stable reason, translated to gRPC in one place."""

from __future__ import annotations

from collections.abc import Mapping


class TurnstileError(Exception):
    """Base of every error a caller can act on; `reason` is stable, `metadata` is extra detail."""

    reason: str = "TURNSTILE_ERROR"

    def __init__(self, message: str, *, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(TurnstileError):
    """The request is malformed: a bad id, a wrong JSON shape, an unknown enum value."""

    reason = "INVALID_ARGUMENT"

    def __init__(
        self, message: str, *, reason: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(message, metadata={"field": field} if field else None)
        if reason:
            self.reason = reason


class UnknownGraph(InvalidArgument):
    """The graph id names no registered graph."""

    reason = "UNKNOWN_GRAPH"


class InvalidInput(InvalidArgument):
    """A run's input or a graph's update has a shape the state cannot take."""

    reason = "INVALID_INPUT"


class GraphFault(TurnstileError):
    """A run's graph failed in a way with a stable reason: the run ends ERROR with the reason as
    its error's type (never an RPC error: the run's `error` says it)."""

    reason = "GRAPH_FAULT"


class RecursionLimit(GraphFault):
    """A LangGraph graph ran more supersteps than its `recursion_limit` allows."""

    reason = "RECURSION_LIMIT"


class ResumeRefused(GraphFault):
    """A run's `command` resumes what its thread's checkpoint did not wait on when the run
    started (it was admitted behind another run, so admission could not check it): the run
    ends ERROR with the refusal's reason (NOTHING_TO_RESUME, UNKNOWN_INTERRUPT) as its type."""

    def __init__(self, refused: TurnstileError) -> None:
        super().__init__(f"when the run started: {refused.message}", metadata=refused.metadata)
        self.reason = refused.reason


class InvalidConfig(InvalidArgument):
    """A run's config has what LangGraph refuses (a `recursion_limit` below 1, `tags` that are
    no list of strings, `configurable` beside a `context`, ...)."""

    reason = "INVALID_CONFIG"


class NotFound(TurnstileError):
    """A resource does not exist."""

    reason = "NOT_FOUND"


class ThreadNotFound(NotFound):
    """The thread does not exist."""

    reason = "THREAD_NOT_FOUND"

    def __init__(self, thread_id: str) -> None:
        super().__init__(f"thread {thread_id} not found", metadata={"thread_id": thread_id})


class RunNotFound(NotFound):
    """The run does not exist on that thread (or was rolled back)."""

    reason = "RUN_NOT_FOUND"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} not found", metadata={"run_id": run_id})


class AssistantNotFound(NotFound):
    """The assistant does not exist and is no graph id."""

    reason = "ASSISTANT_NOT_FOUND"

    def __init__(self, assistant_id: str) -> None:
        super().__init__(
            f"assistant {assistant_id} not found", metadata={"assistant_id": assistant_id}
        )


class CheckpointNotFound(NotFound):
    """The thread has no checkpoint with that id."""

    reason = "CHECKPOINT_NOT_FOUND"

    def __init__(self, thread_id: str, checkpoint_id: str) -> None:
        super().__init__(
            f"thread {thread_id} has no checkpoint {checkpoint_id}",
            metadata={"thread_id": thread_id, "checkpoint_id": checkpoint_id},
        )


class AlreadyExists(TurnstileError):
    """A create named an id that is taken."""

    reason = "ALREADY_EXISTS"


class ThreadBusy(TurnstileError):
    """A `reject` run met inflight runs on its thread."""

    reason = "THREAD_BUSY"

    def __init__(self, thread_id: str, inflight: list[str]) -> None:
        super().__init__(
            f"thread {thread_id} has inflight runs: {', '.join(inflight)}",
            metadata={"thread_id": thread_id, "inflight_run_ids": ",".join(inflight)},
        )
        self.inflight = inflight


class FailedPrecondition(TurnstileError):
    """The resource is not in a state that allows the operation."""

    reason = "FAILED_PRECONDITION"


class RunNotActive(FailedPrecondition):
    """Cancelling a run that has already ended."""

    reason = "RUN_NOT_ACTIVE"

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(
            f"run {run_id} is {status}, not pending or running",
            metadata={"run_id": run_id, "status": status},
        )


class RunActive(FailedPrecondition):
    """Deleting a run that is still pending or running."""

    reason = "RUN_ACTIVE"

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(
            f"run {run_id} is {status}; cancel it before deleting it",
            metadata={"run_id": run_id, "status": status},
        )


class AssistantInUse(FailedPrecondition):
    """Deleting a graph's built-in assistant."""

    reason = "BUILTIN_ASSISTANT"


class UnsupportedByGraph(FailedPrecondition):
    """The request needs what the graph's runtime does not do: human in the loop and time
    travel (`command`, `interrupt_before`, `checkpoint_id`, UpdateThreadState) need LangGraph."""

    reason = "UNSUPPORTED_BY_GRAPH"

    def __init__(self, message: str, *, graph_id: str, runtime: str, field: str) -> None:
        super().__init__(
            message, metadata={"graph_id": graph_id, "runtime": runtime, "field": field}
        )


class NothingToResume(FailedPrecondition):
    """A `command` resumes a thread that waits for no input."""

    reason = "NOTHING_TO_RESUME"

    def __init__(self, thread_id: str) -> None:
        super().__init__(
            f"thread {thread_id} waits for no input: there is no interrupt to resume",
            metadata={"thread_id": thread_id},
        )


class UnknownInterrupt(FailedPrecondition):
    """A `command` resumes interrupts by id, and the thread waits on none of some of them."""

    reason = "UNKNOWN_INTERRUPT"

    def __init__(self, thread_id: str, unknown: list[str], pending: list[str]) -> None:
        super().__init__(
            f"thread {thread_id} waits on no interrupt {', '.join(unknown)}; pending:"
            f" {', '.join(pending) or 'none'}",
            metadata={
                "thread_id": thread_id,
                "interrupt_ids": ",".join(unknown),
                "pending_interrupt_ids": ",".join(pending),
            },
        )


class AwaitingInput(FailedPrecondition):
    """New input on a thread that waits for a human's answer, with `on_pending_interrupt`
    `reject`: answer it with a `command` instead."""

    reason = "AWAITING_INPUT"

    def __init__(self, thread_id: str, pending: list[str]) -> None:
        super().__init__(
            f"thread {thread_id} waits for input (interrupts: {', '.join(pending) or 'none'});"
            " resume it with a command, or send on_pending_interrupt DISCARD to start over",
            metadata={"thread_id": thread_id, "pending_interrupt_ids": ",".join(pending)},
        )


class ThreadHasNoGraph(FailedPrecondition):
    """UpdateThreadState on a thread no run has executed a graph on: there are no reducers."""

    reason = "THREAD_HAS_NO_GRAPH"

    def __init__(self, thread_id: str) -> None:
        super().__init__(
            f"thread {thread_id} has had no run, so no graph to update its state through;"
            " run a LangGraph graph on it first",
            metadata={"thread_id": thread_id},
        )


class GraphUnavailable(FailedPrecondition):
    """A LangGraph thread's state is read or updated through its graph, and the graph's
    factory failed (it raised, or returned no graph): not until the factory works."""

    reason = "GRAPH_UNAVAILABLE"

    def __init__(self, graph_id: str, cause: BaseException) -> None:
        super().__init__(
            f"graph {graph_id!r} is unavailable: its factory failed"
            f" ({type(cause).__name__}: {cause}); the thread's state is read through it",
            metadata={"graph_id": graph_id, "error_type": type(cause).__name__},
        )


class ResourceExhausted(TurnstileError):
    """A limit was reached: queue length, payload size."""

    reason = "RESOURCE_EXHAUSTED"


class RequestIdReused(FailedPrecondition):
    """A `request_id` already created something, with different parameters (Stripe's rule:
    one key, one request)."""

    reason = "REQUEST_ID_REUSED"

    def __init__(self, what: str, request_id: str, field: str) -> None:
        super().__init__(
            f"request_id {request_id!r} already created a {what} with another {field}; use a new"
            " request_id for a new request",
            metadata={"request_id": request_id, "field": field},
        )


class RequestIdRolledBack(FailedPrecondition):
    """A `request_id` admitted a run that was rolled back since: retrying it admits nothing."""

    reason = "REQUEST_ID_ROLLED_BACK"

    def __init__(self, request_id: str, thread_id: str, run_id: str) -> None:
        super().__init__(
            f"request_id {request_id!r} admitted run {run_id}, which was rolled back; use a"
            " new request_id to run again",
            metadata={"request_id": request_id, "thread_id": thread_id, "run_id": run_id},
        )


class QueueFull(ResourceExhausted):
    """A thread has as many queued runs as allowed; an `enqueue` run is refused."""

    reason = "QUEUE_FULL"

    def __init__(self, thread_id: str, limit: int) -> None:
        super().__init__(
            f"thread {thread_id} has {limit} queued runs, the most allowed; retry once some ran",
            metadata={"thread_id": thread_id, "max_queued": str(limit)},
        )


class StateTooLarge(ResourceExhausted):
    """A thread's state would grow past `--max-state-bytes` (a graph's update, or
    UpdateThreadState's), or a read finds one stored larger than an answer may carry."""

    reason = "STATE_TOO_LARGE"

    def __init__(
        self,
        size: int,
        limit: int,
        thread_id: str = "",
        *,
        what: str = "",
        setting: str = "--max-state-bytes",
    ) -> None:
        what = what or f"the update would make the thread's state {size} bytes"
        super().__init__(
            f"{what}, over the limit of {limit} bytes ({setting})",
            metadata={
                key: value
                for key, value in (
                    ("thread_id", thread_id),
                    ("size", str(size)),
                    ("limit", str(limit)),
                )
                if value
            },
        )
        self.size = size
        self.limit = limit


class SubscriberTooSlow(ResourceExhausted):
    """A stream's subscriber fell too far behind; it can resume from its last `seq`."""

    reason = "SUBSCRIBER_TOO_SLOW"


class Unavailable(TurnstileError):
    """The server is shutting down and takes no new work."""

    reason = "SHUTTING_DOWN"


class GraphServedElsewhere(Unavailable):
    """The run's graph is not served by this replica but by others on its database (a
    rolling upgrade that adds the graph is under way): retry, on a replica that serves it."""

    reason = "GRAPH_NOT_SERVED_HERE"

    def __init__(self, graph_id: str, replicas: list[str]) -> None:
        names = ", ".join(replicas)
        super().__init__(
            f"graph '{graph_id}' is not served by this replica, only by {names}"
            " (a rolling upgrade?): retry, on a replica that serves it",
            metadata={"graph_id": graph_id, "replicas": names},
        )


class EventsUnavailable(Unavailable):
    """The events of a run executing on another replica cannot be read: Redis, which relays
    them, does not answer. The run itself goes on; retry the stream later."""

    reason = "EVENTS_UNAVAILABLE"


class OutOfRange(TurnstileError):
    """Asking a stream for events that are no longer retained."""

    reason = "STREAM_EXPIRED"


class StoreUnavailable(Unavailable):
    """The database cannot serve the request now: it stayed locked, or it failed (I/O)."""

    reason = "STORE_UNAVAILABLE"


class Unauthenticated(TurnstileError):
    """The call carries no API key, or one the server does not accept."""

    reason = "API_KEY_INVALID"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
