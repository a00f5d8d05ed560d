"""`turnstile serve` as an operator runs it: a real process, user graphs, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.processes import serve, serving
from turnstile import TurnstileClient, get_client

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


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


@asynccontextmanager
async def console_script(cwd: Path, *arguments: str) -> AsyncIterator[TurnstileClient]:
    """`turnstile <arguments>` run as a user runs it, the console script in `cwd` (not
    `python -m`, which puts the current directory on `sys.path` by itself), and a client of
    the address it logs; stopped with SIGTERM after the block, which must exit 0."""
    script = Path(sys.executable).with_name("turnstile")
    process = await asyncio.create_subprocess_exec(
        str(script),
        *arguments,
        cwd=cwd,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": ""},
    )
    try:
        assert process.stderr is not None
        address, seen = "", list[str]()
        async with asyncio.timeout(30):
            while not address:
                line = (await process.stderr.readline()).decode()
                assert line, "the server exited before serving: " + "".join(seen)
                seen.append(line)
                if match := re.search(r"serving on (127\.0\.0\.1:\d+)", line):
                    address = match.group(1)
        drain = asyncio.create_task(process.stderr.read())  # keep the pipe from filling
        client = get_client(url=address)
        try:
            yield client
        finally:
            await client.close()
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await process.wait() == 0
        await drain
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_readme_s_first_command_serves_the_built_in_agent(tmp_path: Path) -> None:
    """The README's first command ends in `turnstile serve`: run so (on a free port, in an
    empty directory), it answers the seeds' weather question through the LangGraph agent."""
    first = README.split("```bash\n", 1)[1].split("```", 1)[0].strip()
    assert first.endswith("&& .venv/bin/turnstile serve"), first
    async with console_script(tmp_path, "serve", "--port", "0") as client:
        thread = await client.threads.create()
        result = await client.runs.wait_run(
            thread["thread_id"],
            "agent",
            input={"messages": [{"role": "user", "content": "what's the weather in sf?"}]},
            config={"configurable": {"step_seconds": 0}},
        )
    assert result.run["status"] == "success", result.run
    types = [m["type"] for m in result.values["messages"]]
    assert types == ["human", "ai", "tool", "ai"]
    assert "sf" in result.values["messages"][-1]["content"]
    assert (tmp_path / "turnstile.db").exists()  # the README's default database


async def test_the_console_script_serves_graphs_from_the_directory_it_runs_in(
    tmp_path: Path,
) -> None:
    """`turnstile serve --graph name=module:attr` with the module beside the caller, as the
    README shows it, and `name=./file.py:attr`."""
    module = f"mygraphs_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text(_STEPS)
    (tmp_path / "lg").mkdir()
    (tmp_path / "lg" / "chat.py").write_text(_CHAT)
    async with console_script(
        tmp_path,
        *("serve", "--port", "0", "--database", str(tmp_path / "t.db")),
        *("--graph", f"steps={module}:steps", "--graph", "chat=./lg/chat.py:builder"),
    ) as client:
        thread = await client.threads.create()
        hi = {"messages": [{"role": "user", "content": "hi"}]}
        result = await client.runs.wait_run(thread["thread_id"], "steps", input=hi)
        assert result.values["stepped"] is True, result.run
        result = await client.runs.wait_run(thread["thread_id"], "chat", input=hi)
        assert result.values["messages"][-1]["content"] == "you said: hi", result.run


_STEPS = """
async def steps(state, ctx):
    yield {"stepped": True}
"""
_CHAT = """
from typing import Annotated, TypedDict

from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages


class State(TypedDict):
    messages: Annotated[list, add_messages]


async def answer(state: State) -> dict:
    return {"messages": [("ai", f"you said: {state['messages'][-1].content}")]}


builder = StateGraph(State)
builder.add_node("answer", answer)
builder.add_edge(START, "answer")
"""


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
