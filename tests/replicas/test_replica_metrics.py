"""The metrics name each replica (issue 22 point 7): every replica's `/metrics` says its name
and its current incarnation, so the scrapes of replicas on one database tell them apart."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

import pytest

from tests.replicas.cluster import Replica, cluster

pytestmark = pytest.mark.timeout(60)


def metrics_address(replica: Replica) -> str:
    """Where the replica serves its metrics (`--metrics-port 0`: the log says)."""
    [address] = [
        found.group(1)
        for line in replica.lines
        if (found := re.search(r"metrics on (127\.\d+\.\d+\.\d+:\d+)", line))
    ]
    return address


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        return str(response.read().decode())


async def test_each_replica_s_metrics_name_it_and_its_incarnation(tmp_path: Path) -> None:
    async with cluster(tmp_path, ("a", "b"), "--metrics-port", "0") as group:
        for replica in group.replicas:
            text = await asyncio.to_thread(scrape, metrics_address(replica))
            samples = [line for line in text.splitlines() if line.startswith("turnstile_replica{")]
            assert replica.incarnation
            assert samples == [
                f'turnstile_replica{{incarnation="{replica.incarnation}",replica="{replica.name}"}}'
                " 1.0"
            ], samples
