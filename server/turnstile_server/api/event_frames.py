"""The event hub's encoder: run and thread events framed as the stream responses carry them."""

from __future__ import annotations

from typing import Any

from turnstile_server.api import codec, json_values
from turnstile_server.api.run_messages import run_message
from turnstile_server.store import RunRecord


class EventFrames:
    """`events.EventEncoder` in protobuf: `RunEvent`s and `ThreadEvent`s, each framed as an
    element of a stream response's `events`."""

    def run_event(self, seq: int, run_id: str, event: str, data: Any, *, state: bool) -> bytes:
        """A framed `RunEvent`; a thread state's (a `values` event) keeps what it was made of,
        for the callers that ask for its data as JSON text (`as_json`)."""
        framed = codec.frame(codec.run_event(seq, run_id, event, data, state=state))
        return StateFrame(framed, (seq, run_id, event, data)) if state else framed

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
            run_started=None if run_started is None else run_message(run_started),
            run_event=None if run_event is None else codec.unframe(run_event),
            run_ended=None if run_ended is None else run_message(run_ended),
        )

    def relayed_thread_event(self, seq: int, framed: bytes) -> bytes:
        """A framed `ThreadEvent` without seq (from another replica's `thread_event(0, ...)`),
        numbered `seq`: protobuf takes fields in any order, so seq (field 1) goes first."""
        return codec.frame(b"\x08" + codec.varint(seq) + codec.unframe(framed))


class StateFrame(bytes):
    """A framed `values` event, and the event it was made of: the log keeps it as bytes."""

    event: tuple[int, str, str, Any]  # seq, run id, event name, data

    def __new__(cls, framed: bytes, event: tuple[int, str, str, Any]) -> StateFrame:
        frame = super().__new__(cls, framed)
        frame.event = event
        return frame


def as_json(frame: bytes) -> bytes:
    """The frame with its event's data as JSON text (`data_json`), if it is a state's."""
    if not isinstance(frame, StateFrame):
        return frame
    seq, run_id, event, data = frame.event
    return codec.frame(json_values.run_event(seq, run_id, event, data))
