"""The run options are declared once (`records.RunOptions`): every one has a column codec, a
wire kind that reads back what it shows, and a server default only where an option names it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import pytest
from google.protobuf import json_format

from tests import postgres, test_run_options
from tests.rpc import Stubs
from tests.store_contract.test_run_options import EVERY_OPTION
from tests.support import client_of
from turnstile import TurnstileClient
from turnstile.v1 import run_pb2
from turnstile.v1 import run_service_pb2 as pb
from turnstile_server.api import run_options
from turnstile_server.app import App
from turnstile_server.config import ServerConfig
from turnstile_server.graph import GraphRegistry
from turnstile_server.runtime.native import NativeRuntime
from turnstile_server.store import run_columns
from turnstile_server.store.records import RUN_OPTIONS, RunOptions, options_of


def test_the_sample_gives_every_run_option_a_value_other_than_its_default() -> None:
    assert set(EVERY_OPTION) == set(RUN_OPTIONS)
    defaults = options_of(RunOptions())
    assert [name for name in RUN_OPTIONS if EVERY_OPTION[name] == defaults[name]] == []


def test_every_run_option_is_a_column_whose_codec_reads_back_what_it_writes() -> None:
    options = RunOptions(**EVERY_OPTION)
    row = dict(zip(run_columns.RUN_OPTION_COLUMNS, run_columns.option_values(options), strict=True))
    row["discarded_interrupts"] = "[]"

    assert run_columns.RUN_OPTION_COLUMNS == RUN_OPTIONS
    assert {k: v for k, v in run_columns.option_fields(row).items() if k in RUN_OPTIONS} == (
        EVERY_OPTION
    )


def test_a_run_option_whose_annotation_has_no_codec_is_refused_naming_it() -> None:
    with pytest.raises(TypeError, match=r"RunOptions\.labels: no column encoding for 'set\[str\]'"):
        run_columns._column("labels", "set[str]")


@pytest.mark.parametrize(
    "request_type", [pb.CreateRunRequest, pb.StreamRunRequest, pb.WaitRunRequest]
)
def test_every_run_option_shown_on_run_reads_back_from_an_admission_request(
    request_type: Any,
) -> None:
    message = run_pb2.Run()
    run_options.show(RunOptions(**EVERY_OPTION), message)
    shown = json_format.MessageToDict(message, preserving_proto_field_name=True)
    request = json_format.ParseDict(shown, request_type())

    assert sorted(shown) == sorted(RUN_OPTIONS)
    assert options_of(run_options.read(request, {})) == EVERY_OPTION


def test_a_server_default_fills_only_the_option_a_request_leaves_unset() -> None:
    defaults = {"durability": "exit", "on_pending_interrupt": "reject"}

    unset = run_options.read(pb.CreateRunRequest(), defaults)
    given = run_options.read(
        pb.CreateRunRequest(durability=run_pb2.DURABILITY_ASYNC, timeout_seconds=3), defaults
    )

    assert (unset.durability, unset.on_pending_interrupt, unset.timeout_seconds) == (
        "exit",
        "reject",
        None,
    )
    assert (given.durability, given.on_pending_interrupt, given.timeout_seconds) == (
        "async",
        "reject",
        3.0,
    )


def test_the_server_options_that_default_run_options_name_them() -> None:
    config = ServerConfig(durability="async", on_pending_interrupt="reject")

    assert config.run_defaults() == {"durability": "async", "on_pending_interrupt": "reject"}
    assert set(config.run_defaults()) <= set(RUN_OPTIONS)


def _options_shown(message: Any) -> dict[str, Any]:
    """The run options a request asks for or a `Run` shows, as JSON, by field name."""
    shown = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return {name: value for name, value in shown.items() if name in RUN_OPTIONS}


@pytest.fixture(params=["sqlite", "postgresql"])
async def stand_in(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[App, TurnstileClient]]:
    """A server with the run-options tests' stand-in LangGraph runtime (which admits the
    LangGraph-only options), on a SQLite file or a PostgreSQL database of its own."""
    graphs = GraphRegistry.with_builtins(
        [NativeRuntime(), test_run_options.StandInRuntime()], omit=("agent",)
    )
    graphs.register("lg", test_run_options.Recorded())
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "sqlite":
            database = str(tmp_path / "fields.db")
        else:
            database = await stack.enter_async_context(postgres.database())
        yield await stack.enter_async_context(client_of(database, graphs))


async def test_every_run_option_given_to_create_run_is_shown_by_get_run_and_list_runs(
    stand_in: tuple[App, TurnstileClient],
) -> None:
    # A new run option is covered here by its value in EVERY_OPTION: CreateRun with it and
    # without it, on both backends, read back through CreateRun, GetRun and ListRuns.
    app, client = stand_in
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.wait(thread_id, "lg", input={"wait": True})  # waits on EVERY_OPTION's
    checkpoint_id = (await client.threads.get_state(thread_id))["checkpoint_id"]
    every = run_pb2.Run()
    run_options.show(RunOptions(**{**EVERY_OPTION, "checkpoint_id": checkpoint_id}), every)
    given = json_format.ParseDict(
        _options_shown(every),
        pb.CreateRunRequest(thread_id=thread_id, assistant_id="lg", request_id="given"),
    )
    plain = pb.CreateRunRequest(thread_id=thread_id, assistant_id="lg", request_id="plain")
    defaults = run_pb2.Run()
    run_options.show(RunOptions(**ServerConfig().run_defaults()), defaults)

    async with grpc.aio.insecure_channel(app.address) as channel:
        runs = Stubs(channel).runs
        created = [(await runs.CreateRun(r)).run for r in (given, plain)]
        read = [
            (await runs.GetRun(pb.GetRunRequest(thread_id=thread_id, run_id=r.run_id))).run
            for r in created
        ]
        listed = (await runs.ListRuns(pb.ListRunsRequest(thread_id=thread_id))).runs

    assert sorted(_options_shown(given)) == sorted(RUN_OPTIONS)
    assert [r.run_id for r in listed[:2]] == [created[1].run_id, created[0].run_id]
    for with_it, without_it in (created, read, listed[1::-1]):
        assert _options_shown(with_it) == _options_shown(given)
        assert _options_shown(without_it) == _options_shown(defaults)
