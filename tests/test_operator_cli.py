"""`turnstile threads ...` and `turnstile runs ...` against a real server: tables, JSON, errors.

The server runs in-process on the test's loop, so the blocking CLI runs in a worker thread,
or, where a signal or live output matters, in a real process.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests import support
from tests.support import GATES
from turnstile import NotFoundError, TurnstileClient, get_client
from turnstile_server.app import App
from turnstile_server.config import ServerConfig
from turnstile_tools.cli import main

ROOT = Path(__file__).resolve().parent.parent
# The command in a child process. SIGINT must raise KeyboardInterrupt there even when the
# test runner was started with SIGINT ignored (as background jobs are), which children inherit.
CHILD = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from turnstile_tools.cli import main; sys.exit(main(sys.argv[1:]))"
)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def table(self) -> list[list[str]]:
        """The output's lines as cells; columns are two or more spaces apart."""
        return [[c.strip() for c in line.split("  ") if c.strip()] for line in self.lines()]

    def lines(self) -> list[str]:
        return self.out.splitlines()


@dataclass(frozen=True)
class Cli:
    """Calls `turnstile <args> [--address <server>]` in a worker thread, capturing output."""

    address: str | None
    capsys: pytest.CaptureFixture[str]

    async def __call__(self, *args: str) -> Result:
        self.capsys.readouterr()
        argv = [*args, "--address", self.address] if self.address else list(args)
        code = await asyncio.to_thread(main, argv)
        out, err = self.capsys.readouterr()
        return Result(code, out, err)


