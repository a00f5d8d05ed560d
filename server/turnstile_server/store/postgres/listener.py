"""The connection a replica LISTENs on for the other replicas' signals (`leases.py`)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from turnstile_server.store.postgres.database import CONNECT_TIMEOUT, Database

log = logging.getLogger(__name__)

CANCEL_CHANNEL = "turnstile_cancel"
READY_CHANNEL = "turnstile_ready"
ENDED_CHANNEL = "turnstile_ended"


class Listener:
    """One listening connection, of its own (not the pool's: LISTEN needs a session)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._listener: Any = None

    async def listen(
        self,
        name: str,
        on_cancel: Callable[[str, str], None],
        on_ready: Callable[[], None],
        on_ended: Callable[[str], None],
        on_lost: Callable[[], None],
    ) -> bool:
        """(Re)connects the listening connection if it is not open; True if it was now.
        `on_lost` is called when that connection ends other than by `unlisten` (terminated,
        the database restarted): what was NOTIFYed since is lost, so the caller listens
        again and asks the database at once (`renew`) instead of at its next beat."""
        if self._listener is not None and not self._listener.is_closed():
            return False
        self._listener = None

        def cancelled(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            try:
                message = json.loads(payload)
                on_cancel(message["thread_id"], message["run_id"])
            except (ValueError, KeyError, TypeError):
                log.warning("ignored a malformed cancellation notice %r", payload)

        def ready(_conn: Any, _pid: int, _channel: str, _payload: str) -> None:
            on_ready()

        def ended(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            for run_id in payload.split(","):
                if run_id:
                    on_ended(run_id)

        def terminated(closed: Any) -> None:
            if closed is self._listener:  # not one `unlisten` closed
                log.warning("the listening connection of replica %s was lost", name)
                on_lost()

        conn = await asyncpg.connect(
            self._db.url,
            timeout=CONNECT_TIMEOUT,
            server_settings={"application_name": f"turnstile listen {name}"},
        )
        try:
            await conn.add_listener(CANCEL_CHANNEL, cancelled)
            await conn.add_listener(READY_CHANNEL, ready)
            await conn.add_listener(ENDED_CHANNEL, ended)
            conn.add_termination_listener(terminated)
        except BaseException:
            conn.terminate()
            raise
        self._listener = conn
        return True

    async def unlisten(self) -> None:
        """Closes the listening connection."""
        conn, self._listener = self._listener, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), CONNECT_TIMEOUT)
            except (TimeoutError, OSError, asyncpg.exceptions.InterfaceError):
                conn.terminate()
