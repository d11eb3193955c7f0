"""Generate the Python protobuf modules from proto/ into storelens/_gen/.

Usage: python scripts/gen_proto.py [OUT_DIR]

The generated code is committed; tests/test_proto_drift.py regenerates it into
a temporary directory and fails if it differs from the committed copy.
"""
from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"


def proto_files() -> list[pathlib.Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    from grpc_tools import protoc  # build-time dependency only

    out_dir.mkdir(parents=True, exist_ok=True)
    files = [str(p.relative_to(PROTO_DIR)) for p in proto_files()]
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}", f"--pyi_out={out_dir}", *files])
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    created = []
    for d in [out_dir, *[p for p in out_dir.rglob("*") if p.is_dir()]]:
        init = d / "__init__.py"
        if not init.exists():
            init.write_text("")
        created.append(init)
    return sorted(p for p in out_dir.rglob("*") if p.is_file())


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "storelens" / "_gen"
    for f in generate(target):
        print(f.relative_to(target))
