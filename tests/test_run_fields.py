"""The run options are declared once (`records.RunOptions`): every one has a column codec, a
wire kind that reads back what it shows, and a server default only where an option names it."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

from tests.store_contract.test_run_options import EVERY_OPTION
from turnstile.v1 import run_pb2
from turnstile.v1 import run_service_pb2 as pb
from turnstile_server.api import run_options
from turnstile_server.config import ServerConfig
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
