"""The contract across stores on one database, as replicas hold them: admission stays one
transaction on the thread's row whichever store makes it (backends that allow it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.store_contract.backends import MAX_QUEUED, Backend, spec, statuses
from turnstile_server.errors import ThreadBusy
from turnstile_server.store import Admission, Store

pytestmark = pytest.mark.timeout(60)

REPLICAS = 3
PER_REPLICA = 20
ROUNDS = 5


@pytest.fixture
async def replicas(backend: Backend) -> AsyncIterator[list[Store]]:
    if backend.one_process:
        pytest.skip(f"{backend.name} serves one process per database")
    stores = [await backend.open() for _ in range(REPLICAS)]
    yield stores
    for store in stores:
        await store.close()


async def test_concurrent_rejects_spread_over_replicas_admit_exactly_one_round_after_round(
    replicas: list[Store],
) -> None:
    for round_number in range(ROUNDS):
        thread_id = f"t{round_number}"
        await replicas[0].threads.create(thread_id, {})
        outcomes = await asyncio.gather(
            *(
                store.runs.admit(spec(thread_id, "reject"), max_queued=MAX_QUEUED)
                for store in replicas
                for _ in range(PER_REPLICA)
            ),
            return_exceptions=True,
        )
        admitted = [o for o in outcomes if isinstance(o, Admission)]
        refused = [o for o in outcomes if isinstance(o, ThreadBusy)]
        assert len(admitted) == 1, f"round {round_number}: {len(admitted)} admitted"
        assert len(refused) == REPLICAS * PER_REPLICA - 1, outcomes
        winner = admitted[0].run.run_id
        assert all(o.inflight == [winner] for o in refused)
        assert list(await statuses(replicas[1], thread_id)) == [winner]


async def test_one_request_id_sent_to_every_replica_creates_one_run(
    replicas: list[Store],
) -> None:
    for round_number in range(ROUNDS):
        thread_id = f"t{round_number}"
        await replicas[0].threads.create(thread_id, {})
        request = spec(thread_id, "enqueue", request_id=f"request-{round_number}")
        outcomes = await asyncio.gather(
            *(
                store.runs.admit(request, max_queued=MAX_QUEUED)
                for store in replicas
                for _ in range(PER_REPLICA)
            )
        )
        assert len({o.run.run_id for o in outcomes}) == 1
        assert sum(not o.existing for o in outcomes) == 1
        assert len(await statuses(replicas[2], thread_id)) == 1


async def test_a_replica_reads_the_state_another_replica_wrote_and_rolled_back(
    replicas: list[Store],
) -> None:
    first, second = replicas[0], replicas[1]
    await first.threads.create("t", {})
    admission = await first.runs.admit(spec("t"), max_queued=MAX_QUEUED, start=True)
    assert admission.start is not None and admission.start.run is not None
    running = admission.start.run
    await first.checkpoints.put("t", running.run_id, 1, "step", {"n": 1})
    state, last = await second.checkpoints.state("t")  # cached on the second now
    assert state.values["n"] == 1
    await first.checkpoints.put("t", running.run_id, 2, "step", {"n": 2})
    state, newest = await second.checkpoints.state("t")
    assert state.values["n"] == 2 and newest is not None and last is not None
    assert newest.seq > last.seq
    # Rolled back on the first: the second's cache is folded up to a deleted checkpoint.
    await first.runs.cancel("t", running.run_id, "rollback")
    await first.runs.finish(running, "success")
    state, after = await second.checkpoints.state("t")
    assert (state.values, after) == ({}, None)
    assert (await second.checkpoints.live("t")).values == {}
    # A new run on the second, a step from the first: both see it.
    begun = await second.runs.admit(spec("t"), max_queued=MAX_QUEUED, start=True)
    assert begun.start is not None and begun.start.run is not None
    await first.checkpoints.put("t", begun.start.run.run_id, 1, "step", {"n": 3})
    for store in (first, second):
        state, _ = await store.checkpoints.state("t")
        assert state.values["n"] == 3 and [m["content"] for m in state.values["messages"]] == ["hi"]
