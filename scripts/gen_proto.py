"""Generates the Python code for the wire contract from proto/ into client/.

Runs grpc_tools.protoc with the mypy-protobuf plugins, so that `turnstile.v1.*_pb2` imports
resolve as protoc writes them. Usage: `python scripts/gen_proto.py [--out DIR]`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE_DIR = Path("turnstile") / "v1"


def proto_files() -> list[Path]:
    """Returns the contract's .proto files, relative to proto/."""
    return sorted(p.relative_to(PROTO_DIR) for p in (PROTO_DIR / PACKAGE_DIR).glob("*.proto"))


def generate(out: Path) -> None:
    """Writes the generated modules for every .proto file under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / PACKAGE_DIR
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    well_known = resources.files("grpc_tools") / "_proto"
    bin_dir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--proto_path={PROTO_DIR}",
        f"--proto_path={well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *(str(p) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (target / "__init__.py").write_text('"""Generated code for turnstile.v1; do not edit."""\n')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "client", help="output root")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
