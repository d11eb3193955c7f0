"""The committed protobuf modules in storelens/_gen must be exactly what scripts/gen_proto.py generates.

If this fails after editing proto/, run ``python scripts/gen_proto.py`` and commit storelens/_gen.
"""
from __future__ import annotations

import importlib.util
import pathlib

import pytest

pytest.importorskip("grpc_tools", reason="grpcio-tools is needed to regenerate the protobuf modules")

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMITTED = REPO / "storelens" / "_gen"


def _load_gen_proto():
    spec = importlib.util.spec_from_file_location("gen_proto", REPO / "scripts" / "gen_proto.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def _files(root: pathlib.Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("gen")
    returned = _load_gen_proto().generate(out)
    files = _files(out)
    assert sorted(p.relative_to(out).as_posix() for p in returned) == sorted(files)
    return files


def test_generator_sees_the_proto_files():
    protos = _load_gen_proto().proto_files()
    assert REPO / "proto" / "storelens" / "v1" / "messages.proto" in protos


def test_no_missing_or_extra_generated_files(generated):
    committed = _files(COMMITTED)
    missing = sorted(set(generated) - set(committed))
    extra = sorted(set(committed) - set(generated))
    assert not missing, f"generated but not committed under storelens/_gen: {missing}"
    assert not extra, f"committed under storelens/_gen but no longer generated: {extra}"


def test_generated_files_are_byte_identical(generated):
    committed = _files(COMMITTED)
    assert "storelens/v1/messages_pb2.py" in generated
    drifted = [name for name in sorted(generated) if name in committed and committed[name] != generated[name]]
    assert not drifted, f"storelens/_gen is stale, run `python scripts/gen_proto.py`: {drifted}"
