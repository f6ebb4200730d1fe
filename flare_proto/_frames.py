"""Frame builders and readers for the v0.1.2 schema (reference §1, §5.1, §11).

Frames are the generated protobuf classes themselves (``Frame`` is ``frame_pb2.Frame``):
the Protobuf path then costs no conversion, and users who know the schema can build any
frame directly. These helpers fill the fields the library always sets (message id,
timestamp, reliability ``AT_LEAST_ONCE``) in one constructor call each.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from ._pb.frame_pb2 import Frame

AT_LEAST_ONCE = 1

# SystemCommand.Type numbers (reference §1.3), as plain ints for cheap comparisons.
CONNECT = 1
CONNECT_ACK = 2
CLOSE = 3
PING = 4
PONG = 5
ERROR = 6
KICKED = 10

# MessageCommand.Type numbers (v0.1.2, reference §1.4).
SEND = 0
ACK = 1
DATA = 2


class CommandKind(enum.Enum):
    """What a frame carries, as the application routes it."""

    NONE = "none"
    SYSTEM = "system"
    SEND = "send"
    ACK = "ack"
    DATA = "data"
    MESSAGE_OTHER = "message_other"
    """A MessageCommand with a type number this profile does not know."""
    NOTIFICATION = "notification"
    CUSTOM = "custom"


MESSAGE_KINDS = {SEND: CommandKind.SEND, ACK: CommandKind.ACK, DATA: CommandKind.DATA}
ONEOF_KINDS = {
    None: CommandKind.NONE,
    "system": CommandKind.SYSTEM,
    "notification": CommandKind.NOTIFICATION,
    "custom": CommandKind.CUSTOM,
}


def command_kind(frame: Frame) -> CommandKind:
    """Classify ``frame`` by its command oneof (and the MessageCommand type)."""
    which = frame.command.WhichOneof("type") if frame.HasField("command") else None
    if which == "message":
        return MESSAGE_KINDS.get(frame.command.message.type, CommandKind.MESSAGE_OTHER)
    return ONEOF_KINDS[which]


MetadataIn = Mapping[str, str | bytes]


def encode_metadata(metadata: MetadataIn | None) -> dict[str, bytes]:
    """Metadata values are bytes on the wire; text is stored as UTF-8 (reference §5.1)."""
    if not metadata:
        return {}
    return {k: v.encode() if isinstance(v, str) else bytes(v) for k, v in metadata.items()}


def meta_text(metadata: Mapping[str, bytes], key: str) -> str | None:
    """A metadata value as text (invalid UTF-8 replaced), ``None`` when absent."""
    value = metadata.get(key)
    return None if value is None else value.decode("utf-8", "replace")


# The builders set fields on the frame's own sub-messages instead of passing nested
# messages as constructor arguments: upb copies a sub-message given as an argument, and
# the direct form is about twice as fast (benchmarks/codec.py).


def _envelope(message_id: str, timestamp: int) -> Frame:
    frame = Frame()  # attribute stores are cheaper than constructor keywords in upb
    frame.message_id = message_id
    frame.reliability = AT_LEAST_ONCE  # type: ignore[assignment]
    frame.timestamp = timestamp
    return frame


def system_frame(
    kind: int,
    *,
    message_id: str,
    timestamp: int,
    message: str = "",
    metadata: MetadataIn | None = None,
    format: int = 0,
    data: bytes = b"",
) -> Frame:
    """A SystemCommand frame (PING, PONG, CONNECT, CONNECT_ACK, ERROR, CLOSE, KICKED...)."""
    frame = _envelope(message_id, timestamp)
    system = frame.command.system
    system.type = kind  # type: ignore[assignment]  # also makes the variant present
    if format:
        system.format = format  # type: ignore[assignment]
    if message:
        system.message = message
    if metadata:
        system.metadata.update(encode_metadata(metadata))
    if data:
        system.data = data
    return frame


def message_frame(
    kind: int,
    *,
    message_id: str,
    timestamp: int,
    payload: bytes = b"",
    command_id: str | None = None,
    metadata: MetadataIn | None = None,
    seq: int = 0,
) -> Frame:
    """A MessageCommand frame (SEND, ACK or DATA).

    ``command_id`` is ``MessageCommand.message_id``; by default it equals the frame's id,
    so SEND tracking and ACK matching work with either id (DESIGN §5, §6).
    """
    frame = _envelope(message_id, timestamp)
    body = frame.command.message
    body.type = kind  # type: ignore[assignment]  # also makes the variant present
    body.message_id = message_id if command_id is None else command_id
    if payload:
        body.payload = payload
    if metadata:
        body.metadata.update(encode_metadata(metadata))
    if seq:
        body.seq = seq
    return frame


def notification_frame(
    kind: int,
    *,
    message_id: str,
    timestamp: int,
    title: str = "",
    content: bytes = b"",
    metadata: MetadataIn | None = None,
) -> Frame:
    """A NotificationCommand frame (SYSTEM, BROADCAST, ALERT, USER, CONNECTION)."""
    frame = _envelope(message_id, timestamp)
    body = frame.command.notification
    body.type = kind  # type: ignore[assignment]  # also makes the variant present
    if title:
        body.title = title
    if content:
        body.content = content
    if metadata:
        body.metadata.update(encode_metadata(metadata))
    return frame


def custom_frame(
    name: str,
    *,
    message_id: str,
    timestamp: int,
    data: bytes = b"",
    metadata: MetadataIn | None = None,
) -> Frame:
    """A CustomCommand frame named ``name``."""
    frame = _envelope(message_id, timestamp)
    body = frame.command.custom
    body.name = name
    body.SetInParent()  # present even with an empty name
    if data:
        body.data = data
    if metadata:
        body.metadata.update(encode_metadata(metadata))
    return frame


def ack_id(frame: Frame) -> str:
    """The id an ACK refers to: ``MessageCommand.message_id``, else the frame's id."""
    ident: str = frame.command.message.message_id or frame.message_id
    return ident
