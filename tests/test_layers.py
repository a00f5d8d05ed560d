"""What importing a layer loads: the generated code no SDK."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

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
