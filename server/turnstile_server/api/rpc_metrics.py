"""Times every RPC for the metrics, by full method name and status code.

The interceptor comes first in the server's list, so its wrapper is the outermost: it sees the
status the error table chose, and a streaming RPC is timed until its handler has finished.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from turnstile_server.api.rpc_errors import rebuilt
from turnstile_server.metrics import Metrics


def status_code(context: Any, error: BaseException | None) -> str:
    """The name of the status an RPC ended with, given what its handler raised."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    code = context.code()  # set by `abort` or `set_code`, else None
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if error is not None and not isinstance(error, grpc.aio.AbortError):
        return "UNKNOWN"  # what gRPC answers for an uncaught exception
    return "OK"


def timed(handler: grpc.RpcMethodHandler, method: str, metrics: Metrics) -> grpc.RpcMethodHandler:
    """The handler, reporting its duration and status to `metrics` when it ends; a behaviour
    that is not a coroutine or an async generator (run in a thread by gRPC) is left as is."""

    def record(context: Any, error: BaseException | None, started: float) -> None:
        metrics.rpc_finished(method, status_code(context, error), time.perf_counter() - started)

    def timing(kind: str, behavior: Any) -> Any:
        if inspect.isasyncgenfunction(behavior):
            return _timed_stream(behavior, record)
        if inspect.iscoroutinefunction(behavior):
            return _timed_call(behavior, record)
        return behavior

    return rebuilt(handler, deserializer=handler.request_deserializer, behavior=timing)


def _timed_call(
    behavior: Callable[[Any, Any], Awaitable[Any]],
    record: Callable[[Any, BaseException | None, float], None],
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handler(request: Any, context: Any) -> Any:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            record(context, error, started)

    return handler


def _timed_stream(
    behavior: Callable[[Any, Any], AsyncIterator[Any]],
    record: Callable[[Any, BaseException | None, float], None],
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def handler(request: Any, context: Any) -> AsyncIterator[Any]:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            async for response in behavior(request, context):
                yield response
        except BaseException as exc:
            error = exc
            raise
        finally:
            record(context, error, started)

    return handler


# grpc ships no type information, so its base class is Any to mypy; grpc.aio.server() requires
# a real ServerInterceptor instance, so the subclass must stay.
class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Times every RPC the server implements (unknown methods are not measured)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return timed(handler, handler_call_details.method, self._metrics)
