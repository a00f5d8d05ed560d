"""Request ids: a retried create gets the first result, but only if it asks for the same thing.

The store returns whatever a `request_id` first created; these checks refuse a request id
reused for a different request (Stripe's rule), instead of silently answering with a run on
another thread, say.
"""

from __future__ import annotations

from typing import Any

from turnstile_server.errors import FailedPrecondition
from turnstile_server.store import RunRecord, RunSpec, ThreadRecord


class RequestIdReused(FailedPrecondition):
    """A `request_id` already created something, with different parameters."""

    reason = "REQUEST_ID_REUSED"

    def __init__(self, what: str, request_id: str, field: str) -> None:
        super().__init__(
            f"request_id {request_id!r} already created a {what} with another {field}; use a new"
            " request_id for a new request",
            metadata={"request_id": request_id, "field": field},
        )


def check_run(spec: RunSpec, run: RunRecord) -> None:
    """Refuses `run`, admitted for `spec.request_id`, if `spec` asked for something else."""
    if not spec.request_id:
        return
    asked_and_got: list[tuple[str, Any, Any]] = [
        ("thread_id", spec.thread_id, run.thread_id),
        ("assistant_id", spec.assistant_id, run.assistant_id),
        ("multitask_strategy", spec.multitask_strategy, run.multitask_strategy),
        ("input", _without_message_ids(spec.input), _without_message_ids(run.input)),
        ("metadata", spec.metadata, run.metadata),
        ("config", spec.config, run.config),
        ("stream_mode", spec.stream_mode, run.stream_mode),
        ("timeout_seconds", spec.timeout_seconds, run.timeout_seconds),
    ]
    for field, asked, got in asked_and_got:
        if asked != got:
            raise RequestIdReused("run", spec.request_id, field)


def check_thread(request_id: str, thread_id: str, thread: ThreadRecord) -> None:
    """Refuses `thread`, created for `request_id`, if the request named another thread.

    Metadata is not compared: `UpdateThread` may have changed it since.
    """
    if request_id and thread_id and thread_id != thread.thread_id:
        raise RequestIdReused("thread", request_id, "thread_id")


def _without_message_ids(values: dict[str, Any] | None) -> Any:
    """The input with its messages' ids left out: the server makes up the ids not given."""
    if values is None or not isinstance(values.get("messages"), list):
        return values
    messages = [{k: v for k, v in m.items() if k != "id"} for m in values["messages"]]
    return {**values, "messages": messages}
