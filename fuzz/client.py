"""Harness 4: a :class:`~flare_proto.ClientConnection` fed arbitrary server bytes.

The client has sent CONNECT and either still waits for CONNECT_ACK or has received a real
server's CONNECT_ACK (the handshake done); then the input's operations (``fuzz._ops``)
feed it raw bytes, canned server frames (including ACKs for its pending SENDs), timer
ticks, transport ends and application calls, as messages (``Framing.MESSAGE``) or stream
chunks (``Framing.STREAM``). Invariants: those of :class:`fuzz._session.Session` (no
exception, close codes from the table, nothing after ``ConnectionClosed``, decodable
output in the negotiated encoding, timers that do not spin, a bounded stream buffer) and,
for the client:

* ``MessageAcked`` and ``AckTimedOut`` only name SENDs that are outstanding, once each;
* at most one ``HandshakeCompleted``; ``Kicked`` is followed by ``ConnectionClosed`` with
  code ``kicked``; a ``PongReceived`` round trip is not negative;
* local misuse (a SEND id already awaiting its ACK) raises ``LocalProtocolError``.

Input layout: byte 0 (setup) and byte 1 (configuration), then operations.

====== =================================================================================
bits   byte 0
====== =================================================================================
0      framing: 0 ``MESSAGE``, 1 ``STREAM``
1      format: 0 protobuf, 1 JSON
2-3    compression: none, gzip, zstd, none
4      force format and compression
5      phase: 0 CONNECT_ACK received (``OPEN``), 1 still waiting for it
6      two SENDs left unacknowledged by a previous connection are resent after the ACK
7      start in the background (long PING interval)
====== =================================================================================

Byte 1, bit 0, picks the client configuration: default timeouts and 64 KiB frames, or
tiny limits and short timeouts (1 s PING, 3 s liveness, 0.5 s ACK, 2 s handshake).
"""

from __future__ import annotations

from flare_proto import (
    AckTimedOut,
    ClientConfig,
    ClientConnection,
    ClientState,
    CloseCode,
    Compression,
    ConnectionClosed,
    Event,
    Format,
    Framing,
    HandshakeCompleted,
    Kicked,
    LengthPrefixFramer,
    Limits,
    LocalProtocolError,
    MessageAcked,
    PongReceived,
    SequentialIds,
    message_frame,
    system_frame,
)

from ._input import Reader
from ._invariants import Finding, check
from ._ops import client_bound, run_ops
from ._seeds import connect_ack_bytes, handshake_frames, vector_frames, vector_stream
from ._session import Session

__all__ = ["MEMORY_LIMIT", "one_input", "seeds"]

_LIMITS = Limits(max_frame=64 * 1024, max_decompressed=256 * 1024)
_TINY = Limits(max_frame=512, max_decompressed=1024, max_undecodable=1)
MEMORY_LIMIT = 8 * 1024 * 1024
"""Peak Python allocation allowed for one input (checked by the smoke test, tracemalloc)."""

_CODES = tuple(CloseCode)
_SEND, _PING = 0, 4


def _config(setup: int, tiny: bool) -> ClientConfig:
    fmt = Format((setup >> 1) & 1)
    compression = tuple(Compression)[((setup >> 2) & 3) % 3]
    force = bool(setup & 16)
    if not tiny:
        return ClientConfig(format=fmt, compression=compression, force=force, limits=_LIMITS)
    return ClientConfig(
        format=fmt,
        compression=compression,
        force=force,
        limits=_TINY,
        heartbeat_interval=1.0,
        background_interval=4.0,
        heartbeat_timeout=3.0,
        ack_timeout=0.5,
        handshake_timeout=2.0,
    )


