"""Logs: one line per run transition with its thread and run, as text or JSON lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import signal
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import support
from tests.processes import STARTUP, serve
from tests.support import GATES
from turnstile import ConflictError, TurnstileClient, get_client
from turnstile_server.app import App
from turnstile_server.config import ServerConfig
from turnstile_server.logs import JsonFormatter, TextFormatter
from turnstile_server.logs import configured as logs_configured

LOGGER = "turnstile_server.metrics"
HUMAN = {"messages": [{"role": "user", "content": "hi"}]}


def transitions(caplog: pytest.LogCaptureFixture) -> dict[str, list[logging.LogRecord]]:
    """The run transition records, by run id (`""` for refusals, which have no run)."""
    runs: dict[str, list[logging.LogRecord]] = {}
    for record in caplog.records:
        if record.name == LOGGER:
            assert record.thread_id  # type: ignore[attr-defined]
            runs.setdefault(getattr(record, "run_id", ""), []).append(record)
    return runs


def messages(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records]


async def test_each_run_transition_logs_one_line_with_its_thread_and_run(
    client: TurnstileClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    thread_id = (await client.threads.create())["thread_id"]
    first = await client.runs.create(thread_id, "gated", input={"gates": ["g"]})
    await GATES.arrived("g").wait()
    with pytest.raises(ConflictError):
        await client.runs.create(thread_id, "echo", input=HUMAN, multitask_strategy="reject")
    second = await client.runs.create(
        thread_id, "echo", input=HUMAN, multitask_strategy="interrupt"
    )
    await client.runs.join(thread_id, second["run_id"])
    third = await client.runs.create(thread_id, "gated", input={"gates": ["h"]})
    await GATES.arrived("h").wait()
    fourth = await client.runs.create(thread_id, "failing", multitask_strategy="rollback")
    await client.runs.join(thread_id, fourth["run_id"])

    runs = transitions(caplog)
    assert set(runs) == {"", first["run_id"], second["run_id"], third["run_id"], fourth["run_id"]}
    for run_id, records in runs.items():
        assert all(r.thread_id == thread_id for r in records)  # type: ignore[attr-defined]
        assert all(getattr(r, "run_id", "") == run_id for r in records)
    interrupted = ["run admitted", "run started", "run cancelling", "run interrupted"]
    assert messages(runs[first["run_id"]]) == interrupted
    assert messages(runs[second["run_id"]]) == ["run admitted", "run started", "run finished"]
    rolled_back = ["run admitted", "run started", "run cancelling", "run rolled back"]
    assert messages(runs[third["run_id"]]) == rolled_back
    assert messages(runs[fourth["run_id"]]) == ["run admitted", "run started", "run finished"]
    [refused] = runs[""]
    assert (refused.getMessage(), refused.reason, refused.strategy) == (  # type: ignore[attr-defined]
        "run refused",
        "THREAD_BUSY",
        "reject",
    )
    ended = runs[first["run_id"]][-1]
    assert (ended.status, ended.superseded_by) == ("interrupted", second["run_id"])  # type: ignore[attr-defined]
    done = runs[second["run_id"]][-1]
    assert (done.status, done.strategy, done.attempt) == ("success", "interrupt", 1)  # type: ignore[attr-defined]
    failed = runs[fourth["run_id"]][-1]
    assert (failed.status, failed.error_type) == ("error", "RuntimeError")  # type: ignore[attr-defined]
    assert runs[third["run_id"]][-1].status == "rolled_back"  # type: ignore[attr-defined]


async def test_a_run_resumed_after_a_restart_logs_its_attempt(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    config = ServerConfig(host="127.0.0.1", port=0, database=database)
    app = await App.start(config, support.registry())
    client = get_client(url=app.address)
    thread_id = (await client.threads.create())["thread_id"]
    run = await client.runs.create(thread_id, "gated", input={"gates": ["a"]})
    await GATES.arrived("a").wait()
    await client.close()
    await app.stop(grace=0)
    GATES.open("a")
    app = await App.start(config, support.registry())
    client = get_client(url=app.address)
    try:
        await client.runs.join(thread_id, run["run_id"])
    finally:
        await client.close()
        await app.stop(grace=0)
    records = transitions(caplog)[run["run_id"]]
    expected = ["run admitted", "run started", "run resumed", "run finished"]
    assert messages(records) == expected
    assert [getattr(r, "attempt", None) for r in records] == [None, 1, 2, 2]


def test_json_lines_carry_timestamp_level_logger_message_and_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("run %s", "finished", extra={"thread_id": "t", "run_id": "r", "n": 2})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.pop("timestamp"))
    assert first == {
        "level": "WARNING",
        "logger": "tests.json",
        "message": "run finished",
        "thread_id": "t",
        "run_id": "r",
        "n": 2,
    }
    assert second["message"] == "failed"
    assert "ValueError: boom" in second["exception"]


def test_text_lines_append_the_fields_as_key_value() -> None:
    record = logging.makeLogRecord(
        {"name": "x", "levelname": "INFO", "msg": "run interrupted", "run_id": "r1"}
    )
    record.reason = "interrupted by run r2"
    line = TextFormatter().format(record)
    assert line.endswith('x: run interrupted run_id=r1 reason="interrupted by run r2"')


class _HeldStream(io.StringIO):
    """A stderr whose writes wait until `release` is set, as a full pipe to a collector does."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = threading.Event()
        self.release = threading.Event()
        self.writes = 0
        self._wrote = threading.Condition()

    def write(self, text: str) -> int:
        self.writing.set()
        self.release.wait(10)
        with self._wrote:
            self.writes += 1
            written = super().write(text)
            self._wrote.notify_all()
        return written

    def wait_for(self, fragment: str) -> None:
        with self._wrote:
            assert self._wrote.wait_for(lambda: fragment in self.getvalue(), 10)

    def messages(self) -> list[str]:
        """Each text line's `LEVEL logger: message ...`, without its time."""
        return [line.split(" ", 2)[2] for line in self.getvalue().splitlines()]


