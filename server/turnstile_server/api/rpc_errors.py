"""The one translation point from domain errors to gRPC status codes with `ErrorInfo`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from turnstile_server import errors
from turnstile_server.state import MAX_JSON_DEPTH

log = logging.getLogger(__name__)

DOMAIN = "turnstile.v1"

# Most specific class first: the first match wins.
CODES: list[tuple[type[errors.TurnstileError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.ThreadBusy, grpc.StatusCode.ABORTED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
]


def code_of(exc: errors.TurnstileError) -> grpc.StatusCode:
    """Returns the status code of a domain error."""
    for cls, code in CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


# The status travels in trailers, twice (`grpc-message` and `grpc-status-details-bin`), and a
# client drops trailers over gRPC's 8 KiB default limit, reporting RESOURCE_EXHAUSTED without our
# ErrorInfo; so an error never echoes more than this of what a caller sent (a 1 MiB id, say).
MAX_MESSAGE_BYTES = 256
MAX_METADATA_BYTES = 4096  # all values together: room for THREAD_BUSY's 101 inflight run ids


def clip(text: str, limit: int) -> str:
    """`text`, cut to at most about `limit` UTF-8 bytes and marked with an ellipsis if cut."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: max(limit - 3, 0)].decode(errors="ignore") + "…"


def _clipped(metadata: Mapping[str, str]) -> dict[str, str]:
    left = MAX_METADATA_BYTES
    clipped: dict[str, str] = {}
    for key, value in metadata.items():
        clipped[key] = clip(value, left)
        left = max(left - len(clipped[key].encode()), 0)
    return clipped


def status_of(
    code: grpc.StatusCode, message: str, reason: str, metadata: Mapping[str, str]
) -> grpc.Status:
    """Builds a status whose details carry an `ErrorInfo`, within the trailers' size limit."""
    message = clip(message, MAX_MESSAGE_BYTES)
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=_clipped(metadata))
    detail = any_pb2.Any()
    detail.Pack(info)
    proto = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    status: grpc.Status = rpc_status.to_status(proto)
    return status


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    if isinstance(exc, errors.TurnstileError):
        status = status_of(code_of(exc), exc.message, exc.reason, exc.metadata)
    else:
        log.exception("unexpected error", exc_info=exc)
        status = status_of(grpc.StatusCode.INTERNAL, "internal error", "INTERNAL", {})
    await context.abort(status.code, status.details, status.trailing_metadata)


Unary = Callable[[Any, Any], Awaitable[Any]]
Streaming = Callable[[Any, Any], AsyncIterator[Any]]


class Refused:
    """A stand-in for a request the handler must refuse with `error`, produced by a request
    deserializer: for bytes that do not decode, or a call without an accepted API key.

    gRPC answers a deserializer's exception with UNKNOWN and the exception's text, before any
    handler runs; so the deserializer returns this instead, and the wrapped handler raises it.
    """

    def __init__(self, error: errors.TurnstileError) -> None:
        self.error = error


def lenient(
    deserializer: Callable[[bytes], Any] | None, method: str
) -> Callable[[bytes], Any] | None:
    """Wraps a request deserializer so undecodable bytes become a `Refused` with
    INVALID_ARGUMENT (None, for a handler that takes the raw bytes, stays None)."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Refused(
                errors.InvalidArgument(
                    f"the {method.rsplit('/', 1)[-1]} request is not a valid protobuf message"
                    f" ({exc}); JSON in it may nest at most {MAX_JSON_DEPTH} levels",
                    reason="MALFORMED_REQUEST",
                )
            )

    return deserialize


KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
"""The four kinds of gRPC method handler, as `RpcMethodHandler` names its behaviours."""


def rebuilt(
    handler: grpc.RpcMethodHandler,
    *,
    deserializer: Callable[[bytes], Any] | None,
    behavior: Callable[[str, Any], Any] = lambda kind, current: current,
    serializer: Callable[[Any], bytes] | None = None,
) -> grpc.RpcMethodHandler:
    """The handler, of the same kind, with another request deserializer, its behaviour
    replaced by `behavior(kind, current)` (unchanged by default) and, if given, another
    response serializer."""
    for kind in KINDS:
        current = getattr(handler, kind)
        if current is not None:
            factory = getattr(grpc, f"{kind}_rpc_method_handler")
            return factory(
                behavior(kind, current),
                request_deserializer=deserializer,
                response_serializer=serializer or handler.response_serializer,
            )
    return handler


M = TypeVar("M")


def encoded(message_type: type[M], body: bytes) -> M:
    """`body`, already the wire encoding of a `message_type`, for a handler to return (or
    yield) as it is: every registered handler's serializer passes bytes through (see
    `register`), so a response built as bytes is neither parsed nor encoded again. Typed as
    the message, which the generated servicer signatures expect."""
    return cast(M, body)


def _bytes_or(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def serializer(message: Any) -> bytes:
        return message if type(message) is bytes else serialize(message)

    return serializer


def _with_error_table(kind: str, behavior: Any) -> Any:
    """A unary-request behaviour wrapped by the error table (the only kinds it serves)."""
    if kind == "unary_unary":
        return wrap_unary(behavior)
    if kind == "unary_stream":
        return wrap_streaming(behavior)
    return behavior


def wrap_unary(behavior: Unary) -> Unary:
    """Wraps a unary handler so every exception becomes a proper status."""

    async def handler(request: Any, context: Any) -> Any:
        try:
            if isinstance(request, Refused):
                raise request.error
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc)

    return handler


def wrap_streaming(behavior: Streaming) -> Streaming:
    """Wraps a server-streaming handler so every exception becomes a proper status."""

    async def handler(request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            if isinstance(request, Refused):
                raise request.error
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc)

    return handler


def register(add: Callable[[Any, Any], None], servicer: Any, server: grpc.aio.Server) -> None:
    """Registers a servicer with its generated `add_..._to_server` function, every handler
    wrapped by the error table once, here, rather than per call by an interceptor, and
    answering bytes it returns (see `encoded`) as they are."""
    add(servicer, _Registration(server))


class _Registration:
    """Stands in for the server while generated code registers a servicer's handlers."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Ignored: the same handlers come again, by name, to the method below."""

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        wrapped = {
            name: rebuilt(
                handler,
                deserializer=lenient(handler.request_deserializer, f"/{service}/{name}"),
                behavior=_with_error_table,
                serializer=_bytes_or(handler.response_serializer),
            )
            for name, handler in handlers.items()
        }
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, wrapped),)
        )
        self._server.add_registered_method_handlers(service, wrapped)
