"""`scripts/bench.py` runs every workload and prints a parseable table (timings not judged)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from turnstile_tools.bench.sizes import Sizes
from turnstile_tools.bench.suite import WORKLOADS, _selection

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
}
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
    assert sorted(rows) == list(WORKLOADS)
    for cells in rows.values():
        assert len(cells) == 7
        assert NUMBER.search(cells[2]), cells  # measured
        assert cells[6] in ("met", "MISSED"), cells

    document = json.loads(report.read_text())
    assert [row["id"] for row in document["rows"]] == list(WORKLOADS)
    assert document["sizes"]["b1_runs"] == TINY["b1_runs"]
    for row in document["rows"]:
        assert row["error"] == ""
        numbers = [v for v in row["figures"].values() if not isinstance(v, bool)]
        assert numbers and all(math.isfinite(v) for v in numbers), row
    assert document["rows"][2]["figures"]["order_kept"] is True


def test_only_selects_workloads_in_table_order() -> None:
    assert _selection("") == list(WORKLOADS)
    assert _selection("b5, B2") == ["B2", "B5"]
    with pytest.raises(ValueError, match="unknown workloads"):
        _selection("B9")


def test_sizes_are_overridden_by_name_and_bad_settings_refused() -> None:
    assert Sizes.quick().with_settings(["b1_runs=7"]).b1_runs == 7
    assert Sizes().with_settings(["b6_threads=1_000"]).b6_threads == 1000
    for bad in ["b1_runs", "nope=1", "b1_runs=x", "b1_runs=0"]:
        with pytest.raises(ValueError):
            Sizes().with_settings([bad])
