"""`--config langgraph.json`: reading a LangGraph project's file, loading its graphs, serving it."""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ROOT, serving
from turnstile import get_client
from turnstile_server.app import App
from turnstile_server.cli import main
from turnstile_server.config import ServerConfig
from turnstile_server.errors import InvalidArgument
from turnstile_server.langgraph_json import (
    checked_path,
    load_project,
    parse_env_file,
    read_project,
)

NATIVE_GRAPH = """
async def graph(state, ctx):
    yield {"messages": [{"type": "ai", "content": "from the project"}]}

other = graph
"""

Project = Callable[..., Path]


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Whatever a project puts on sys.path, into os.environ or sys.modules goes afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(os, "environ", dict(os.environ))
    modules = set(sys.modules)
    yield
    for name in set(sys.modules) - modules:
        del sys.modules[name]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """Writes a project: `langgraph.json` with `config`, and `files` (path → source)."""

    def write(config: dict[str, Any] | str, files: dict[str, str] | None = None) -> Path:
        for name, source in (files or {}).items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
        file = tmp_path / "langgraph.json"
        file.write_text(config if isinstance(config, str) else json.dumps(config))
        return file

    return write


# --- reading the file ---------------------------------------------------------------------


def test_a_project_names_file_and_module_graphs_env_and_dependencies(
    project: Project, tmp_path: Path
) -> None:
    (tmp_path / "src").mkdir()
    file = project(
        {
            "dependencies": [".", "./src", "langchain_openai"],
            "graphs": {
                "agent": "./src/agent/graph.py:graph",
                "described": {"path": "agent.py:make_graph", "description": "made per run"},
                "module": "my_package.graphs:graph",
            },
            "env": {"MODEL": "fake", "RETRIES": 3},
            "python_version": "3.11",
            "auth": {"path": "./auth.py:auth"},
        }
    )
    read = read_project(file)
    assert read.file == file.resolve()
    assert read.graph_ids == ("agent", "described", "module")
    agent, described, module = read.graphs
    assert (agent.file, agent.module, agent.attribute) == (
        (tmp_path / "src/agent/graph.py").resolve(),
        None,
        "graph",
    )
    assert (described.file, described.attribute) == (
        (tmp_path / "agent.py").resolve(),
        "make_graph",
    )
    assert (module.file, module.module, module.attribute) == (None, "my_package.graphs", "graph")
    assert read.env == {"MODEL": "fake", "RETRIES": "3"}
    assert read.paths == (tmp_path.resolve(), (tmp_path / "src").resolve())
    assert read.packages == ("langchain_openai",)
    assert read.ignored == ("auth",), "build-only keys such as python_version pass silently"


def test_env_may_be_a_dotenv_file_relative_to_the_project(project: Project) -> None:
    file = project(
        {"graphs": {"g": "./g.py:graph"}, "env": "./config/.env"},
        {"config/.env": "# keys\nexport API_KEY='s3cret # not a comment'\nMODEL=fake # comment\n"},
    )
    assert read_project(file).env == {"API_KEY": "s3cret # not a comment", "MODEL": "fake"}


def test_a_dotenv_file_is_read_as_python_dotenv_reads_the_common_forms() -> None:
    text = (
        'A=1\n  B = two words  \nC="line\\nbreak \\"quoted\\""\nD=\'$LITERAL\'\n'
        "not a line\nexport E=5\n\n#F=6\nG=\n"
    )
    assert parse_env_file(text) == {
        "A": "1",
        "B": "two words",
        "C": 'line\nbreak "quoted"',
        "D": "$LITERAL",
        "E": "5",
        "G": "",
    }


def test_dependencies_default_to_the_project_directory(project: Project, tmp_path: Path) -> None:
    assert read_project(project({"graphs": {"g": "m:g"}})).paths == (tmp_path.resolve(),)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{not json", r"not JSON: .* \(line 1\)"),
        ("[1, 2]", "expected a JSON object, got list"),
        ({}, "`graphs` must be an object mapping graph ids to graphs"),
        ({"graphs": {}}, "`graphs` must be an object"),
        ({"graphs": {"g": 7}}, "graph 'g': expected './file.py:attribute'"),
        ({"graphs": {"g": {"description": "no path"}}}, "graph 'g': expected"),
        ({"graphs": {"g": "./graph.py"}}, "graph 'g': './graph.py' names no attribute"),
        ({"graphs": {"g": "./graph.ts:graph"}}, "graph 'g': JavaScript graphs are not"),
        ({"graphs": {"g": "m:g"}, "env": ["A=1"]}, "`env` must be an object or the path"),
        ({"graphs": {"g": "m:g"}, "env": {"A": None}}, "env 'A': expected a string"),
        ({"graphs": {"g": "m:g"}, "env": ".env"}, r"env file '\.env' \(.*\): No such file"),
        ({"graphs": {"g": "m:g"}, "dependencies": "."}, "`dependencies` must be a list"),
        ({"graphs": {"g": "m:g"}, "dependencies": ["./lib"]}, "dependency './lib': no such"),
    ],
)
def test_a_file_that_is_no_project_is_refused_naming_the_file_and_the_fault(
    project: Project, config: dict[str, Any] | str, message: str
) -> None:
    file = project(config)
    with pytest.raises(ValueError, match=f"^{re.escape(str(file))}: {message}"):
        read_project(file)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nope\.json: no such file$"):
        read_project(tmp_path / "nope.json")
    assert checked_path("") == "", "empty means no project"


