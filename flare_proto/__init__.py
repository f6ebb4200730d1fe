"""flare_proto: the sans-IO core of flare, wire-compatible with flare-core 0.1.2.

Bytes and timer ticks in, events and bytes out; no sockets, no clock, no randomness.
Start with :class:`ClientConnection` and :class:`ServerConnection`; the codec
(:func:`encode_frame`, :func:`decode_frame`) and the :class:`LengthPrefixFramer` are usable
on their own.
"""

from ._admission import admit
from ._client import ClientConnection
from ._codec import decode_frame, encode_frame, serialize
from ._codes import CloseCode
from ._config import ClientConfig, CodecOptions, Limits, ServerConfig
from ._connection import Framing
from ._dedup import RecentSends
from ._device_info import DeviceInfo, Platform, PlatformKind
from ._devices import (
    AllowAll,
    Conflict,
    Custom,
    DeviceRegistry,
    DeviceStrategy,
    FullyExclusive,
    MobileExclusive,
    MobilePcCoexist,
    PlatformExclusive,
    kick_notice,
    strategy_from_name,
)
from ._errors import DecodeError, FlareError, FrameTooLarge, LocalProtocolError
from ._events import (
    AckTimedOut,
    ConnectionClosed,
    ConnectRequested,
    Event,
    FrameReceived,
    FrameRejected,
    HandshakeCompleted,
    Kicked,
    MessageAcked,
    PongReceived,
)
from ._frames import (
    CommandKind,
    command_kind,
    custom_frame,
    message_frame,
    notification_frame,
    system_frame,
)
from ._framing import LengthPrefixFramer
from ._ids import IdSource, SequentialIds
from ._negotiation import ConnectRequest, decide, parse_connect
from ._pb.commands_pb2 import (
    Command,
    CustomCommand,
    MessageCommand,
    NotificationCommand,
    SystemCommand,
)
from ._pb.frame_pb2 import Frame, Reliability
from ._server import ServerConnection
from ._state import ClientState, ServerState
from ._types import Compression, Format

__all__ = [
    "AckTimedOut",
    "AllowAll",
    "ClientConfig",
    "ClientConnection",
    "ClientState",
    "CloseCode",
    "CodecOptions",
    "Command",
    "CommandKind",
    "Compression",
    "Conflict",
    "ConnectRequest",
    "ConnectRequested",
    "ConnectionClosed",
    "Custom",
    "CustomCommand",
    "DecodeError",
    "DeviceInfo",
    "DeviceRegistry",
    "DeviceStrategy",
    "Event",
    "FlareError",
    "Format",
    "Frame",
    "FrameReceived",
    "FrameRejected",
    "FrameTooLarge",
    "Framing",
    "FullyExclusive",
    "HandshakeCompleted",
    "IdSource",
    "Kicked",
    "LengthPrefixFramer",
    "Limits",
    "LocalProtocolError",
    "MessageAcked",
    "MessageCommand",
    "MobileExclusive",
    "MobilePcCoexist",
    "NotificationCommand",
    "Platform",
    "PlatformExclusive",
    "PlatformKind",
    "PongReceived",
    "RecentSends",
    "Reliability",
    "SequentialIds",
    "ServerConfig",
    "ServerConnection",
    "ServerState",
    "SystemCommand",
    "admit",
    "command_kind",
    "custom_frame",
    "decide",
    "decode_frame",
    "encode_frame",
    "kick_notice",
    "message_frame",
    "notification_frame",
    "parse_connect",
    "serialize",
    "strategy_from_name",
    "system_frame",
]
