"""The operation language shared by the two connection harnesses.

After a harness's setup bytes, the rest of the input is a sequence of operations, each
introduced by one op byte: ``kind = op & 7``, ``arg = op >> 3`` (0-31).

==== ============================================================================
kind operation
==== ============================================================================
0, 1 deliver the next ``n`` bytes (``n`` = next byte) as one message / stream chunk
2    deliver the next ``n`` bytes, ``n`` = next two bytes (big-endian)
3    advance the clock by ``delta_seconds(next byte)`` (0 to ~1300 s), ``handle_timer``
4    jump to ``next_deadline()`` + (0, 0.5, -0.5, 1e-6)[arg & 3], ``handle_timer``
5    an application action chosen by ``arg`` (harness-specific, only legal calls)
6    transport end: ``arg & 1`` EOF; else ``receive_close`` with a table code
     (``arg & 2``) or the next two bytes as the number, then a reason of ``n`` bytes
7    a canned valid frame: template = next byte, format = ``arg & 1``, compression =
     ``(arg >> 1) % 3`` (none, gzip, zstd; every size compressed), delivered as one
     message or length-prefixed on the stream
==== ============================================================================

Canned frames let libFuzzer reach deep states (an ACK for a pending SEND, a KICKED, an
ERROR with each documented code) without having to invent protobuf; raw deliveries cover
everything else. At most :data:`MAX_OPS` operations run per input.
"""

from __future__ import annotations

from collections.abc import Callable

from flare_proto import (
    CloseCode,
    Compression,
    Event,
    Format,
    Frame,
    Framing,
    custom_frame,
    decode_frame,
    encode_frame,
    message_frame,
    notification_frame,
    system_frame,
)

from ._input import Reader
from ._seeds import ALWAYS_COMPRESS, connect_bytes
from ._session import Session, delta_seconds

__all__ = ["BOMB", "CODES", "MAX_OPS", "client_bound", "run_ops", "server_bound"]

MAX_OPS = 512
"""Operations per input at most (bounds the time one input takes)."""

# SystemCommand / MessageCommand types (reference §1, v0.1.2 tables).
CONNECT, CONNECT_ACK, CLOSE, PING, PONG, ERROR, KICKED = 1, 2, 3, 4, 5, 6, 10
SEND, ACK, DATA = 0, 1, 2

CODES: tuple[str | None, ...] = (*(c.code for c in CloseCode), "", "bogus", None)
"""``code`` metadata values for canned ERROR/CLOSE frames: the table, junk, or absent."""
_NUMBERS = (*(c.number for c in CloseCode), 1000, 1001, 1006, 4000, 4999)
_DELTAS = (0.0, 0.5, -0.5, 1e-6)
# A SEND above every harness's max_decompressed: a bomb when compressed, too large when not.
# Encoded once per format and compression, at import (milliseconds each, and not to be
# counted in the memory of the input that first uses it).
BOMB = message_frame(SEND, message_id="x-bomb", timestamp=1, payload=bytes(300 * 1024))
_ENCODED_BOMBS = {
    (fmt, compression): encode_frame(BOMB, fmt, compression, ALWAYS_COMPRESS)
    for fmt in Format
    for compression in Compression
}


def _code_meta(reader: Reader) -> dict[str, str]:
    code = CODES[reader.byte() % len(CODES)]
    return {} if code is None else {"code": code}


def _system(
    kind: int,
    reader: Reader,
    *,
    message: str = "",
    metadata: dict[str, str] | None = None,
    format: int = 0,
) -> Frame:
    serial = reader.byte()
    return system_frame(
        kind,
        message_id=f"x-{serial}",
        timestamp=1_730_000_000_000 + serial,
        message=message,
        metadata=metadata,
        format=format,
    )


def _message(kind: int, reader: Reader, payload: bytes = b"", ident: str | None = None) -> Frame:
    serial = reader.byte()
    return message_frame(
        kind,
        message_id=f"x-{serial}",
        command_id=ident,
        timestamp=1_730_000_000_000 + serial,
        payload=payload,
    )