# --- loading the graphs -------------------------------------------------------------------


@pytest.mark.usefixtures("isolated")
def test_loading_applies_env_without_overriding_the_server_s_own_and_puts_paths_first(
    project: Project, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "shared_helpers.py").write_text("GREETING = 'hello'\n")
    os.environ["FROM_SERVER"] = "server"
    file = project(
        {
            "dependencies": ["./lib", "some-package"],
            "graphs": {
                "a": "./graphs/native.py:graph",
                "b": "./graphs/native.py:other",
                "c": "shared_helpers:GREETING",
            },
            "env": {"FROM_SERVER": "file", "FROM_FILE": "file"},
            "store": {"index": {}},
        },
        {"graphs/native.py": "import shared_helpers\n" + NATIVE_GRAPH},
    )
    with caplog.at_level("INFO"):
        loaded = dict(load_project(read_project(file)))

    assert (os.environ["FROM_SERVER"], os.environ["FROM_FILE"]) == ("server", "file")
    assert sys.path[0] == str((tmp_path / "lib").resolve())
    assert loaded["b"] is loaded["a"], "a file holding two graphs is executed once"
    assert loaded["c"] == "hello"
    assert "ignoring 'store'" in caplog.text
    assert "some-package are not installed by Turnstile" in caplog.text


@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize(
    ("graphs", "files", "message"),
    [
        ({"g": "./missing.py:graph"}, {}, r"graph 'g' \(./missing.py:graph\): no such file"),
        ({"g": "no_such_module_xyz:graph"}, {}, "cannot import it: No module named"),
        ({"g": "./g.py:graph"}, {"g.py": "raise RuntimeError('boom')"}, "RuntimeError: boom"),
        ({"g": "./g.py:missing"}, {"g.py": NATIVE_GRAPH}, "has no attribute 'missing'"),
    ],
)
def test_a_graph_that_cannot_be_loaded_is_invalid_argument_naming_it(
    project: Project, graphs: dict[str, str], files: dict[str, str], message: str
) -> None:
    file = project({"graphs": graphs}, files)
    with pytest.raises(InvalidArgument, match=message) as refused:
        load_project(read_project(file))
    assert refused.value.message.startswith(f"{file.resolve()}: graph 'g'")


# --- serving ------------------------------------------------------------------------------


@pytest.mark.usefixtures("isolated")
async def test_a_project_s_graph_replaces_the_built_in_of_its_id_beside_flag_graphs(
    project: Project, tmp_path: Path
) -> None:
    file = project({"graphs": {"agent": "./agent.py:graph"}}, {"agent.py": NATIVE_GRAPH})
    config = ServerConfig(
        port=0,
        database=str(tmp_path / "t.db"),
        graphs=["recording=tests.support:recording"],
        langgraph_config=str(file),
    )
    app = await App.start(config)
    client = get_client(url=app.address)
    try:
        assistants = await client.assistants.search()
        assert {a["graph_id"] for a in assistants} >= {"agent", "echo", "recording"}
        thread = await client.threads.create()
        result = await client.runs.wait_run(thread["thread_id"], "agent", input={})
    finally:
        await client.close()
        await app.stop(grace=0)
    assert result.values["messages"][-1]["content"] == "from the project"


def test_serve_refuses_a_config_that_is_no_project_as_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "langgraph.json").write_text("{}")
    for path in (tmp_path / "missing.json", tmp_path / "langgraph.json"):
        with pytest.raises(SystemExit) as exited:
            main(
                [
                    "serve",
                    "--port",
                    "0",
                    "--database",
                    str(tmp_path / "x.db"),
                    "--config",
                    str(path),
                ]
            )
        assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "missing.json: no such file" in err
    assert "`graphs` must be an object" in err
    assert "Traceback" not in err
    assert not (tmp_path / "x.db").exists()


@pytest.mark.usefixtures("isolated")
def test_serve_refuses_a_project_whose_graph_does_not_import_with_one_line(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = project({"graphs": {"g": "./g.py:graph"}}, {"g.py": "import no_such_module_xyz\n"})
    code = main(
        ["serve", "--port", "0", "--database", str(tmp_path / "x.db"), "--config", str(file)]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "graph 'g' (./g.py:graph): cannot import it: No module named 'no_such_module_xyz'" in err
    assert "Traceback" not in err


async def test_the_example_project_serves_with_one_command_and_answers_through_its_tool(
    tmp_path: Path,
) -> None:
    example = ROOT / "examples" / "langgraph" / "langgraph.json"
    async with serving(tmp_path / "example.db", None, "--config", str(example)) as (_, address):
        client = get_client(url=address)
        try:
            thread = await client.threads.create()
            question = {"messages": [{"role": "user", "content": "what is 7 / 2?"}]}
            result = await client.runs.wait_run(thread["thread_id"], "calculator", input=question)
            state = await client.threads.get_state(thread["thread_id"])
        finally:
            await client.close()
    assert result.run["status"] == "success"
    messages = state["values"]["messages"]
    assert [m["type"] for m in messages] == ["human", "ai", "tool", "ai"]
    assert messages[1]["tool_calls"][0]["name"] == "divide"
    assert messages[2]["content"] == "3.5"
    assert messages[-1]["content"] == "The answer is 3.5."
    assert result.values["messages"][-1]["content"] == "The answer is 3.5."
