"""What is generated from the option declarations on `ServerConfig`: the `serve` flags, the
config they give, and the reference table in docs/configuration.md."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import Field, fields, replace
from typing import Any

from turnstile_server.config import OPTION, Option, ServerConfig, default_of, env_name, flag_name

TABLE_HEADER = "| flag | environment variable | default | what |\n|---|---|---|---|\n"


def declared(config: type[Any] = ServerConfig) -> list[Field[Any]]:
    """Every option of a config dataclass, in declaration order."""
    return [setting for setting in fields(config) if OPTION in setting.metadata]


def add_arguments(parser: argparse.ArgumentParser, defaults: Any) -> None:
    """Adds a flag for each option of `defaults`' dataclass that has one, defaulting to its
    value there (the environment's)."""
    for setting in declared(type(defaults)):
        flag = flag_name(setting)
        if flag is None:
            continue
        about: Option = setting.metadata[OPTION]
        default = getattr(defaults, setting.name)
        settings: dict[str, Any] = {"dest": setting.name, "metavar": about.metavar}
        if isinstance(default, list):  # a repeated flag adds to what the environment set
            settings.update(action="append", default=list(default))
        else:
            settings.update(default=default, choices=about.choices)
            if about.parse is not None:
                settings["type"] = _argument_type(about.parse)
            elif about.choices is None and not isinstance(default, str):
                settings["type"] = type(default)
        variable = env_name(setting) + (", comma-separated" if isinstance(default, list) else "")
        settings["help"] = f"{about.help} ({variable})".replace("%", "%%")
        parser.add_argument(flag, **settings)


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` for argparse: its ValueError's message becomes the usage error (exit 2)."""

    def checked(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return checked


def config_from(args: argparse.Namespace) -> ServerConfig:
    """The environment's config with every flag of `args` over it (not yet checked)."""
    flagged = [setting.name for setting in declared() if flag_name(setting) is not None]
    return replace(ServerConfig.from_env(), **{name: getattr(args, name) for name in flagged})


def reference_table() -> str:
    """The Markdown table of every option: flag, environment variable, default, help."""
    rows = [_row(setting) for setting in declared()]
    return TABLE_HEADER + "".join(f"| {' | '.join(row)} |\n" for row in rows)


def _row(setting: Field[Any]) -> list[str]:
    about: Option = setting.metadata[OPTION]
    default = default_of(setting)
    flag = flag_name(setting)
    usage = ""
    if flag is not None:
        shown = "|".join(about.choices) if about.choices else about.metavar
        usage = f"`{flag} {shown}`" if shown else f"`{flag}`"
        if isinstance(default, list):
            usage += " (repeatable)"
    variable = f"`{env_name(setting)}`"
    if isinstance(default, list):
        variable += " (comma-separated)"
    return [_cell(usage), variable, _cell(_shown(default)), _cell(about.help)]


def _shown(default: object) -> str:
    if default in ("", []):
        return "none"
    if isinstance(default, float):
        return f"`{default:g}`"
    return f"`{default}`"


def _cell(text: str) -> str:
    """Text for a table cell: a `|` would end the cell."""
    return text.replace("|", "\\|")
