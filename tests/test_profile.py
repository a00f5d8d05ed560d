"""The run profile's arithmetic (`turnstile_tools.bench.profile`): samples charged to the
innermost frame that says whose code it is, threads' CPU split by their samples."""

from __future__ import annotations

from collections import Counter

import pytest

from turnstile_tools.bench.profile import attribute, classify, read_samples


@pytest.mark.parametrize(
    ("frames", "category"),
    [
        (["_run_once (asyncio/base_events.py:1922)", "select (selectors.py:468)"], "loop"),
        (["_handle_rpc (grpc/_cython/_cygrpc/aio/server.pyx.pxi:707)"], "grpc"),
        (
            [
                "_handle_rpc (grpc/_cython/_cygrpc/aio/server.pyx.pxi:707)",
                "RunService.WaitRun (turnstile_server/api/run_service.py:122)",
            ],
            "handler",
        ),
        (
            [
                "RunService.WaitRun (turnstile_server/api/run_service.py:122)",
                "Scheduler.run_to_end (turnstile_server/scheduler.py:181)",
                "Runs.admit (turnstile_server/store/sqlite/runs.py:53)",
                "Database._queue_write (turnstile_server/store/sqlite/database.py:128)",
            ],
            "handoff",
        ),
        (
            [
                "Scheduler._drive (turnstile_server/scheduler.py:461)",
                "Metrics.run_finished (turnstile_server/metrics.py:209)",
                "dumps (json/__init__.py:238)",
            ],
            "logging",
        ),
        (["RunService._ended (turnstile_server/api/run_service.py:96)", "_message (x)"], "handler"),
        (["state_parts (turnstile_server/api/codec.py:120)"], "encoding"),
        (["0x7f00 (libc.so.6)"], "other"),
    ],
)
def test_a_sample_is_charged_to_the_innermost_frame_that_names_its_owner(
    frames: list[str], category: str
) -> None:
    assert classify(frames) == category


def test_a_threads_cpu_is_split_by_its_samples_and_a_thread_without_python_is_grpcs() -> None:
    text = "\n".join(
        [
            "thread (10): MainThread;_run_once (asyncio/base_events.py:1922) 3",
            "thread (10): MainThread;WaitRun (turnstile_server/api/run_service.py:122) 1",
            "thread (11): sqlite /tmp/x.db;_work (turnstile_server/store/sqlite/connection.py:1) 9",
            "not a sample line",
        ]
    )
    samples = read_samples(text)
    assert samples[10] == ("MainThread", Counter({"loop": 3, "handler": 1}))
    before = {10: ("python", 1.0), 11: ("python", 0.0), 12: ("event_engine", 0.0)}
    after = {10: ("python", 3.0), 11: ("python", 1.0), 12: ("event_engine", 0.5)}
    used, threads = attribute(before, after, samples, total=4.0)
    assert used["loop"] == pytest.approx(1.5)
    assert used["handler"] == pytest.approx(0.5)
    assert used["sqlite"] == pytest.approx(1.0)
    assert used["grpc"] == pytest.approx(0.5)
    assert used["other"] == pytest.approx(0.5)  # a thread that ended meanwhile
    assert [t.name for t in threads] == ["MainThread", "sqlite /tmp/x.db", "event_engine"]
