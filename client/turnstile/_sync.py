"""`SyncTurnstileClient`: the asyncio client driven from a private loop thread.

The sync API is not written twice: each sync method is the async one, run to completion on
the portal's loop, with the same name and signature.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from turnstile._assistants import AssistantsClient
from turnstile._client import DEFAULT_URL, TurnstileClient, get_client
from turnstile._portal import Portal, awaited
from turnstile._runs import RunsClient
from turnstile._stream import EventStream, RunStream, ThreadStream
from turnstile._threads import ThreadsClient
from turnstile._types import Run, StreamPart, Thread, ThreadStreamPart

_P = ParamSpec("_P")
_R = TypeVar("_R")
_A = TypeVar("_A")
_Part = TypeVar("_Part")
_Stream = TypeVar("_Stream", bound=EventStream[Any, Any])
_SyncStream = TypeVar("_SyncStream")


class _BlockingIterator(Generic[_Part]):
    """Iterates an `EventStream` on the portal's loop; `close()` or `with` cancels the call."""

    def __init__(self, stream: EventStream[Any, _Part], portal: Portal) -> None:
        self._stream = stream
        self._portal = portal

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> _Part:
        try:
            return self._portal.run(awaited(anext(self._stream)))
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        """Stops the stream and cancels its call."""
        self._portal.run(self._stream.aclose())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SyncRunStream(_BlockingIterator[StreamPart]):
    """Yields one `StreamPart` per event of a run; the blocking twin of `RunStream`.

    Break out early with `close()` or `with`, which cancels the call.
    """

    def __init__(self, stream: RunStream, portal: Portal) -> None:
        super().__init__(stream, portal)
        self._run_stream = stream

    @property
    def run(self) -> Run | None:
        """The `Run` sent with the stream's first message; `None` until it arrived."""
        return self._run_stream.run


class SyncThreadStream(_BlockingIterator[ThreadStreamPart]):
    """Yields one `ThreadStreamPart` per event of a thread; the blocking twin of `ThreadStream`.

    It never ends by itself: stop with `close()` or `with`, which cancels the call.
    """

    def __init__(self, stream: ThreadStream, portal: Portal) -> None:
        super().__init__(stream, portal)
        self._thread_stream = stream

    @property
    def thread(self) -> Thread | None:
        """The `Thread` sent with the watch's first message; `None` until it arrived."""
        return self._thread_stream.thread


class _SyncResource(Generic[_A]):
    def __init__(self, resource: _A, portal: Portal) -> None:
        self._async = resource
        self._portal = portal


def _without_self(function: Callable[..., Any]) -> inspect.Signature:
    signature = inspect.signature(function)
    return signature.replace(parameters=list(signature.parameters.values())[1:])


