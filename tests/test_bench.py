"""`scripts/bench.py` runs every workload and prints a parseable table (timings not judged)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from turnstile_tools.bench.sdk import thread_sizes
from turnstile_tools.bench.sizes import Sizes
from turnstile_tools.bench.suite import WORKLOADS, Placement, _selection

ROOT = Path(__file__).resolve().parent.parent

TINY = {
    "warmup": 2,
    "channels": 2,
    "echo_calls": 20,
    "echo_clients": 4,
    "echo_calls_per_client": 3,
    "b1_runs": 5,
    "b2_clients": 4,
    "b2_runs_per_client": 3,
    "b3_threads": 3,
    "b3_runs_per_thread": 3,
    "b3_rounds": 1,
    "b4_iterations": 3,
    "b5_streams": 3,
    "b5_chunks": 20,
    "b6_threads": 50,
    "b6_checkpoints": 500,
    "b7_threads": 2,
    "b7_runs_per_thread": 5,
    "b8_small": 10,
    "b8_large": 40,
    "b8_runs": 3,
    "b9_calls": 2,
    "b9_large": 20,
    "lg_runs": 4,
    "lg_clients": 3,
    "lg_runs_per_client": 2,
    "lg_handoffs": 2,
}
CPU_ROWS = ["B2-cpu", "B3-cpu", "B10-32", "B10-floor"]
"""The rows after B2's and B3's (their server CPU per run against an echo call's) and after
B10's (its runs with many callers, and its floor: a native run served plus LangGraph's own)."""
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


@pytest.mark.timeout(120)
def test_bench_prints_every_workload_with_numbers_and_writes_json(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    settings = [f"--set={name}={value}" for name, value in TINY.items()]
    done = subprocess.run(
        [sys.executable, "scripts/bench.py", "--quick", *settings, f"--json={report}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    rows = {
        cells[0]: cells
        for line in done.stdout.splitlines()
        if line.startswith("| B")
        for cells in [[cell.strip() for cell in line.strip("|").split(" | ")]]
    }
    assert sorted(rows) == sorted([*WORKLOADS, *CPU_ROWS])
    for cells in rows.values():
        assert len(cells) == 7
        assert NUMBER.search(cells[2]), cells  # measured
        assert cells[6] in ("met", "MISSED"), cells

    document = json.loads(report.read_text())
    ids = [row["id"] for row in document["rows"]]
    assert [i for i in ids if i not in CPU_ROWS] == list(WORKLOADS)
    assert ids.index("B2-cpu") == ids.index("B2") + 1 and ids.index("B3-cpu") == ids.index("B3") + 1
    assert ids.index("B10-32") == ids.index("B10") + 1
    assert ids.index("B10-floor") == ids.index("B10") + 2
    # B9's table in full, one line per operation, two thread sizes: 2 and b9_large.
    assert "| wait | " in done.stdout and "| stream | " in done.stdout
    assert document["sizes"]["b1_runs"] == TINY["b1_runs"]
    for row in document["rows"]:
        assert row["error"] == ""
        numbers = [v for v in row["figures"].values() if not isinstance(v, bool)]
        assert numbers and all(math.isfinite(v) for v in numbers), row
    by_id = {row["id"]: row for row in document["rows"]}
    assert by_id["B3"]["figures"]["order_kept"] is True
    # Tiny sizes may use less CPU than /proc's 10 ms tick: measured, if maybe as 0.
    assert by_id["B2-cpu"]["figures"]["cpu_per_run"] >= 0
    assert document["baselines"]["echo"]["cpu_per_call"] >= 0
    assert set(thread_sizes(by_id["B9"]["figures"])) == {2, 20}


def test_only_selects_workloads_in_table_order() -> None:
    assert _selection("") == list(WORKLOADS)
    assert _selection("b5, B2") == ["B2", "B5"]
    assert _selection("", langgraph_dev=True) == [*WORKLOADS, "B11"]
    with pytest.raises(ValueError, match="unknown workloads"):
        _selection("B12")
    with pytest.raises(ValueError, match="B11 needs --langgraph-dev"):
        _selection("B11")


def test_sizes_are_overridden_by_name_and_bad_settings_refused() -> None:
    assert Sizes.quick().with_settings(["b1_runs=7"]).b1_runs == 7
    assert Sizes().with_settings(["b6_threads=1_000"]).b6_threads == 1000
    assert Sizes().b9_sizes() == (2, 200, 2000, 10_000)
    assert Sizes.quick().b9_sizes() == (2, 200, 2000)  # b9_large 2,000: listed once
    for bad in ["b1_runs", "nope=1", "b1_runs=x", "b1_runs=0"]:
        with pytest.raises(ValueError):
            Sizes().with_settings([bad])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="--pin needs two cores")
def test_pin_puts_the_servers_and_the_load_generator_on_different_cores() -> None:
    placement = Placement.pinned()
    assert placement.servers and placement.load
    assert not placement.servers & placement.load
    assert placement.servers | placement.load == os.sched_getaffinity(0)
    assert Placement().cpus is None
