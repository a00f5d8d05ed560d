"""`turnstile demo`'s human-in-the-loop section: a run stops at `interrupt()`, the thread waits
for an answer, a resume continues it; printed the way the seed notebooks print."""

from __future__ import annotations

import json

from turnstile import TurnstileClient

GRAPH_SPEC = "approval=turnstile_tools.approval:graph"
"""How the demo's server registers the approval graph (`--graph`)."""


async def approval(client: TurnstileClient, assistant_id: str = "approval") -> None:
    """Interrupt, the state waiting, the resume, the result."""
    from turnstile_tools.demo import human, show_state

    thread = await client.threads.create()
    thread_id = thread["thread_id"]
    stopped = await client.runs.wait_run(thread_id, assistant_id, input=human("pay bob $100"))
    await show_state(client, thread_id)
    waiting = await client.threads.get(thread_id)
    state = await client.threads.get_state(thread_id)
    print(
        f"run: {stopped.run['status']!r}; thread: {waiting['status']!r} ({waiting['interruption']})"
    )
    print(f"next: {state['next']}")
    for interrupt in state["interrupts"]:
        print(f"waiting for: {json.dumps(interrupt['value'])} (interrupt {interrupt['id']})")
    print('resume: command={"resume": {"approved": true}}\n')
    await client.runs.wait(thread_id, assistant_id, command={"resume": {"approved": True}})
    await show_state(client, thread_id)
    print(f"thread: {(await client.threads.get(thread_id))['status']!r}")
