"""Thread state merging and the validation of run inputs and graph updates."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

from turnstile_server.errors import InvalidArgument, InvalidInput
from turnstile_server.state import ThreadState, fold, normalize_input, normalize_update


def human(content: str, message_id: str) -> dict[str, Any]:
    return {"type": "human", "content": content, "id": message_id}


def ai(content: str, message_id: str) -> dict[str, Any]:
    return {"type": "ai", "content": content, "id": message_id}


class _NoScanList(list[Any]):
    """A list that fails any whole-list scan, to prove merging uses the id index."""

    def __iter__(self) -> Iterator[Any]:
        raise AssertionError("apply scanned the existing messages")

    def __contains__(self, item: object) -> NoReturn:
        raise AssertionError("apply scanned the existing messages")

    def index(self, *args: Any) -> NoReturn:
        raise AssertionError("apply scanned the existing messages")

    def count(self, value: Any) -> NoReturn:
        raise AssertionError("apply scanned the existing messages")


# --- merging -----------------------------------------------------------------------------


def test_messages_append_in_order() -> None:
    state = ThreadState()
    state.apply({"messages": [human("hi", "m1")]})
    state.apply({"messages": [ai("hello", "m2"), human("bye", "m3")]})
    assert [m["id"] for m in state.values["messages"]] == ["m1", "m2", "m3"]


def test_message_with_existing_id_replaces_in_place() -> None:
    state = ThreadState({"messages": [human("a", "m1"), ai("b", "m2"), human("c", "m3")]})
    state.apply({"messages": [ai("B!", "m2")]})
    assert state.values["messages"] == [human("a", "m1"), ai("B!", "m2"), human("c", "m3")]


def test_replacing_and_appending_in_one_update() -> None:
    state = ThreadState({"messages": [human("a", "m1")]})
    state.apply({"messages": [ai("new", "m2"), human("A", "m1")]})
    assert state.values["messages"] == [human("A", "m1"), ai("new", "m2")]


def test_duplicate_new_id_within_one_update_keeps_the_last_in_first_position() -> None:
    state = ThreadState({"messages": [human("a", "m1")]})
    state.apply({"messages": [ai("draft", "m2"), human("b", "m3"), ai("final", "m2")]})
    assert state.values["messages"] == [human("a", "m1"), ai("final", "m2"), human("b", "m3")]


def test_appended_message_can_be_replaced_by_a_later_update() -> None:
    state = ThreadState()
    state.apply({"messages": [ai("draft", "m1")]})
    state.apply({"messages": [human("q", "m2")]})
    state.apply({"messages": [ai("final", "m1")]})
    assert state.values["messages"] == [ai("final", "m1"), human("q", "m2")]


def test_other_keys_overwrite() -> None:
    state = ThreadState({"count": 1, "tags": ["a"], "keep": True})
    state.apply({"count": 2, "tags": ["b"]})
    assert state.values == {"count": 2, "tags": ["b"], "keep": True}


def test_apply_uses_the_id_index_instead_of_scanning_messages() -> None:
    existing = [human(str(i), f"m{i}") for i in range(1000)]
    state = ThreadState({"messages": existing})
    state.values["messages"] = _NoScanList(state.values["messages"])
    state.apply({"messages": [ai("replaced", "m500"), ai("appended", "m1000")]})
    stored = state.values["messages"]
    assert list.__getitem__(stored, 500) == ai("replaced", "m500")
    assert list.__getitem__(stored, 1000) == ai("appended", "m1000")
    assert list.__len__(stored) == 1001


def test_constructor_does_not_alias_the_callers_messages_list() -> None:
    messages = [human("a", "m1")]
    state = ThreadState({"messages": messages})
    state.apply({"messages": [ai("b", "m2")]})
    assert messages == [human("a", "m1")]


def test_apply_rejects_messages_that_are_not_a_list() -> None:
    with pytest.raises(InvalidInput, match=r"update\.messages: must be a list"):
        ThreadState().apply({"messages": "hello"})


def test_fold_applies_updates_in_order() -> None:
    values = fold(
        [
            {"messages": [human("q", "m1")], "step": 1},
            {"messages": [ai("draft", "m2")], "step": 2},
            {"messages": [ai("done", "m2")]},
        ]
    )
    assert values == {"messages": [human("q", "m1"), ai("done", "m2")], "step": 2}


# --- snapshots and copies ----------------------------------------------------------------


def test_snapshot_is_unchanged_by_later_applies() -> None:
    state = ThreadState({"messages": [human("a", "m1")], "count": 1})
    snapshot = state.snapshot()
    state.apply({"messages": [ai("A", "m1"), ai("b", "m2")], "count": 2})
    assert snapshot == {"messages": [human("a", "m1")], "count": 1}


def test_snapshot_mutation_does_not_change_the_state() -> None:
    state = ThreadState({"messages": [human("a", "m1")]})
    snapshot = state.snapshot()
    snapshot["messages"].append(ai("x", "m2"))
    snapshot["extra"] = True
    assert state.values == {"messages": [human("a", "m1")]}


def test_copy_is_independent_of_the_original() -> None:
    original = ThreadState({"messages": [human("a", "m1")]})
    clone = original.copy()
    clone.apply({"messages": [ai("A", "m1"), ai("b", "m2")], "k": 1})
    original.apply({"messages": [ai("c", "m3")]})
    assert clone.values == {"messages": [ai("A", "m1"), ai("b", "m2")], "k": 1}
    assert original.values == {"messages": [human("a", "m1"), ai("c", "m3")]}


# --- input normalisation -----------------------------------------------------------------


def test_none_input_makes_an_empty_update() -> None:
    assert normalize_input(None) == {}


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("user", "human"),
        ("human", "human"),
        ("assistant", "ai"),
        ("ai", "ai"),
        ("system", "system"),
    ],
)
def test_roles_map_to_message_types(role: str, expected: str) -> None:
    update = normalize_input({"messages": [{"role": role, "content": "x", "id": "m1"}]})
    assert update == {"messages": [{"type": expected, "content": "x", "id": "m1"}]}


def test_type_key_is_accepted_like_role() -> None:
    update = normalize_input({"messages": [{"type": "user", "content": "x", "id": "m1"}]})
    assert update["messages"][0]["type"] == "human"


def test_missing_message_id_gets_a_fresh_uuid() -> None:
    update = normalize_input(
        {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    )
    first, second = (m["id"] for m in update["messages"])
    assert str(uuid.UUID(first)) == first
    assert first != second


def test_single_message_object_is_wrapped_in_a_list() -> None:
    update = normalize_input({"messages": {"role": "user", "content": "hi", "id": "m1"}})
    assert update == {"messages": [{"type": "human", "content": "hi", "id": "m1"}]}


def test_tool_fields_and_extra_keys_pass_through() -> None:
    update = normalize_input(
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": "",
                    "id": "m1",
                    "tool_calls": [{"name": "search", "args": {"q": "sf"}, "id": "c1"}],
                    "additional_kwargs": {"x": 1},
                },
                {
                    "role": "tool",
                    "content": "[]",
                    "id": "m2",
                    "tool_call_id": "c1",
                    "name": "search",
                },
            ]
        }
    )
    assert update["messages"] == [
        {
            "type": "ai",
            "content": "",
            "id": "m1",
            "tool_calls": [
                {"name": "search", "args": {"q": "sf"}, "id": "c1", "type": "tool_call"}
            ],
            "additional_kwargs": {"x": 1},
        },
        {"type": "tool", "content": "[]", "id": "m2", "tool_call_id": "c1", "name": "search"},
    ]


def test_tool_call_without_id_gets_one() -> None:
    update = normalize_input(
        {"messages": [{"role": "ai", "content": "", "tool_calls": [{"name": "search"}]}]}
    )
    call = update["messages"][0]["tool_calls"][0]
    assert call["id"].startswith("call_")
    assert call["args"] == {}


def test_list_content_is_kept() -> None:
    blocks = [{"type": "text", "text": "hi"}, "there"]
    update = normalize_input({"messages": [{"role": "user", "content": blocks, "id": "m1"}]})
    assert update["messages"][0]["content"] == blocks


def test_other_input_keys_pass_through() -> None:
    assert normalize_input({"sleep": 5, "topic": "weather"}) == {"sleep": 5, "topic": "weather"}


def test_normalized_input_does_not_alias_the_callers_data() -> None:
    raw = {"messages": [{"role": "user", "content": "hi", "id": "m1", "meta": {"a": 1}}]}
    update = normalize_input(raw)
    update["messages"][0]["meta"]["a"] = 2
    assert raw["messages"][0]["meta"] == {"a": 1}


@pytest.mark.parametrize(
    ("bad_input", "message"),
    [
        ([1, 2], r"^input: must be an object, got a list$"),
        ({"messages": "hi"}, r"^input\.messages: must be a list of messages"),
        ({"messages": None}, r"^input\.messages: must be a list of messages, got null"),
        (
            {"messages": [{"role": "user", "content": "a"}, "b"]},
            r"^input\.messages\[1\]: a message must be an object",
        ),
        ({"messages": [{"content": "a"}]}, r"^input\.messages\[0\]: missing role"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]},
            r"^input\.messages\[1\]\.role: unknown role 'robot'$",
        ),
        (
            {"messages": [{"type": "robot", "content": "a"}]},
            r"^input\.messages\[0\]\.type: unknown role 'robot'$",
        ),
        (
            {"messages": [{"role": 3, "content": "a"}]},
            r"^input\.messages\[0\]\.role: must be a string",
        ),
        (
            {"messages": [{"role": "user", "type": "ai", "content": "a"}]},
            r"^input\.messages\[0\]: role 'user' and type 'ai' disagree$",
        ),
        ({"messages": [{"role": "user"}]}, r"^input\.messages\[0\]\.content: missing$"),
        (
            {"messages": [{"role": "user", "content": None}]},
            r"^input\.messages\[0\]\.content: must be a string or a list",
        ),
        (
            {"messages": [{"role": "user", "content": 7}]},
            r"^input\.messages\[0\]\.content: must be a string or a list",
        ),
        (
            {"messages": [{"role": "user", "content": ["a", 1]}]},
            r"^input\.messages\[0\]\.content\[1\]: must be a string or an object",
        ),
        (
            {"messages": [{"role": "user", "content": "a", "id": 5}]},
            r"^input\.messages\[0\]\.id: must be a non-empty string, got number 5$",
        ),
        (
            {"messages": [{"role": "user", "content": "a", "id": ""}]},
            r"^input\.messages\[0\]\.id: must be a non-empty string",
        ),
        (
            {"messages": [{"role": "tool", "content": "a"}]},
            r"^input\.messages\[0\]\.tool_call_id: missing",
        ),
        (
            {"messages": [{"role": "tool", "content": "a", "tool_call_id": 1}]},
            r"^input\.messages\[0\]\.tool_call_id: must be a string",
        ),
        (
            {"messages": [{"role": "tool", "content": "a", "tool_call_id": "c", "name": []}]},
            r"^input\.messages\[0\]\.name: must be a string",
        ),
        (
            {"messages": [{"role": "ai", "content": "", "tool_calls": {}}]},
            r"^input\.messages\[0\]\.tool_calls: must be a list",
        ),
        (
            {"messages": [{"role": "ai", "content": "", "tool_calls": ["x"]}]},
            r"^input\.messages\[0\]\.tool_calls\[0\]: a tool call must be an object",
        ),
        (
            {"messages": [{"role": "ai", "content": "", "tool_calls": [{"args": {}}]}]},
            r"^input\.messages\[0\]\.tool_calls\[0\]\.name: must be a non-empty string",
        ),
        (
            {
                "messages": [
                    {"role": "ai", "content": "", "tool_calls": [{"name": "s", "args": []}]}
                ]
            },
            r"^input\.messages\[0\]\.tool_calls\[0\]\.args: must be an object",
        ),
        (
            {"messages": [{"role": "ai", "content": "", "tool_calls": [{"name": "s", "id": 1}]}]},
            r"^input\.messages\[0\]\.tool_calls\[0\]\.id: must be a non-empty string",
        ),
        ({1: "x"}, r"^input: keys must be strings"),
        ({"when": float("nan")}, r"^input\.when: nan is not a JSON number$"),
        ({"nested": {"deep": [object()]}}, r"^input\.nested\.deep\[0\]: object is not JSON$"),
    ],
)
def test_bad_input_is_rejected_naming_the_path(bad_input: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        normalize_input(bad_input)


def test_invalid_input_is_an_invalid_argument_with_its_own_reason() -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalize_input({"messages": 1})
    assert caught.value.reason == "INVALID_INPUT"


# --- graph updates -----------------------------------------------------------------------


def test_update_messages_are_normalized_like_input() -> None:
    update = normalize_update({"messages": [{"role": "assistant", "content": "ok"}], "n": 1})
    [message] = update["messages"]
    assert (message["type"], message["content"], update["n"]) == ("ai", "ok", 1)
    assert isinstance(message["id"], str)


def test_update_tuples_become_lists() -> None:
    assert normalize_update({"pair": (1, 2)}) == {"pair": [1, 2]}


@pytest.mark.parametrize(
    ("bad_update", "message"),
    [
        (None, r"^update: must be an object, got null$"),
        ("text", r"^update: must be an object, got string 'text'$"),
        ([{"messages": []}], r"^update: must be an object, got a list$"),
        (
            {"messages": [{"role": "robot", "content": "x"}]},
            r"^update\.messages\[0\]\.role: unknown role 'robot'$",
        ),
        ({"messages": [{"type": "ai"}]}, r"^update\.messages\[0\]\.content: missing$"),
        ({"at": object()}, r"^update\.at: object is not JSON$"),
    ],
)
def test_bad_update_is_rejected_naming_the_path(bad_update: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        normalize_update(bad_update)