@contextmanager
def _held_stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[_HeldStream]:
    """`sys.stderr` held until the test releases it, and released at the end in any case.

    (Patched in the test itself: pytest's capture resets `sys.stderr` after fixtures ran.)
    """
    stream = _HeldStream()
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        yield stream
    finally:
        stream.release.set()


def _log_while_held(logger: logging.Logger, stderr: _HeldStream, lines: int) -> None:
    """Logs `line 0`, waits until the writer holds it (the queue is then empty), then logs
    `line 1` to `line {lines - 1}` while it is held."""
    logger.info("line 0")
    assert stderr.writing.wait(5)
    for number in range(1, lines):
        logger.info("line %d", number)


def test_a_held_stderr_stalls_no_logging_caller_and_its_lines_are_written_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logger = logging.getLogger("turnstile_server.held")
    returned = threading.Event()

    def log_lines() -> None:
        logger.info("one", extra={"run_id": "r1"})
        logger.warning("two")
        returned.set()

    with _held_stderr(monkeypatch) as stderr, logs_configured("INFO", "text"):
        caller = threading.Thread(target=log_lines)
        caller.start()
        assert returned.wait(5), "a logging call waited for stderr"
        assert stderr.writing.wait(5)
        assert stderr.getvalue() == ""  # the writer's thread is the one held
        stderr.release.set()
    caller.join(5)
    assert stderr.messages() == [
        "INFO turnstile_server.held: one run_id=r1",
        "WARNING turnstile_server.held: two",
    ]


def test_lines_queued_while_stderr_is_held_are_written_with_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logger = logging.getLogger("turnstile_server.held")
    with _held_stderr(monkeypatch) as stderr, logs_configured("INFO", "text"):
        _log_while_held(logger, stderr, 6)
        stderr.release.set()
        stderr.wait_for("line 5")
        assert stderr.writes == 2
    assert stderr.messages() == [f"INFO turnstile_server.held: line {n}" for n in range(6)]


