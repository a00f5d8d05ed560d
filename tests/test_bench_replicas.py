"""`scripts/bench_replicas.py` runs end to end on tiny sizes, prints its table and writes its
figures (timings not judged: only that each row was measured)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import postgres
from tests import redis as test_redis

ROOT = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)? (?:runs/s|ms)")
ROWS = [
    "SQLite, 1 process",
    "PostgreSQL, 1 replica",
    "PostgreSQL, 2 replicas",
    "CancelRun on b of a run on a",
    "CreateRun(interrupt) on b",
    "CancelRun on b, a's LISTEN connection cut",
]
"""How the table's rows begin, in order."""


@pytest.mark.timeout(240)
def test_the_replica_bench_measures_every_row_on_tiny_sizes(tmp_path: Path) -> None:
    database, redis = postgres.server_url(), test_redis.server_url()
    report = tmp_path / "replicas.json"
    sizes = ["--clients", "4", "--runs", "8", "--trials", "3", "--cut-trials", "2"]
    services = [f"--postgres={database}", f"--redis={redis}"]
    done = subprocess.run(
        [sys.executable, "scripts/bench_replicas.py", *sizes, *services, f"--json={report}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]
    assert len(rows) == len(ROWS), done.stdout
    for cells, begins in zip(rows, ROWS, strict=True):
        assert len(cells) == 5 and cells[0].startswith(begins), cells
        assert NUMBER.search(cells[1]), cells  # measured
    assert all(cells[4] in ("met", "MISSED") for cells in rows[3:]), rows
    document = json.loads(report.read_text())
    results = document["results"]
    assert sorted(results) == ["cancel", "cut", "handoff", "pg1", "pg2", "sqlite"]
    for key in ("sqlite", "pg1", "pg2"):
        assert results[key]["runs"] == 8 and results[key]["rate"] > 0
        assert results[key]["cpu_per_run"] >= 0  # tiny sizes: maybe under /proc's tick
    assert results["cancel"]["trials"] == 3 and results["cut"]["trials"] == 2
    for figures in results.values():
        assert all(math.isfinite(v) for v in figures.values()), figures
