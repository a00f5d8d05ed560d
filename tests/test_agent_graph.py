"""The built-in `agent` as LangGraph runs it in process: model node, ToolNode, fake search.

These drive the compiled graph with LangGraph's own `InMemorySaver`, so they show the graph
alone; the seed ports (tests/test_seeds.py) show it served.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph

from turnstile_server.errors import InvalidInput
from turnstile_server.graphs.agent import build
from turnstile_server.graphs.weather import TOOL_NAME, search_results, tavily_search_results_json
from turnstile_server.graphs.weather_model import NOTHING_TO_ANSWER, WeatherChatModel

Graph = CompiledStateGraph[Any, Any, Any, Any]


@pytest.fixture
def graph() -> Graph:
    return build().compile(checkpointer=InMemorySaver())


def config(thread: str = "t", step_seconds: Any = 0) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread}
    if step_seconds is not None:
        configurable["step_seconds"] = step_seconds
    return {"configurable": configurable}


def human(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


async def messages_of(graph: Graph, run_input: Any, cfg: RunnableConfig) -> list[Any]:
    """Run once in `messages` mode; return the (message, metadata) pairs it streamed."""
    return [part async for part in graph.astream(run_input, cfg, stream_mode="messages")]


def types(messages: list[BaseMessage]) -> list[str]:
    return [message.type for message in messages]


async def test_agent_answers_a_question_with_a_tool_call_its_result_and_a_streamed_answer(
    graph: Graph,
) -> None:
    streamed = await messages_of(graph, human("what's the weather in sf?"), config())
    messages = (await graph.aget_state(config())).values["messages"]

    assert types(messages) == ["human", "ai", "tool", "ai"]
    _, call_message, tool_message, answer = messages
    [call] = call_message.tool_calls
    assert call_message.content == ""
    assert (call["name"], call["args"], call["type"]) == (
        TOOL_NAME,
        {"query": "weather in sf"},
        "tool_call",
    )
    assert call["id"].startswith("call_")
    assert (tool_message.tool_call_id, tool_message.name) == (call["id"], TOOL_NAME)
    [result] = json.loads(tool_message.content)
    assert set(result) == {"url", "content"} and "sf" in result["content"]
    assert "sf" in answer.content

    tokens = [m for m, meta in streamed if isinstance(m, AIMessageChunk) and m.id == answer.id]
    assert len(tokens) > 1, "the answer comes token by token"
    assert "".join(str(m.content) for m in tokens) == answer.content
    assert {meta["langgraph_node"] for m, meta in streamed if m in tokens} == {"agent"}
    nodes = [meta["langgraph_node"] for m, meta in streamed if isinstance(m, ToolMessage)]
    assert nodes == ["tools"], "the tool's result is streamed as the ToolNode returns it"


async def test_agent_takes_the_whole_text_as_the_place_without_an_in(graph: Graph) -> None:
    result = await graph.ainvoke(human("Paris"), config())
    assert result["messages"][1].tool_calls[0]["args"] == {"query": "weather in Paris"}


async def test_agent_resumed_after_its_model_step_runs_the_tool_then_answers(
    graph: Graph,
) -> None:
    await graph.ainvoke(human("whats the weather in nyc?"), config(), interrupt_after=["agent"])
    waiting = await graph.aget_state(config())
    assert waiting.next == ("tools",)
    call_id = waiting.values["messages"][-1].tool_calls[0]["id"]

    result = await graph.ainvoke(None, config())

    _, _, tool_message, answer = result["messages"]
    assert tool_message.tool_call_id == call_id and "nyc" in tool_message.content
    assert isinstance(answer, AIMessage) and "nyc" in answer.content


async def test_agent_answers_a_new_question_after_a_tool_call_cut_short(graph: Graph) -> None:
    await graph.ainvoke(human("weather in sf?"), config(), interrupt_after=["agent"])
    result = await graph.ainvoke(human("weather in nyc?"), config())
    assert types(result["messages"]) == ["human", "ai", "human", "ai", "tool", "ai"]
    assert result["messages"][3].tool_calls[0]["args"]["query"] == "weather in nyc"


async def test_agent_answers_from_a_tool_result_it_is_given(graph: Graph) -> None:
    run_input = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "content": "plain text result", "tool_call_id": "c1"},
        ]
    }
    result = await graph.ainvoke(run_input, config())
    assert types(result["messages"]) == ["human", "tool", "ai"]
    assert "plain text result" in result["messages"][-1].content


async def test_agent_with_nothing_to_answer_says_so_without_calling_the_tool(
    graph: Graph,
) -> None:
    run_input = {"messages": [{"role": "user", "content": "q"}, {"role": "ai", "content": "done"}]}
    result = await graph.ainvoke(run_input, config())
    assert types(result["messages"]) == ["human", "ai", "ai"]
    assert result["messages"][-1].content == NOTHING_TO_ANSWER


async def test_the_model_calls_only_a_tool_it_was_bound_to() -> None:
    unbound = await WeatherChatModel().ainvoke("weather in sf?")
    bound = await WeatherChatModel().bind_tools([tavily_search_results_json]).ainvoke("in sf?")
    assert unbound.tool_calls == [] and "sf" in unbound.content
    assert [call["name"] for call in bound.tool_calls] == [TOOL_NAME]


async def test_the_search_tool_is_a_langchain_tool_with_a_canned_result() -> None:
    assert tavily_search_results_json.name == TOOL_NAME
    schema = convert_to_openai_tool(tavily_search_results_json)["function"]["parameters"]
    assert set(schema["properties"]) == {"query"}, "its pace is injected, not asked of the model"
    found = await tavily_search_results_json.ainvoke(
        {"query": "weather in sf", "state": {}}, {"configurable": {"step_seconds": 0}}
    )
    assert found == search_results("weather in sf")


# --- pace -------------------------------------------------------------------------------


@pytest.fixture
def recorded_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every non-zero asyncio.sleep delay, while sleeping for no time at all."""
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, result: Any = None) -> Any:
        if delay:
            delays.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    return delays


