"""Each server option is declared once: its flag and its variable set the same field, and the
reference table in docs/configuration.md is the one generated from the declarations."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest

from turnstile_server.cli import add_serve_command
from turnstile_server.config import ServerConfig, env_name, flag_name, option
from turnstile_server.options import add_arguments, config_from, declared, reference_table

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "configuration.md"
BEGIN, END = "<!-- options: begin -->\n", "<!-- options: end -->\n"

# A value other than the default for every option, as it is written on the command line.
CHANGED: dict[str, str] = {
    "host": "0.0.0.0",
    "port": "50099",
    "database": "other.db",
    "graphs": "mine=tests.support:recording",
    "langgraph_config": str(ROOT / "examples" / "langgraph" / "langgraph.json"),
    "max_running": "7",
    "graph_threads": "2",
    "switch_interval_ms": "2.5",
    "max_queued": "8",
    "max_attempts": "9",
    "run_timeout_seconds": "12.5",
    "durability": "exit",
    "on_pending_interrupt": "reject",
    "close_tool_calls": "off",
    "stream_retain_seconds": "30",
    "stream_max_events": "500",
    "stream_max_bytes": "4096",
    "stream_retained_bytes": "8192",
    "max_page_bytes": "65536",
    "subscriber_max_lag": "50",
    "max_message_bytes": "2048",
    "max_state_bytes": "4096",
    "max_answer_bytes": "1048576",
    "redis": "redis://cache:6380/2",
    "redis_key_prefix": "blue:",
    "redis_stream_max_events": "500",
    "redis_stream_ttl_seconds": "90.0",
    "replica_name": "replica-b",
    "lease_ttl_seconds": "4.5",
    "lease_beat_seconds": "1.5",
    "shutdown_grace_seconds": "2.5",
    "api_keys": "k1",
    "api_keys_file": "keys.txt",
    "tls_cert": "cert.pem",
    "tls_key": "key.pem",
    "tls_client_ca": "ca.pem",
    "metrics_port": "9100",
    "log_level": "DEBUG",
    "log_format": "json",
}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="turnstile")
    add_serve_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", *argv])


def test_every_field_is_an_option_with_a_changed_value_here() -> None:
    assert [setting.name for setting in declared()] == [s.name for s in fields(ServerConfig)]
    assert set(CHANGED) == {setting.name for setting in declared()}


def test_a_flag_and_its_variable_set_the_same_field(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [env_name(setting) for setting in declared()]:
        monkeypatch.delenv(name, raising=False)
    flags: list[str] = []
    environ: dict[str, str] = {}
    for setting in declared():
        environ[env_name(setting)] = CHANGED[setting.name]
        flag = flag_name(setting)
        if flag is not None:
            flags += [flag, CHANGED[setting.name]]
    from_flags = config_from(_parse(flags))
    from_env = ServerConfig.from_env(environ)
    default = ServerConfig()
    # The environment-only ones (the API keys: never a flag) come in through the environment.
    for setting in declared():
        if flag_name(setting) is None:
            setattr(from_flags, setting.name, getattr(from_env, setting.name))
    assert from_flags == from_env
    unchanged = [
        s.name for s in declared() if getattr(from_env, s.name) == getattr(default, s.name)
    ]
    assert not unchanged
    assert (from_env.max_running, from_env.run_timeout_seconds, from_env.graphs) == (
        7,
        12.5,
        ["mine=tests.support:recording"],
    )


def test_a_flag_wins_over_its_variable_and_a_repeated_graph_adds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TURNSTILE_MAX_RUNNING", "5")
    monkeypatch.setenv("TURNSTILE_GRAPHS", "a=m:a")
    assert config_from(_parse([])).max_running == 5
    config = config_from(_parse(["--max-running", "6", "--graph", "b=m:b"]))
    assert (config.max_running, config.graphs) == (6, ["a=m:a", "b=m:b"])


def test_an_option_s_own_parser_reads_its_variable_and_names_it() -> None:
    assert ServerConfig.from_env({"TURNSTILE_DATABASE": "sqlite:///t.db"}).database == (
        "sqlite:///t.db"
    )
    with pytest.raises(ValueError, match="TURNSTILE_DATABASE='mongodb://db/t': unknown database"):
        ServerConfig.from_env({"TURNSTILE_DATABASE": "mongodb://db/t"})


def test_redis_takes_only_a_redis_url() -> None:
    assert (
        ServerConfig.from_env({"TURNSTILE_REDIS": "redis://r:6379/1"}).redis == "redis://r:6379/1"
    )
    with pytest.raises(ValueError, match=r"TURNSTILE_REDIS='http://r/1'.*not a Redis URL"):
        ServerConfig.from_env({"TURNSTILE_REDIS": "http://r/1"})


def test_the_api_keys_are_no_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNSTILE_API_KEYS", "k1,k2")
    args = _parse([])
    assert not hasattr(args, "api_keys")
    assert config_from(args).api_keys == ["k1", "k2"]


@pytest.mark.parametrize(
    ("flag", "value"), [("--durability", "never"), ("--log-format", "xml"), ("--port", "x")]
)
def test_a_flag_refuses_a_value_outside_its_type_or_choices(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        _parse([flag, value])
    assert exited.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def _seconds(text: str) -> float:
    if not text.endswith("s"):
        raise ValueError(f"{text!r} does not end in s")
    return float(text[:-1])


@dataclass
class _Parsed:
    when: float = option(1.0, "a number of seconds, as `5s`", parse=_seconds)


def test_an_option_s_own_parser_reads_its_flag_and_refuses_with_its_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="parsed")
    add_arguments(parser, _Parsed())
    assert parser.parse_args(["--when", "5s"]).when == 5.0
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--when", "5"])
    assert exited.value.code == 2
    assert "argument --when: '5' does not end in s" in capsys.readouterr().err


def _documented() -> str:
    text = REFERENCE.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    return text.split(BEGIN)[1].split(END)[0]


def test_the_reference_table_is_the_generated_one() -> None:
    assert _documented() == reference_table(), "run: .venv/bin/python scripts/gen_config_doc.py"


def test_the_reference_table_names_every_flag_and_variable() -> None:
    table: Any = _documented()
    for setting in declared():
        assert f"`{env_name(setting)}`" in table
        flag = flag_name(setting)
        if flag is not None:
            assert f"`{flag}" in table
