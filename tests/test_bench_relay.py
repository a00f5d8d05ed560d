"""The events-between-replicas bench runs end to end on a tiny size and prints its table."""

from __future__ import annotations

import shutil

import pytest

from tests import postgres
from tests import redis as test_redis
from turnstile_tools.bench import relay_events


async def test_relay_bench_measures_postgresql_and_redis_at_each_batch_size() -> None:
    url = postgres.server_url()
    test_redis.server_url()
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on this machine")
    rows = await relay_events.measure(40, url, batches=(1, 8))
    assert [row.name.split(":")[0] for row in rows] == ["PostgreSQL", "Redis Streams"] * 2
    for row in rows:
        assert row.events == 40 and row.seconds > 0 and row.server_cpu >= 0
    text = relay_events.report(rows)
    assert text.count("| 1.00x |") == 2 and "8 per call" in text
