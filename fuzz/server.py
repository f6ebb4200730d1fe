"""Harness 3: a :class:`~flare_proto.ServerConnection` fed arbitrary client bytes.

The connection is set up by a valid handshake (a real client's CONNECT, accepted), or left
waiting for the verdict, or fresh; then the input's operations (``fuzz._ops``) feed it raw
bytes, canned frames, timer ticks, transport ends and application calls, as one message
per delivery (``Framing.MESSAGE``, WebSocket) or as stream chunks (``Framing.STREAM``,
QUIC). Invariants: those of :class:`fuzz._session.Session` (no exception, close codes
from the table, nothing after ``ConnectionClosed``, decodable output in the negotiated
encoding, timers that do not spin, a bounded stream buffer) and, for the server:

* at most one ``ConnectRequested``; no ``FrameReceived`` before the application accepted
  (frames before CONNECT are a protocol error, frames before the verdict are held, B3);
* the frames held before the verdict never exceed ``max_held_frames`` nor
  ``max_held_bytes`` (white-box);
* an accepted connection that is not closed is ``OPEN``.

Input layout: byte 0 (setup) and byte 1 (configuration), then operations.

====== =================================================================================
bits   byte 0
====== =================================================================================
0      framing: 0 ``MESSAGE``, 1 ``STREAM``
1      the CONNECT's format: 0 protobuf, 1 JSON
2-3    the CONNECT's compression: none, gzip, zstd, none
4      the CONNECT forces format and compression
5-6    phase: 0-1 handshake done (accepted), 2 CONNECT received, verdict pending,
       3 fresh (nothing received)
7      manual verdicts: a ``ConnectRequested`` is not accepted automatically
====== =================================================================================

Byte 1, bits 0-1, picks the server configuration from :data:`CONFIGS`.
"""

from __future__ import annotations

from flare_proto import (
    CloseCode,
    Compression,
    ConnectionClosed,
    ConnectRequested,
    Event,
    Format,
    FrameReceived,
    Framing,
    LengthPrefixFramer,
    Limits,
    SequentialIds,
    ServerConfig,
    ServerConnection,
    ServerState,
    system_frame,
)

from ._input import Reader
from ._invariants import check
from ._ops import run_ops, server_bound
from ._seeds import connect_bytes, handshake_frames, vector_frames, vector_stream
from ._session import START, Session

__all__ = ["CONFIGS", "MEMORY_LIMIT", "one_input", "seeds"]

_LIMITS = Limits(
    max_frame=64 * 1024, max_decompressed=256 * 1024, max_held_frames=4, max_held_bytes=4096
)
CONFIGS = (
    ServerConfig(limits=_LIMITS),
    ServerConfig(
        limits=_LIMITS,
        prefer="server",
        default_format=Format.JSON,
        default_compression=Compression.GZIP,
    ),
    ServerConfig(
        formats=frozenset({Format.PROTOBUF}),
        compressions=frozenset({Compression.NONE}),
        limits=_LIMITS,
    ),
    ServerConfig(
        limits=Limits(max_frame=512, max_decompressed=1024, max_held_frames=1, max_undecodable=1),
        auth_timeout=5.0,
        idle_timeout=20.0,
    ),
)
"""Server configurations: all encodings; server-preferred JSON/gzip; protobuf/none only
(forced JSON or compression is refused); tiny limits and short timeouts."""
MEMORY_LIMIT = 8 * 1024 * 1024
"""Peak Python allocation allowed for one input (checked by the smoke test, tracemalloc)."""

_CODES = tuple(CloseCode)
_PING = 4


