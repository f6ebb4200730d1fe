"""What a finding is, and the checks every harness shares.

A harness raises :class:`Finding` when an invariant does not hold; any *other* exception
that escapes a harness is an uncaught exception from the code under test, which is a finding
too. Either way the input that caused it is the reproducer.
"""

from __future__ import annotations

import typing

from flare_proto import (
    CloseCode,
    Compression,
    ConnectionClosed,
    DecodeError,
    Event,
    Format,
    Frame,
    Limits,
    decode_frame,
)

__all__ = [
    "EVENT_TYPES",
    "PEER_LIMITS",
    "Finding",
    "check",
    "check_close_event",
    "closing_code",
    "decode_sent",
]

EVENT_TYPES: tuple[type, ...] = typing.get_args(Event)
"""Every class an ``events_received()`` item may be an instance of."""

PEER_LIMITS = Limits()
"""The limits a conforming peer decodes our output with (the defaults, DESIGN §6)."""

# SystemCommand types that end a connection: ERROR and CLOSE carry a ``code`` from the
# DESIGN §4 table in their metadata; KICKED implies ``kicked``.
_CLOSE = 3
_ERROR = 6
_KICKED = 10


class Finding(AssertionError):
    """An invariant of a harness does not hold for this input."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`Finding` with ``message`` unless ``condition`` holds.

    (A plain ``assert`` would vanish under ``python -O``.)
    """
    if not condition:
        raise Finding(message)


def check_close_event(event: ConnectionClosed) -> None:
    """A ConnectionClosed carries ``None`` or a documented :class:`CloseCode` (DESIGN §4)."""
    check(
        event.code is None or isinstance(event.code, CloseCode),
        f"ConnectionClosed.code is {event.code!r}, not None or a CloseCode",
    )
    check(isinstance(event.reason, str), f"ConnectionClosed.reason is {event.reason!r}")
    check(isinstance(event.by_peer, bool), f"ConnectionClosed.by_peer is {event.by_peer!r}")


def closing_code(frame: Frame) -> tuple[bool, CloseCode | None]:
    """Whether ``frame`` ends a connection (ERROR, CLOSE or KICKED), and the code it
    announces: ERROR/CLOSE ``code`` metadata looked up in the table (``None`` when absent or
    unknown), ``kicked`` for KICKED."""
    command = frame.command
    if command.WhichOneof("type") != "system":
        return False, None
    kind = command.system.type
    if kind == _KICKED:
        return True, CloseCode.KICKED
    if kind not in (_ERROR, _CLOSE):
        return False, None
    raw = command.system.metadata.get("code")
    return True, None if raw is None else CloseCode.from_code(raw.decode("utf-8", "replace"))


def decode_sent(
    data: bytes, what: str, *, codeless_close: bool = False
) -> tuple[Frame, Format, Compression]:
    """Decode a frame the code under test wrote, as a conforming peer would.

    Raises :class:`Finding` when it does not decode, or when it is an ERROR/CLOSE whose
    ``code`` metadata is missing or not in the DESIGN §4 table. The core gives every ERROR
    (``_fail``) and every CLOSE (``_shut``) a code, except the CLOSE of a client's normal
    ``close()``: ``codeless_close`` says the call being checked is that one.
    """
    try:
        frame, fmt, compression = decode_frame(data, PEER_LIMITS)
    except DecodeError as exc:
        raise Finding(f"{what}: sent bytes do not decode ({exc}): {data[:64].hex()}") from None
    command = frame.command
    if command.WhichOneof("type") == "system" and command.system.type in (_ERROR, _CLOSE):
        name = "ERROR" if command.system.type == _ERROR else "CLOSE"
        raw = command.system.metadata.get("code")
        if raw is None:
            check(
                name == "CLOSE" and codeless_close,
                f"{what}: sent {name} without a code: {frame}",
            )
        else:
            text = raw.decode("utf-8", "replace")
            check(
                CloseCode.from_code(text) is not None,
                f"{what}: sent {name} with undocumented code {text!r}",
            )
    return frame, fmt, compression
