"""The built-in `agent`'s chat model: offline and deterministic, a LangChain `BaseChatModel`.

It answers from the last message alone, as a tool-calling model would: a question gets a
call of the search tool it was bound to (when it was), a tool result gets an answer streamed
token by token. Its latency is the `latency` keyword of the call: a tool call waits it before
it comes; an answer spreads it over its tokens, or with `wait_first` waits it, then streams.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolCall,
    ToolCallChunk,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from turnstile_server.graphs.weather import QUERY_PREFIX, TOOL_NAME, answer, place

_TOKEN = re.compile(r"\s*\S+\s*")
NOTHING_TO_ANSWER = "Ask me about the weather somewhere, e.g. what's the weather in sf?"


class WeatherChatModel(BaseChatModel):
    """A fake tool-calling chat model for weather questions (see the module's docstring)."""

    @property
    def _llm_type(self) -> str:
        return "turnstile-weather"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools as a provider's chat model does: their schemas go with every call."""
        return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Synchronous callers get the reply at once: the latency is only ever awaited.
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages, kwargs))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await asyncio.sleep(_latency(kwargs))
        return self._generate(messages, stop, None, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from _chunks(self._reply(messages, kwargs))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        reply = self._reply(messages, kwargs)
        latency = _latency(kwargs)
        chunks = list(_chunks(reply))
        if reply.tool_calls or kwargs.get("wait_first"):
            await asyncio.sleep(latency)
            per_chunk = 0.0
        else:
            per_chunk = latency / len(chunks)
        for chunk in chunks:
            await asyncio.sleep(per_chunk)
            yield chunk

    def _reply(self, messages: Sequence[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        """What the model says to the conversation, from its last message."""
        last = messages[-1] if messages else None
        if isinstance(last, ToolMessage):
            return AIMessage(content=answer(last.text))
        if isinstance(last, HumanMessage):
            if not any(_tool_name(tool) == TOOL_NAME for tool in kwargs.get("tools") or ()):
                return AIMessage(content=f"I can't search for the weather in {place(last.text)}.")
            call = ToolCall(
                name=TOOL_NAME,
                args={"query": f"{QUERY_PREFIX}{place(last.text)}"},
                id=f"call_{uuid.uuid4().hex}",
                type="tool_call",
            )
            return AIMessage(content="", tool_calls=[call])
        return AIMessage(content=NOTHING_TO_ANSWER)


def _latency(kwargs: dict[str, Any]) -> float:
    return float(kwargs.get("latency") or 0.0)


def _tool_name(tool: Any) -> str | None:
    function = tool.get("function") if isinstance(tool, dict) else None
    return function.get("name") if isinstance(function, dict) else None


def _chunks(reply: AIMessage) -> Iterator[ChatGenerationChunk]:
    """The reply as a stream would bring it: a tool call whole, an answer token by token."""
    if reply.tool_calls:
        tool_call_chunks = [
            ToolCallChunk(
                name=call["name"],
                args=json.dumps(call["args"]),
                id=call["id"],
                index=index,
                type="tool_call_chunk",
            )
            for index, call in enumerate(reply.tool_calls)
        ]
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="", tool_call_chunks=tool_call_chunks, chunk_position="last"
            )
        )
        return
    tokens = _TOKEN.findall(reply.text) or [reply.text]
    for index, token in enumerate(tokens):
        last = index == len(tokens) - 1
        yield ChatGenerationChunk(
            message=AIMessageChunk(content=token, chunk_position="last" if last else None)
        )
