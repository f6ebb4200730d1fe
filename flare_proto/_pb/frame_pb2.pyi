from flare_proto._pb import commands_pb2 as _commands_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Reliability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BEST_EFFORT: _ClassVar[Reliability]
    AT_LEAST_ONCE: _ClassVar[Reliability]
    EXACTLY_ONCE: _ClassVar[Reliability]
    ORDERED: _ClassVar[Reliability]
BEST_EFFORT: Reliability
AT_LEAST_ONCE: Reliability
EXACTLY_ONCE: Reliability
ORDERED: Reliability

class Frame(_message.Message):
    __slots__ = ("command", "message_id", "reliability", "timestamp", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    RELIABILITY_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    command: _commands_pb2.Command
    message_id: str
    reliability: Reliability
    timestamp: int
    metadata: _containers.ScalarMap[str, bytes]
    def __init__(self, command: _Optional[_Union[_commands_pb2.Command, _Mapping]] = ..., message_id: _Optional[str] = ..., reliability: _Optional[_Union[Reliability, str]] = ..., timestamp: _Optional[int] = ..., metadata: _Optional[_Mapping[str, bytes]] = ...) -> None: ...
