"""What importing a layer loads: the core no grpc and no protobuf, the generated code no SDK.

The import-linter contracts in pyproject.toml say the same of the source; these check what
Python really loads.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import turnstile
from turnstile import _MODULES


def loaded_by(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running `statement`."""
    script = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=50, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def not_for_the_core(modules: set[str]) -> list[str]:
    """Among `modules`, grpc, protobuf (generated or not), the API layer and the SDK."""
    return sorted(
        name
        for name in modules
        if name.split(".")[0] in ("grpc", "grpc_status", "grpc_health", "grpc_reflection")
        or name.split(".")[0] == "turnstile"
        or name.endswith("_pb2")
        or name.startswith(("google.protobuf", "google.rpc", "turnstile_server.api"))
    )


@pytest.mark.parametrize(
    "module",
    [
        "turnstile_server.scheduler",
        "turnstile_server.runner",
        "turnstile_server.store",
        "turnstile_server.events",
        "turnstile_server.relay",
        "turnstile_server.state",
        "turnstile_server.policy",
        "turnstile_server.runtime",
        "turnstile_server.runtime.langgraph.execution",
        "turnstile_server.runtime.langgraph.saver",
    ],
)
def test_importing_the_core_loads_no_grpc_and_no_protobuf(module: str) -> None:
    assert not_for_the_core(loaded_by(f"import {module}")) == []


def test_importing_the_generated_code_loads_no_sdk_transport() -> None:
    modules = loaded_by("import turnstile.v1.run_pb2, turnstile.v1.run_service_pb2")

    assert "turnstile.v1.run_pb2" in modules
    sdk = sorted(name for name in modules if name.startswith("turnstile._"))
    assert sdk == []
    assert not {"grpc", "tenacity"} & modules


def test_the_sdk_public_names_load_on_first_use() -> None:
    modules = loaded_by("from turnstile import get_client, ConflictError, Run")

    assert {"turnstile._client", "turnstile._errors", "turnstile._types"} <= modules


def test_every_public_name_of_the_sdk_resolves() -> None:
    assert sorted(_MODULES) == sorted(turnstile.__all__)
    for name in turnstile.__all__:
        assert getattr(turnstile, name) is getattr(importlib.import_module(_MODULES[name]), name)
    assert set(turnstile.__all__) <= set(dir(turnstile))
    with pytest.raises(AttributeError, match="no attribute 'get_clinet'"):
        turnstile.get_clinet  # type: ignore[attr-defined]  # noqa: B018


def test_the_server_imports_redis_only_when_it_is_given_redis() -> None:
    # redis.asyncio takes about a second to import on a busy machine: every server start
    # without --redis (and every test's) would pay it.
    loaded = loaded_by("import turnstile_server.app, turnstile_server.cli")
    assert sorted(m for m in loaded if m.split(".")[0] in ("redis", "hiredis")) == []
    assert "turnstile_server.relay" not in loaded


ROOT = Path(__file__).resolve().parent.parent


def _core_contract() -> list[str]:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (core,) = [c for c in contracts["contracts"] if c["name"].startswith("The core imports")]
    return [name.removeprefix("turnstile_server.") for name in core["source_modules"]]


def test_every_server_module_is_the_api_the_app_the_cli_or_in_the_core_contract() -> None:
    # A new module outside every contract would escape the layering checks unseen.
    package = ROOT / "server" / "turnstile_server"
    modules = {path.stem for path in package.glob("*.py") if path.stem != "__init__"}
    modules |= {path.name for path in package.iterdir() if (path / "__init__.py").exists()}
    assert sorted(modules - {"api", "app", "cli"}) == sorted(_core_contract())


def test_architecture_md_names_the_core_modules_of_the_contract() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    item = re.search(r"^3\. The core \((.*?)\)", text, re.MULTILINE | re.DOTALL)
    assert item is not None
    named = re.findall(r"`(\w+)`", item.group(1))
    assert named == _core_contract()
