"""Events a connection reports to the application, drained with ``events_received()``.

Frozen, slotted, keyword-only dataclasses with past-tense names, built complete. Match them
exhaustively (``assert_never``) over :data:`Event`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from ._codes import CloseCode
from ._frames import CommandKind
from ._negotiation import ConnectRequest
from ._pb.frame_pb2 import Frame
from ._types import Compression, Format


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectRequested:
    """Server: a CONNECT arrived. Answer with ``accept()`` or ``reject()`` (DESIGN §3.3).

    ``format``/``compression`` are what the server will use once accepted.
    """

    request: ConnectRequest
    format: Format
    compression: Compression


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeCompleted:
    """Client: CONNECT_ACK arrived; frames now use ``format``/``compression``."""

    format: Format
    compression: Compression
    conflict_connections: tuple[str, ...]
    """Server connection ids kicked to make room for this device."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameReceived:
    """An application frame (SEND, DATA, ACK on the server, notification, custom...)."""

    frame: Frame
    kind: CommandKind


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageAcked:
    """Client: the server acknowledged the SEND with this ``message_id``."""

    message_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AckTimedOut:
    """Client: no ACK within ``ack_timeout``; the SEND is no longer tracked."""

    message_id: str
    frame: Frame


@dataclass(frozen=True, slots=True, kw_only=True)
class PongReceived:
    """Client: a PONG answered our PING after ``rtt`` seconds."""

    rtt: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Kicked:
    """Client: the server kicked this device (a :class:`ConnectionClosed` follows)."""

    message: str
    reason: str
    platform: str
    new_device_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameRejected:
    """Bytes that did not decode as a frame were dropped (``max_undecodable`` in a row close)."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed:
    """The connection is over; always the last event. ``code`` is ``None`` for a plain
    transport end without a flare close code. The driver closes the transport with
    ``code.number`` when ``by_peer`` is false.
    """

    code: CloseCode | None
    reason: str
    by_peer: bool

    @property
    def may_reconnect(self) -> bool:
        """Whether a client may reconnect after this close (DESIGN §4 table)."""
        return self.code is None or self.code.reconnect


Event: TypeAlias = (
    ConnectRequested
    | HandshakeCompleted
    | FrameReceived
    | MessageAcked
    | AckTimedOut
    | PongReceived
    | Kicked
    | FrameRejected
    | ConnectionClosed
)