class _Server:
    """One input's run: the session plus what the application side knows."""

    def __init__(self, data: bytes) -> None:
        reader = self.reader = Reader(data)
        setup = reader.byte()
        config = CONFIGS[reader.byte() & 3]
        self.framing = Framing.STREAM if setup & 1 else Framing.MESSAGE
        self.conn = ServerConnection(
            config, now=START, ids=SequentialIds(1_730_000_000.0), framing=self.framing
        )
        self.session = Session(self.conn, self.framing)
        self.manual = bool(setup & 128)
        self.accepted = False
        self.requests = 0
        phase = (setup >> 5) & 3
        if phase == 3:
            return
        connect = connect_bytes(
            Format((setup >> 1) & 1), tuple(Compression)[((setup >> 2) & 3) % 3], bool(setup & 16)
        )
        if self.framing is Framing.STREAM:
            connect = LengthPrefixFramer.frame(connect)
        manual, self.manual = self.manual, phase == 2
        self.on_events(self.session.deliver(connect))
        self.manual = manual

    def run(self) -> None:
        run_ops(self.session, self.reader, self.act, server_bound, list, self.on_events)

    def on_events(self, events: list[Event]) -> None:
        conn = self.conn
        for event in events:
            if isinstance(event, ConnectRequested):
                self.requests += 1
                check(self.requests == 1, "a second ConnectRequested")
            elif isinstance(event, FrameReceived):
                check(self.accepted, f"FrameReceived before the application accepted: {event}")
        held = getattr(conn, "_held", [])
        check(
            len(held) <= conn.config.limits.max_held_frames,
            f"{len(held)} frames held before the verdict (max "
            f"{conn.config.limits.max_held_frames})",
        )
        size = sum(frame.ByteSize() for frame in held)
        check(
            size <= conn.config.limits.held_bytes,
            f"{size} bytes held before the verdict (max {conn.config.limits.held_bytes})",
        )
        if self.accepted and not conn.closed:
            check(conn.state is ServerState.OPEN, f"accepted but in {conn.state}")
        if not self.manual and conn.state is ServerState.AWAITING_VERDICT and not conn.closed:
            self.accept(0)

    def accept(self, arg: int) -> None:
        conn = self.conn
        request = conn.request
        user = None if request is None else request.user_id
        kicked = ("c-1", "c-2")[: arg & 3]
        self.accepted = True
        events = self.session.act(
            "accept",
            lambda: conn.accept(self.session.now, user_id=user, conflict_connections=kicked),
        )
        self.on_events(events)

    def act(self, arg: int, reader: Reader) -> None:
        conn, session = self.conn, self.session
        now = session.now
        choice = arg & 7
        state = conn.state
        events: list[Event] = []
        if choice == 0 and state is ServerState.AWAITING_VERDICT:
            self.accept(arg >> 3)
            return
        if choice == 1 and state is ServerState.AWAITING_VERDICT:
            events = session.act("reject", lambda: conn.reject(now, "no"))
        elif choice == 2 and state is ServerState.OPEN:
            payload = reader.take(reader.byte() % 64)
            events = session.act("send_message", lambda: conn.send_message(payload, now))
        elif choice == 3 and state is ServerState.OPEN:
            ident = f"x-{reader.byte()}"
            events = session.act("send_ack", lambda: conn.send_ack(ident, now))
        elif choice == 4 and not conn.closed:
            code = _CODES[reader.byte() % len(_CODES)]
            events = session.act("close", lambda: conn.close(now, code, "closing"))
        elif choice == 5 and not conn.closed:
            metadata = {"reason": "device_conflict", "platform": "ios", "new_device_id": "d2"}
            events = session.act(
                "kick", lambda: conn.kick(now, message="kicked", metadata=metadata)
            )
        elif choice == 6 and not conn.closed:
            byte = reader.byte()
            abort_code = None if byte & 1 else _CODES[(byte >> 1) % len(_CODES)]
            events = session.act(
                "abort",
                lambda: conn.abort(abort_code, "aborted"),
                silent=True,
                codeless=abort_code is None,
            )
        elif choice == 7 and state is ServerState.OPEN:
            ping = system_frame(_PING, message_id="x-bcast", timestamp=1)
            events = session.act("send_encoded", lambda: conn.send_encoded(conn.encode(ping)))
        self.on_events(events)
        if conn.closed:
            check(
                isinstance(session.closed_event, ConnectionClosed),
                "closed without ConnectionClosed",
            )


def one_input(data: bytes) -> None:
    """Run the server session ``data`` describes; raise :class:`Finding` if an invariant
    breaks (any other exception escaping is an uncaught exception from the core)."""
    _Server(data).run()


def _deliver(payload: bytes) -> bytes:
    return bytes([2]) + len(payload).to_bytes(2, "big") + payload


def seeds() -> list[bytes]:
    """For each framing and a few handshake settings and phases: every golden frame and
    handshake frame delivered one by one, with timer jumps; the golden stream in chunks;
    every canned template in each format and compression; transport ends."""
    frames = [*vector_frames(), *handshake_frames()]
    stream = vector_stream()
    out: list[bytes] = []
    setups = [0x00, 0x02, 0x06, 0x1A, 0x40, 0x60, 0xC0, 0x0C]
    for framing in (0, 1):
        for number, setup in enumerate(setups):
            head = bytes([setup | framing, number % 4])
            body = bytearray()
            for index, frame in enumerate(frames[number::4]):
                payload = LengthPrefixFramer.frame(frame) if framing else frame
                body += _deliver(payload)
                if index % 3 == 2:
                    body += bytes([3, 40 + index])  # advance a few seconds
            out.append(head + bytes(body))
            if framing:
                out.append(head + _deliver(stream) + b"\x04")
                out.append(head + b"".join(_deliver(stream[i : i + 7]) for i in range(0, 70, 7)))
            canned = bytearray()
            for template in range(16):
                arg = (template + number) % 6
                canned += bytes([7 | (arg << 3), template, number, 3, 1])
            out.append(head + bytes(canned) + b"\x04\x0c")
        base = bytes([framing, 0])
        out.append(base + b"\x04")  # straight to the idle deadline
        out.append(base + b"\x05\x15\x03\x25\x07\x0e\x3d\x00")  # app sends, eof
        out.append(bytes([framing | 0x60, 3]) + b"\x04")  # fresh, tiny config: auth timeout
        out.append(bytes([framing | 0xC0, 0]) + b"\x3f\x01\x02\x0f\x00\x00\x05")  # canned, accept
        out.append(base + b"\x16\x07\x03" + b"\x0e\x05ok")  # receive_close with a table code
    return list(dict.fromkeys(out))
