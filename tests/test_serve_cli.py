"""`turnstile serve` as an operator runs it: a real process, user graphs, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.processes import serve, serving
from turnstile import get_client


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serve_registers_user_graphs_and_stops_cleanly_on_signal(
    tmp_path: Path, sig: signal.Signals
) -> None:
    async with serving(tmp_path / "serve.db", "recording=tests.support:recording") as (
        process,
        address,
    ):
        client = get_client(url=address)
        thread = await client.threads.create()
        result = await client.runs.wait_run(thread["thread_id"], "recording", input={"steps": 2})
        assert result.run["status"] == "success"
        assert len(result.values["messages"]) == 2
        await client.close()
        process.send_signal(sig)
        async with asyncio.timeout(30):
            assert await process.wait() == 0


async def test_serve_refuses_a_bad_graph_spec_with_a_clear_message(tmp_path: Path) -> None:
    process = await serve(tmp_path / "bad.db", "nope")
    async with asyncio.timeout(30):
        _, err = await process.communicate()
    assert process.returncode == 1
    assert b"name=package.module:attribute" in err
    assert b"Traceback" not in err


def test_serve_refuses_stream_limits_that_could_not_be_resumed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from turnstile_server.cli import main

    code = main(
        [
            "serve",
            "--port",
            "0",
            "--database",
            str(tmp_path / "x.db"),
            "--stream-max-events",
            "100",
            "--subscriber-max-lag",
            "100",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "subscriber_max_lag must be at least 1 and below stream_max_events" in err
    assert not (tmp_path / "x.db").exists()


def test_every_limit_has_an_environment_variable() -> None:
    from turnstile_server.config import ServerConfig

    config = ServerConfig.from_env(
        {
            "TURNSTILE_MAX_QUEUED": "7",
            "TURNSTILE_MAX_MESSAGE_BYTES": "4096",
            "TURNSTILE_MAX_ATTEMPTS": "5",
            "TURNSTILE_RUN_TIMEOUT_SECONDS": "12.5",
            "TURNSTILE_SHUTDOWN_GRACE_SECONDS": "3",
        }
    )
    assert (
        config.max_queued,
        config.max_message_bytes,
        config.max_attempts,
        config.run_timeout_seconds,
        config.shutdown_grace_seconds,
    ) == (7, 4096, 5, 12.5, 3.0)
    with pytest.raises(ValueError, match="max_message_bytes"):
        ServerConfig.from_env({"TURNSTILE_MAX_MESSAGE_BYTES": "10"})


def test_a_malformed_environment_variable_is_named_without_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from turnstile_server.cli import main

    monkeypatch.setenv("TURNSTILE_PORT", "abc")
    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    assert err == "turnstile: TURNSTILE_PORT='abc' is not a valid int\n"
