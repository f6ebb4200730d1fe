from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Command(_message.Message):
    __slots__ = ("system", "message", "notification", "custom")
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NOTIFICATION_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    system: SystemCommand
    message: MessageCommand
    notification: NotificationCommand
    custom: CustomCommand
    def __init__(self, system: _Optional[_Union[SystemCommand, _Mapping]] = ..., message: _Optional[_Union[MessageCommand, _Mapping]] = ..., notification: _Optional[_Union[NotificationCommand, _Mapping]] = ..., custom: _Optional[_Union[CustomCommand, _Mapping]] = ...) -> None: ...

class SystemCommand(_message.Message):
    __slots__ = ("type", "format", "message", "metadata", "data")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNSPECIFIED: _ClassVar[SystemCommand.Type]
        CONNECT: _ClassVar[SystemCommand.Type]
        CONNECT_ACK: _ClassVar[SystemCommand.Type]
        CLOSE: _ClassVar[SystemCommand.Type]
        PING: _ClassVar[SystemCommand.Type]
        PONG: _ClassVar[SystemCommand.Type]
        ERROR: _ClassVar[SystemCommand.Type]
        EVENT: _ClassVar[SystemCommand.Type]
        AUTH: _ClassVar[SystemCommand.Type]
        AUTH_ACK: _ClassVar[SystemCommand.Type]
        KICKED: _ClassVar[SystemCommand.Type]
    UNSPECIFIED: SystemCommand.Type
    CONNECT: SystemCommand.Type
    CONNECT_ACK: SystemCommand.Type
    CLOSE: SystemCommand.Type
    PING: SystemCommand.Type
    PONG: SystemCommand.Type
    ERROR: SystemCommand.Type
    EVENT: SystemCommand.Type
    AUTH: SystemCommand.Type
    AUTH_ACK: SystemCommand.Type
    KICKED: SystemCommand.Type
    class SerializationFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PROTOBUF: _ClassVar[SystemCommand.SerializationFormat]
        JSON: _ClassVar[SystemCommand.SerializationFormat]
    PROTOBUF: SystemCommand.SerializationFormat
    JSON: SystemCommand.SerializationFormat
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    type: SystemCommand.Type
    format: SystemCommand.SerializationFormat
    message: str
    metadata: _containers.ScalarMap[str, bytes]
    data: bytes
    def __init__(self, type: _Optional[_Union[SystemCommand.Type, str]] = ..., format: _Optional[_Union[SystemCommand.SerializationFormat, str]] = ..., message: _Optional[str] = ..., metadata: _Optional[_Mapping[str, bytes]] = ..., data: _Optional[bytes] = ...) -> None: ...

class MessageCommand(_message.Message):
    __slots__ = ("type", "message_id", "payload", "metadata", "seq")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SEND: _ClassVar[MessageCommand.Type]
        ACK: _ClassVar[MessageCommand.Type]
        DATA: _ClassVar[MessageCommand.Type]
    SEND: MessageCommand.Type
    ACK: MessageCommand.Type
    DATA: MessageCommand.Type
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    type: MessageCommand.Type
    message_id: str
    payload: bytes
    metadata: _containers.ScalarMap[str, bytes]
    seq: int
    def __init__(self, type: _Optional[_Union[MessageCommand.Type, str]] = ..., message_id: _Optional[str] = ..., payload: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, bytes]] = ..., seq: _Optional[int] = ...) -> None: ...

class NotificationCommand(_message.Message):
    __slots__ = ("type", "title", "content", "metadata")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SYSTEM: _ClassVar[NotificationCommand.Type]
        BROADCAST: _ClassVar[NotificationCommand.Type]
        ALERT: _ClassVar[NotificationCommand.Type]
        USER: _ClassVar[NotificationCommand.Type]
        CONNECTION: _ClassVar[NotificationCommand.Type]
    SYSTEM: NotificationCommand.Type
    BROADCAST: NotificationCommand.Type
    ALERT: NotificationCommand.Type
    USER: NotificationCommand.Type
    CONNECTION: NotificationCommand.Type
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    type: NotificationCommand.Type
    title: str
    content: bytes
    metadata: _containers.ScalarMap[str, bytes]
    def __init__(self, type: _Optional[_Union[NotificationCommand.Type, str]] = ..., title: _Optional[str] = ..., content: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class CustomCommand(_message.Message):
    __slots__ = ("name", "data", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    data: bytes
    metadata: _containers.ScalarMap[str, bytes]
    def __init__(self, name: _Optional[str] = ..., data: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, bytes]] = ...) -> None: ...