@pytest.fixture
def cli(app: App, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(app.address, capsys)


async def held_run(client: TurnstileClient, thread_id: str, gate: str, **kwargs: Any) -> str:
    """Starts a `gated` run on the thread; it runs until `gate` opens. Returns its id."""
    run = await client.runs.create(thread_id, "gated", input={"gates": [gate]}, **kwargs)
    return run["run_id"]


@asynccontextmanager
async def child(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`turnstile <args>` as a real process, stdout and stderr piped; killed if still running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def read_until(
    process: asyncio.subprocess.Process, event: str, *, column: int = 1
) -> list[str]:
    """Reads the process's lines up to and including the first one about `event` (the word
    in `column`: 1 for a run's watch, 2 for a thread's, after the run id)."""
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(20):
        while not lines or lines[-1].split()[column : column + 1] != [event]:
            line = (await process.stdout.readline()).decode()
            assert line, f"the command exited before {event!r}; got {lines}"
            lines.append(line.rstrip("\n"))
    return lines


# --- threads -----------------------------------------------------------------------------


async def test_threads_list_shows_a_table_and_filters_by_status_and_metadata(
    cli: Cli, client: TurnstileClient
) -> None:
    red = await client.threads.create(metadata={"team": "red", "n": 3})
    blue = await client.threads.create(metadata={"team": "blue"})
    await held_run(client, blue["thread_id"], "list")
    await GATES.arrived("list").wait()

    table = await cli("threads", "list")
    busy = await cli("threads", "list", "--status", "busy", "--json")
    reds = await cli("threads", "list", "--metadata", "team=red", "--metadata", "n=3", "--json")
    one = await cli("threads", "list", "--limit", "1", "--json")
    GATES.open("list")

    assert table.code == 0, table.err
    assert table.table()[0] == ["THREAD_ID", "STATUS", "UPDATED", "METADATA"]
    rows = {row[0]: row[1:] for row in table.table()[1:]}
    status, updated, metadata = rows[red["thread_id"]]
    assert (status, metadata) == ("idle", '{"n":3,"team":"red"}')
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", updated)
    assert rows[blue["thread_id"]][0] == "busy"
    assert [t["thread_id"] for t in busy.json()] == [blue["thread_id"]]
    assert [t["thread_id"] for t in reds.json()] == [red["thread_id"]]
    assert len(one.json()) == 1


async def test_threads_get_and_state_show_the_values_readably_and_in_full_as_json(
    cli: Cli, client: TurnstileClient
) -> None:
    thread = await client.threads.create(metadata={"user": "alice"})
    tid = thread["thread_id"]
    GATES.open("a")
    await client.runs.wait(
        tid, "gated", input={"messages": [{"role": "user", "content": "hello"}], "gates": ["a"]}
    )
    expected = await client.threads.get_state(tid)

    got = await cli("threads", "get", tid)
    state = await cli("threads", "state", tid)
    state_json = await cli("threads", "state", tid, "--json")

    assert got.code == 0, got.err
    fields = {row[0]: row[1:] for row in got.table()}
    assert fields["thread_id"] == [tid]
    assert fields["status"] == ["idle"]
    assert fields["metadata"] == ['{"user":"alice"}']
    assert fields["values"][0].startswith("2 messages; last ai: passed a")

    assert state.code == 0, state.err
    lines = state.table()
    assert ["checkpoint", str(expected["checkpoint_id"])] in lines
    assert ["messages (2)"] in lines
    assert ["#", "TYPE", "CONTENT"] in lines
    assert ["1", "human", "hello"] in lines
    assert ["2", "ai", "passed a"] in lines
    assert ["last_gate", '"a"'] in lines
    assert state_json.json() == expected


async def test_threads_state_of_a_thread_without_checkpoints_says_so(
    cli: Cli, client: TurnstileClient
) -> None:
    tid = (await client.threads.create())["thread_id"]
    state = await cli("threads", "state", tid)
    assert state.code == 0, state.err
    assert state.table() == [["thread_id", tid], ["checkpoint", "- (no checkpoint yet)"]]


# --- runs --------------------------------------------------------------------------------


async def test_runs_list_and_get_show_status_strategy_attempt_and_queue_position(
    cli: Cli, client: TurnstileClient
) -> None:
    tid = (await client.threads.create())["thread_id"]
    running = await held_run(client, tid, "first")
    await GATES.arrived("first").wait()
    queued = await held_run(client, tid, "second", multitask_strategy="enqueue")

    table = await cli("runs", "list", tid)
    pending = await cli("runs", "list", tid, "--status", "pending", "--json")
    got = await cli("runs", "get", tid, queued)
    got_json = await cli("runs", "get", tid, queued, "--json")
    position = (await client.runs.get(tid, queued))["queue_position"]
    GATES.open("first")
    GATES.open("second")

    assert table.code == 0, table.err
    header, *rows = table.table()
    assert header == ["RUN_ID", "STATUS", "STRATEGY", "CREATED", "ATTEMPT", "QUEUE", "ASSISTANT"]
    by_id = {row[0]: row for row in rows}
    assert by_id[running][1:3] == ["running", "enqueue"]
    assert by_id[running][4:] == ["1", "-", "gated"]
    assert by_id[queued][1:3] == ["pending", "enqueue"]
    assert by_id[queued][4:] == ["0", str(position), "gated"]
    assert [r["run_id"] for r in pending.json()] == [queued]
    fields = {row[0]: row[1:] for row in got.table()}
    assert fields["status"] == ["pending"]
    assert fields["queue_position"] == [str(position)]
    assert fields["started"] == ["-"]
    as_json = got_json.json()
    assert (as_json["run_id"], as_json["status"], as_json["queue_position"]) == (
        queued,
        "pending",
        position,
    )


async def test_runs_cancel_interrupts_a_running_run_and_refuses_an_ended_one(
    cli: Cli, client: TurnstileClient
) -> None:
    tid = (await client.threads.create())["thread_id"]
    run_id = await held_run(client, tid, "never")
    await GATES.arrived("never").wait()

    cancelled = await cli("runs", "cancel", tid, run_id, "--wait", "--json")
    again = await cli("runs", "cancel", tid, run_id)

    assert cancelled.code == 0, cancelled.err
    assert cancelled.json()["status"] == "interrupted"
    assert (await client.runs.get(tid, run_id))["status"] == "interrupted"
    assert (await client.threads.get(tid))["status"] == "interrupted"
    assert again.code == 1
    assert again.out == ""
    assert again.err == (
        f"turnstile: FAILED_PRECONDITION RUN_NOT_ACTIVE: run {run_id} is interrupted,"
        " not pending or running\n"
    )


async def test_runs_cancel_with_rollback_deletes_the_run(cli: Cli, client: TurnstileClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    run_id = await held_run(client, tid, "never")
    await GATES.arrived("never").wait()

    # Without --wait: the server's CancelRun(rollback, wait) can answer RUN_NOT_FOUND when
    # its read of the deleted run overtakes the rollback's bookkeeping (a server race).
    cancelled = await cli("runs", "cancel", tid, run_id, "--action", "rollback")

    assert cancelled.code == 0, cancelled.err
    assert ["run_id", run_id] in cancelled.table()

    async def rolled_back() -> None:
        try:
            await client.runs.get(tid, run_id)
        except NotFoundError:
            return
        raise AssertionError(f"run {run_id} is still there")

    await support.eventually(rolled_back)
    assert (await client.threads.get_state(tid))["checkpoint_id"] is None


async def test_runs_watch_follows_a_run_live_and_exits_after_its_end(
    app: App, client: TurnstileClient
) -> None:
    tid = (await client.threads.create())["thread_id"]
    run_id = await held_run(client, tid, "watch")
    async with child("runs", "watch", tid, run_id, "--address", app.address) as process:
        first = await read_until(process, "metadata")
        GATES.open("watch")  # the rest of the run happens while the command follows it
        async with asyncio.timeout(20):
            rest, err = await process.communicate()
    lines = [*first, *rest.decode().splitlines()]

    assert process.returncode == 0, err
    assert err == b""
    words = [line.split() for line in lines]
    assert [int(w[0]) for w in words] == list(range(1, len(lines) + 1))
    assert words[0][1:] == ["metadata", "run", run_id, "attempt", "1"]
    assert [w[1] for w in words[1:]] == ["values", "values", "end"]
    assert words[1][2:] == ["keys", "gates"]  # the input applied
    assert lines[-2].endswith(
        "values       1 message; last ai: passed watch; keys gates, last_gate"
    )
    assert words[-1][1:] == ["end", "success"]


async def test_runs_watch_json_replays_an_ended_run_from_after_seq(
    cli: Cli, client: TurnstileClient
) -> None:
    tid = (await client.threads.create())["thread_id"]
    GATES.open("done")
    run = (await client.runs.wait_run(tid, "gated", input={"gates": ["done"]})).run

    everything = await cli("runs", "watch", tid, run["run_id"], "--json")
    resumed = await cli("runs", "watch", tid, run["run_id"], "--json", "--after-seq", "2")

    assert everything.code == 0, everything.err
    events = [json.loads(line) for line in everything.lines()]
    assert [(e["seq"], e["event"]) for e in events] == [
        (1, "metadata"),
        (2, "values"),
        (3, "values"),
        (4, "end"),
    ]
    assert events[0]["data"]["run_id"] == run["run_id"]
    assert events[-1]["data"]["status"] == "success"
    assert [json.loads(line) for line in resumed.lines()] == events[2:]


async def test_watching_a_thread_prints_every_run_until_ctrl_c_which_exits_130_quietly(
    app: App, client: TurnstileClient
) -> None:
    tid = (await client.threads.create())["thread_id"]
    async with child("runs", "watch", tid, "--address", app.address) as process:
        run_id = await held_run(client, tid, "thread")
        started = await read_until(process, "run_started", column=2)
        GATES.open("thread")
        ended = await read_until(process, "run_ended", column=2)
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            rest, err = await process.communicate()

    assert process.returncode == 130, err
    assert err == b""
    assert rest == b""
    words = [line.split() for line in [*started, *ended]]
    assert [w[2] for w in words] == [
        "run_started",
        "metadata",
        "values",
        "values",
        "end",
        "run_ended",
    ]
    assert {w[1] for w in words} == {run_id[:8]}
    assert words[0][3:] == ["run", run_id, "running", "(enqueue)"]
    assert words[-1][3:] == ["run", run_id, "success", "(enqueue)"]


# --- errors and connection options -------------------------------------------------------


async def test_a_failed_call_prints_one_line_with_code_and_reason_and_exits_1(
    cli: Cli, client: TurnstileClient
) -> None:
    missing = str(uuid.uuid4())
    tid = (await client.threads.create())["thread_id"]

    no_thread = await cli("threads", "get", missing)
    no_run = await cli("runs", "get", tid, missing)
    bad_id = await cli("runs", "watch", "not-a-uuid")

    assert (no_thread.code, no_thread.out) == (1, "")
    assert no_thread.err == f"turnstile: NOT_FOUND THREAD_NOT_FOUND: thread {missing} not found\n"
    assert no_run.code == 1
    assert no_run.err == f"turnstile: NOT_FOUND RUN_NOT_FOUND: run {missing} not found\n"
    assert bad_id.code == 1
    assert bad_id.err.startswith("turnstile: INVALID_ARGUMENT INVALID_ID: ")
    assert bad_id.err.count("\n") == 1


async def test_an_unreachable_server_is_named_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"

    result = await Cli(address, capsys)("threads", "list")

    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith(f"turnstile: UNAVAILABLE: cannot reach the server at {address}: ")
    assert result.err.count("\n") == 1
    assert "Traceback" not in result.err


async def test_address_and_api_key_come_from_the_environment_or_a_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await App.start(
        ServerConfig(port=0, database=str(tmp_path / "keys.db"), api_keys=["k-1f3a"]),
        support.registry(),
    )
    try:
        monkeypatch.setenv("TURNSTILE_ADDRESS", app.address)
        cli = Cli(None, capsys)
        refused = await cli("threads", "list")
        (tmp_path / "key").write_text("k-1f3a\n")
        from_file = await cli("threads", "list", "--api-key-file", str(tmp_path / "key"))
        monkeypatch.setenv("TURNSTILE_API_KEY", "k-1f3a")
        from_env = await cli("threads", "list", "--json")
    finally:
        await app.stop(grace=0)

    assert refused.code == 1
    assert refused.err.startswith("turnstile: UNAUTHENTICATED API_KEY_MISSING: ")
    assert from_file.code == 0, from_file.err
    assert from_file.table() == [["THREAD_ID", "STATUS", "UPDATED", "METADATA"]]
    assert (from_env.code, from_env.json()) == (0, [])


async def test_tls_ca_trusts_a_private_certificate_authority(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key, ca_pem = tmp_path / "server.crt", tmp_path / "server.key", tmp_path / "ca.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_pem))
    app = await App.start(
        ServerConfig(
            port=0, database=str(tmp_path / "tls.db"), tls_cert=str(cert), tls_key=str(key)
        ),
        support.registry(),
    )
    try:
        async with get_client(
            url=f"https://{app.address}", root_certificates=ca.cert_pem.bytes()
        ) as client:
            tid = (await client.threads.create())["thread_id"]
        cli = Cli(f"https://{app.address}", capsys)
        listed = await cli("threads", "list", "--tls-ca", str(ca_pem), "--json")
        unreadable = await cli("threads", "list", "--tls-ca", str(tmp_path / "nope.pem"))
    finally:
        await app.stop(grace=0)

    assert listed.code == 0, listed.err
    assert [t["thread_id"] for t in listed.json()] == [tid]
    assert unreadable.code == 1
    assert unreadable.err.startswith("turnstile: ") and "nope.pem" in unreadable.err
    assert unreadable.err.count("\n") == 1