def _common(index: int, reader: Reader) -> Frame:
    """Templates both sides may receive (index 0-11)."""
    if index == 0:
        return _system(PING, reader)
    if index == 1:
        return _system(PONG, reader)
    if index == 2:
        return _message(SEND, reader, reader.take(reader.byte() % 32))
    if index == 3:
        return _message(DATA, reader, reader.take(reader.byte() % 32))
    if index == 4:
        return _system(CLOSE, reader, message="bye", metadata=_code_meta(reader))
    if index == 5:
        return _system(ERROR, reader, message="err", metadata=_code_meta(reader))
    if index == 6:
        return custom_frame("echo", message_id="x-c", timestamp=1, data=reader.take(8))
    if index == 7:
        return notification_frame(reader.byte() % 7, message_id="x-n", timestamp=1, title="t")
    if index == 8:
        return Frame()  # all defaults: zero protobuf bytes
    if index == 9:
        return BOMB
    if index == 10:
        return _system(99, reader, message="unknown system type")
    return _system(
        KICKED,
        reader,
        message="kicked",
        metadata={"reason": "device_conflict", "platform": "ios", "new_device_id": "dev-2"},
    )


def server_bound(template: int, reader: Reader, pending: list[str]) -> Frame:
    """A canned frame a client might send (``pending``: unused, for symmetry)."""
    index = template % 16
    if index < 12:
        return _common(index, reader)
    if index == 12:
        fmt = Format(reader.byte() & 1)
        compression = tuple(Compression)[reader.byte() % 3]
        frame, _, _ = decode_frame(connect_bytes(fmt, compression, bool(reader.byte() & 1)))
        return frame
    if index == 13:
        metadata = {"format": "xml", "compression": "brotli", "force_format": "true"}
        return _system(CONNECT, reader, metadata=metadata, format=reader.byte() % 4)
    if index == 14:
        return _message(ACK, reader, ident=f"x-{reader.byte()}")
    return _system(CONNECT_ACK, reader, metadata={"compression": "gzip"})


_COMPRESSION_TEXT = ("none", "gzip", "zstd", "", "GZIP", "brotli")
_CONFLICTS = ('["c-1","c-2"]', "not json", "[1,2]", "{}", '["x"]')


def client_bound(template: int, reader: Reader, pending: list[str]) -> Frame:
    """A canned frame a server might send; ``pending`` are the client's unacknowledged
    SEND ids (an ACK template picks one)."""
    index = template % 16
    if index < 12:
        return _common(index, reader)
    if index == 12:
        metadata = {
            "compression": _COMPRESSION_TEXT[reader.byte() % len(_COMPRESSION_TEXT)],
            "conflict_connections": _CONFLICTS[reader.byte() % len(_CONFLICTS)],
        }
        return _system(CONNECT_ACK, reader, metadata=metadata, format=reader.byte() % 4)
    if index in (13, 14):
        ident = pending[reader.byte() % len(pending)] if pending else "x-unknown"
        return _message(ACK, reader, ident=ident if index == 13 else "x-unknown")
    return _system(CONNECT, reader)


def run_ops(
    session: Session,
    reader: Reader,
    act: Callable[[int, Reader], None],
    canned: Callable[[int, Reader, list[str]], Frame],
    pending: Callable[[], list[str]],
    on_events: Callable[[list[Event]], None],
) -> None:
    """Interpret the rest of ``reader`` as operations on ``session`` (see module doc)."""
    stream = session.framing is Framing.STREAM
    for _ in range(MAX_OPS):
        if not reader.remaining:
            return
        op = reader.byte()
        kind, arg = op & 7, op >> 3
        if kind <= 1:
            events = session.deliver(reader.take(reader.byte()))
        elif kind == 2:
            events = session.deliver(reader.take(reader.u16()))
        elif kind == 3:
            events = session.advance(delta_seconds(reader.byte()))
        elif kind == 4:
            events = session.jump(_DELTAS[arg & 3])
        elif kind == 5:
            act(arg, reader)
            continue  # the action drained and handled its own events
        elif kind == 6:
            if arg & 1:
                events = session.end(None)
            else:
                number = _NUMBERS[reader.byte() % len(_NUMBERS)] if arg & 2 else reader.u16()
                reason = reader.take(reader.byte() % 64).decode("utf-8", "replace")
                events = session.end(number, reason)
        else:
            frame = canned(reader.byte(), reader, pending())
            fmt = Format(arg & 1)
            compression = tuple(Compression)[(arg >> 1) % 3]
            if frame is BOMB:
                data = _ENCODED_BOMBS[fmt, compression]
            else:
                data = encode_frame(frame, fmt, compression, ALWAYS_COMPRESS)
            if stream:
                data = len(data).to_bytes(4, "big") + data
            events = session.deliver(data)
        on_events(events)
