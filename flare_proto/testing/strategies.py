"""Hypothesis strategies for flare frames, for this project's tests and for users' own.

>>> from hypothesis import given
>>> from flare_proto.testing import frames, formats
>>> @given(frames(), formats())
... def test_round_trip(frame, fmt): ...

Frames cover the whole v0.1.2 schema (reference §1): every command variant, a command
without a variant, no command, arbitrary Unicode text, arbitrary bytes and maps, unknown
enum numbers (proto3 enums are open) and the full uint64 range.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from .._codec import encode_frame
from .._codes import CloseCode
from .._config import CodecOptions
from .._frames import (
    ACK,
    CLOSE,
    CONNECT,
    CONNECT_ACK,
    DATA,
    ERROR,
    KICKED,
    PING,
    PONG,
    SEND,
    custom_frame,
    message_frame,
    notification_frame,
    system_frame,
)
from .._pb.commands_pb2 import Command
from .._pb.frame_pb2 import Frame
from .._types import Compression, Format

__all__ = [
    "commands",
    "compressions",
    "forged_frames",
    "formats",
    "frames",
    "garbage",
    "payloads",
    "texts",
]

_I32 = st.integers(-(2**31), 2**31 - 1)
_U64 = st.one_of(
    st.integers(0, 2**64 - 1),
    st.sampled_from([0, 1, 2**32, 1730000000000, 2**63, 2**64 - 1]),
)


def texts(max_size: int = 40) -> st.SearchStrategy[str]:
    """Any Unicode text that protobuf can carry (no lone surrogates), control chars included."""
    return st.text(st.characters(codec="utf-8"), max_size=max_size)


def payloads(max_size: int = 512) -> st.SearchStrategy[bytes]:
    """Arbitrary payload bytes, empty included."""
    return st.binary(max_size=max_size)


def _enum(known: int) -> st.SearchStrategy[int]:
    # Mostly declared values, sometimes any i32 (open enums keep unknown numbers).
    return st.one_of(st.integers(0, known - 1), _I32)


def _metadata() -> st.SearchStrategy[dict[str, bytes]]:
    return st.dictionaries(texts(12), st.binary(max_size=24), max_size=4)


def _fill(target: Any, fields: Mapping[str, object]) -> None:
    for name, value in fields.items():
        if name == "metadata":
            target.metadata.update(value)
        else:
            setattr(target, name, value)


def _command(variant: str | None, fields: Mapping[str, object]) -> Command:
    command = Command()
    if variant is None:
        return command
    body = getattr(command, variant)
    body.SetInParent()  # present even when every field is a default
    _fill(body, fields)
    return command


def commands() -> st.SearchStrategy[Command]:
    """A ``Command``: each of the four variants with arbitrary fields, or no variant."""
    system = st.fixed_dictionaries(
        {
            "type": _enum(11),
            "format": _enum(2),
            "message": texts(),
            "metadata": _metadata(),
            "data": payloads(64),
        }
    ).map(lambda f: _command("system", f))
    message = st.fixed_dictionaries(
        {
            "type": _enum(3),
            "message_id": texts(),
            "payload": payloads(),
            "metadata": _metadata(),
            "seq": _U64,
        }
    ).map(lambda f: _command("message", f))
    notification = st.fixed_dictionaries(
        {
            "type": _enum(5),
            "title": texts(),
            "content": payloads(64),
            "metadata": _metadata(),
        }
    ).map(lambda f: _command("notification", f))
    custom = st.fixed_dictionaries(
        {"name": texts(), "data": payloads(64), "metadata": _metadata()}
    ).map(lambda f: _command("custom", f))
    return st.one_of(system, message, notification, custom, st.builds(Command))


def _frame(command: Command | None, fields: Mapping[str, object]) -> Frame:
    frame = Frame()
    if command is not None:
        frame.command.CopyFrom(command)
        frame.command.SetInParent()
    _fill(frame, fields)
    return frame


def frames() -> st.SearchStrategy[Frame]:
    """An arbitrary valid ``Frame``: any command (or none) and arbitrary frame fields."""
    return st.builds(
        _frame,
        st.one_of(commands(), st.none()),
        st.fixed_dictionaries(
            {
                "message_id": texts(),
                "reliability": _enum(4),
                "timestamp": _U64,
                "metadata": _metadata(),
            }
        ),
    )


def formats() -> st.SearchStrategy[Format]:
    """Protobuf or JSON."""
    return st.sampled_from(Format)


def compressions() -> st.SearchStrategy[Compression]:
    """none, gzip or zstd."""
    return st.sampled_from(Compression)


_ALWAYS_COMPRESS = CodecOptions(compress_min_bytes=0)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    # A valid encoded frame, then damaged: truncated, a byte changed, bytes inserted or
    # appended. Most results are invalid; a few survive (e.g. a changed payload byte).
    data = bytearray(
        encode_frame(draw(frames()), draw(formats()), draw(compressions()), _ALWAYS_COMPRESS)
    )
    size = len(data)
    operation = draw(st.sampled_from(["truncate", "flip", "insert", "append"]))
    if operation == "truncate" and size:
        del data[draw(st.integers(0, size - 1)) :]
    elif operation == "flip" and size:
        index = draw(st.integers(0, size - 1))
        data[index] ^= draw(st.integers(1, 255))
    elif operation == "insert":
        index = draw(st.integers(0, size))
        data[index:index] = draw(st.binary(min_size=1, max_size=8))
    else:
        data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def garbage() -> st.SearchStrategy[bytes]:
    """Bytes likely not to be a frame: random bytes, magic prefixes followed by junk,
    JSON-looking junk, and damaged valid frames (truncated, flipped, extended)."""
    return st.one_of(
        st.binary(max_size=256),
        st.binary(max_size=64).map(lambda b: b"\x1f\x8b" + b),
        st.binary(max_size=64).map(lambda b: b"\x28\xb5\x2f\xfd" + b),
        st.binary(max_size=64).map(lambda b: b"{" + b),
        texts(64).map(lambda t: ("{" + t).encode()),
        _mutated(),
    )


# -- forged frames ------------------------------------------------------------------------

_FORGED_KINDS = (
    "send",
    "ack",
    "data",
    "ping",
    "pong",
    "connect",
    "connect_ack",
    "close",
    "error",
    "kicked",
    "custom",
    "notification",
    "empty",
)


def _forged_frame(kind: str, serial: int, code: str, number: int) -> Frame:
    """A valid frame of ``kind`` with an id no connection of the model ever uses."""
    ident = f"x-{serial}"
    if kind in ("send", "ack", "data"):
        message_kind = {"send": SEND, "ack": ACK, "data": DATA}[kind]
        return message_frame(message_kind, message_id=ident, timestamp=1, payload=b"forged")
    if kind == "custom":
        return custom_frame("echo", message_id=ident, timestamp=1, data=b"{}")
    if kind == "notification":
        return notification_frame(number % 5, message_id=ident, timestamp=1, title="t")
    if kind == "empty":
        return Frame(message_id=ident)
    system_kind = {
        "ping": PING,
        "pong": PONG,
        "connect": CONNECT,
        "connect_ack": CONNECT_ACK,
        "close": CLOSE,
        "error": ERROR,
        "kicked": KICKED,
    }[kind]
    metadata: dict[str, str] = {}
    if kind in ("close", "error"):
        metadata["code"] = code
    elif kind == "connect_ack":
        metadata["compression"] = code
    elif kind == "kicked":
        metadata.update({"reason": "device_conflict", "platform": "IOS", "new_device_id": "x"})
    return system_frame(
        system_kind,
        message_id=ident,
        timestamp=1,
        message="forged",
        metadata=metadata,
        format=number % 3,
    )


_CODE_TEXT = st.one_of(
    st.sampled_from([c.code for c in CloseCode]),
    st.sampled_from(["", "nope", "gzip", "zstd", "none"]),
)


@st.composite
def forged_frames(draw: st.DrawFn) -> bytes:
    """Valid frames of the kinds that matter to a connection (SEND, ACK, DATA, PING, PONG,
    CONNECT, CONNECT_ACK, CLOSE/ERROR with table codes and others, KICKED, custom,
    notification, no command), encoded in either format, maybe compressed, maybe damaged
    (a flipped byte, truncated, bytes appended or inserted). Ids start with ``x-``."""
    frame = _forged_frame(
        draw(st.sampled_from(_FORGED_KINDS)),
        draw(st.integers(0, 1_000)),
        draw(_CODE_TEXT),
        draw(st.integers(0, 5)),
    )
    data = encode_frame(
        frame,
        draw(st.sampled_from(list(Format))),
        draw(st.sampled_from(list(Compression))),
        CodecOptions(compress_min_bytes=0),
    )
    mutation = draw(st.sampled_from(["none", "flip", "truncate", "append", "insert"]))
    if mutation == "none" or not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    if mutation == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if mutation == "truncate":
        return data[:at]
    extra = draw(st.binary(min_size=1, max_size=8))
    return data + extra if mutation == "append" else data[:at] + extra + data[at:]
