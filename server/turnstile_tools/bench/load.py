"""The load generator's side: raw channels and stubs, request builders, and statistics."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf import struct_pb2

from turnstile.v1 import (
    run_pb2,
    run_service_pb2,
    run_service_pb2_grpc,
    thread_service_pb2,
    thread_service_pb2_grpc,
)

CALL_SECONDS = 120.0
"""The deadline of every call the bench makes; a run that takes longer is an error."""

_CHANNEL_OPTIONS = [
    # One connection per channel: by default channels to one target share a subchannel.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]

ENQUEUE = run_pb2.MULTITASK_STRATEGY_ENQUEUE
INTERRUPT = run_pb2.MULTITASK_STRATEGY_INTERRUPT
SUCCESS = run_pb2.RUN_STATUS_SUCCESS
PENDING = run_pb2.RUN_STATUS_PENDING
INTERRUPTED = run_pb2.RUN_STATUS_INTERRUPTED
UPDATES = run_pb2.STREAM_MODE_UPDATES


@dataclass(frozen=True)
class Stubs:
    """The Turnstile services on one channel."""

    runs: run_service_pb2_grpc.RunServiceAsyncStub
    threads: thread_service_pb2_grpc.ThreadServiceAsyncStub


class Channels:
    """A few channels to one server (each its own connection); calls spread over them."""

    def __init__(self, address: str, count: int) -> None:
        self._channels = [
            grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) for _ in range(count)
        ]
        self._stubs = [
            Stubs(
                runs=cast(
                    "run_service_pb2_grpc.RunServiceAsyncStub",
                    run_service_pb2_grpc.RunServiceStub(channel),
                ),
                threads=cast(
                    "thread_service_pb2_grpc.ThreadServiceAsyncStub",
                    thread_service_pb2_grpc.ThreadServiceStub(channel),
                ),
            )
            for channel in self._channels
        ]

    @property
    def raw(self) -> list[Any]:
        """The `grpc.aio` channels themselves (for the echo server's generic methods)."""
        return list(self._channels)

    def stubs(self, index: int) -> Stubs:
        """The stubs of channel `index` (modulo the number of channels)."""
        return self._stubs[index % len(self._stubs)]

    async def ready(self) -> None:
        """Waits until every channel is connected."""
        for channel in self._channels:
            await channel.channel_ready()

    async def close(self) -> None:
        """Closes every channel."""
        for channel in self._channels:
            await channel.close()


def struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    """Encodes a JSON object as a `google.protobuf.Struct`."""
    message = struct_pb2.Struct()
    message.update(value)
    return message


def human(text: str) -> dict[str, Any]:
    """A run input carrying one user message."""
    return {"messages": [{"role": "user", "content": text}]}


def wait_request(
    thread_id: str, assistant_id: str, input: Mapping[str, Any], **fields: Any
) -> run_service_pb2.WaitRunRequest:
    """A `WaitRun` request."""
    return run_service_pb2.WaitRunRequest(
        thread_id=thread_id, assistant_id=assistant_id, input=struct(input), **fields
    )


def create_request(
    thread_id: str, assistant_id: str, input: Mapping[str, Any], **fields: Any
) -> run_service_pb2.CreateRunRequest:
    """A `CreateRun` request."""
    return run_service_pb2.CreateRunRequest(
        thread_id=thread_id, assistant_id=assistant_id, input=struct(input), **fields
    )


async def new_thread(stubs: Stubs) -> str:
    """Creates a thread and returns its id."""
    response = await stubs.threads.CreateThread(
        thread_service_pb2.CreateThreadRequest(), timeout=CALL_SECONDS
    )
    return str(response.thread.thread_id)


def check_run(run: run_pb2.Run, expected: run_pb2.RunStatus.ValueType = SUCCESS) -> None:
    """Raises RuntimeError unless the run ended as expected."""
    if run.status != expected:
        raise RuntimeError(
            f"run {run.run_id} ended {run_pb2.RunStatus.Name(run.status)}, expected"
            f" {run_pb2.RunStatus.Name(expected)}: {run.error.type} {run.error.message}"
        )


def run_seconds(run: run_pb2.Run) -> float:
    """How long the server executed the run: `end_time - start_time`."""
    start = run.start_time.seconds + run.start_time.nanos / 1e9
    end = run.end_time.seconds + run.end_time.nanos / 1e9
    return end - start


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` 0.5 for the median, 0.99 for p99)."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Latency:
    """A latency distribution, in seconds."""

    p50: float
    p99: float
    samples: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Latency:
        """Summarises samples."""
        return cls(statistics.median(values), percentile(values, 0.99), len(values))
