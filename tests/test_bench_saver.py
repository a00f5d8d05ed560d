"""The long-thread saver bench runs end to end on tiny sizes and prints its table and verdicts."""

from __future__ import annotations

from turnstile_tools.bench import saver


async def test_saver_bench_measures_every_saver_and_judges_the_target() -> None:
    results = await saver.measure([3, 30], runs=2)
    assert set(results) == {3, 30}
    for by_saver in results.values():
        assert set(by_saver) == {saver.OURS, saver.THEIRS, saver.ALONE}
        for name, (wall, cpu, written) in by_saver.items():
            assert wall > 0 and cpu > 0, name
            assert written > 0 or name == saver.ALONE, name  # the two SQLite savers write
    text = saver.report(results)
    assert "| 30 | Turnstile |" in text and "| 3 | AsyncSqliteSaver |" in text
    verdicts = [line for line in text.splitlines() if line.startswith("- Turnstile: ")]
    assert len(verdicts) == 1 and verdicts[0].count(" met") + verdicts[0].count(" MISSED") == 3