class _Blocking(Generic[_P, _R]):
    """Turns an async method of a resource client into a blocking one of the sync twin."""

    def __init__(self, method: Callable[Concatenate[Any, _P], Coroutine[Any, Any, _R]]) -> None:
        self._method = method
        self._signature = _without_self(method)

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _Blocking[_P, _R]: ...
    @overload
    def __get__(self, obj: _SyncResource[Any], owner: type[Any]) -> Callable[_P, _R]: ...
    def __get__(
        self, obj: _SyncResource[Any] | None, owner: type[Any]
    ) -> _Blocking[_P, _R] | Callable[_P, _R]:
        if obj is None:
            return self
        method = self._method

        def blocking(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            return obj._portal.run(method(obj._async, *args, **kwargs))

        functools.update_wrapper(blocking, method)
        blocking.__signature__ = self._signature  # type: ignore[attr-defined]
        return blocking


class _BlockingStream(Generic[_P, _Stream, _SyncStream]):
    """Turns a stream method of a resource client into one returning its blocking twin."""

    def __init__(
        self,
        method: Callable[Concatenate[Any, _P], _Stream],
        wrap: Callable[[_Stream, Portal], _SyncStream],
    ) -> None:
        self._method = method
        self._wrap = wrap
        self._signature = _without_self(method).replace(return_annotation=wrap.__name__)

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _BlockingStream[_P, _Stream, _SyncStream]: ...
    @overload
    def __get__(self, obj: _SyncResource[Any], owner: type[Any]) -> Callable[_P, _SyncStream]: ...
    def __get__(
        self, obj: _SyncResource[Any] | None, owner: type[Any]
    ) -> _BlockingStream[_P, _Stream, _SyncStream] | Callable[_P, _SyncStream]:
        if obj is None:
            return self
        method, wrap = self._method, self._wrap

        def blocking(*args: _P.args, **kwargs: _P.kwargs) -> _SyncStream:
            return wrap(method(obj._async, *args, **kwargs), obj._portal)

        functools.update_wrapper(blocking, method)
        blocking.__signature__ = self._signature  # type: ignore[attr-defined]
        return blocking


class SyncAssistantsClient(_SyncResource[AssistantsClient]):
    """The blocking twin of `AssistantsClient`; same methods, same arguments."""

    create = _Blocking(AssistantsClient.create)
    get = _Blocking(AssistantsClient.get)
    search = _Blocking(AssistantsClient.search)
    delete = _Blocking(AssistantsClient.delete)


class SyncThreadsClient(_SyncResource[ThreadsClient]):
    """The blocking twin of `ThreadsClient`; same methods, same arguments.

    `watch` returns a `SyncThreadStream`, a plain iterator of `ThreadStreamPart`s.
    """

    create = _Blocking(ThreadsClient.create)
    get = _Blocking(ThreadsClient.get)
    update = _Blocking(ThreadsClient.update)
    delete = _Blocking(ThreadsClient.delete)
    search = _Blocking(ThreadsClient.search)
    get_state = _Blocking(ThreadsClient.get_state)
    update_state = _Blocking(ThreadsClient.update_state)
    get_history = _Blocking(ThreadsClient.get_history)
    watch = _BlockingStream(ThreadsClient.watch, SyncThreadStream)


class SyncRunsClient(_SyncResource[RunsClient]):
    """The blocking twin of `RunsClient`; same methods, same arguments.

    `stream` and `join_stream` return a `SyncRunStream`, a plain iterator of `StreamPart`s.
    """

    create = _Blocking(RunsClient.create)
    wait = _Blocking(RunsClient.wait)
    wait_run = _Blocking(RunsClient.wait_run)
    stream = _BlockingStream(RunsClient.stream, SyncRunStream)
    get = _Blocking(RunsClient.get)
    list = _Blocking(RunsClient.list)
    delete = _Blocking(RunsClient.delete)
    cancel = _Blocking(RunsClient.cancel)
    join = _Blocking(RunsClient.join)
    join_run = _Blocking(RunsClient.join_run)
    join_stream = _BlockingStream(RunsClient.join_stream, SyncRunStream)


class SyncTurnstileClient:
    """The blocking client: `assistants`, `threads` and `runs`, as on `TurnstileClient`.

    Calls run on a private event loop in a daemon thread, started on the first call. Close
    the client with `close()` or `with`.
    """

    def __init__(self, client: TurnstileClient) -> None:
        self._client = client
        self._portal = Portal()
        self.assistants = SyncAssistantsClient(client.assistants, self._portal)
        self.threads = SyncThreadsClient(client.threads, self._portal)
        self.runs = SyncRunsClient(client.runs, self._portal)

    def close(self) -> None:
        """Closes the channel and stops the loop thread."""
        self._portal.close(self._client.close())

    def __enter__(self) -> SyncTurnstileClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SyncTurnstileClient {self._client.target!r}>"


def get_sync_client(
    url: str = DEFAULT_URL,
    *,
    api_key: str | None = None,
    timeout: float | None = None,
    root_certificates: bytes | None = None,
    client_certificate: bytes | None = None,
    client_key: bytes | None = None,
    load_balancing: str | None = None,
) -> SyncTurnstileClient:
    """Returns a blocking client for the Turnstile server at `url`; see `get_client`."""
    return SyncTurnstileClient(
        get_client(
            url,
            api_key=api_key,
            timeout=timeout,
            root_certificates=root_certificates,
            client_certificate=client_certificate,
            client_key=client_key,
            load_balancing=load_balancing,
        )
    )
