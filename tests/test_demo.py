"""`turnstile demo` shows the four strategies the way the seed notebooks print them."""

from __future__ import annotations

import pytest

from turnstile_tools.demo import pretty, run_demo


def test_messages_print_as_the_seed_notebooks_print_them() -> None:
    call = {"name": "tavily_search_results_json", "args": {"query": "weather in sf"}, "id": "c1"}
    ai = {"type": "ai", "content": "", "id": "m2", "tool_calls": [{**call, "type": "tool_call"}]}
    tool = {"type": "tool", "content": "[]", "name": call["name"], "tool_call_id": "c1"}
    assert pretty({"type": "human", "content": "hi", "id": "m1"}) == (
        "=" * 32 + " Human Message " + "=" * 33 + "\n\nhi"
    )
    assert pretty(ai).splitlines() == [
        "=" * 34 + " Ai Message " + "=" * 34,
        "Tool Calls:",
        "  tavily_search_results_json (c1)",
        " Call ID: c1",
        "  Args:",
        "    query: weather in sf",
    ]
    assert pretty(tool).splitlines()[1:] == ["Name: tavily_search_results_json", "", "[]"]


async def test_demo_prints_the_four_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    await run_demo(step_seconds=0.1)
    out = capsys.readouterr().out
    reject, rest = out.split("### Interrupt")
    interrupt, rest = rest.split("### Rollback")
    rollback, rest = rest.split("### Enqueue")
    enqueue, approval = rest.split("### Human in the loop")
    assert "THREAD_BUSY" in reject and reject.strip().endswith("success")
    assert "what's the weather in sf?" in interrupt and "'interrupted'" in interrupt
    assert "sf?" not in rollback and "Original run was correctly deleted" in rollback
    assert enqueue.count("Human Message") == 2 and enqueue.strip().endswith("success\nsuccess")
    asked, answered = approval.split("resume: ")
    assert "run: 'success'; thread: 'interrupted' (awaiting_input)" in asked
    assert "next: ['review']" in asked and "Approve this payment?" in asked
    assert "Done: sent $100 to bob." in answered and answered.strip().endswith("thread: 'idle'")
