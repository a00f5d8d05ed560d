"""`RunStream`: a run's events as an async iterator of `StreamPart`s."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, Callable
from types import TracebackType
from typing import TypeAlias

from turnstile._convert import event_parts, run_to_dict
from turnstile._types import Run, StreamPart
from turnstile.v1 import run_service_pb2

StreamMessage: TypeAlias = run_service_pb2.StreamRunResponse | run_service_pb2.JoinRunStreamResponse


class RunStream:
    """Yields one `StreamPart` per event of a run, ending after the `end` event.

    The call starts on the first iteration. `run` is the `Run` the server sends with its first
    message (as it was when the stream opened), `None` until then. Break out early with
    `aclose()` or `async with`, which cancels the call.
    """

    def __init__(self, open_messages: Callable[[], AsyncGenerator[StreamMessage, None]]) -> None:
        self._open_messages = open_messages
        self._messages: AsyncGenerator[StreamMessage, None] | None = None
        self._pending: deque[StreamPart] = deque()
        self._done = False
        self.run: Run | None = None

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> StreamPart:
        while not self._pending:
            if self._done:
                raise StopAsyncIteration
            if self._messages is None:
                self._messages = self._open_messages()
            try:
                message = await anext(self._messages)
            except BaseException:
                # Whatever ends the generator (its end, an error, a cancellation) ends us.
                self._done = True
                raise
            if self.run is None and message.HasField("run"):
                self.run = run_to_dict(message.run)
            self._pending.extend(event_parts(message.events))
        return self._pending.popleft()

    async def aclose(self) -> None:
        """Stops the stream and cancels its call; iterating afterwards ends at once."""
        self._done = True
        self._pending.clear()
        if self._messages is not None:
            await self._messages.aclose()

    async def __aenter__(self) -> RunStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
