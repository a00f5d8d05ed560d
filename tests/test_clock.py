"""The server's clock follows the monotonic clock while it runs (`turnstile_server.clock`): a
step of the wall clock neither holds a delayed run back nor starts it early, and is logged."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import pytest

from tests import support
from turnstile import TurnstileClient
from turnstile_server import clock
from turnstile_server.clock import Clock

HOUR_NS = 3600 * 10**9


class Stepped:
    """A wall clock and a monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.wall_ns = 1_700_000_000 * 10**9
        self.monotonic_ns = 5 * 10**9

    def advance(self, seconds: float) -> None:
        self.wall_ns += int(seconds * 1e9)
        self.monotonic_ns += int(seconds * 1e9)


def test_the_clock_follows_the_monotonic_clock_when_the_wall_clock_steps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clocks = Stepped()
    server = Clock(wall=lambda: clocks.wall_ns, monotonic=lambda: clocks.monotonic_ns)
    start = server.now_us()
    assert start == clocks.wall_ns // 1000, "anchored on the wall clock at the first reading"

    clocks.advance(2)
    clocks.wall_ns -= HOUR_NS  # stepped back an hour
    with caplog.at_level(logging.WARNING, logger="turnstile_server.clock"):
        assert server.now_us() == start + 2_000_000
        clocks.advance(1)
        assert server.now_us() == start + 3_000_000
    steps = [r.getMessage() for r in caplog.records if "system clock moved" in r.getMessage()]
    assert len(steps) == 1 and "moved -3600.0 s" in steps[0], "logged once per step"

    caplog.clear()
    clocks.advance(0.1)
    clocks.wall_ns += 2 * HOUR_NS  # and forward two hours
    with caplog.at_level(logging.WARNING, logger="turnstile_server.clock"):
        assert server.now_us() == start + 3_100_000
    assert any("moved +7200.0 s" in r.getMessage() for r in caplog.records)

    caplog.clear()
    clocks.advance(1)
    clocks.wall_ns += 5 * 10**8  # a drift of half a second is not a step
    with caplog.at_level(logging.WARNING, logger="turnstile_server.clock"):
        assert server.now_us() == start + 4_100_000
    assert not caplog.records


@pytest.fixture
async def shifted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The store's clock on a wall clock shifted by the list's one item (ns), anchored now."""
    shift = [0]
    server = Clock(wall=lambda: time.time_ns() + shift[0])
    server.now_us()
    monkeypatch.setattr(clock, "CLOCK", server)
    return shift


@pytest.fixture
async def client(database: str, shifted: list[int]) -> AsyncIterator[TurnstileClient]:
    async with support.client_of(database) as (_, sdk):
        yield sdk


async def test_a_delayed_run_starts_on_time_when_the_wall_clock_steps_back(
    client: TurnstileClient, shifted: list[int]
) -> None:
    thread = await client.threads.create()
    run = await client.runs.create(thread["thread_id"], "echo", after_seconds=0.2)
    shifted[0] = -HOUR_NS  # it was re-armed for an hour

    async def ended() -> None:
        got = await client.runs.get(thread["thread_id"], run["run_id"])
        assert got["status"] == "success", got["status"]

    await support.eventually(ended, within=10)