async def test_agent_waits_the_input_sleep_before_every_step_until_it_answers(
    graph: Graph, recorded_sleeps: list[float]
) -> None:
    await graph.ainvoke(human("weather in sf?", sleep=5), config(step_seconds=None))
    assert recorded_sleeps == [5.0, 5.0, 5.0], "model, tool, then the answer"
    recorded_sleeps.clear()
    await graph.ainvoke(human("weather in nyc?"), config(step_seconds=None))
    assert recorded_sleeps[:2] == [0.8, 0.8], "the next question goes at its own pace"


async def test_an_interrupted_run_s_sleep_does_not_pace_the_next_question(
    graph: Graph, recorded_sleeps: list[float]
) -> None:
    await graph.ainvoke(human("weather in sf?", sleep=5), config(), interrupt_before=["agent"])
    assert (await graph.aget_state(config())).next == ("agent",), "cut before its first step"
    recorded_sleeps.clear()
    await graph.ainvoke(human("weather in nyc?"), config(step_seconds=0.1))
    assert 5.0 not in recorded_sleeps and recorded_sleeps[:2] == [0.1, 0.1]


async def test_a_resumed_question_keeps_the_pace_its_input_asked_for(
    graph: Graph, recorded_sleeps: list[float]
) -> None:
    await graph.ainvoke(human("weather in sf?", sleep=5), config(), interrupt_after=["agent"])
    recorded_sleeps.clear()
    await graph.ainvoke(None, config())
    assert recorded_sleeps == [5.0, 5.0], "the tool, then the answer"


async def test_agent_spreads_the_step_latency_over_the_answer_tokens(
    graph: Graph, recorded_sleeps: list[float]
) -> None:
    streamed = await messages_of(graph, human("weather in sf?"), config(step_seconds=None))
    answer = (await graph.aget_state(config())).values["messages"][-1]
    tokens = [m for m, _ in streamed if m.id == answer.id]
    assert recorded_sleeps[:2] == [0.8, 0.8]
    assert len(recorded_sleeps) == 2 + len(tokens)
    assert sum(recorded_sleeps[2:]) == pytest.approx(0.8)


@pytest.mark.parametrize("sleep", ["5", -1, True, float("inf"), [1]])
async def test_agent_refuses_a_bad_sleep(graph: Graph, sleep: Any) -> None:
    with pytest.raises(InvalidInput, match=r"^input\.sleep: must be a non-negative number"):
        await graph.ainvoke(human("hi", sleep=sleep), config())


@pytest.mark.parametrize("step_seconds", ["fast", -0.5])
async def test_agent_refuses_a_bad_step_seconds(graph: Graph, step_seconds: Any) -> None:
    with pytest.raises(InvalidInput, match=r"configurable\.step_seconds: must be a non-negative"):
        await graph.ainvoke(human("hi"), config(step_seconds=step_seconds))


async def test_agent_cancelled_in_its_model_step_raises_cancelled_error_and_keeps_the_input(
    graph: Graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeping = asyncio.Event()
    real_sleep = asyncio.sleep

    async def signalling_sleep(delay: float, result: Any = None) -> Any:
        if delay:
            sleeping.set()
        return await real_sleep(delay, result)

    monkeypatch.setattr(asyncio, "sleep", signalling_sleep)
    updates: list[Any] = []

    async def consume() -> None:
        steps: AsyncIterator[Any] = graph.astream(human("weather in sf?", sleep=3600), config())
        async for update in steps:
            updates.append(update)

    task = asyncio.create_task(consume())
    await sleeping.wait()
    task.cancel()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert updates == []
    assert types((await graph.aget_state(config())).values["messages"]) == ["human"]
