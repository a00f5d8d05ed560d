"""The Node.js example (`examples/node`) against a real `turnstile serve`: the interrupt scenario.

Skipped only when `node` or `npm` is not on PATH; without `node_modules` it runs `npm ci`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ROOT, run_command, serving
from turnstile import get_client

NODE_DIR = ROOT / "examples" / "node"
SCRIPT = NODE_DIR / "interrupt.js"
# `serving` registers one graph besides the built-ins; the script uses the built-in `agent`.
GRAPH = "spare_echo=turnstile_server.graphs.echo:echo"
NPM_CI_TIMEOUT = 150.0
SCRIPT_TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(NPM_CI_TIMEOUT + 2 * SCRIPT_TIMEOUT)


@pytest.fixture(scope="module")
def node() -> str:
    """The `node` executable, with the example's dependencies installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        absent = " and ".join(name for name, path in (("node", node), ("npm", npm)) if not path)
        pytest.skip(f"{absent} not on PATH: the Node.js example cannot run")
    if not (NODE_DIR / "node_modules").is_dir():
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci failed in {NODE_DIR}:\n{result.stdout}\n{result.stderr}")
    return node


async def run_script(node: str, address: str, api_key: str | None = None) -> tuple[int, str, str]:
    """Runs `node interrupt.js <address>`; returns its exit code, stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNSTILE_")}
    if api_key is not None:
        env["TURNSTILE_API_KEY"] = api_key
    done = await run_command(
        node, str(SCRIPT), address, seconds=SCRIPT_TIMEOUT, cwd=NODE_DIR, env=env
    )
    return done.returncode, done.stdout, done.stderr


def pairs(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["type"], m["content"]) for m in messages]


async def test_node_client_interrupts_the_first_run_with_the_second(
    tmp_path: Path, node: str
) -> None:
    async with serving(tmp_path / "node.db", GRAPH) as (_, address):
        code, out, err = await run_script(node, address)
        assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
        outcome = json.loads(out.splitlines()[-1])
        # What the script printed is what the server holds.
        client = get_client(url=address)
        try:
            state = await client.threads.get_state(outcome["thread_id"])
            first_run = await client.runs.get(outcome["thread_id"], outcome["first_run"]["run_id"])
        finally:
            await client.close()

    first, second = outcome["first_run"], outcome["second_run"]
    assert first["status"] == first_run["status"] == "interrupted"
    assert first["superseded_by"] == first_run["superseded_by"] == second["run_id"]
    assert second["status"] == "success"
    messages = pairs(outcome["messages"])
    assert messages == pairs(state["values"]["messages"])
    # The first run was stopped during its first step (input `sleep` 5 s, double-texted after
    # 1 s): its input stays, the step in flight is discarded; then the second input and the
    # second run's tool call, tool result and answer, about nyc.
    assert messages[:2] == [
        ("human", "what's the weather in sf?"),
        ("human", "what's the weather in nyc?"),
    ]
    assert [kind for kind, _ in messages[2:]] == ["ai", "tool", "ai"]
    assert "Current weather in nyc" in messages[-1][1]


async def test_node_client_exits_with_the_code_and_reason_of_a_refused_call(
    tmp_path: Path, node: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TURNSTILE_API_KEYS", "s3cret")  # the server process inherits it
    async with serving(tmp_path / "keys.db", GRAPH) as (_, address):
        missing = await run_script(node, address)
        wrong = await run_script(node, address, api_key="wrong")

    for (code, out, err), reason in ((missing, "API_KEY_MISSING"), (wrong, "API_KEY_INVALID")):
        assert code == 1, f"stdout:\n{out}\nstderr:\n{err}"
        assert "CreateThread failed: UNAUTHENTICATED (16)" in err
        assert f"reason {reason}" in err
