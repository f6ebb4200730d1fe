"""The protobuf schema: committed generated code is reproducible, numbers match reference §1.

DESIGN §2: the ``.proto`` files are written from the v0.1.2 tables of reference §1 and the
generated modules are committed "with a check that regeneration gives the same files".
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
)

from flare_proto._pb import commands_pb2, frame_pb2, regenerate

PB_DIR = Path(regenerate.__file__).resolve().parent
GENERATED = sorted(p.name for p in PB_DIR.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi")))


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("regenerated")
    regenerate.generate(out)
    # protoc mirrors the include path (the repository root), so the files land in
    # out/flare_proto/_pb/.
    return out / "flare_proto" / "_pb"


def test_generated_files_are_committed() -> None:
    assert GENERATED == [
        "commands_pb2.py",
        "commands_pb2.pyi",
        "frame_pb2.py",
        "frame_pb2.pyi",
    ]


def test_regeneration_writes_the_same_set_of_files(regenerated: Path) -> None:
    assert sorted(p.name for p in regenerated.iterdir()) == GENERATED


@pytest.mark.parametrize("name", GENERATED)
def test_regeneration_is_byte_identical(regenerated: Path, name: str) -> None:
    committed = (PB_DIR / name).read_bytes()
    fresh = (regenerated / name).read_bytes()
    assert fresh == committed, (
        f"flare_proto/_pb/{name} is stale or was edited by hand: run "
        "`python -m flare_proto._pb.regenerate` from the repository root with the pinned "
        "grpcio-tools of the test extra, and commit the result"
    )


# --- reference §1: field numbers, types and enum values of v0.1.2 -------------------------

_SCALARS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_UINT64: "uint64",
}


def _type_of(field: FieldDescriptor) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        entry = field.message_type
        if entry.GetOptions().map_entry:
            key = _type_of(entry.fields_by_name["key"])
            value = _type_of(entry.fields_by_name["value"])
            return f"map<{key}, {value}>"
        assert not field.is_repeated
        return entry.full_name
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert not field.is_repeated
        return field.enum_type.full_name
    assert not field.is_repeated, field.full_name
    return _SCALARS[field.type]


def _fields(message: Descriptor) -> dict[int, tuple[str, str]]:
    return {f.number: (f.name, _type_of(f)) for f in message.fields}


def _values(enum: EnumDescriptor) -> dict[str, int]:
    return {v.name: v.number for v in enum.values}


def _syntax(file: FileDescriptor) -> str:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return proto.syntax


def test_files_are_proto3_in_the_reference_packages() -> None:
    assert frame_pb2.DESCRIPTOR.package == "flare.core"
    assert commands_pb2.DESCRIPTOR.package == "flare.core.commands"
    assert _syntax(frame_pb2.DESCRIPTOR) == "proto3"
    assert _syntax(commands_pb2.DESCRIPTOR) == "proto3"


def test_frame_fields() -> None:
    # reference §1.1
    assert _fields(frame_pb2.Frame.DESCRIPTOR) == {
        1: ("command", "flare.core.commands.Command"),
        2: ("message_id", "string"),
        3: ("reliability", "flare.core.Reliability"),
        4: ("timestamp", "uint64"),
        5: ("metadata", "map<string, bytes>"),
    }


def test_reliability_enum() -> None:
    assert _values(frame_pb2.DESCRIPTOR.enum_types_by_name["Reliability"]) == {
        "BEST_EFFORT": 0,
        "AT_LEAST_ONCE": 1,
        "EXACTLY_ONCE": 2,
        "ORDERED": 3,
    }


def test_command_oneof() -> None:
    # reference §1.2: the oneof is named `type`; v0.1.2 names field 2 `message`.
    command = commands_pb2.Command.DESCRIPTOR
    assert _fields(command) == {
        1: ("system", "flare.core.commands.SystemCommand"),
        2: ("message", "flare.core.commands.MessageCommand"),
        3: ("notification", "flare.core.commands.NotificationCommand"),
        4: ("custom", "flare.core.commands.CustomCommand"),
    }
    assert [o.name for o in command.oneofs] == ["type"]
    assert [f.name for f in command.oneofs_by_name["type"].fields] == [
        "system",
        "message",
        "notification",
        "custom",
    ]


def test_system_command() -> None:
    # reference §1.3, v0.1.2 column: no `compression` (6) or `encryption` (7).
    system = commands_pb2.SystemCommand.DESCRIPTOR
    assert _fields(system) == {
        1: ("type", "flare.core.commands.SystemCommand.Type"),
        2: ("format", "flare.core.commands.SystemCommand.SerializationFormat"),
        3: ("message", "string"),
        4: ("metadata", "map<string, bytes>"),
        5: ("data", "bytes"),
    }
    types = _values(system.enum_types_by_name["Type"])
    assert types == {
        "UNSPECIFIED": 0,
        "CONNECT": 1,
        "CONNECT_ACK": 2,
        "CLOSE": 3,
        "PING": 4,
        "PONG": 5,
        "ERROR": 6,
        "EVENT": 7,
        "AUTH": 8,
        "AUTH_ACK": 9,
        "KICKED": 10,
    }
    # NEGOTIATION_READY = 11 exists only at HEAD (DESIGN §2).
    assert 11 not in types.values()
    assert "NEGOTIATION_READY" not in types
    assert _values(system.enum_types_by_name["SerializationFormat"]) == {
        "PROTOBUF": 0,
        "JSON": 1,
    }


def test_message_command() -> None:
    # reference §1.4, v0.1.2 column (not HEAD's PayloadCommand numbering).
    message = commands_pb2.MessageCommand.DESCRIPTOR
    assert _fields(message) == {
        1: ("type", "flare.core.commands.MessageCommand.Type"),
        2: ("message_id", "string"),
        3: ("payload", "bytes"),
        4: ("metadata", "map<string, bytes>"),
        5: ("seq", "uint64"),
    }
    assert _values(message.enum_types_by_name["Type"]) == {"SEND": 0, "ACK": 1, "DATA": 2}


def test_notification_command() -> None:
    # reference §1.5
    notification = commands_pb2.NotificationCommand.DESCRIPTOR
    assert _fields(notification) == {
        1: ("type", "flare.core.commands.NotificationCommand.Type"),
        2: ("title", "string"),
        3: ("content", "bytes"),
        4: ("metadata", "map<string, bytes>"),
    }
    assert _values(notification.enum_types_by_name["Type"]) == {
        "SYSTEM": 0,
        "BROADCAST": 1,
        "ALERT": 2,
        "USER": 3,
        "CONNECTION": 4,
    }


def test_custom_command() -> None:
    # reference §1.6
    assert _fields(commands_pb2.CustomCommand.DESCRIPTOR) == {
        1: ("name", "string"),
        2: ("data", "bytes"),
        3: ("metadata", "map<string, bytes>"),
    }


def test_no_other_messages_or_enums() -> None:
    assert sorted(frame_pb2.DESCRIPTOR.message_types_by_name) == ["Frame"]
    assert sorted(frame_pb2.DESCRIPTOR.enum_types_by_name) == ["Reliability"]
    assert sorted(commands_pb2.DESCRIPTOR.message_types_by_name) == [
        "Command",
        "CustomCommand",
        "MessageCommand",
        "NotificationCommand",
        "SystemCommand",
    ]
    assert not commands_pb2.DESCRIPTOR.enum_types_by_name
