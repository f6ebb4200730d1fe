"""The client side of one connection (DESIGN §3.1, §4, §5).

``connect()`` queues CONNECT and waits in ``AWAITING_ACK`` (bounded by
``handshake_timeout``). CONNECT_ACK switches sending to the negotiated encoding (unless
forced), starts the heartbeat and resends the SENDs a previous connection left
unacknowledged, with their original ids. In ``OPEN`` a PING goes out every interval
(foreground or background); any inbound frame counts as liveness, and silence for the
liveness timeout closes with ``heartbeat_timeout`` (the original's never fired, B7).
SENDs are tracked until their ACK or ``ack_timeout``; KICKED, ERROR and CLOSE from the
server end the connection with their code, which tells the driver whether to reconnect.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable

import orjson

from ._codec import encode_frame
from ._codes import CloseCode
from ._config import ClientConfig
from ._connection import ConnectionBase, Framing
from ._errors import LocalProtocolError
from ._events import (
    AckTimedOut,
    FrameReceived,
    HandshakeCompleted,
    Kicked,
    MessageAcked,
    PongReceived,
)
from ._frames import (
    ACK,
    AT_LEAST_ONCE,
    CLOSE,
    CONNECT_ACK,
    DATA,
    ERROR,
    KICKED,
    MESSAGE_KINDS,
    ONEOF_KINDS,
    PING,
    PONG,
    SEND,
    CommandKind,
    MetadataIn,
    ack_id,
    command_kind,
    custom_frame,
    message_frame,
    meta_text,
)
from ._ids import IdSource, SequentialIds
from ._negotiation import connect_frame
from ._pb.frame_pb2 import Frame
from ._state import CLIENT_TRANSITIONS, ClientState, transition
from ._types import Compression, Format

_DEFAULT_CONFIG = ClientConfig()
_OPEN = ClientState.OPEN


def _conflicts(raw: bytes | None) -> tuple[str, ...]:
    """CONNECT_ACK ``conflict_connections``: JSON text of an array of ids (reference §5.1)."""
    if raw is None:
        return ()
    try:
        value = orjson.loads(raw)  # nesting-limited, unlike the stdlib (no RecursionError)
    except orjson.JSONDecodeError:
        return ()
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()


class ClientConnection(ConnectionBase):
    """Sans-IO state machine for the client end of one transport connection.

    ``resend`` are SEND frames a previous connection left unacknowledged
    (:meth:`pending_sends`); they go out again, ids unchanged, right after CONNECT_ACK.
    """

    def __init__(
        self,
        config: ClientConfig = _DEFAULT_CONFIG,
        *,
        ids: IdSource | None = None,
        framing: Framing = Framing.MESSAGE,
        resend: Iterable[Frame] = (),
    ) -> None:
        super().__init__(
            limits=config.limits,
            codec=config.codec,
            ids=SequentialIds() if ids is None else ids,
            framing=framing,
        )
        self.config = config
        self._state = ClientState.IDLE
        self._format = config.format
        self._resend = list(resend)
        # message id -> (frame, ack deadline); insertion order is deadline order because
        # ``now`` never goes back and every SEND gets the same ``ack_timeout``.
        self._pending: dict[str, tuple[Frame, float]] = {}
        self._ack_timeout = config.ack_timeout
        self._handshake_deadline = math.inf
        self._interval = config.heartbeat_interval
        self._last_rx = 0.0
        self._last_ping = 0.0
        self._next_ping = math.inf
        self._pings: collections.deque[float] = collections.deque(maxlen=8)
        self.rtt: float | None = None
        """The latest PING round-trip time in seconds (``None`` until a PONG arrived)."""
        self.conflict_connections: tuple[str, ...] = ()
        """Server connection ids kicked to admit this one (from CONNECT_ACK)."""

    @property
    def state(self) -> ClientState:
        """Where the connection is in its life cycle."""
        return self._state

    @property
    def liveness_timeout(self) -> float:
        """Silence that closes the connection: ``heartbeat_timeout``, stretched in the
        background by the same factor as the PING interval (same number of missed PINGs)."""
        return self.config.heartbeat_timeout * (self._interval / self.config.heartbeat_interval)

    # -- life cycle -----------------------------------------------------------------------

    def connect(self, now: float) -> None:
        """The transport is ready: queue CONNECT. Then flush ``data_to_send()``."""
        if self._state is not ClientState.IDLE:
            raise LocalProtocolError(f"connect() in state {self._state.name}")
        config = self.config
        frame = connect_frame(
            config, message_id=self._ids.message_id(now), timestamp=self._ids.timestamp_ms(now)
        )
        # Unforced CONNECT goes uncompressed so any server can read it (reference §5.2).
        compression = config.compression if config.force else Compression.NONE
        self._queue(encode_frame(frame, config.format, compression, self._codec))
        self._state = transition(CLIENT_TRANSITIONS, self._state, "connect")
        self._handshake_deadline = now + config.handshake_timeout
        self._last_rx = now

    def close(self, now: float, reason: str = "client closing") -> None:
        """Close normally: CLOSE frame (no code), then close the transport.
        Then flush ``data_to_send()``; unacknowledged SENDs stay in :meth:`pending_sends`."""
        if self._closed:
            raise LocalProtocolError("connection is closed")
        if self._state is ClientState.IDLE:
            self._set_closed(None, reason, by_peer=False)
        else:
            self._shut(None, reason, now)

    def set_background(self, background: bool, now: float) -> None:
        """Switch between the foreground and background PING interval. The next PING is
        rescheduled from the last one, and the liveness window restarts now, so a switch
        to a shorter timeout never closes a connection before it had a PING out."""
        config = self.config
        self._interval = config.background_interval if background else config.heartbeat_interval
        if self._state is ClientState.OPEN:
            self._next_ping = max(now, self._last_ping + self._interval)
            self._last_rx = max(self._last_rx, now)

    # -- timers ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must be called next (``None``: no timer needed)."""
        state = self._state
        if state is ClientState.AWAITING_ACK:
            return self._handshake_deadline
        if state is not ClientState.OPEN:
            return None
        deadline = min(self._next_ping, self._last_rx + self.liveness_timeout)
        if self._pending:
            deadline = min(deadline, next(iter(self._pending.values()))[1])
        return deadline

    def handle_timer(self, now: float) -> None:
        """Fire expired deadlines: handshake, ACK timeouts, liveness, the next PING.
        Then flush ``data_to_send()`` and drain ``events_received()``."""
        state = self._state
        if state is ClientState.AWAITING_ACK:
            if now >= self._handshake_deadline:
                self._shut(CloseCode.AUTH_TIMEOUT, "no CONNECT_ACK within handshake_timeout", now)
            return
        if state is not ClientState.OPEN:
            return
        pending = self._pending
        while pending:
            message_id, (frame, deadline) = next(iter(pending.items()))
            if deadline > now:
                break
            del pending[message_id]
            self._events.append(AckTimedOut(message_id=message_id, frame=frame))
        if now >= self._last_rx + self.liveness_timeout:
            self._shut(
                CloseCode.HEARTBEAT_TIMEOUT, f"no frame for {self.liveness_timeout:g} s", now
            )
        elif now >= self._next_ping:
            self._send(self._system(PING, now))
            self._pings.append(now)
            self._last_ping = now
            self._next_ping = now + self._interval

    # -- sending --------------------------------------------------------------------------

    def send_message(
        self,
        payload: bytes,
        now: float,
        *,
        metadata: MetadataIn | None = None,
        message_id: str | None = None,
    ) -> str:
        """Send a SEND; it is tracked until the server's ACK (:class:`MessageAcked`) or
        ``ack_timeout`` (:class:`AckTimedOut`). Returns its id. Then flush
        ``data_to_send()``."""
        if self._state is not _OPEN:
            self._require_open()
        ids, pending = self._ids, self._pending
        ident = ids.message_id(now) if message_id is None else message_id
        if ident in pending:
            raise LocalProtocolError(f"message id {ident!r} is already awaiting its ACK")
        if metadata:
            frame = message_frame(
                SEND,
                message_id=ident,
                timestamp=ids.timestamp_ms(now),
                payload=payload,
                metadata=metadata,
            )
        else:  # message_frame(), inlined for the common case
            frame = Frame()
            frame.message_id = ident
            frame.reliability = AT_LEAST_ONCE  # type: ignore[assignment]
            frame.timestamp = ids.timestamp_ms(now)
            body = frame.command.message
            body.type = SEND  # type: ignore[assignment]  # also makes the variant present
            body.message_id = ident
            if payload:
                body.payload = payload
        pending[ident] = (frame, now + self._ack_timeout)  # _track(), inlined
        self._send(frame)
        return ident

    def send_data(self, payload: bytes, now: float, *, metadata: MetadataIn | None = None) -> str:
        """Send a DATA frame (fire and forget). Returns its id."""
        self._require_open()
        ident = self._ids.message_id(now)
        self._send(
            message_frame(
                DATA,
                message_id=ident,
                timestamp=self._ids.timestamp_ms(now),
                payload=payload,
                metadata=metadata,
            )
        )
        return ident

    def send_custom(
        self, name: str, data: bytes, now: float, *, metadata: MetadataIn | None = None
    ) -> str:
        """Send a CustomCommand ``name`` (not acknowledged). Returns its id."""
        self._require_open()
        ident = self._ids.message_id(now)
        self._send(
            custom_frame(
                name,
                message_id=ident,
                timestamp=self._ids.timestamp_ms(now),
                data=data,
                metadata=metadata,
            )
        )
        return ident

    def send_frame(self, frame: Frame, now: float) -> None:
        """Send any frame in the negotiated encoding; a SEND is tracked like
        :meth:`send_message`. Then flush ``data_to_send()``."""
        self._require_open()
        if command_kind(frame) is CommandKind.SEND:
            ident = ack_id(frame)
            if ident in self._pending:
                raise LocalProtocolError(f"message id {ident!r} is already awaiting its ACK")
            self._track(frame, ident, now)
        else:
            self._send(frame)

    def abandon(self, message_id: str) -> bool:
        """Stop tracking (and resending) the SEND ``message_id``, e.g. because the
        application gave up on it; ``False`` if it was not pending."""
        if self._pending.pop(message_id, None) is not None:
            return True
        before = len(self._resend)
        self._resend = [f for f in self._resend if ack_id(f) != message_id]
        return len(self._resend) != before

    def pending_sends(self) -> list[Frame]:
        """SENDs not acknowledged yet, oldest first (give them to the next connection's
        ``resend`` after a reconnect), including resends not yet sent."""
        return [frame for frame, _ in self._pending.values()] + self._resend

    def _track(self, frame: Frame, ident: str, now: float) -> None:
        self._pending[ident] = (frame, now + self._ack_timeout)
        self._send(frame)

    def _require_open(self) -> None:
        if self._state is not ClientState.OPEN:
            raise LocalProtocolError(f"cannot send in state {self._state.name}")

    # -- receiving ------------------------------------------------------------------------

    def _on_frame(self, frame: Frame, fmt: Format, now: float) -> None:
        self._last_rx = now
        command = frame.command
        which = command.WhichOneof("type")
        if which == "message":
            message = command.message
            if message.type == ACK:
                ident = message.message_id or frame.message_id  # ack_id(), inlined
                if self._pending.pop(ident, None) is not None:
                    self._events.append(MessageAcked(message_id=ident))
                return
        elif which == "system":
            kind = command.system.type
            if kind == PONG:
                if self._pings:
                    self.rtt = now - self._pings.popleft()
                    self._events.append(PongReceived(rtt=self.rtt))
                return
            if kind == CONNECT_ACK:
                if self._state is ClientState.AWAITING_ACK:
                    self._on_connect_ack(frame, now)
                return
            if kind in (ERROR, CLOSE):
                self._peer_closed(frame)
                return
            if kind == KICKED:
                self._on_kicked(frame)
                return
            if kind == PING:
                self._send(self._system(PONG, now))
                return
        elif which is None:
            return
        # command_kind(), without classifying the frame a second time.
        if which == "message":
            routed = MESSAGE_KINDS.get(command.message.type, CommandKind.MESSAGE_OTHER)
        else:
            routed = ONEOF_KINDS[which]
        self._events.append(FrameReceived(frame=frame, kind=routed))

    def _on_connect_ack(self, frame: Frame, now: float) -> None:
        system = frame.command.system
        meta = system.metadata
        conflicts = _conflicts(meta.get("conflict_connections"))  # parse before any change
        if not self.config.force:
            number = int(system.format)
            # An unknown format number reads as JSON, as the original does (reference §5.2).
            self._format = Format(number) if number in (0, 1) else Format.JSON
            self._compression = Compression.parse(meta_text(meta, "compression") or "none") or (
                Compression.NONE
            )
        else:
            self._compression = self.config.compression
        self.conflict_connections = conflicts
        self._state = transition(CLIENT_TRANSITIONS, self._state, "connect_ack")
        self._last_ping = now
        self._next_ping = now + self._interval
        self._events.append(
            HandshakeCompleted(
                format=self._format,
                compression=self._compression,
                conflict_connections=self.conflict_connections,
            )
        )
        resend, self._resend = self._resend, []
        for old in resend:
            self._track(old, ack_id(old), now)

    def _on_kicked(self, frame: Frame) -> None:
        system = frame.command.system
        meta = system.metadata
        self._events.append(
            Kicked(
                message=system.message,
                reason=meta_text(meta, "reason") or "",
                platform=meta_text(meta, "platform") or "",
                new_device_id=meta_text(meta, "new_device_id") or "",
            )
        )
        self._set_closed(CloseCode.KICKED, system.message or "kicked", by_peer=True)

    def _on_closed(self) -> None:
        self._state = transition(CLIENT_TRANSITIONS, self._state, "close")
        self._next_ping = math.inf
