"""A client in a process of its own, for the responsiveness tests: once a graph says it spins
(its file appears), makes one Health, GetThread, CreateRun (reject) and CancelRun call, each
with a deadline, and prints what they answered as JSON; exits 1 if one of them failed.

Run as `python -m tests.api_probe ADDRESS SPIN_FILE DEADLINE`; the file holds
`THREAD_ID RUN_ID GRAPH_ID`, written by the graph as it starts computing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.rpc import error_info, struct
from turnstile.v1 import (
    run_pb2,
    run_service_pb2,
    run_service_pb2_grpc,
    thread_service_pb2,
    thread_service_pb2_grpc,
)


def _probe(address: str, spin_file: Path, deadline: float) -> dict[str, Any]:
    give_up = time.monotonic() + 30
    while not spin_file.exists() or not spin_file.read_text().strip():
        if time.monotonic() > give_up:
            raise SystemExit("the graph never started")
        time.sleep(0.005)
    thread_id, run_id, graph_id = spin_file.read_text().split()
    seen: dict[str, Any] = {}
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=deadline
        )
        seen["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
        threads = thread_service_pb2_grpc.ThreadServiceStub(channel)
        thread = threads.GetThread(
            thread_service_pb2.GetThreadRequest(thread_id=thread_id), timeout=deadline
        )
        seen["thread_status"] = thread.thread.status
        runs = run_service_pb2_grpc.RunServiceStub(channel)
        try:
            runs.CreateRun(
                run_service_pb2.CreateRunRequest(
                    thread_id=thread_id,
                    assistant_id=graph_id,
                    input=struct({"spin": "never"}),
                    multitask_strategy=run_pb2.MULTITASK_STRATEGY_REJECT,
                ),
                timeout=deadline,
            )
            seen["rejected"] = None
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            seen["rejected"] = error_info(exc).reason
        cancelled = runs.CancelRun(
            run_service_pb2.CancelRunRequest(
                thread_id=thread_id, run_id=run_id, action=run_pb2.CANCEL_ACTION_INTERRUPT
            ),
            timeout=deadline,
        )
        seen["cancelled"] = cancelled.run.run_id == run_id
    return seen


def main() -> None:
    address, spin_file, deadline = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    try:
        seen = _probe(address, spin_file, deadline)
    except grpc.RpcError as exc:
        print(json.dumps({"failed": exc.code().name}))
        raise SystemExit(1) from None
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