def test_lines_beyond_the_queue_bound_are_dropped_and_counted_where_they_are_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logger = logging.getLogger("turnstile_server.held")
    with _held_stderr(monkeypatch) as stderr, logs_configured("INFO", "text", queued_lines=3):
        _log_while_held(logger, stderr, 10)  # 1-3 wait, 4-9 find 3 waiting
        stderr.release.set()
        stderr.wait_for("line 3")
        logger.info("later")
        logger.info("last")
        stderr.wait_for("last")
    dropped = "WARNING turnstile_server.logs: 6 log lines dropped: stderr did not keep up"
    held = [f"INFO turnstile_server.held: line {n}" for n in range(4)]
    later = ["INFO turnstile_server.held: later", "INFO turnstile_server.held: last"]
    assert stderr.messages() == [*held, dropped, *later]


def test_lines_dropped_just_before_the_end_are_counted_in_the_last_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logger = logging.getLogger("turnstile_server.held")
    with _held_stderr(monkeypatch) as stderr, logs_configured("INFO", "text", queued_lines=2):
        _log_while_held(logger, stderr, 6)  # 1-2 wait, 3-5 find 2 waiting
        stderr.release.set()
    assert stderr.messages() == [
        *(f"INFO turnstile_server.held: line {n}" for n in range(3)),
        "WARNING turnstile_server.logs: 3 log lines dropped: stderr did not keep up",
    ]


def test_a_line_that_cannot_be_formatted_is_reported_and_its_neighbours_are_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    # pytest's own capture handler fails the logging call itself on such a line.
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    logger = logging.getLogger("turnstile_server.held")
    with logs_configured("INFO", "text"):
        logger.info("before")
        logger.info("count %d", "not a number")
        logger.info("after")
    text = stderr.getvalue()
    assert "--- Logging error ---" in text and "TypeError" in text
    messages = [line.split(" ", 2)[2] for line in text.splitlines() if " INFO " in line]
    assert messages == ["INFO turnstile_server.held: before", "INFO turnstile_server.held: after"]


def test_a_traceback_is_written_by_the_writer_thread_with_its_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    with logs_configured("WARNING", "json"):
        logging.getLogger("turnstile_server.held").info("not at this level")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("turnstile_server.held").exception("failed")
    [line] = [json.loads(text) for text in stderr.getvalue().splitlines()]
    assert line["message"] == "failed"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("RuntimeError: boom")


async def test_serve_logs_json_lines_and_the_metrics_address(tmp_path: Path) -> None:
    process = await serve(
        tmp_path / "json.db",
        "recording=tests.support:recording",
        "--metrics-port",
        "0",
        "--log-format",
        "json",
    )
    try:
        assert process.stderr is not None
        lines: list[dict[str, Any]] = []
        address = metrics = ""
        async with asyncio.timeout(STARTUP):
            while not (address and metrics):
                raw = await process.stderr.readline()
                assert raw, "the server exited before serving"
                lines.append(json.loads(raw))
                # The pattern `tests/processes.py` looks for in text logs matches JSON too.
                if match := re.search(r"serving on (127\.0\.0\.1:\d+)", raw.decode()):
                    address = match.group(1)
                if match := re.fullmatch(r"metrics on (127\.0\.0\.1:\d+)", lines[-1]["message"]):
                    metrics = match.group(1)
        client = get_client(url=address)
        thread_id = (await client.threads.create())["thread_id"]
        result = await client.runs.wait_run(thread_id, "recording", input={"steps": 1})
        await client.close()
        run_id = result.run["run_id"]

        def fetch() -> str:
            with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as response:
                return str(response.read().decode())

        families = {
            f.name: f for f in text_string_to_metric_families(await asyncio.to_thread(fetch))
        }
        samples = families["turnstile_runs_admitted"].samples
        [admitted] = [s for s in samples if s.name == "turnstile_runs_admitted_total"]
        assert (admitted.labels, admitted.value) == ({"strategy": "enqueue"}, 1.0)

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            rest = await process.stderr.read()
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    lines += [json.loads(line) for line in rest.decode().splitlines()]
    for line in lines:
        assert {"timestamp", "level", "logger", "message"} <= set(line)
    of_run = [line for line in lines if line.get("run_id") == run_id]
    assert [line["message"] for line in of_run] == ["run admitted", "run started", "run finished"]
    assert all(line["thread_id"] == thread_id and line["logger"] == LOGGER for line in of_run)
    assert of_run[-1]["status"] == "success"
