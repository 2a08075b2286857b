"""The committed session API code matches proto/ (run ``make proto`` after editing it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from processor.identity.intake.gen.user_enricher.v1 import sessions_pb2

ROOT = Path(__file__).resolve().parent.parent


def test_generated_descriptor_matches_proto(tmp_path: Path) -> None:
    """Compiling proto/ now yields the descriptor embedded in the committed module."""
    protoc = pytest.importorskip("grpc_tools.protoc")
    out = tmp_path / "set.pb"
    status = protoc.main(
        [
            "protoc",
            f"-I{ROOT / 'proto'}",
            f"-I{Path(protoc.__file__).parent / '_proto'}",
            f"--descriptor_set_out={out}",
            "user_enricher/v1/sessions.proto",
        ]
    )
    assert status == 0
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    for message in fresh.message_type:  # descriptor sets add json_name; modules omit it
        for field in message.field:
            field.ClearField("json_name")
    committed = descriptor_pb2.FileDescriptorProto.FromString(sessions_pb2.DESCRIPTOR.serialized_pb)
    assert fresh == committed
