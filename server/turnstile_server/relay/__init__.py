"""Runs' events relayed between replicas through Redis Streams (issue 22 point 5).

`relay.Relay` publishes the events of the runs executing here (`publisher.py`, fenced by the
run's epoch in Lua, `fence.py`) and is how the streams of runs executing elsewhere are read
(`run_stream.py` for a run, `thread_feed.py` for a watched thread); `keys.py` names the keys.
No grpc, no protobuf: the frames it carries are bytes the API layer's encoder made.
"""

from __future__ import annotations

from turnstile_server.relay.relay import Relay, RelaySettings
from turnstile_server.relay.run_stream import RunStream

__all__ = ["Relay", "RelaySettings", "RunStream"]
