"""Replicas on one database that disagree about relaying events through Redis: the newcomer
refuses to start (exit 2) and says why; the replicas serving go on."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.replicas.cluster import Cluster, cluster

pytestmark = pytest.mark.timeout(60)


async def refused(group: Cluster, name: str, *options: str, redis: str | None = None) -> str:
    """Starts replica `name`, which must exit 2 before serving; what it said."""
    with pytest.raises(AssertionError, match="exited before serving"):
        await group.start(name, *options, redis=redis)
    replica = group[name]
    assert await replica.process.wait() == 2
    said = "".join(replica.lines)
    assert "Traceback" not in said
    return said


async def test_a_replica_with_redis_refuses_to_join_replicas_without_it(tmp_path: Path) -> None:
    async with cluster(tmp_path, ()) as group:
        await group.start("a", redis="")
        said = await refused(group, "b")
        assert (
            f"replica b relays its runs' events through Redis under the key prefix"
            f" {group.redis_prefix!r}, but the replicas serving this database relay them"
            " otherwise (a: without Redis)"
        ) in said
        assert group["a"].process.returncode is None
        assert await group.query("SELECT relay FROM deployment") == [("none",)]


async def test_a_replica_without_redis_refuses_to_join_replicas_with_it(tmp_path: Path) -> None:
    async with cluster(tmp_path, ("a",)) as group:
        said = await refused(group, "lone", redis="")
        assert "replica lone relays its runs' events without Redis" in said
        assert f"(a: through Redis under the key prefix {group.redis_prefix!r})" in said
        assert group["a"].process.returncode is None


async def test_a_replica_with_another_redis_key_prefix_refuses_to_join(tmp_path: Path) -> None:
    async with cluster(tmp_path, ("a",)) as group:
        other = f"{group.redis_prefix}other:"
        said = await refused(group, "b", "--redis-key-prefix", other)
        assert f"under the key prefix {other!r}, but" in said
        assert group["a"].process.returncode is None
        relay = f"redis:{group.redis_prefix}"
        assert await group.query("SELECT relay FROM deployment") == [(relay,)]


async def test_two_replicas_without_redis_refuse_to_share_a_database(tmp_path: Path) -> None:
    async with cluster(tmp_path, ()) as group:
        await group.start("a", redis="")
        said = await refused(group, "b", redis="")
        assert "replica b has no --redis, and other replicas serve this database" in said


async def test_once_every_replica_stopped_the_deployment_may_start_otherwise(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, ("a",)) as group:
        group["a"].signal(signal.SIGTERM)  # ends its lease on the way out
        assert await group["a"].process.wait() == 0
        await group.start("b", redis="")
        assert await group.query("SELECT relay FROM deployment") == [("none",)]
        agreed = await group.query(
            "SELECT relay FROM replicas WHERE incarnation = $1", group["b"].incarnation
        )
        assert agreed == [("none",)]
