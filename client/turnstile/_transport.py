"""The one place that talks gRPC: the channel, metadata, deadlines, retries, error mapping."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import Message
from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from turnstile._errors import DeadlineExceededError, UnavailableError, error_from_rpc_error
from turnstile.v1 import (
    assistant_service_pb2_grpc,
    run_service_pb2_grpc,
    thread_service_pb2_grpc,
)

logger = logging.getLogger(__name__)

_R = TypeVar("_R", bound=Message)

DEFAULT_TIMEOUT: Final = 30.0
"""Seconds allowed to unary reads and writes; waits, joins and streams have no deadline."""

MAX_ATTEMPTS: Final = 5
MAX_BACKOFF: Final = 2.0
_MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
_USER_AGENT: Final = "turnstile-python"
VALUES_AS_JSON: Final = ("turnstile-values-encoding", "json")
"""Metadata asking the server for values as JSON text (`values_json`) instead of a Struct."""


@dataclass(frozen=True)
class Stubs:
    """The generated stubs of the three services, bound to one channel."""

    assistants: assistant_service_pb2_grpc.AssistantServiceAsyncStub
    threads: thread_service_pb2_grpc.ThreadServiceAsyncStub
    runs: run_service_pb2_grpc.RunServiceAsyncStub


Method = Callable[[Stubs], Any]
"""Picks a method off the stubs, e.g. `lambda s: s.runs.GetRun`."""


def parse_url(url: str) -> tuple[str, bool]:
    """Splits `url` into a gRPC target and whether to use TLS.

    `https://host:port` uses TLS; `http://host:port`, `host:port` and gRPC target URIs such as
    `dns:///host:port` or `unix:/path` do not.
    """
    if url.startswith("https://"):
        return url.removeprefix("https://").rstrip("/"), True
    if url.startswith("http://"):
        return url.removeprefix("http://").rstrip("/"), False
    return url, False


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM bytes for TLS: the CA to trust (None: the system's) and, for mutual TLS, the
    client's certificate chain and key."""

    root_certificates: bytes | None = None
    client_certificate: bytes | None = None
    client_key: bytes | None = None


LOAD_BALANCING = ("round_robin", "pick_first")
"""The channel's load-balancing policies `get_client(load_balancing=...)` takes."""


