"""`RunService`: admission with the multitask strategies, waiting, streaming, cancelling."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from turnstile.v1 import run_service_pb2 as pb
from turnstile.v1 import run_service_pb2_grpc as pb_grpc
from turnstile_server.api import codec, event_frames, json_values, run_options, wire
from turnstile_server.api.assistant_service import runnable_assistant
from turnstile_server.api.rpc_errors import encoded
from turnstile_server.api.run_messages import run_message
from turnstile_server.errors import InvalidArgument, OutOfRange, RunNotFound, TurnstileError
from turnstile_server.event_log import check_position, follow
from turnstile_server.events import EventHub
from turnstile_server.graph import GraphRegistry
from turnstile_server.json_size import MAX_ANSWER_BYTES
from turnstile_server.runtime.langgraph.runtime import LangGraphGraph
from turnstile_server.scheduler import Scheduler
from turnstile_server.state import normalize_input
from turnstile_server.store import RunRecord, RunSpec, Store
from turnstile_server.store.records import options_of
from turnstile_server.thread_states import ThreadStates

if TYPE_CHECKING:  # imported only with --redis (see app.py)
    from turnstile_server.relay import Relay, RunStream

CreateLike = pb.CreateRunRequest | pb.StreamRunRequest | pb.WaitRunRequest
StreamResponse = TypeVar("StreamResponse", pb.StreamRunResponse, pb.JoinRunStreamResponse)


class RunService(pb_grpc.RunServiceServicer):
    """Admits, observes and cancels runs."""

    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        hub: EventHub,
        graphs: GraphRegistry,
        *,
        run_defaults: Mapping[str, Any],
        page_bytes: int = wire.MAX_PAGE_BYTES,
        relay: Relay | None = None,
        answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self._relay = relay
        self._answer = wire.AnswerBytes(answer_bytes)
        self._states = ThreadStates(store, graphs)
        self._store = store
        self._scheduler = scheduler
        self._hub = hub
        self._graphs = graphs
        self._run_defaults = run_defaults  # for the options a run leaves unset, by name
        self._page_bytes = page_bytes

    async def _spec(self, request: CreateLike) -> RunSpec:
        """Validates the flat run-creation fields shared by CreateRun, StreamRun and WaitRun."""
        thread_id = wire.uuid_id(request.thread_id, "thread_id")
        assistant, prepared = await runnable_assistant(
            self._store, self._graphs, request.assistant_id
        )
        modes = [wire.enum_value(wire.STREAM_MODES, m, "stream_mode") for m in request.stream_mode]
        options = run_options.read(request, self._run_defaults)
        run_options.check_runtime(options, assistant.graph_id, prepared.runtime)
        await run_options.check_langgraph(options, prepared, self._store.langgraph, thread_id)
        own_config = wire.to_dict(request.config, "config")
        config = _merge_config(assistant.config, own_config)
        spec = RunSpec(
            thread_id=thread_id,
            assistant_id=assistant.assistant_id,
            graph_id=assistant.graph_id,
            input=normalize_input(wire.to_dict(request.input, "input"))
            if request.HasField("input")
            else None,
            multitask_strategy=wire.enum_value(
                wire.STRATEGIES, request.multitask_strategy, "multitask_strategy"
            ),
            config=config,
            metadata=wire.metadata(request.metadata),
            stream_mode=list(dict.fromkeys(modes)) or ["values"],
            after_seconds=wire.seconds(request.after_seconds, "after_seconds"),
            create_thread=wire.enum_value(
                wire.IF_NOT_EXISTS, request.if_not_exists, "if_not_exists"
            ),
            request_id=request.request_id,
            **options_of(options),
        )
        if isinstance(prepared, LangGraphGraph):  # what LangGraph would refuse, refused now
            prepared.check_run(spec.input, own_config, spec.context)
        return spec

    async def _ended(self, run: RunRecord, context: Any) -> bytes:
        """The encoded body of a WaitRun or JoinRun response for a run that has ended: the run
        (field 1) and the values at its own last checkpoint (field 2, or 3 as JSON text),
        joined once; StateTooLarge when no answer can carry them (a thread stored before
        `--max-state-bytes` held it)."""
        body = await self._ended_body(run, context)
        self._answer.check_state(len(body), run.thread_id)
        return body

    async def _ended_body(self, run: RunRecord, context: Any) -> bytes:
        values = await self._states.run_values(run)
        if values is not None:  # a LangGraph run: the values at its own last checkpoint
            head = codec.field(0x0A, run_message(run).SerializeToString())
            if json_values.wants_json(context):
                return head + codec.field(0x1A, json_values.values_json(values))
            body = codec.struct_body(values, "values")
            return head + codec.field(0x12, body) if body else head
        if json_values.wants_json(context):
            head = codec.field(0x0A, run_message(run).SerializeToString())
            latest = self._store.checkpoints.latest_live(run.thread_id)
            if latest is not None and latest[0].run_id == run.run_id:
                return head + codec.field(0x1A, json_values.state_json(latest[1]))
            return head + codec.field(0x1A, json_values.values_json(await self._values_of(run)))
        parts = self._values_at_end(run)
        if parts is None:
            parts = [codec.struct_body(await self._values_of(run), "values", state=True)]
        head = codec.field(0x0A, run_message(run).SerializeToString())
        size = sum(len(part) for part in parts)
        return b"".join([head, b"\x12", codec.varint(size), *parts]) if size else head

    def _values_at_end(self, run: RunRecord) -> list[bytes] | None:
        """The encoded values at the run's last checkpoint, in pieces, when it is the thread's
        newest (cached): encoded at once, from the cached state itself."""
        latest = self._store.checkpoints.latest_live(run.thread_id)
        if latest is None or latest[0].run_id != run.run_id:
            return None
        return codec.state_parts(latest[1])

    async def _values_of(self, run: RunRecord) -> dict[str, Any]:
        """The values at the run's last checkpoint, read back; empty if it wrote none."""
        last = await self._store.checkpoints.last_of_run(run.run_id)
        if last is None:
            return {}
        return await self._store.checkpoints.values_at(run.thread_id, last.seq)

    async def CreateRun(self, request: pb.CreateRunRequest, context: Any) -> pb.CreateRunResponse:
        run = await self._scheduler.admit(await self._spec(request))
        return pb.CreateRunResponse(run=run_message(run))

    async def WaitRun(self, request: pb.WaitRunRequest, context: Any) -> pb.WaitRunResponse:
        run = await self._scheduler.run_to_end(await self._spec(request))
        return encoded(pb.WaitRunResponse, await self._ended(run, context))

    async def StreamRun(
        self, request: pb.StreamRunRequest, context: Any
    ) -> AsyncIterator[pb.StreamRunResponse]:
        spec = await self._spec(request)
        cancel = wire.enum_value(wire.ON_DISCONNECT, request.on_disconnect, "on_disconnect")
        run = await self._scheduler.admit(spec)
        finished = False
        try:
            async for message in self._stream(pb.StreamRunResponse, run, 0, context, live=True):
                yield message
            finished = True
        except TurnstileError:
            finished = True
            raise
        finally:
            # Not finished means the call was cancelled: the client went away (or we stop).
            if not finished and cancel == "cancel":
                self._scheduler.cancel_soon(run, "the streaming client disconnected")

    async def JoinRunStream(
        self, request: pb.JoinRunStreamRequest, context: Any
    ) -> AsyncIterator[pb.JoinRunStreamResponse]:
        # A subscriber keeps its run for as long as it streams: not the input, which can be
        # megabytes (two hundred subscribers of a 900 KB input held 180 MB of copies).
        run = replace(await self._get(request.thread_id, request.run_id), input=None)
        if request.after_seq < 0:
            raise InvalidArgument(
                "after_seq must be >= 0", reason="INVALID_NUMBER", field="after_seq"
            )
        async for message in self._stream(
            pb.JoinRunStreamResponse, run, request.after_seq, context
        ):
            yield message

    async def _stream(
        self,
        response: type[StreamResponse],
        run: RunRecord,
        after_seq: int,
        context: Any,
        *,
        live: bool = False,
    ) -> AsyncIterator[StreamResponse]:
        """Sends the run at once, then its events after `after_seq` in batches, until `end`.

        `live`: the subscriber follows the run from its admission (StreamRun), so it is held to
        `max_lag` from the first event, not only once it has caught up (see `follow`). A caller
        that asks for JSON text gets its `values` events' data so.
        """
        as_json = json_values.wants_json(context)
        what = {"run_id": run.run_id}
        log = self._hub.get(run.run_id)
        if self._relay is not None and (
            log is None or not log.numbered or after_seq < log.first_seq - 1
        ):
            # Not executed nor ended here (yet), or from before what this replica's log holds
            # (an attempt handed over to it, after_seq 0 on a later attempt's log, events
            # trimmed): its events are the ones Redis relays, which go on from a handed-over
            # attempt's `closed` into this one and its end, and answer STREAM_EXPIRED where
            # an attempt was cut off.
            remote = self._remote(run, after_seq, what)
            await remote.check()
            yield response(run=run_message(run))
            async for batch in remote.batches():
                if as_json:
                    batch = [event_frames.as_json(frame) for frame in batch]
                yield encoded(response, b"".join(batch))
            return
        if log is None:
            if not run.inflight:
                raise OutOfRange(
                    f"the events of run {run.run_id} are no longer retained", metadata=what
                )
            log = self._hub.open(run.run_id)
        check_position(log, after_seq, what=what)
        yield response(run=run_message(run))
        limits = self._hub.limits
        async for batch in follow(
            log, after_seq, limits, what=what, live=live, budget=self._hub.send_budget
        ):
            if as_json:
                batch = [event_frames.as_json(frame) for frame in batch]
            yield encoded(response, b"".join(batch))

    def _remote(self, run: RunRecord, after_seq: int, what: dict[str, str]) -> RunStream:
        """The run's stream as Redis relays it from the replica executing it."""
        from turnstile_server.relay import RunStream

        assert self._relay is not None
        store = self._store

        async def ended() -> bool:
            try:
                return not (await store.runs.get(run.thread_id, run.run_id)).inflight
            except RunNotFound:
                return True  # rolled back or deleted: its end was published, or is lost

        return RunStream(
            self._relay,
            run.run_id,
            after_seq,
            ended,
            what=what,
            limits=self._hub.limits,
            budget=self._hub.send_budget,
        )

    async def _get(self, thread_id: str, run_id: str) -> RunRecord:
        return await self._store.runs.get(
            wire.uuid_id(thread_id, "thread_id"), wire.uuid_id(run_id, "run_id")
        )

    async def GetRun(self, request: pb.GetRunRequest, context: Any) -> pb.GetRunResponse:
        run = await self._get(request.thread_id, request.run_id)
        return pb.GetRunResponse(run=run_message(run))

    async def ListRuns(self, request: pb.ListRunsRequest, context: Any) -> pb.ListRunsResponse:
        thread_id = wire.uuid_id(request.thread_id, "thread_id")
        limit, cursor = wire.page(request.page_size, request.page_token, default=50)
        status = wire.optional_enum(wire.RUN_STATUSES, request.status, "status")
        await self._store.threads.get(thread_id)
        runs, next_cursor = await self._store.runs.list(
            thread_id, status=status, limit=limit, before=cursor
        )
        page = wire.PageBytes(self._page_bytes)
        messages = []
        for index, run in enumerate(runs):
            message = run_message(run)
            if not page.take(message):
                next_cursor = runs[index - 1].seq  # newest first: on after the last taken
                break
            messages.append(message)
        return pb.ListRunsResponse(runs=messages, next_page_token=wire.next_token(next_cursor))

    async def DeleteRun(self, request: pb.DeleteRunRequest, context: Any) -> pb.DeleteRunResponse:
        await self._store.runs.delete(
            wire.uuid_id(request.thread_id, "thread_id"), wire.uuid_id(request.run_id, "run_id")
        )
        return pb.DeleteRunResponse()

    async def CancelRun(self, request: pb.CancelRunRequest, context: Any) -> pb.CancelRunResponse:
        thread_id = wire.uuid_id(request.thread_id, "thread_id")
        run_id = wire.uuid_id(request.run_id, "run_id")
        action = wire.enum_value(wire.CANCEL_ACTIONS, request.action, "action")
        run = await self._scheduler.cancel(thread_id, run_id, action, wait=request.wait)
        return pb.CancelRunResponse(run=run_message(run))

    async def JoinRun(self, request: pb.JoinRunRequest, context: Any) -> pb.JoinRunResponse:
        thread_id = wire.uuid_id(request.thread_id, "thread_id")
        run = await self._scheduler.wait(thread_id, wire.uuid_id(request.run_id, "run_id"))
        return encoded(pb.JoinRunResponse, await self._ended(run, context))


def _merge_config(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merges a run's config over its assistant's; `configurable` is merged key by key."""
    merged = {**base, **override}
    if isinstance(base.get("configurable"), dict) and isinstance(
        override.get("configurable"), dict
    ):
        merged["configurable"] = {**base["configurable"], **override["configurable"]}
    return merged
