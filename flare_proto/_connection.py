"""What client and server connections share: input, output, decode errors and closing.

Theory of operation: the driver feeds transport input with ``receive_message`` (one frame
per transport message, WebSocket) or ``receive_data`` (a byte stream with 4-byte length
prefixes, QUIC), timer ticks with ``handle_timer``, and transport ends with
``receive_close``/``receive_eof``. After every call it drains ``data_to_send()`` (write it
all in one go), ``events_received()``, and sleeps until ``next_deadline()``. When
``closed`` turns true it closes the transport with ``close_code.number``.

Feeding input never raises: every peer violation becomes an ERROR frame plus a close with
a code from the table in DESIGN §4. Only local misuse raises :class:`LocalProtocolError`.
"""

from __future__ import annotations

import enum

from ._codec import (
    _NOT_PROTOBUF,
    _parse_protobuf,
    _without_unknown_fields,
    decode_frame,
    encode_frame,
)
from ._codes import CloseCode
from ._config import CodecOptions, Limits
from ._errors import DecodeError, FrameTooLarge, LocalProtocolError
from ._events import ConnectionClosed, Event, FrameRejected
from ._frames import CLOSE, ERROR, system_frame
from ._framing import LengthPrefixFramer
from ._ids import IdSource
from ._pb.frame_pb2 import Frame
from ._types import Compression, Format

_PROTOBUF = Format.PROTOBUF
_NONE = Compression.NONE


class Framing(enum.Enum):
    """How frames are delimited on the transport (DESIGN §2)."""

    MESSAGE = "message"
    """One frame per transport message (WebSocket): use ``receive_message``."""
    STREAM = "stream"
    """A byte stream with a 4-byte big-endian length before each frame (QUIC)."""


