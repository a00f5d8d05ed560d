"""The checked-in generated code is exactly what scripts/gen_proto.py makes from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_proto.py"
CHECKED_IN = ROOT / "client" / "turnstile" / "v1"
GENERATED = Path("turnstile") / "v1"


def tree(root: Path) -> dict[str, bytes]:
    """The files under `root` by relative path, with their bytes; bytecode caches left out."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def drift(expected: dict[str, bytes], actual: dict[str, bytes]) -> list[str]:
    """Describes every difference between two trees, one line per file; empty when equal."""
    problems = [f"missing from the checked-in code: {name}" for name in expected.keys() - actual]
    problems += [f"not produced by the generator: {name}" for name in actual.keys() - expected]
    problems += [
        f"differs from the generator's output: {name}"
        for name in expected.keys() & actual.keys()
        if expected[name] != actual[name]
    ]
    return sorted(problems)


def test_checked_in_generated_code_matches_a_fresh_generation(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, f"gen_proto.py failed:\n{result.stdout}\n{result.stderr}"

    fresh = tree(tmp_path / GENERATED)
    assert fresh, "the generator wrote no files"
    problems = drift(fresh, tree(CHECKED_IN))
    assert not problems, (
        "client/turnstile/v1 drifted from proto/; run `python scripts/gen_proto.py`:\n"
        + "\n".join(problems)
    )


def test_drift_names_missing_extra_and_changed_files() -> None:
    expected = {"a_pb2.py": b"a", "b_pb2.py": b"b", "c_pb2.py": b"c"}
    actual = {"a_pb2.py": b"a", "b_pb2.py": b"edited", "d_pb2.py": b"d"}

    assert drift(expected, actual) == [
        "differs from the generator's output: b_pb2.py",
        "missing from the checked-in code: c_pb2.py",
        "not produced by the generator: d_pb2.py",
    ]
    assert drift(expected, dict(expected)) == []
