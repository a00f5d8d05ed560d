"""`App.start` closes what it opened when a later step fails: the store, the metrics server."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from turnstile_server.app import App
from turnstile_server.config import ServerConfig
from turnstile_server.scheduler import Scheduler


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another socket is listening on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def _released(database: Path) -> None:
    """Asserts no connection holds `database`: SQLite removes the WAL when the last closes."""
    assert database.exists()
    assert not Path(f"{database}-wal").exists()


async def _opens_again(database: Path) -> None:
    """The same database serves again in a new app (a held store would stand in the way)."""
    app = await App.start(ServerConfig(host="127.0.0.1", port=0, database=str(database)))
    await app.stop()


async def test_a_taken_port_fails_the_start_and_releases_the_store(
    tmp_path: Path, taken_port: int
) -> None:
    database = tmp_path / "taken.db"
    config = ServerConfig(host="127.0.0.1", port=taken_port, database=str(database))
    with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{taken_port}"):
        await App.start(config)
    _released(database)
    await _opens_again(database)


async def test_a_failure_after_the_metrics_server_started_releases_it_and_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def fail(self: Scheduler) -> None:
        raise RuntimeError("injected: recovery failed")

    monkeypatch.setattr(Scheduler, "start", fail)
    database = tmp_path / "metrics.db"
    config = ServerConfig(host="127.0.0.1", port=0, database=str(database), metrics_port=0)
    with (
        caplog.at_level(logging.INFO, logger="turnstile_server.app"),
        pytest.raises(RuntimeError, match="injected"),
    ):
        await App.start(config)
    (metrics_port,) = [
        int(found.group(1))
        for record in caplog.records
        if (found := re.fullmatch(r"metrics on 127\.0\.0\.1:(\d+)", record.getMessage()))
    ]
    with socket.socket() as probe:  # refused (EADDRINUSE) while the metrics server listens
        probe.bind(("127.0.0.1", metrics_port))
    _released(database)
    monkeypatch.undo()
    await _opens_again(database)


def test_serve_on_a_taken_port_says_so_without_a_traceback(
    tmp_path: Path, taken_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    from turnstile_server.cli import main

    database = tmp_path / "cli.db"
    assert main(["serve", "--port", str(taken_port), "--database", str(database)]) == 1
    err = capsys.readouterr().err
    assert f"turnstile: cannot bind 127.0.0.1:{taken_port}\n" in err
    assert "Traceback" not in err
    _released(database)
