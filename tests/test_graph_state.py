"""What a graph is handed: a read-only view of its run's own state, never the store's cache.

A graph that writes to its state changes nothing a reader sees; a graph whose thread drops out
of the state cache mid-run still sees every step it yielded.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests import support
from tests.support import GATES, client_of
from turnstile import get_client
from turnstile_server.graph import GraphRegistry, RunContext
from turnstile_server.runtime.view import ReadOnlyMapping, ReadOnlySequence, plain, read_only
from turnstile_server.state import ThreadState, normalize_update
from turnstile_server.store.sqlite import checkpoints as checkpoint_cache

MODES = ["sync", "async", "exit"]
GATE_TIMEOUT = 10.0

# Every way a graph might write to its state: none of them may reach what readers see.
WRITES: list[Callable[[Any], object]] = [
    lambda state: state.__setitem__("scratch", "written by the graph"),
    lambda state: state["messages"][-1].__setitem__("content", "edited in place"),
    lambda state: state["messages"][0].__setitem__("content", "input edited"),
    lambda state: state["messages"].append({"type": "ai", "content": "smuggled", "id": "x"}),
    lambda state: state["notes"].__setitem__("kept", False),
    lambda state: state["notes"]["tags"].append("smuggled"),
    lambda state: state.update(scratch="updated"),
    lambda state: state.pop("notes"),
    lambda state: state["messages"].pop(),
    lambda state: state.__delitem__("count"),
]


async def mutating(state: Mapping[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Yields two steps, trying every write in WRITES after each (a refused write is skipped)."""
    yield {
        "messages": [{"type": "ai", "content": "first", "id": "m-first"}],
        "notes": {"kept": True, "tags": ["a"]},
        "count": 1,
    }
    _try_writes(state)
    yield {"messages": [{"type": "ai", "content": "second", "id": "m-second"}], "count": 2}
    _try_writes(state)


def _try_writes(state: Any) -> None:
    for write in WRITES:
        with contextlib.suppress(TypeError, AttributeError, LookupError):  # refused, or gone
            write(state)


