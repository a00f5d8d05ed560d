"""Scripted gRPC calls for SDK stream tests: a fake transport whose calls deliver given
messages and errors, and builders of stream messages."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, cast

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
import pytest
from google.protobuf import any_pb2, struct_pb2
from google.protobuf.message import Message
from google.rpc import (  # type: ignore[import-untyped, unused-ignore]
    error_details_pb2,
    status_pb2,
)

import turnstile
from turnstile import _stream
from turnstile._errors import STATUS_DETAILS_KEY
from turnstile._runs import RunsClient
from turnstile._threads import ThreadsClient
from turnstile._transport import Stubs, Transport
from turnstile.v1 import run_pb2, run_service_pb2

THREAD = "t1"
RUN = "r1"

Script = Sequence[Message | BaseException]
"""What one call delivers: messages in order, an exception to fail, or the end to complete."""


# --- scripted calls --------------------------------------------------------------------------


def rpc_error(code: grpc.StatusCode, reason: str = "") -> grpc.aio.AioRpcError:
    """The error a failed call raises, with a `google.rpc.Status` trailer naming `reason`."""
    details = []
    if reason:
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="turnstile.v1"))
        details.append(packed)
    status = status_pb2.Status(code=code.value[0], message=reason.lower(), details=details)
    trailers = grpc.aio.Metadata((STATUS_DETAILS_KEY, status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, reason.lower())


def unavailable() -> grpc.aio.AioRpcError:
    return rpc_error(grpc.StatusCode.UNAVAILABLE)


class FakeCall:
    """A server-streaming call that plays a script."""

    def __init__(self, script: Script) -> None:
        self._script = script
        self.cancelled = False

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._play()

    async def _play(self) -> AsyncIterator[Message]:
        for item in self._script:
            await asyncio.sleep(0)
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class FakeMethod:
    """A stub method answering each call with the next script; records requests and calls."""

    def __init__(self, *scripts: Script) -> None:
        self._scripts = deque(scripts)
        self.requests: list[Any] = []
        self.calls: list[FakeCall] = []

    def __call__(self, request: Message, *, timeout: float | None, metadata: Any) -> FakeCall:
        self.requests.append(request)
        assert self._scripts, f"unexpected call #{len(self.requests)}: {request}"
        call = FakeCall(self._scripts.popleft())
        self.calls.append(call)
        return call


class FakeTransport(Transport):
    """A `Transport` whose stubs are scripted methods instead of a channel."""

    def __init__(self) -> None:
        super().__init__("fake:0", api_key=None, timeout=None)
        self.stream_run = FakeMethod()
        self.join_run_stream = FakeMethod()
        self.watch_thread = FakeMethod()

    def stubs(self) -> Stubs:
        return Stubs(
            assistants=cast(Any, None),
            threads=cast(Any, _Namespace(WatchThread=self.watch_thread)),
            runs=cast(
                Any, _Namespace(StreamRun=self.stream_run, JoinRunStream=self.join_run_stream)
            ),
        )


class _Namespace:
    def __init__(self, **methods: FakeMethod) -> None:
        self.__dict__.update(methods)


# --- messages ---------------------------------------------------------------------------------


def run_events(events: Sequence[tuple[int, str]]) -> list[run_pb2.RunEvent]:
    """RunEvents of kind and seq as given; each one's data is its seq."""
    return [
        run_pb2.RunEvent(seq=seq, run_id=RUN, event=kind, data=struct_pb2.Value(number_value=seq))
        for seq, kind in events
    ]


def the_run(status: run_pb2.RunStatus.ValueType = run_pb2.RUN_STATUS_RUNNING) -> run_pb2.Run:
    return run_pb2.Run(run_id=RUN, thread_id=THREAD, status=status)


def run_message(
    *, run: bool = False, events: Sequence[tuple[int, str]] = ()
) -> run_service_pb2.StreamRunResponse:
    """A StreamRun message; the first one of a call carries the run (`run`)."""
    return run_service_pb2.StreamRunResponse(
        events=run_events(events), run=the_run() if run else None
    )


def join_message(
    *,
    run: bool = False,
    events: Sequence[tuple[int, str]] = (),
    status: run_pb2.RunStatus.ValueType = run_pb2.RUN_STATUS_RUNNING,
) -> run_service_pb2.JoinRunStreamResponse:
    """A JoinRunStream message; the first one of a call carries the run (`run`, in `status`)."""
    return run_service_pb2.JoinRunStreamResponse(
        events=run_events(events), run=the_run(status) if run else None
    )


def values(*seqs: int) -> list[tuple[int, str]]:
    return [(seq, "values") for seq in seqs]


async def collect(stream: AsyncIterator[turnstile.StreamPart]) -> list[turnstile.StreamPart]:
    return [part async for part in stream]


# --- fixtures (imported by the test modules that use them) ----------------------------------


@pytest.fixture
def transport() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
def runs(transport: FakeTransport) -> RunsClient:
    return RunsClient(transport)


@pytest.fixture
def threads(transport: FakeTransport) -> ThreadsClient:
    return ThreadsClient(transport)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Records the stream's backoff pauses instead of waiting them out."""
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0)

    monkeypatch.setattr(_stream, "_sleep", sleep)
    yield pauses
