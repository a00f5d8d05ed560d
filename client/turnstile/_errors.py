"""The SDK's exceptions: one class per gRPC status code, parsed from `google.rpc.ErrorInfo`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import DecodeError
from google.rpc import (  # type: ignore[import-untyped, unused-ignore]
    error_details_pb2,
    status_pb2,
)

STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""The trailing metadata key carrying a serialized `google.rpc.Status`."""


class TurnstileError(Exception):
    """A call failed; `code` is the gRPC status code, `reason` the server's stable reason.

    `reason`, `domain` and `metadata` come from the `google.rpc.ErrorInfo` the server attaches
    (`""`, `""` and `{}` when there is none). Catch a subclass to handle one code.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        name = getattr(self.code, "name", str(self.code))
        detail = f"{name} {self.reason}" if self.reason else name
        return f"{self.message} [{detail}]" if self.message else f"[{detail}]"


class RequestCancelledError(TurnstileError):
    """The call was cancelled (`CANCELLED`), typically by the caller."""

    code = grpc.StatusCode.CANCELLED


class UnknownError(TurnstileError):
    """The server or the transport gave no better code (`UNKNOWN`)."""

    code = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(TurnstileError):
    """The request is malformed: a bad id, bad JSON, an unknown graph (`INVALID_ARGUMENT`)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(TurnstileError):
    """The call's deadline passed before it completed (`DEADLINE_EXCEEDED`)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(TurnstileError):
    """The thread, run or assistant does not exist (`NOT_FOUND`)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(TurnstileError):
    """A create named an id that is taken (`ALREADY_EXISTS`)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(TurnstileError):
    """The caller may not do this (`PERMISSION_DENIED`)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(TurnstileError):
    """A queue is full or a message too large (`RESOURCE_EXHAUSTED`)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(TurnstileError):
    """The resource is in the wrong state, e.g. `RUN_NOT_ACTIVE` (`FAILED_PRECONDITION`)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ConflictError(TurnstileError):
    """The call conflicts with concurrent work, e.g. `THREAD_BUSY` on reject (`ABORTED`).

    For `THREAD_BUSY`, `metadata` names the thread's inflight runs.
    """

    code = grpc.StatusCode.ABORTED


class OutOfRangeError(TurnstileError):
    """A value is outside its valid range (`OUT_OF_RANGE`)."""

    code = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(TurnstileError):
    """The server does not implement this method (`UNIMPLEMENTED`)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(TurnstileError):
    """The server failed unexpectedly (`INTERNAL`)."""

    code = grpc.StatusCode.INTERNAL


class UnavailableError(TurnstileError):
    """The server cannot be reached or is shutting down (`UNAVAILABLE`)."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLossError(TurnstileError):
    """Unrecoverable data loss (`DATA_LOSS`)."""

    code = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(TurnstileError):
    """The call lacks valid credentials (`UNAUTHENTICATED`)."""

    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[Any, type[TurnstileError]] = {
    cls.code: cls
    for cls in (
        RequestCancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        ConflictError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
    )
}


def error_from_status(
    code: grpc.StatusCode,
    message: str,
    trailing_metadata: Iterable[tuple[str, str | bytes]] | None,
) -> TurnstileError:
    """Builds the exception for a failed call from its code, message and trailing metadata.

    The `grpc-status-details-bin` trailer, when present, holds a `google.rpc.Status` whose
    first `ErrorInfo` detail gives `reason`, `domain` and `metadata`.
    """
    status = _rich_status(trailing_metadata)
    info = _error_info(status) if status is not None else None
    if not message and status is not None:
        message = status.message
    cls = _BY_CODE.get(code, UnknownError)
    if info is None:
        return cls(message, code=code)
    return cls(
        message, code=code, reason=info.reason, domain=info.domain, metadata=dict(info.metadata)
    )


def error_from_rpc_error(error: grpc.RpcError) -> TurnstileError:
    """Builds the exception for a `grpc.RpcError` raised by a call (sync or asyncio)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    return error_from_status(code, message or "", trailers)


def _rich_status(
    trailing_metadata: Iterable[tuple[str, str | bytes]] | None,
) -> status_pb2.Status | None:
    for key, value in trailing_metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


def _error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None