async def counting(state: Mapping[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Per name in input `gates`: waits for the gate, then yields `count` one above what its
    state says now, so a step its state missed shows as a count too low."""
    for name in ctx.input.get("gates", []):
        GATES.arrived(name).set()
        await GATES.event(name).wait()
        yield {"count": state.get("count", 0) + 1}


def graphs() -> GraphRegistry:
    """The shared test graphs, `mutating` and `counting`."""
    registry = support.registry()
    registry.register("mutating", mutating)
    registry.register("counting", counting)
    return registry


# --- the view ----------------------------------------------------------------------------


@pytest.fixture
def values() -> dict[str, Any]:
    return {
        "messages": [
            {"type": "human", "content": "hi", "id": "m1"},
            {"type": "ai", "content": [{"type": "text", "text": "yo"}], "id": "m2"},
        ],
        "notes": {"kept": True, "tags": ["a"]},
        "count": 1,
    }


@pytest.mark.parametrize("write", range(len(WRITES)))
def test_every_write_through_a_view_raises_type_error(values: dict[str, Any], write: int) -> None:
    before = copy.deepcopy(values)
    with pytest.raises(TypeError, match="read-only: yield an update"):
        WRITES[write](ReadOnlyMapping(values))
    assert values == before


@pytest.mark.parametrize(
    "write",
    [
        lambda v: v["messages"].extend([]),
        lambda v: v["messages"].insert(0, {}),
        lambda v: v["messages"].sort(),
        lambda v: v["messages"].reverse(),
        lambda v: v["messages"].remove(v["messages"][0]),
        lambda v: v["messages"].clear(),
        lambda v: v["messages"].__setitem__(0, {}),
        lambda v: v["messages"].__iadd__([]),
        lambda v: v["messages"][1]["content"][0].setdefault("extra", 1),
        lambda v: v.popitem(),
        lambda v: v.clear(),
        lambda v: v.__ior__({}),
    ],
)
def test_the_other_dict_and_list_writes_raise_too(
    values: dict[str, Any], write: Callable[[Any], object]
) -> None:
    before = copy.deepcopy(values)
    with pytest.raises(TypeError, match="read-only"):
        write(ReadOnlyMapping(values))
    assert values == before


def test_a_view_reads_like_the_values(values: dict[str, Any]) -> None:
    view = ReadOnlyMapping(values)
    assert view == values and values == view
    assert view["messages"] == values["messages"]
    assert len(view) == 3 and "notes" in view and "scratch" not in view
    assert sorted(view) == sorted(values)
    assert view.get("scratch", "none") == "none"
    assert view["messages"][-1]["content"][0]["text"] == "yo"
    assert [m["id"] for m in reversed(view["messages"])] == ["m2", "m1"]
    assert view["messages"][1:] == values["messages"][1:]
    assert isinstance(view["messages"][1:], ReadOnlySequence)
    assert isinstance(view["notes"], Mapping) and isinstance(view["messages"][0], Mapping)
    assert dict(view.items())["count"] == 1
    assert not ReadOnlyMapping({}) and not read_only([])


def test_a_view_shows_later_updates_of_its_state(values: dict[str, Any]) -> None:
    state = ThreadState(values)
    view = ReadOnlyMapping(state.values)
    messages = view["messages"]
    state.apply(normalize_update({"messages": [{"type": "ai", "content": "new"}], "count": 2}))
    assert view["count"] == 2
    assert [m["content"] for m in messages][-1] == "new"


def test_deepcopy_of_a_view_is_plain_mutable_data(values: dict[str, Any]) -> None:
    copied: Any = copy.deepcopy(ReadOnlyMapping(values))
    assert type(copied) is dict and type(copied["messages"][0]) is dict
    assert copied == values
    copied["messages"][0]["content"] = "mine"
    assert values["messages"][0]["content"] == "hi"
    assert plain(read_only(values["messages"])) == values["messages"]


def test_a_graph_may_yield_parts_of_its_view(values: dict[str, Any]) -> None:
    view = ReadOnlyMapping(values)
    update = normalize_update({"notes": view["notes"], "messages": view["messages"][:1]})
    assert update["notes"] == {"kept": True, "tags": ["a"]}
    assert type(update["notes"]["tags"]) is list
    assert update["messages"] == [values["messages"][0]]
    assert type(update["messages"][0]) is dict


# --- a mutating graph, end to end ----------------------------------------------------------


@pytest.mark.parametrize("durability", MODES)
async def test_a_graph_writing_to_its_state_leaves_only_its_updates_before_and_after_restart(
    tmp_path: Path, durability: str
) -> None:
    database = str(tmp_path / "mutating.db")
    expected = {
        "messages": [
            {"type": "human", "content": "go"},
            {"type": "ai", "content": "first"},
            {"type": "ai", "content": "second"},
        ],
        "notes": {"kept": True, "tags": ["a"]},
        "count": 2,
    }
    async with client_of(database, graphs()) as (_, client):
        thread_id = (await client.threads.create())["thread_id"]
        result = await client.runs.wait(
            thread_id,
            "mutating",
            input={"messages": [{"role": "user", "content": "go"}]},
            durability=durability,  # type: ignore[arg-type]
        )
        run = (await client.runs.list(thread_id))[0]
        assert run["status"] == "success", run
        assert _shape(result) == expected
        before = (await client.threads.get_state(thread_id))["values"]
        assert _shape(before) == expected
    async with client_of(database, graphs()) as (_, client):
        assert (await client.threads.get_state(thread_id))["values"] == before
        # A later run starts from what was stored, not from what the graph wrote.
        follow = await client.runs.wait(
            thread_id, "echo", input={"messages": [{"role": "user", "content": "again"}]}
        )
        assert "scratch" not in follow and follow["notes"] == expected["notes"]
        contents = [m["content"] for m in follow["messages"]]
        assert contents == ["go", "first", "second", "again", "again"]


def _shape(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values with each message reduced to its type and content."""
    shaped = dict(values)
    shaped["messages"] = [{"type": m["type"], "content": m["content"]} for m in values["messages"]]
    return shaped


# --- the thread evicted from the state cache mid-run ---------------------------------------


@pytest.fixture
def small_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The store caches the state of 4 threads only."""
    monkeypatch.setattr(checkpoint_cache, "CACHE_THREADS", 4)
    yield 4


@pytest.mark.parametrize("durability", MODES)
async def test_a_graph_sees_every_step_when_its_thread_leaves_the_cache_mid_run(
    tmp_path: Path, small_cache: int, durability: str
) -> None:
    async with client_of(str(tmp_path / "evicted.db"), graphs()) as (app, client):
        others = []
        for number in range(small_cache + 2):
            thread_id = (await client.threads.create())["thread_id"]
            await client.runs.wait(
                thread_id, "echo", input={"messages": [{"role": "user", "content": f"{number}"}]}
            )
            others.append(thread_id)
        thread_id = (await client.threads.create())["thread_id"]
        gates = ["a", "b", "c"]
        run = await client.runs.create(
            thread_id,
            "counting",
            input={"gates": gates},
            durability=durability,  # type: ignore[arg-type]
        )
        reader = get_client(url=app.address)
        try:
            for gate in gates:
                async with asyncio.timeout(GATE_TIMEOUT):
                    await GATES.arrived(gate).wait()
                # Another client reads more threads than the cache holds: the running
                # thread's entry is evicted, then its steps go on.
                for other in others:
                    await reader.threads.get_state(other)
                GATES.open(gate)
            result = await client.runs.join(thread_id, run["run_id"])
        finally:
            await reader.close()
        assert result["count"] == 3
        assert (await client.threads.get_state(thread_id))["values"]["count"] == 3
        history = await client.threads.get_history(thread_id, limit=10)
        counts = [c["values"].get("count") for c in reversed(history)]
        assert counts == [None, 1, 2, 3]
