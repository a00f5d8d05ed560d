"""The server package stands without its own client: tools live in `turnstile_tools`."""

from __future__ import annotations

import ast
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server" / "turnstile_server"


def _imported(module: Path) -> set[str]:
    """The absolute module names a source file imports, wherever in the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _forbidden(name: str) -> bool:
    """The SDK and the tools, but not the generated `turnstile.v1` protobuf modules."""
    top, _, rest = name.partition(".")
    if top == "turnstile_tools":
        return True
    return top == "turnstile" and not (rest == "v1" or rest.startswith("v1."))


def test_nothing_under_turnstile_server_imports_the_sdk_or_the_tools() -> None:
    modules = sorted(SERVER.rglob("*.py"))
    assert len(modules) > 20
    offenders = {
        f"{module.relative_to(SERVER)}: {name}"
        for module in modules
        for name in _imported(module)
        if _forbidden(name)
    }
    assert not offenders


def test_the_console_script_is_the_tools_command() -> None:
    (script,) = entry_points(group="console_scripts", name="turnstile")
    assert script.value == "turnstile_tools.cli:main"
