"""Helpers for the event log tests: encoders, decoders, subscribers, run records."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format

from turnstile.v1 import run_service_pb2, thread_service_pb2
from turnstile_server.api import codec
from turnstile_server.event_log import EventLog, StreamLimits, follow
from turnstile_server.events import SEQ_EPOCH_BITS
from turnstile_server.store import RunRecord

WHAT = {"run_id": "r"}
EPOCH = 1 << SEQ_EPOCH_BITS
STEP = 5.0  # seconds a subscriber may take to react, so that a hang fails fast


def encoder(data: Any = None) -> Callable[[int], bytes]:
    """An encoder of one `custom` run event carrying `data` (default: its own seq)."""

    def encode(seq: int) -> bytes:
        payload = {"n": seq} if data is None else data
        return codec.frame(codec.run_event(seq, "r", "custom", payload))

    return encode


def seqs(frames: list[bytes]) -> list[int]:
    """The seqs of encoded run events."""
    return [
        e.seq for e in run_service_pb2.JoinRunStreamResponse.FromString(b"".join(frames)).events
    ]


def thread_seqs(frames: list[bytes]) -> list[int]:
    """The seqs of encoded thread events."""
    return [e.seq for e in thread_events(frames)]


def filled(count: int, limits: StreamLimits | None = None, **kwargs: Any) -> EventLog:
    log = EventLog("run r", limits or StreamLimits(), **kwargs)
    for _ in range(count):
        log.append(encoder())
    return log


class Subscriber:
    """Follows a log in a task, collecting seqs, so a test can act between its batches."""

    def __init__(
        self,
        log: EventLog,
        after_seq: int,
        limits: StreamLimits,
        decode: Callable[[list[bytes]], list[int]] = seqs,
    ) -> None:
        self.seqs: list[int] = []
        self._decode = decode
        self._batch = asyncio.Event()
        self._task = asyncio.create_task(self._run(log, after_seq, limits))

    async def _run(self, log: EventLog, after_seq: int, limits: StreamLimits) -> None:
        async for frames in follow(log, after_seq, limits, what=WHAT):
            self.seqs.extend(self._decode(frames))
            self._batch.set()

    async def has(self, last: int) -> None:
        """Waits until the subscriber has received seq `last`."""
        async with asyncio.timeout(STEP):
            while not self.seqs or self.seqs[-1] < last:
                self._batch.clear()
                await self._batch.wait()

    async def idle(self) -> None:
        """Lets the subscriber run until it waits for the log to change."""
        for _ in range(5):
            await asyncio.sleep(0)

    async def result(self) -> list[int]:
        async with asyncio.timeout(STEP):
            await self._task
        return self.seqs

    def cancel(self) -> None:
        self._task.cancel()


async def collect(log: EventLog, after_seq: int, limits: StreamLimits | None = None) -> list[int]:
    out: list[int] = []
    async with asyncio.timeout(STEP):
        async for frames in follow(log, after_seq, limits or log.limits, what=WHAT):
            out.extend(seqs(frames))
    return out


def run_record(
    run_id: str = "r", thread_id: str = "t", *, attempt: int = 1, status: str = "running"
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        thread_id=thread_id,
        assistant_id="a",
        graph_id="g",
        status=status,
        multitask_strategy="enqueue",
        input=None,
        config={},
        metadata={},
        stream_mode=["values"],
        create_time=0,
        start_time=None,
        end_time=None,
        not_before=0,
        attempt=attempt,
        error=None,
        cancel_action=None,
        cancel_reason="",
        superseded_by="",
        seq=1,
    )


def run_events(log: EventLog, after_seq: int | None = None) -> list[tuple[int, str, Any]]:
    """The (seq, event, data) of a run log's retained events."""
    start = log.first_seq - 1 if after_seq is None else after_seq
    frames = log.read(start, len(log), log.nbytes)
    response = run_service_pb2.JoinRunStreamResponse.FromString(b"".join(frames))
    return [(e.seq, e.event, json_format.MessageToDict(e.data)) for e in response.events]


def thread_events(frames: list[bytes]) -> list[thread_service_pb2.ThreadEvent]:
    return list(thread_service_pb2.WatchThreadResponse.FromString(b"".join(frames)).events)


def kinds(events: list[thread_service_pb2.ThreadEvent]) -> list[str]:
    out = []
    for event in events:
        kind = event.WhichOneof("kind")
        assert kind is not None
        out.append(f"run_event:{event.run_event.event}" if kind == "run_event" else kind)
    return out
