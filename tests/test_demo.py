"""`turnstile demo` shows the four strategies the way the seed notebooks print them."""

from __future__ import annotations

import pytest

from turnstile_tools.demo import banner, run_demo


def test_banner_matches_langchain_pretty_print() -> None:
    assert banner("Human Message") == "=" * 32 + " Human Message " + "=" * 33
    assert len(banner("Ai Message")) == 80


async def test_demo_prints_the_four_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    await run_demo(step_seconds=0.1)
    out = capsys.readouterr().out
    reject, rest = out.split("### Interrupt")
    interrupt, rest = rest.split("### Rollback")
    rollback, enqueue = rest.split("### Enqueue")
    assert "THREAD_BUSY" in reject and reject.strip().endswith("success")
    assert "what's the weather in sf?" in interrupt and "'interrupted'" in interrupt
    assert "sf?" not in rollback and "Original run was correctly deleted" in rollback
    assert enqueue.count("Human Message") == 2 and enqueue.strip().endswith("success\nsuccess")