class ConnectionBase:
    """Shared machinery of :class:`ClientConnection` and :class:`ServerConnection`."""

    def __init__(
        self, *, limits: Limits, codec: CodecOptions, ids: IdSource, framing: Framing
    ) -> None:
        self._limits = limits
        self._codec = codec
        self._ids = ids
        self._framer = LengthPrefixFramer(limits.max_frame) if framing is Framing.STREAM else None
        self._outbox: list[bytes] = []
        self._events: list[Event] = []
        # The encoding of frames we send; replaced by the negotiated one after CONNECT_ACK.
        self._format = Format.PROTOBUF
        self._compression = Compression.NONE
        self._undecodable = 0
        self._closed = False
        self.close_code: CloseCode | None = None
        """Why the connection closed (``None``: a plain transport end or a normal close)."""
        self.close_reason = ""
        """Human-readable text that came with the close."""

    # -- output ---------------------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """Drain the bytes to write, in order. With ``Framing.MESSAGE`` each item is one
        transport message; with ``Framing.STREAM`` the items are to be concatenated."""
        out = self._outbox
        self._outbox = []
        return out

    def events_received(self) -> list[Event]:
        """Drain the events produced since the last call, in order."""
        events = self._events
        self._events = []
        return events

    @property
    def closed(self) -> bool:
        """True once the connection is over; the driver then closes the transport."""
        return self._closed

    @property
    def format(self) -> Format:
        """The format frames are sent in now (negotiated once the handshake completed)."""
        return self._format

    @property
    def compression(self) -> Compression:
        """The compression frames are sent with now (frames below the threshold are plain)."""
        return self._compression

    def encode(self, frame: Frame) -> bytes:
        """``frame`` encoded as this connection would send it (for :meth:`send_encoded`)."""
        return encode_frame(frame, self._format, self._compression, self._codec)

    def send_encoded(self, data: bytes) -> None:
        """Queue bytes already encoded for this connection's encoding (broadcast: encode
        once per encoding, then hand the same bytes to every connection); only once the
        connection is open (handshake completed, or accepted). Then flush
        ``data_to_send()``."""
        self._require_open()
        self._queue(data)

    def abort(self, code: CloseCode | None, reason: str) -> None:
        """End the connection now without sending anything, e.g. when the driver finds the
        peer is not reading (``slow_consumer``) or the transport broke. Emits
        :class:`ConnectionClosed`; does nothing if already closed."""
        self._set_closed(code, reason, by_peer=False)

    # -- input ----------------------------------------------------------------------------

    def receive_message(self, payload: bytes, now: float) -> None:
        """One transport message (a WebSocket Binary or Text message) arrived.
        Then drain ``data_to_send()`` and ``events_received()``."""
        if self._closed:
            return
        if len(payload) > self._limits.max_frame:
            self._fail(
                CloseCode.FRAME_TOO_LARGE,
                f"message of {len(payload)} bytes above max_frame {self._limits.max_frame}",
                now,
            )
            return
        self._receive_payload(payload, now)

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes of a length-prefixed stream arrived (any chunking).
        Then drain ``data_to_send()`` and ``events_received()``."""
        framer = self._framer
        if framer is None:
            raise LocalProtocolError("receive_data needs Framing.STREAM; use receive_message")
        if self._closed:
            return
        try:
            payloads = framer.receive(data)
        except FrameTooLarge as exc:
            self._fail(CloseCode.FRAME_TOO_LARGE, str(exc), now)
            return
        for payload in payloads:
            if self._closed:
                return
            self._receive_payload(payload, now)
        if framer.ended and not self._closed:
            # A zero length prefix is the original's end-of-stream marker (reference §4.2).
            self._set_closed(None, "peer ended the stream", by_peer=True)

    def receive_eof(self, now: float) -> None:
        """The transport ended without a close code. Then drain ``events_received()``."""
        if not self._closed and not self._truncated(now):
            self._set_closed(None, "transport closed by peer", by_peer=True)

    def receive_close(self, number: int | None, reason: str, now: float) -> None:
        """The peer closed the transport with ``number`` (WebSocket close code or QUIC
        application error code). Then drain ``events_received()``."""
        if self._closed:
            return
        code = None if number is None else CloseCode.from_number(number)
        if code is None and self._truncated(now):
            return
        self._set_closed(code, reason or "transport closed by peer", by_peer=True)

    def _truncated(self, now: float) -> bool:
        """A stream that ends inside a frame is a framing violation (DESIGN §4)."""
        if self._framer is None or not self._framer.buffered:
            return False
        self._fail(CloseCode.PROTOCOL_ERROR, "stream ended inside a frame", now)
        return True

    def _receive_payload(self, payload: bytes, now: float) -> None:
        # The hot path, decode_frame's protobuf branch inlined (the size limit is already
        # checked by both callers); anything else, or a parse failure, takes the full path.
        if payload and payload[0] not in _NOT_PROTOBUF:
            try:
                parsed = _parse_protobuf(payload)
            except Exception:  # decode_frame below turns it into a DecodeError
                pass
            else:
                self._undecodable = 0
                self._on_frame(parsed, _PROTOBUF, now)
                return
        try:
            frame, fmt, _ = decode_frame(payload, self._limits)
        except FrameTooLarge as exc:
            self._fail(CloseCode.FRAME_TOO_LARGE, str(exc), now)
            return
        except DecodeError as exc:
            # DESIGN §4: single undecodable frames are dropped; a run of them closes.
            self._undecodable += 1
            self._events.append(FrameRejected(reason=str(exc)))
            if self._undecodable >= self._limits.max_undecodable:
                self._fail(
                    CloseCode.PROTOCOL_ERROR,
                    f"{self._undecodable} undecodable frames in a row",
                    now,
                )
            return
        self._undecodable = 0
        self._on_frame(frame, fmt, now)

    def _on_frame(self, frame: Frame, fmt: Format, now: float) -> None:
        raise NotImplementedError

    def _require_open(self) -> None:
        """Raise :class:`LocalProtocolError` unless the connection may send frames."""
        raise NotImplementedError

    # -- timers (each side defines its own deadlines) -------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must be called next (``None``: no timer needed)."""
        raise NotImplementedError

    def handle_timer(self, now: float) -> None:
        """Fire the deadlines that have passed at ``now``. Then flush ``data_to_send()``
        and drain ``events_received()``."""
        raise NotImplementedError

    # -- sending and closing --------------------------------------------------------------

    def _queue(self, data: bytes) -> None:
        if self._framer is not None:
            self._outbox.append(len(data).to_bytes(4, "big"))
        self._outbox.append(data)

    def _send(self, frame: Frame) -> None:
        # encode_frame's plain protobuf branch and _queue, inlined: this runs per SEND/ACK.
        if self._format is _PROTOBUF and self._compression is _NONE:
            data: bytes = frame.SerializeToString()
            if data and data[0] in _NOT_PROTOBUF:  # unknown fields first: the slow path
                data = _without_unknown_fields(frame)
        else:
            data = encode_frame(frame, self._format, self._compression, self._codec)
        if self._framer is not None:
            self._outbox += (len(data).to_bytes(4, "big"), data)
        else:
            self._outbox.append(data)

    def _system(
        self, kind: int, now: float, message: str = "", code: CloseCode | None = None
    ) -> Frame:
        return system_frame(
            kind,
            message_id=self._ids.message_id(now),
            timestamp=self._ids.timestamp_ms(now),
            message=message,
            metadata=None if code is None else {"code": code.code},
        )

    def _fail(self, code: CloseCode, reason: str, now: float) -> None:
        """A peer violation: ERROR frame with ``code``, then close (DESIGN §1, §4)."""
        self._send(self._system(ERROR, now, reason, code))
        self._set_closed(code, reason, by_peer=False)

    def _shut(self, code: CloseCode | None, reason: str, now: float) -> None:
        """An orderly local close: CLOSE frame (with ``code`` when given), then close."""
        self._send(self._system(CLOSE, now, reason, code))
        self._set_closed(code, reason, by_peer=False)

    def _peer_closed(self, frame: Frame) -> None:
        """The peer sent ERROR or CLOSE: take its code and consider the connection over."""
        system = frame.command.system
        raw = system.metadata.get("code")
        code = None if raw is None else CloseCode.from_code(raw.decode("utf-8", "replace"))
        self._set_closed(code, system.message or "closed by peer", by_peer=True)

    def _set_closed(self, code: CloseCode | None, reason: str, *, by_peer: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self.close_code = code
        self.close_reason = reason
        self._on_closed()
        self._events.append(ConnectionClosed(code=code, reason=reason, by_peer=by_peer))

    def _on_closed(self) -> None:
        """Subclass hook: update the state machine and drop per-connection buffers."""