class Transport:
    """Owns a `grpc.aio` channel, opened on first use in the event loop that uses it.

    Every call goes through `unary` or `stream`, which add the metadata and deadline and
    translate `grpc.RpcError` into `TurnstileError` subclasses.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None,
        timeout: float | None,
        tls: TlsFiles | None = None,
        load_balancing: str | None = None,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if load_balancing not in (None, *LOAD_BALANCING):
            raise ValueError(
                f"load_balancing must be one of {', '.join(LOAD_BALANCING)}, got {load_balancing!r}"
            )
        self._load_balancing = load_balancing
        if tls is not None and (tls.client_certificate is None) != (tls.client_key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        self._target, self._secure = parse_url(url)
        self._tls = tls
        self._secure = self._secure or tls is not None
        # Values as JSON text: decoded in C, many times faster than walking a `Struct`.
        # Built once: grpc.aio copies a tuple into a `Metadata` on every call (about 7 us).
        self._metadata: Any = grpc.aio.Metadata(
            VALUES_AS_JSON, *((("authorization", f"Bearer {api_key}"),) if api_key else ())
        )
        self._timeout = timeout
        self._channel: Any = None
        self._stubs: Stubs | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def target(self) -> str:
        """The gRPC target the channel connects to."""
        return self._target

    def stubs(self) -> Stubs:
        """Returns the stubs, opening the channel in the running loop on first use."""
        loop = asyncio.get_running_loop()
        if self._closed:
            raise RuntimeError("the Turnstile client is closed")
        if self._stubs is None:
            self._channel = self._open_channel()
            # The channel is untyped (grpc ships no stubs), so the overloads cannot pick the
            # asyncio stub types themselves.
            self._stubs = Stubs(
                assistants=cast(
                    "assistant_service_pb2_grpc.AssistantServiceAsyncStub",
                    assistant_service_pb2_grpc.AssistantServiceStub(self._channel),
                ),
                threads=cast(
                    "thread_service_pb2_grpc.ThreadServiceAsyncStub",
                    thread_service_pb2_grpc.ThreadServiceStub(self._channel),
                ),
                runs=cast(
                    "run_service_pb2_grpc.RunServiceAsyncStub",
                    run_service_pb2_grpc.RunServiceStub(self._channel),
                ),
            )
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(
                "the Turnstile client is bound to the event loop it was first used in; "
                "create one client per event loop"
            )
        return self._stubs

    def deadline(self, *, waits: bool) -> float | None:
        """Seconds a call may take: the client's `timeout`, else the default for its kind."""
        if self._timeout is not None:
            return self._timeout
        return None if waits else DEFAULT_TIMEOUT

    async def unary(
        self,
        method: Method,
        request: Message,
        response_type: type[_R],
        *,
        retry: bool,
        waits: bool = False,
    ) -> _R:
        """Makes a unary call; retries it on `UNAVAILABLE` when `retry` (idempotent calls).

        `UNAVAILABLE` may come after the server did the work (the response was lost), so
        `retry` is only for calls whose repetition is harmless: reads (`Get*`, `List*`,
        `GetThreadState`, `GetThreadHistory`, `JoinRun`) and creates with a `request_id`
        generated once per call (`CreateThread`, `CreateRun`, `WaitRun`; `RunStream` re-sends
        `StreamRun` with its id). Not retried: `CancelRun`, `DeleteRun`, `DeleteThread` and
        `DeleteAssistant`, whose repetition after a lost response answers `RUN_NOT_ACTIVE` or
        `NOT_FOUND` for a call that worked; `UpdateThread`, whose late repetition can overwrite
        a newer value of the same key; `CreateAssistant`, which has no request id.

        `waits` marks calls that last as long as a run (wait, join, cancel with wait): they
        have no default deadline.
        """
        timeout = self.deadline(waits=waits)
        if not retry:
            return await self._call(method, request, response_type, timeout)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        # The first attempt goes without tenacity, whose loop costs about 0.1 ms a call; on
        # UNAVAILABLE its error becomes tenacity's first attempt, so the retries are as before.
        failed: UnavailableError | None = None
        try:
            return await self._call(method, request, response_type, timeout)
        except UnavailableError as exc:
            failed = exc
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(UnavailableError),
            stop=stop_after_attempt(MAX_ATTEMPTS),
            wait=wait_exponential(multiplier=0.1, max=MAX_BACKOFF),
            before_sleep=before_sleep_log(logger, logging.DEBUG),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if failed is not None:
                    error, failed = failed, None
                    raise error
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise DeadlineExceededError("deadline exceeded while retrying")
                return await self._call(method, request, response_type, remaining)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def stream(
        self, method: Method, request: Message, response_type: type[_R]
    ) -> AsyncGenerator[_R, None]:
        """Makes a server-streaming call and yields its messages; never retried."""
        call = method(self.stubs())(
            request, timeout=self.deadline(waits=True), metadata=self._metadata
        )
        try:
            async for message in call:
                yield _checked(message, response_type)
        except grpc.RpcError as exc:
            raise error_from_rpc_error(exc) from exc
        finally:
            call.cancel()

    async def close(self) -> None:
        """Closes the channel, cancelling calls in flight; the client is unusable after."""
        self._closed = True
        channel, self._channel, self._stubs = self._channel, None, None
        if channel is not None:
            await channel.close()

    async def _call(
        self, method: Method, request: Message, response_type: type[_R], time_limit: float | None
    ) -> _R:
        try:
            response = await method(self.stubs())(
                request, timeout=time_limit, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise error_from_rpc_error(exc) from exc
        return _checked(response, response_type)

    def _open_channel(self) -> Any:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.primary_user_agent", _USER_AGENT),
        ]
        if self._load_balancing is not None:
            policy: dict[str, Any] = {"loadBalancingConfig": [{self._load_balancing: {}}]}
            options.append(("grpc.service_config", json.dumps(policy)))
        if self._secure:
            tls = self._tls or TlsFiles()
            credentials = grpc.ssl_channel_credentials(
                root_certificates=tls.root_certificates,
                private_key=tls.client_key,
                certificate_chain=tls.client_certificate,
            )
            return grpc.aio.secure_channel(self._target, credentials, options=options)
        return grpc.aio.insecure_channel(self._target, options=options)


def _checked(message: object, response_type: type[_R]) -> _R:
    if not isinstance(message, response_type):
        raise TypeError(f"expected {response_type.__name__}, got {type(message).__name__}")
    return message
