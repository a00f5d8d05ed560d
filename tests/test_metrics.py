"""Prometheus metrics: a real server with `metrics_port=0`, scraped over HTTP like Prometheus."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import support
from tests.support import GATES, eventually
from turnstile import ConflictError, ResourceExhaustedError, TurnstileClient
from turnstile_server.app import App
from turnstile_server.config import ServerConfig

Labels = frozenset[tuple[str, str]]
Samples = dict[str, dict[Labels, float]]
HUMAN = {"messages": [{"role": "user", "content": "hi"}]}


@asynccontextmanager
async def serving(
    database: Path, *, max_queued: int = 100
) -> AsyncIterator[tuple[App, TurnstileClient]]:
    """A server with metrics on a free port (stopped at once, runs left RUNNING), a client."""
    config = ServerConfig(
        host="127.0.0.1", port=0, database=str(database), metrics_port=0, max_queued=max_queued
    )
    async with support.client_of(config) as (app, client):
        yield app, client


async def scrape(app: App) -> Samples:
    """Every sample of the server's `/metrics`, by sample name, then labels."""
    url = f"http://127.0.0.1:{app.metrics.port}/metrics"

    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    samples: Samples = {}
    for family in text_string_to_metric_families(await asyncio.to_thread(fetch)):
        for sample in family.samples:
            labels = frozenset(sample.labels.items())
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def by(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """The samples of `name` keyed by the values of the labels `keys` (the others must not
    vary among them)."""
    found: dict[tuple[str, ...], float] = {}
    for labels, value in samples.get(name, {}).items():
        named = dict(labels)
        found[tuple(named[k] for k in keys)] = value
    return found


async def idle(app: App) -> Samples:
    """The scrape once no run executes or waits."""

    async def check() -> Samples:
        samples = await scrape(app)
        assert by(samples, "turnstile_runs_executing") == {(): 0.0}
        assert by(samples, "turnstile_runs_queued") == {(): 0.0}
        return samples

    return await eventually(check)


async def test_run_metrics_count_each_admission_refusal_and_ending_exactly(tmp_path: Path) -> None:
    async with serving(tmp_path / "m.db", max_queued=1) as (app, client):
        # Success, streamed: a streaming RPC is timed too.
        t1 = (await client.threads.create())["thread_id"]
        parts = [
            p
            async for p in client.runs.stream(t1, "echo", input=HUMAN, multitask_strategy="reject")
        ]
        assert parts[-1].data["status"] == "success"

        # Busy thread: one running, one queued, a reject and a full queue refused.
        t2 = (await client.threads.create())["thread_id"]
        first = await client.runs.create(t2, "gated", input={"gates": ["g1"]})
        await GATES.arrived("g1").wait()
        with pytest.raises(ConflictError):
            await client.runs.create(t2, "echo", input=HUMAN, multitask_strategy="reject")
        queued = await client.runs.create(t2, "gated", input={"gates": ["never"]})
        with pytest.raises(ResourceExhaustedError):
            await client.runs.create(t2, "echo", input=HUMAN, multitask_strategy="enqueue")
        busy = await scrape(app)
        assert by(busy, "turnstile_runs_executing") == {(): 1.0}
        assert by(busy, "turnstile_runs_queued") == {(): 1.0}

        # Interrupt: the running run is cancelled, the queued one ends without starting.
        newer = await client.runs.create(t2, "echo", input=HUMAN, multitask_strategy="interrupt")
        await client.runs.join(t2, newer["run_id"])
        for old in (first, queued):
            assert (await client.runs.get(t2, old["run_id"]))["status"] == "interrupted"

        # An error, a rollback and a client's CancelRun.
        t3 = (await client.threads.create())["thread_id"]
        failed = await client.runs.wait_run(t3, "failing", input=HUMAN)
        assert failed.run["status"] == "error"
        t4 = (await client.threads.create())["thread_id"]
        await client.runs.create(t4, "gated", input={"gates": ["g4"]})
        await GATES.arrived("g4").wait()
        rollback = await client.runs.create(t4, "echo", input=HUMAN, multitask_strategy="rollback")
        await client.runs.join(t4, rollback["run_id"])
        t5 = (await client.threads.create())["thread_id"]
        cancelled = await client.runs.create(t5, "gated", input={"gates": ["g5"]})
        await GATES.arrived("g5").wait()
        await client.runs.cancel(t5, cancelled["run_id"], wait=True)

        samples = await idle(app)

    assert by(samples, "turnstile_runs_admitted_total", "strategy") == {
        ("reject",): 1,
        ("enqueue",): 5,
        ("interrupt",): 1,
        ("rollback",): 1,
    }
    assert by(samples, "turnstile_runs_refused_total", "strategy", "reason") == {
        ("reject", "THREAD_BUSY"): 1,
        ("enqueue", "QUEUE_FULL"): 1,
    }
    assert by(samples, "turnstile_runs_finished_total", "strategy", "status") == {
        ("reject", "success"): 1,
        ("enqueue", "interrupted"): 3,
        ("interrupt", "success"): 1,
        ("enqueue", "error"): 1,
        ("enqueue", "rolled_back"): 1,
        ("rollback", "success"): 1,
    }
    # Every run that started, once; the queued run that was interrupted never did.
    assert by(samples, "turnstile_run_queue_wait_seconds_count", "strategy") == {
        ("reject",): 1,
        ("enqueue",): 4,
        ("interrupt",): 1,
        ("rollback",): 1,
    }
    # The running runs stopped by `interrupt`, CancelRun and `rollback`.
    assert by(samples, "turnstile_run_cancel_to_stop_seconds_count", "action") == {
        ("interrupt",): 2,
        ("rollback",): 1,
    }
    rpcs = by(samples, "turnstile_rpc_duration_seconds_count", "method", "code")
    run_service = "/turnstile.v1.RunService/"
    assert rpcs[(f"{run_service}StreamRun", "OK")] == 1
    assert rpcs[(f"{run_service}CreateRun", "OK")] == 6
    assert rpcs[(f"{run_service}CreateRun", "ABORTED")] == 1
    assert rpcs[(f"{run_service}CreateRun", "RESOURCE_EXHAUSTED")] == 1
    assert rpcs[(f"{run_service}WaitRun", "OK")] == 1
    assert rpcs[(f"{run_service}CancelRun", "OK")] == 1
    assert rpcs[("/turnstile.v1.ThreadService/CreateThread", "OK")] == 5


async def test_rpc_latency_records_a_stream_the_client_cancelled(tmp_path: Path) -> None:
    async with serving(tmp_path / "c.db") as (app, client):
        thread_id = (await client.threads.create())["thread_id"]

        async def consume() -> None:
            async for _ in client.runs.stream(thread_id, "gated", input={"gates": ["g"]}):
                pass

        task = asyncio.create_task(consume())
        await GATES.arrived("g").wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

        async def check() -> None:
            rpcs = by(await scrape(app), "turnstile_rpc_duration_seconds_count", "method", "code")
            assert rpcs.get(("/turnstile.v1.RunService/StreamRun", "CANCELLED")) == 1

        await eventually(check)
        GATES.open("g")


async def test_gauges_count_the_runs_a_previous_process_left_running_and_queued(
    tmp_path: Path,
) -> None:
    database = tmp_path / "restart.db"
    async with serving(database) as (_, client):
        thread_id = (await client.threads.create())["thread_id"]
        running = await client.runs.create(thread_id, "gated", input={"gates": ["a"]})
        await GATES.arrived("a").wait()
        queued = await client.runs.create(thread_id, "gated", input={"gates": ["b"]})
    GATES.arrived("a").clear()
    async with serving(database) as (app, client):
        await GATES.arrived("a").wait()  # resumed as a second attempt
        samples = await scrape(app)
        assert by(samples, "turnstile_runs_executing") == {(): 1.0}
        assert by(samples, "turnstile_runs_queued") == {(): 1.0}
        GATES.open("a")
        GATES.open("b")
        for run in (running, queued):
            await client.runs.join(thread_id, run["run_id"])
        samples = await idle(app)
    assert by(samples, "turnstile_runs_admitted_total", "strategy") == {}
    assert by(samples, "turnstile_runs_finished_total", "strategy", "status") == {
        ("enqueue", "success"): 2
    }
    # A resumed attempt did not wait in the queue again; the queued run did.
    assert by(samples, "turnstile_run_queue_wait_seconds_count", "strategy") == {("enqueue",): 1}


async def test_metrics_are_off_by_default_and_servers_keep_separate_registries(
    tmp_path: Path,
) -> None:
    default = await App.start(ServerConfig(port=0, database=str(tmp_path / "off.db")))
    try:
        assert not default.metrics.enabled
        assert default.metrics.port is None
    finally:
        await default.stop(grace=0)
    async with (
        serving(tmp_path / "a.db") as (one, client),
        serving(tmp_path / "b.db") as (other, _),
    ):
        thread_id = (await client.threads.create())["thread_id"]
        await client.runs.wait_run(thread_id, "echo", input=HUMAN)
        assert by(await scrape(one), "turnstile_runs_admitted_total", "strategy") == {
            ("enqueue",): 1
        }
        assert by(await scrape(other), "turnstile_runs_admitted_total", "strategy") == {}


def test_metrics_port_and_log_format_come_from_the_environment() -> None:
    config = ServerConfig.from_env({"TURNSTILE_METRICS_PORT": "0", "TURNSTILE_LOG_FORMAT": "json"})
    assert (config.metrics_port, config.log_format) == (0, "json")
    assert ServerConfig.from_env({}).metrics_port == -1
    with pytest.raises(ValueError, match="metrics_port"):
        ServerConfig.from_env({"TURNSTILE_METRICS_PORT": "70000"})
    with pytest.raises(ValueError, match="log_format"):
        ServerConfig.from_env({"TURNSTILE_LOG_FORMAT": "xml"})
