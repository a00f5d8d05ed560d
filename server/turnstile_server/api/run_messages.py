"""A run record as its `Run` message: the run's own fields, then its options (`run_options`)."""

from __future__ import annotations

from turnstile.v1 import run_pb2
from turnstile_server.api import run_options, wire
from turnstile_server.store import RunRecord


def run_message(run: RunRecord) -> run_pb2.Run:
    """Converts a run record to its wire form."""
    message = run_pb2.Run(
        run_id=run.run_id,
        thread_id=run.thread_id,
        assistant_id=run.assistant_id,
        status=wire.RUN_STATUS_ENUM[run.status],
        multitask_strategy=wire.STRATEGY_ENUM[run.multitask_strategy],
        metadata=wire.to_struct(run.metadata),
        create_time=wire.timestamp(run.create_time),
        start_time=wire.timestamp(run.start_time),
        end_time=wire.timestamp(run.end_time),
        attempt=run.attempt,
        cancel_reason=run.cancel_reason,
        superseded_by=run.superseded_by,
    )
    if run.error is not None:
        message.error.type = run.error.type
        message.error.message = run.error.message
    if run.status == "pending" and run.queue_position is not None:
        message.queue_position = run.queue_position
    run_options.show(run, message)
    message.discarded_interrupts.extend(run.discarded_interrupts)
    return message