class _Client:
    """One input's run: the session plus the SENDs the application has outstanding."""

    def __init__(self, data: bytes) -> None:
        reader = self.reader = Reader(data)
        setup = reader.byte()
        config = _config(setup, bool(reader.byte() & 1))
        self.framing = Framing.STREAM if setup & 1 else Framing.MESSAGE
        resend = []
        if setup & 64:
            resend = [
                message_frame(_SEND, message_id=f"old-{n}", timestamp=1, payload=b"again")
                for n in range(2)
            ]
        self.conn = ClientConnection(
            config, ids=SequentialIds(1_730_000_000.0), framing=self.framing, resend=resend
        )
        self.outstanding = {f"old-{n}" for n in range(len(resend))}
        self.handshakes = 0
        self.kicked = False
        session = self.session = Session(self.conn, self.framing)
        conn = self.conn
        if setup & 128:
            session.act("set_background", lambda: conn.set_background(True, session.now))
        self.on_events(session.act("connect", lambda: conn.connect(session.now)))
        if not setup & 32:
            ack = connect_ack_bytes(config.format, config.compression, config.force)
            if self.framing is Framing.STREAM:
                ack = LengthPrefixFramer.frame(ack)
            self.on_events(session.deliver(ack))

    def run(self) -> None:
        run_ops(self.session, self.reader, self.act, client_bound, self.pending, self.on_events)

    def pending(self) -> list[str]:
        frames = self.conn.pending_sends()
        return [f.command.message.message_id or f.message_id for f in frames]

    def on_events(self, events: list[Event]) -> None:
        for index, event in enumerate(events):
            if isinstance(event, MessageAcked | AckTimedOut):
                check(
                    event.message_id in self.outstanding,
                    f"{type(event).__name__} for {event.message_id!r}, not outstanding",
                )
                self.outstanding.discard(event.message_id)
            elif isinstance(event, HandshakeCompleted):
                self.handshakes += 1
                check(self.handshakes == 1, "a second HandshakeCompleted")
            elif isinstance(event, PongReceived):
                check(event.rtt >= 0, f"negative ping round trip {event.rtt}")
            elif isinstance(event, Kicked):
                following = events[index + 1 : index + 2]
                check(
                    len(following) == 1
                    and isinstance(following[0], ConnectionClosed)
                    and following[0].code is CloseCode.KICKED,
                    f"Kicked not followed by ConnectionClosed(kicked): {following}",
                )

    def act(self, arg: int, reader: Reader) -> None:
        conn, session = self.conn, self.session
        now = session.now
        choice = arg & 7
        is_open = conn.state is ClientState.OPEN
        events: list[Event] = []
        if choice == 0 and is_open:
            payload = reader.take(reader.byte() % 64)
            idents: list[str] = []
            events = session.act(
                "send_message", lambda: idents.append(conn.send_message(payload, now))
            )
            self.outstanding.update(idents)
        elif choice == 1 and is_open:
            payload = reader.take(reader.byte() % 64)
            events = session.act("send_data", lambda: conn.send_data(payload, now))
        elif choice == 2 and is_open:
            data = reader.take(reader.byte() % 16)
            events = session.act("send_custom", lambda: conn.send_custom("echo", data, now))
        elif choice == 3:
            background = bool(arg & 8)
            events = session.act("set_background", lambda: conn.set_background(background, now))
        elif choice == 4 and not conn.closed:
            # A normal close: CLOSE without a code, the one codeless close the core makes.
            events = session.act("close", lambda: conn.close(now), codeless=True)
        elif choice == 5 and not conn.closed:
            byte = reader.byte()
            code = None if byte & 1 else _CODES[(byte >> 1) % len(_CODES)]
            events = session.act(
                "abort", lambda: conn.abort(code, "aborted"), silent=True, codeless=code is None
            )
        elif choice == 6 and is_open:
            ping = system_frame(_PING, message_id=f"x-app-{reader.byte()}", timestamp=1)
            events = session.act("send_frame", lambda: conn.send_frame(ping, now))
        elif choice == 7 and is_open and self.pending():
            pending = self.pending()
            taken = pending[reader.byte() % len(pending)]

            def duplicate() -> None:
                try:
                    conn.send_message(b"dup", now, message_id=taken)
                except LocalProtocolError:
                    return
                raise Finding(f"send_message reused pending id {taken!r} without an error")

            events = session.act("send_message(duplicate id)", duplicate)
        self.on_events(events)


def one_input(data: bytes) -> None:
    """Run the client session ``data`` describes; raise :class:`Finding` if an invariant
    breaks (any other exception escaping is an uncaught exception from the core)."""
    _Client(data).run()


def _deliver(payload: bytes) -> bytes:
    return bytes([2]) + len(payload).to_bytes(2, "big") + payload


def seeds() -> list[bytes]:
    """For each framing, phase and a few encodings: every golden frame and handshake frame
    delivered one by one with timer ticks and application sends; the golden stream in
    chunks; every canned template (ACKs of pending SENDs included) in each format and
    compression; transport ends."""
    frames = [*vector_frames(), *handshake_frames()]
    stream = vector_stream()
    out: list[bytes] = []
    setups = [0x00, 0x02, 0x06, 0x1A, 0x20, 0x22, 0x40, 0xC8]
    for framing in (0, 1):
        for number, setup in enumerate(setups):
            head = bytes([setup | framing, number % 2])
            body = bytearray(b"\x05\x05hello")  # send_message
            for index, frame in enumerate(frames[number::4]):
                payload = LengthPrefixFramer.frame(frame) if framing else frame
                body += _deliver(payload)
                if index % 3 == 2:
                    body += bytes([3, 30 + index, 0x05, 0x03, 0x61, 0x62, 0x63])
            out.append(head + bytes(body))
            if framing:
                out.append(head + _deliver(stream) + b"\x04")
            canned = bytearray(b"\x05\x02hi\x05\x02yo")
            for template in range(16):
                arg = (template + number) % 6
                canned += bytes([7 | (arg << 3), template, number % 2, 0, 1, 2])
            out.append(head + bytes(canned) + b"\x04\x04\x04")
        base = bytes([framing, 0])
        out.append(base + b"\x04\x04\x04\x04")  # PINGs, then liveness timeout
        out.append(base + b"\x05\x01x\x04\x3f\x0d\x00\x00\x00")  # ACK of the pending SEND
        out.append(bytes([framing, 1]) + b"\x05\x01x\x04\x04\x04")  # tiny: ACK timeout
        out.append(bytes([framing | 0x20, 0]) + b"\x04")  # handshake timeout
        out.append(base + b"\x3d\x05\x01x\x2d\x1d\x07\x0b\x00")  # dup id, close, kicked
    return list(dict.fromkeys(out))
