"""`--config langgraph.json`: serving a LangGraph project's graphs as the LangGraph CLI does.

A project's `langgraph.json` says three things Turnstile uses:
- `graphs`: graph id → `./path/to/file.py:attribute` (a path has a `/` or ends in `.py`, and
  is relative to the file's directory) or `package.module:attribute`; or an object whose
  `path` is one of those (its `description` and other keys are not read);
- `env`: a mapping of environment variables, or the path of a `.env` file; a variable the
  server's own environment already sets keeps its value;
- `dependencies`: local directories (`.`, `./src`) go on `sys.path`; package names are not
  installed here (they belong in the server's environment) and are logged.

Every other key (`python_version`, `dockerfile_lines`, `auth`, `store`, `http`, ...) is
ignored with a log line naming it. `read_project` checks the file alone (it exists, is JSON,
has that shape) and raises ValueError; `load_project` applies `env` and `dependencies` and
imports the graphs, raising InvalidArgument for one that cannot be loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from turnstile_server.errors import InvalidArgument

log = logging.getLogger(__name__)

USED_KEYS = ("graphs", "env", "dependencies")
# Keys that only shape the image `langgraph build` makes; ignoring them changes nothing here.
BUILD_KEYS = frozenset(
    {
        "$schema",
        "python_version",
        "node_version",
        "pip_config_file",
        "pip_installer",
        "dockerfile_lines",
        "base_image",
        "image_distro",
        "keep_pkg_tools",
        "api_version",
    }
)
_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*?)\s*$")


@dataclass(frozen=True, slots=True)
class ProjectGraph:
    """One entry of `graphs`: its id and where it lives."""

    graph_id: str
    target: str
    """As written: `./file.py:attribute` or `package.module:attribute`."""
    file: Path | None
    """The resolved file for a path target, None for a module target."""
    module: str | None
    attribute: str


@dataclass(frozen=True, slots=True)
class Project:
    """What Turnstile reads of a `langgraph.json`."""

    file: Path
    graphs: tuple[ProjectGraph, ...]
    env: Mapping[str, str]
    paths: tuple[Path, ...]
    """`dependencies` that are local directories, resolved; put on `sys.path`."""
    packages: tuple[str, ...]
    """`dependencies` that are package requirements, not installed by Turnstile."""
    ignored: tuple[str, ...]
    """Top-level keys Turnstile does not read (other than the build-only ones)."""

    @property
    def graph_ids(self) -> tuple[str, ...]:
        """The project's graph ids, in the file's order."""
        return tuple(graph.graph_id for graph in self.graphs)


def checked_path(text: str) -> str:
    """`--config` as given, once its file reads as a LangGraph project (else ValueError);
    empty means none."""
    if text:
        read_project(text)
    return text


def read_project(path: str | os.PathLike[str]) -> Project:
    """Read and check a `langgraph.json`; ValueError naming the file and what is wrong."""
    file = Path(path).expanduser().resolve()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    base = file.parent
    graphs = _graphs(path, raw.get("graphs"), base)
    env = _env(path, raw.get("env"), base)
    paths, packages = _dependencies(path, raw.get("dependencies", ["."]), base)
    ignored = tuple(key for key in raw if key not in USED_KEYS and key not in BUILD_KEYS)
    return Project(file, graphs, env, paths, packages, ignored)


def load_project(project: Project) -> list[tuple[str, Any]]:
    """Apply the project's `env` and `dependencies`, import its graphs; return (id, object)s.

    InvalidArgument naming the file and the graph when one cannot be imported."""
    if project.ignored:
        log.warning(
            "%s: ignoring %s (Turnstile reads only graphs, env and dependencies)",
            project.file,
            ", ".join(repr(key) for key in project.ignored),
        )
    if project.packages:
        log.info(
            "%s: dependencies %s are not installed by Turnstile; they must be importable",
            project.file,
            ", ".join(project.packages),
        )
    for name, value in project.env.items():
        os.environ.setdefault(name, value)
    for directory in reversed(project.paths):
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))
    if str(project.file.parent) not in sys.path:  # as `langgraph dev` adds its directory
        sys.path.append(str(project.file.parent))
    loaded: dict[Path, Any] = {}
    return [(graph.graph_id, _import(project.file, graph, loaded)) for graph in project.graphs]


def _graphs(path: object, raw: object, base: Path) -> tuple[ProjectGraph, ...]:
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: `graphs` must be an object mapping graph ids to graphs")
    graphs = []
    for graph_id, value in raw.items():
        target = value.get("path") if isinstance(value, dict) else value
        if not isinstance(target, str):
            raise ValueError(
                f"{path}: graph {graph_id!r}: expected './file.py:attribute',"
                " 'package.module:attribute' or an object with such a `path`"
            )
        where, colon, attribute = target.rpartition(":")
        where, attribute = where.strip(), attribute.strip()
        if not colon or not where or not attribute:
            raise ValueError(
                f"{path}: graph {graph_id!r}: {target!r} names no attribute; expected"
                " './file.py:attribute' or 'package.module:attribute'"
            )
        if where.endswith((".js", ".ts", ".mjs", ".cjs", ".mts", ".tsx", ".jsx")):
            raise ValueError(f"{path}: graph {graph_id!r}: JavaScript graphs are not served")
        if is_file_target(where):
            graphs.append(ProjectGraph(graph_id, target, (base / where).resolve(), None, attribute))
        else:
            graphs.append(ProjectGraph(graph_id, target, None, where, attribute))
    return tuple(graphs)


def _env(path: object, raw: object, base: Path) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        env = {}
        for name, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ValueError(f"{path}: env {name!r}: expected a string, got {value!r}")
            env[name] = str(value)
        return env
    if isinstance(raw, str):
        env_file = (base / raw).resolve()
        try:
            return parse_env_file(env_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(
                f"{path}: env file {raw!r} ({env_file}): {exc.strerror or exc}"
            ) from None
        except UnicodeDecodeError:
            raise ValueError(f"{path}: env file {raw!r}: not UTF-8 text") from None
    raise ValueError(f"{path}: `env` must be an object or the path of a .env file")


def _dependencies(
    path: object, raw: object, base: Path
) -> tuple[tuple[Path, ...], tuple[str, ...]]:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ValueError(f"{path}: `dependencies` must be a list of strings")
    paths: list[Path] = []
    packages: list[str] = []
    for item in raw:
        if item.startswith((".", "/", "~")) or (base / item).is_dir():
            directory = (base / item).expanduser().resolve()
            if not directory.is_dir():
                raise ValueError(f"{path}: dependency {item!r}: no such directory ({directory})")
            paths.append(directory)
        else:
            packages.append(item)
    return tuple(paths), tuple(packages)


def parse_env_file(text: str) -> dict[str, str]:
    """The variables of a `.env` file: `NAME=value` lines, `export` allowed, `#` comments,
    single quotes literal, double quotes with `\\n`, `\\"` and `\\\\` escapes."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            continue  # as python-dotenv does, a line it cannot read is skipped
        name, value = match.group(1), match.group(2)
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\([n\"\\])", _unescape, value[1:-1])
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        env[name] = value
    return env


def _unescape(match: re.Match[str]) -> str:
    return "\n" if match.group(1) == "n" else match.group(1)


def _import(file: Path, graph: ProjectGraph, loaded: dict[Path, Any]) -> Any:
    """Import one graph's module (a file once, however many graphs it holds), get its object."""
    what = f"{file}: graph {graph.graph_id!r} ({graph.target})"
    try:
        if graph.file is not None:
            module = loaded.get(graph.file)
            if module is None:
                module = loaded[graph.file] = import_file(graph.file, file.parent)
        else:
            assert graph.module is not None
            module = importlib.import_module(graph.module)
    except FileNotFoundError:
        raise InvalidArgument(f"{what}: no such file {graph.file}") from None
    except ImportError as exc:
        raise InvalidArgument(f"{what}: cannot import it: {exc}") from exc
    except Exception as exc:
        raise InvalidArgument(f"{what}: importing it failed: {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in graph.attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InvalidArgument(
                f"{what}: the module has no attribute '{graph.attribute}'"
            ) from None
    return obj


def is_file_target(where: str) -> bool:
    """Whether a graph's `where` (before its `:attribute`) is a file path, not a module name."""
    return "/" in where or where.endswith(".py")


def import_file(path: Path, base: Path) -> Any:
    """Execute a Python file as a module named after its path relative to `base` (as
    langgraph-api names it); FileNotFoundError if there is no such file."""
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        relative = path.relative_to(base)
    except ValueError:
        relative = Path(*path.parts[1:])
    name = "_langgraph_json__" + re.sub(
        r"\W", "_", str(relative.with_suffix("")).replace("/", "__")
    )
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"not a Python file: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
