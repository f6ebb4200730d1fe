"""The server side of one connection (DESIGN §3, §4, §6).

A connection starts in ``AWAITING_CONNECT``: only CONNECT and PING are allowed (B3); any
other frame is a ``protocol_error``. CONNECT is parsed and the encoding decided at once
(a refused forced request closes with ``unsupported_*``); then the core reports
:class:`ConnectRequested` and waits in ``AWAITING_VERDICT`` for the application's
:meth:`ServerConnection.accept` or :meth:`ServerConnection.reject`. Frames arriving
meanwhile are held (bounded) and released in order on acceptance. ``auth_timeout`` counts
from transport open to the verdict, so a connection that never sends CONNECT is closed
too (the slowloris guard, B5). Once ``OPEN`` every frame we send uses the negotiated
encoding (B9); the idle deadline is exact per connection (B11).

Device conflicts are decided outside, by a :class:`~flare_proto.DeviceRegistry` shared by
all connections (see :func:`~flare_proto.admit`): the connection only carries out
:meth:`ServerConnection.kick` and lists the kicked ids in its CONNECT_ACK.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from ._codec import encode_frame
from ._codes import CloseCode
from ._config import ServerConfig
from ._connection import ConnectionBase, Framing
from ._errors import LocalProtocolError
from ._events import ConnectRequested, FrameReceived
from ._frames import (
    ACK,
    CLOSE,
    CONNECT,
    CONNECT_ACK,
    ERROR,
    KICKED,
    MESSAGE_KINDS,
    ONEOF_KINDS,
    PING,
    PONG,
    SEND,
    CommandKind,
    MetadataIn,
    message_frame,
    system_frame,
)
from ._ids import IdSource, SequentialIds
from ._negotiation import ConnectRequest, decide, parse_connect
from ._pb.commands_pb2 import MessageCommand
from ._pb.frame_pb2 import Frame
from ._state import SERVER_TRANSITIONS, ServerState, transition
from ._types import Compression, Format

_DEFAULT_CONFIG = ServerConfig()
_OPEN = ServerState.OPEN


class ServerConnection(ConnectionBase):
    """Sans-IO state machine for one accepted transport connection.

    ``now`` is the transport-open time (the ``auth_timeout`` clock starts there).
    ``connection_id`` defaults to a fresh id from ``ids``.
    """

    def __init__(
        self,
        config: ServerConfig = _DEFAULT_CONFIG,
        *,
        now: float,
        connection_id: str | None = None,
        ids: IdSource | None = None,
        framing: Framing = Framing.MESSAGE,
    ) -> None:
        ids = SequentialIds() if ids is None else ids
        super().__init__(limits=config.limits, codec=config.codec, ids=ids, framing=framing)
        self.config = config
        self.connection_id = ids.connection_id(now) if connection_id is None else connection_id
        """Server-side id of this connection (KICKED lists and ``conflict_connections``)."""
        self._state = ServerState.AWAITING_CONNECT
        self._format = config.default_format
        self._deadline = now + config.auth_timeout
        self._held: list[Frame] = []
        self._held_bytes = 0
        self._decided: tuple[Format, Compression] = (config.default_format, Compression.NONE)
        self.request: ConnectRequest | None = None
        """The client's CONNECT, once received."""
        self.user_id: str | None = None
        """The user id given to :meth:`accept` (the authenticated one)."""
        self._idle_timeout = config.idle_timeout
        # One ACK frame (and its MessageCommand) reused for every ACK, made on first use:
        # building a fresh upb message per SEND costs more than updating three fields,
        # and send_ack serializes it at once.
        self._ack: tuple[Frame, MessageCommand] | None = None

    @property
    def state(self) -> ServerState:
        """Where the connection is in its life cycle."""
        return self._state

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must be called next (``None``: no timer needed)."""
        return None if self._closed else self._deadline

    def handle_timer(self, now: float) -> None:
        """Fire expired deadlines: ``auth_timeout`` before acceptance, the idle deadline
        after. Then flush ``data_to_send()`` and drain ``events_received()``."""
        if self._closed or now < self._deadline:
            return
        if self._state is ServerState.OPEN:
            self._shut(
                CloseCode.HEARTBEAT_TIMEOUT,
                f"no frame for {self.config.idle_timeout:g} s",
                now,
            )
        elif self._state is ServerState.AWAITING_CONNECT:
            self._fail(CloseCode.AUTH_TIMEOUT, "no CONNECT within auth_timeout", now)
        else:
            self._fail(CloseCode.AUTH_TIMEOUT, "no authentication verdict in time", now)

    # -- verdict ----------------------------------------------------------------------

    def accept(
        self,
        now: float,
        *,
        user_id: str | None,
        conflict_connections: Sequence[str] = (),
    ) -> None:
        """Accept the pending CONNECT as ``user_id`` (the authenticated id; pass the
        claimed one when auth is disabled). Sends CONNECT_ACK (never compressed, DESIGN
        §3.7) listing ``conflict_connections``, then processes held frames in order.
        Then flush ``data_to_send()`` and drain ``events_received()``."""
        if self._state is not ServerState.AWAITING_VERDICT:
            raise LocalProtocolError(
                f"accept() needs a pending CONNECT, state is {self._state.name}"
            )
        fmt, compression = self._decided
        metadata: dict[str, str] = {"compression": compression.value}
        if conflict_connections:
            metadata["conflict_connections"] = json.dumps(
                list(conflict_connections), separators=(",", ":"), ensure_ascii=False
            )
        ack = system_frame(
            CONNECT_ACK,
            message_id=self._ids.message_id(now),
            timestamp=self._ids.timestamp_ms(now),
            format=int(fmt),
            metadata=metadata,
        )
        self._queue(encode_frame(ack, fmt, Compression.NONE, self._codec))
        self._format, self._compression = fmt, compression
        self.user_id = user_id
        self._state = transition(SERVER_TRANSITIONS, self._state, "accept")
        self._deadline = now + self.config.idle_timeout
        held, self._held, self._held_bytes = self._held, [], 0
        for frame in held:
            if self._closed:
                break
            self._dispatch(frame, now)

    def reject(self, now: float, reason: str = "authentication failed") -> None:
        """Refuse the pending CONNECT: ERROR ``auth_failed``, then close; held frames are
        dropped. Then flush ``data_to_send()`` and drain ``events_received()``."""
        if self._state is not ServerState.AWAITING_VERDICT:
            raise LocalProtocolError(
                f"reject() needs a pending CONNECT, state is {self._state.name}"
            )
        self._fail(CloseCode.AUTH_FAILED, reason, now)

    def kick(self, now: float, *, message: str, metadata: MetadataIn) -> None:
        """Send KICKED (``message``, ``metadata``) in this connection's encoding, then close
        with ``kicked`` (the original left the socket open, B6/B11)."""
        if self._closed:
            raise LocalProtocolError("connection is closed")
        frame = system_frame(
            KICKED,
            message_id=self._ids.message_id(now),
            timestamp=self._ids.timestamp_ms(now),
            message=message,
            metadata=metadata,
        )
        self._send(frame)
        self._set_closed(CloseCode.KICKED, message, by_peer=False)

    def close(
        self,
        now: float,
        code: CloseCode = CloseCode.SERVER_SHUTDOWN,
        reason: str = "server shutting down",
    ) -> None:
        """Close on our initiative: CLOSE frame with ``code``, then close the transport.
        Then flush ``data_to_send()``."""
        if self._closed:
            raise LocalProtocolError("connection is closed")
        self._shut(code, reason, now)

    # -- sending ----------------------------------------------------------------------

    def send_frame(self, frame: Frame, now: float) -> None:
        """Send any frame in the negotiated encoding. Then flush ``data_to_send()``."""
        self._require_open()
        self._send(frame)

    def send_ack(self, message_id: str, now: float) -> None:
        """ACK the SEND whose ``message_id`` is given (DESIGN §6: after the handler ran)."""
        if self._state is not _OPEN:
            self._require_open()
        if self._ack is None:
            frame = message_frame(ACK, message_id="", command_id="", timestamp=0)
            self._ack = (frame, frame.command.message)
        ack, body = self._ack
        ids = self._ids
        ack.message_id = ids.message_id(now)
        ack.timestamp = ids.timestamp_ms(now)
        body.message_id = message_id
        self._send(ack)

    def send_message(
        self,
        payload: bytes,
        now: float,
        *,
        metadata: MetadataIn | None = None,
        message_id: str | None = None,
    ) -> str:
        """Send a SEND carrying ``payload`` to this client; returns its message id."""
        self._require_open()
        ident = self._ids.message_id(now) if message_id is None else message_id
        self._send(
            message_frame(
                SEND,
                message_id=ident,
                timestamp=self._ids.timestamp_ms(now),
                payload=payload,
                metadata=metadata,
            )
        )
        return ident

    def _require_open(self) -> None:
        if self._state is not ServerState.OPEN:
            raise LocalProtocolError(f"cannot send in state {self._state.name}")

    # -- receiving ----------------------------------------------------------------------

    def _on_frame(self, frame: Frame, fmt: Format, now: float) -> None:
        state = self._state
        if state is _OPEN:
            self._deadline = now + self._idle_timeout
            command = frame.command
            if command.WhichOneof("type") == "message":  # SEND, ACK, DATA: the hot path
                routed = MESSAGE_KINDS.get(command.message.type, CommandKind.MESSAGE_OTHER)
                self._events.append(FrameReceived(frame=frame, kind=routed))
            else:
                self._dispatch(frame, now)
            return
        command = frame.command
        kind = command.system.type if command.WhichOneof("type") == "system" else -1
        if kind in (ERROR, CLOSE):
            self._peer_closed(frame)
        elif kind == PING:
            # Before negotiation, answer in the peer's own format, uncompressed.
            self._format = fmt
            self._send(self._system(PONG, now))
        elif kind == CONNECT:
            if state is ServerState.AWAITING_CONNECT:
                self._format = fmt
                self._on_connect(frame, now)
            else:
                self._fail(CloseCode.PROTOCOL_ERROR, "CONNECT repeated", now)
        elif state is ServerState.AWAITING_CONNECT:
            self._format = fmt
            self._fail(CloseCode.PROTOCOL_ERROR, "frame before CONNECT", now)
        elif len(self._held) >= self._limits.max_held_frames:
            self._fail(CloseCode.PROTOCOL_ERROR, "too many frames before the auth verdict", now)
        else:
            self._held_bytes += frame.ByteSize()
            if self._held_bytes > self._limits.held_bytes:
                self._fail(CloseCode.PROTOCOL_ERROR, "too much data before the auth verdict", now)
            else:
                self._held.append(frame)

    def _on_connect(self, frame: Frame, now: float) -> None:
        request = parse_connect(frame)
        decision = decide(request, self.config)
        if isinstance(decision, CloseCode):
            wanted = (
                request.format_name
                if decision is CloseCode.UNSUPPORTED_FORMAT
                else (request.compression_name)
            )
            self._fail(decision, f"{decision.code}: {wanted}", now)
            return
        self.request = request
        self._decided = decision
        self._state = transition(SERVER_TRANSITIONS, self._state, "connect")
        self._events.append(
            ConnectRequested(request=request, format=decision[0], compression=decision[1])
        )

    def _dispatch(self, frame: Frame, now: float) -> None:
        command = frame.command
        which = command.WhichOneof("type")
        if which == "system":
            kind = command.system.type
            if kind == PING:
                self._send(self._system(PONG, now))
            elif kind in (ERROR, CLOSE):
                self._peer_closed(frame)
            elif kind == CONNECT:
                self._fail(CloseCode.PROTOCOL_ERROR, "CONNECT repeated", now)
            elif kind != PONG:
                self._events.append(FrameReceived(frame=frame, kind=CommandKind.SYSTEM))
        elif which == "message":
            routed = MESSAGE_KINDS.get(command.message.type, CommandKind.MESSAGE_OTHER)
            self._events.append(FrameReceived(frame=frame, kind=routed))
        elif which is not None:
            self._events.append(FrameReceived(frame=frame, kind=ONEOF_KINDS[which]))

    def _on_closed(self) -> None:
        self._state = transition(SERVER_TRANSITIONS, self._state, "close")
        self._held, self._held_bytes = [], 0
        self._deadline = math.inf
