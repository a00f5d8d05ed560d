"""The event hub's encoder: run and thread events framed as the stream responses carry them."""

from __future__ import annotations

from typing import Any

from turnstile_server.api import codec, wire
from turnstile_server.store import RunRecord


class EventFrames:
    """`events.EventEncoder` in protobuf: `RunEvent`s and `ThreadEvent`s, each framed as an
    element of a stream response's `events`."""

    def run_event(self, seq: int, run_id: str, event: str, data: Any, *, state: bool) -> bytes:
        """A framed `RunEvent`."""
        return codec.frame(codec.run_event(seq, run_id, event, data, state=state))

    def thread_event(
        self,
        seq: int,
        *,
        run_started: RunRecord | None = None,
        run_event: bytes | None = None,
        run_ended: RunRecord | None = None,
    ) -> bytes:
        """A framed `ThreadEvent`; `run_event` is a frame `run_event` returned, embedded
        without decoding."""
        return codec.thread_event_frame(
            seq,
            run_started=None if run_started is None else wire.run_message(run_started),
            run_event=None if run_event is None else codec.unframe(run_event),
            run_ended=None if run_ended is None else wire.run_message(run_ended),
        )
