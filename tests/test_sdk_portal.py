"""The sync SDK's portal: closing it leaves nothing pending on its private loop."""

from __future__ import annotations

import asyncio

from turnstile._portal import Portal


def test_closing_the_portal_finishes_the_tasks_still_on_its_loop() -> None:
    # As a call cancelled by Ctrl-C is, a moment before the client closes: a task destroyed
    # pending is reported on stderr ("Task was destroyed but it is pending!").
    portal = Portal("test-portal")

    async def spawn() -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(asyncio.sleep(3600))

    task = portal.run(spawn())
    portal.close()

    assert task.cancelled()
