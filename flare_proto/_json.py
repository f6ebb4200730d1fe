"""The JSON encoding of a frame, in exactly the shape serde_json gives the original's structs.

Reference §2.2 is the contract: compact output, every key always present in declaration
order, enums as numbers, ``bytes`` and map values as arrays of integers 0-255, the command
oneof as ``{"type": {"<variant>": {...}}}`` or ``{"type": null}``, ``"command": null`` when
there is none, non-ASCII text raw. orjson writes it (its string escaping is serde's: ``"``,
``\\`` and control characters only, ``\\b \\f \\n \\r \\t`` short forms, other control
characters as lowercase ``\\u00XX``; a property test holds it to that).

On input we are more tolerant than serde in one way only (DESIGN.md §2): a missing key means
the default value. A present value of the wrong JSON type is an error, as in serde: ``true``
or ``1.0`` where an integer is expected, integers out of range (enums are i32, timestamp and
seq u64), byte arrays holding anything but integers 0-255, a string where bytes are
expected, an unknown or second oneof variant. Unknown keys are ignored; unknown enum numbers
are kept (proto3 enums are open). A duplicated key keeps its last value (serde would reject a
duplicated struct key; orjson cannot report it).

Decoding is a fast path that lets the generated classes and ``bytearray()`` do most of the type
checks, and a slow path that runs only after a failure to say exactly what was wrong.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

import orjson

from ._errors import DecodeError
from ._pb.commands_pb2 import (
    Command,
    CustomCommand,
    NotificationCommand,
    SystemCommand,
)
from ._pb.frame_pb2 import Frame

__all__ = ["frame_from_json", "frame_to_json"]

_dumps = orjson.dumps
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

# Shared defaults for missing keys; never mutated.
_NO_MAP: dict[str, Any] = {}
_NO_BYTES: list[Any] = []


# -- encoding -------------------------------------------------------------------------------


def _system_to_dict(m: SystemCommand) -> dict[str, Any]:
    md = m.metadata
    return {
        "type": m.type,
        "format": m.format,
        "message": m.message,
        "metadata": {k: list(v) for k, v in md.items()} if md else {},
        "data": list(m.data),
    }


def _notification_to_dict(m: NotificationCommand) -> dict[str, Any]:
    md = m.metadata
    return {
        "type": m.type,
        "title": m.title,
        "content": list(m.content),
        "metadata": {k: list(v) for k, v in md.items()} if md else {},
    }


def _custom_to_dict(m: CustomCommand) -> dict[str, Any]:
    md = m.metadata
    return {
        "name": m.name,
        "data": list(m.data),
        "metadata": {k: list(v) for k, v in md.items()} if md else {},
    }


_ENCODERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "system": _system_to_dict,
    "notification": _notification_to_dict,
    "custom": _custom_to_dict,
}


def frame_to_json(frame: Frame) -> bytes:
    """Encode ``frame`` as serde_json would encode the original's struct (reference §2.2).

    Map entries are written in the order the frame's map yields them (the original's order
    is random, so receivers must not depend on it).
    """
    cmd = frame.command  # reading does not make an absent command present
    variant = cmd.WhichOneof("type")
    command: dict[str, Any] | None
    if variant == "message":
        # SEND/ACK/DATA, the hot variant: inlined (saves two calls per frame).
        m = cmd.message
        mmd = m.metadata
        command = {
            "type": {
                "message": {
                    "type": m.type,
                    "message_id": m.message_id,
                    "payload": list(m.payload),
                    "metadata": {k: list(v) for k, v in mmd.items()} if mmd else {},
                    "seq": m.seq,
                }
            }
        }
    elif variant is not None:
        command = {"type": {variant: _ENCODERS[variant](getattr(cmd, variant))}}
    elif frame.HasField("command"):
        command = {"type": None}  # a command without a variant
    else:
        command = None
    md = frame.metadata
    return _dumps(
        {
            "command": command,
            "message_id": frame.message_id,
            "reliability": frame.reliability,
            "timestamp": frame.timestamp,
            "metadata": {k: list(v) for k, v in md.items()} if md else {},
        }
    )


# -- decoding: fast path --------------------------------------------------------------------


class _Invalid(Exception):
    """Raised inside the fast path; the slow path then explains the problem."""


def _to_bytes(value: Any, bools: bool) -> bytes:
    if value.__class__ is not list:
        raise _Invalid
    # bytearray() rejects non-integers (TypeError) and values outside 0..255 (ValueError) in
    # C, twice as fast as bytes() on a list. It takes true/false as 1/0, so look for
    # booleans only if the document has a `true`/`false` token and the result a 0 or 1 byte
    # (int needles: memchr).
    result = bytes(bytearray(value))
    if bools and (0 in result or 1 in result) and any(x.__class__ is bool for x in value):
        raise _Invalid
    return result


def _fill_map(target: MutableMapping[str, bytes], value: Any, bools: bool) -> None:
    if value.__class__ is not dict:
        raise _Invalid
    for key, item in value.items():
        target[key] = _to_bytes(item, bools)


# Enum fields check `value.__class__ is int` themselves: the generated classes would accept
# an enum *label* string, serde only numbers. Range (i32), bool and float are rejected by
# the generated class on assignment, as are wrong types for string and u64 fields.


def _fill_system(cmd: Command, body: dict[str, Any], bools: bool) -> None:
    m = cmd.system
    get = body.get
    kind = get("type", 0)
    fmt = get("format", 0)
    if kind.__class__ is not int or fmt.__class__ is not int:
        raise _Invalid
    m.type = kind  # type: ignore[assignment]
    m.format = fmt  # type: ignore[assignment]
    m.message = get("message", "")
    _fill_map(m.metadata, get("metadata", _NO_MAP), bools)
    data = get("data", _NO_BYTES)
    if data is not _NO_BYTES:
        m.data = _to_bytes(data, bools)


def _fill_message(cmd: Command, body: dict[str, Any], bools: bool) -> None:
    m = cmd.message
    get = body.get
    kind = get("type", 0)
    if kind.__class__ is not int:
        raise _Invalid
    m.type = kind  # type: ignore[assignment]
    m.message_id = get("message_id", "")
    payload = get("payload", _NO_BYTES)
    if payload is not _NO_BYTES:
        m.payload = _to_bytes(payload, bools)
    meta = get("metadata", _NO_MAP)
    if meta.__class__ is not dict:
        raise _Invalid
    if meta:
        _fill_map(m.metadata, meta, bools)
    m.seq = get("seq", 0)


def _fill_notification(cmd: Command, body: dict[str, Any], bools: bool) -> None:
    m = cmd.notification
    get = body.get
    kind = get("type", 0)
    if kind.__class__ is not int:
        raise _Invalid
    m.type = kind  # type: ignore[assignment]
    m.title = get("title", "")
    content = get("content", _NO_BYTES)
    if content is not _NO_BYTES:
        m.content = _to_bytes(content, bools)
    _fill_map(m.metadata, get("metadata", _NO_MAP), bools)


def _fill_custom(cmd: Command, body: dict[str, Any], bools: bool) -> None:
    m = cmd.custom
    get = body.get
    m.name = get("name", "")
    data = get("data", _NO_BYTES)
    if data is not _NO_BYTES:
        m.data = _to_bytes(data, bools)
    _fill_map(m.metadata, get("metadata", _NO_MAP), bools)


_FILLERS: dict[str, Callable[[Command, dict[str, Any], bool], None]] = {
    "system": _fill_system,
    "message": _fill_message,
    "notification": _fill_notification,
    "custom": _fill_custom,
}


def _build(obj: Any, bools: bool) -> Frame:
    if obj.__class__ is not dict:
        raise _Invalid
    frame = Frame()
    get = obj.get
    command = get("command")
    if command is not None:
        if command.__class__ is not dict:
            raise _Invalid
        variant = command.get("type")
        if variant is None:
            frame.command.SetInParent()  # {"type": null}: a command without a variant
        elif variant.__class__ is not dict or len(variant) != 1:
            raise _Invalid
        else:
            ((name, body),) = variant.items()
            if body.__class__ is not dict:
                raise _Invalid
            # Assigning any field (even a default) makes the variant present.
            _FILLERS[name](frame.command, body, bools)  # KeyError: unknown variant
    frame.message_id = get("message_id", "")
    reliability = get("reliability", 0)
    if reliability.__class__ is not int:
        raise _Invalid
    frame.reliability = reliability  # type: ignore[assignment]
    frame.timestamp = get("timestamp", 0)
    meta = get("metadata", _NO_MAP)
    if meta.__class__ is not dict:
        raise _Invalid
    if meta:
        _fill_map(frame.metadata, meta, bools)
    return frame


def frame_from_json(data: bytes | str) -> Frame:
    """Decode a JSON frame (serde shape, reference §2.2); missing keys take default values.

    Raises:
        DecodeError: not JSON, or a value of the wrong type (the message names the field).
    """
    try:
        obj = _loads(data)
    except _JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    except TypeError as exc:  # not bytes/str at all: our caller's bug, still a bad frame
        raise DecodeError(f"invalid JSON input: {exc}") from None
    # Booleans can hide in byte arrays only if the text has a `true`/`false` token. A
    # one-byte search (memchr; an int needle takes that path) for "u" and "f" first: no key
    # of a SEND/ACK/DATA frame holds either letter, so the substring search seldom runs.
    cls = data.__class__
    if cls is bytes:
        bools = (0x75 in data or 0x66 in data) and (b"true" in data or b"false" in data)
    elif cls is str:
        bools = ("u" in data or "f" in data) and ("true" in data or "false" in data)
    else:  # bytearray/memoryview: always check
        bools = True
    try:
        return _build(obj, bools)
    except Exception as exc:  # any failure: find and describe the first bad value
        raise DecodeError(_explain(obj) or f"invalid JSON frame: {exc!r}") from None


# -- decoding: slow path (error messages) -----------------------------------------------------

_STR, _ENUM, _U64, _BYTES, _MAP = "string", "enum", "u64", "bytes", "map"

_SCHEMA: dict[str, tuple[tuple[str, str], ...]] = {
    "Frame": (
        ("message_id", _STR),
        ("reliability", _ENUM),
        ("timestamp", _U64),
        ("metadata", _MAP),
    ),
    "system": (
        ("type", _ENUM),
        ("format", _ENUM),
        ("message", _STR),
        ("metadata", _MAP),
        ("data", _BYTES),
    ),
    "message": (
        ("type", _ENUM),
        ("message_id", _STR),
        ("payload", _BYTES),
        ("metadata", _MAP),
        ("seq", _U64),
    ),
    "notification": (("type", _ENUM), ("title", _STR), ("content", _BYTES), ("metadata", _MAP)),
    "custom": (("name", _STR), ("data", _BYTES), ("metadata", _MAP)),
}


def _kind(value: Any) -> str:
    """The JSON type of a parsed value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        # orjson yields a float for fractions, exponents and integers beyond 64 bits.
        return f"the number {value!r} (a fraction, an exponent or an integer beyond 64 bits)"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _int_problem(value: Any, low: int, high: int, what: str) -> str | None:
    if value.__class__ is not int:
        return f"expected {what}, got {_kind(value)}"
    if not low <= value <= high:
        return f"expected {what}, got {value} (out of range {low}..{high})"
    return None


def _bytes_problem(value: Any) -> str | None:
    if value.__class__ is not list:
        return f"expected an array of integers 0..255 (bytes), got {_kind(value)}"
    for index, item in enumerate(value):
        problem = _int_problem(item, 0, 255, "an integer 0..255")
        if problem:
            return f"item {index}: {problem}"
    return None


def _value_problem(value: Any, kind: str) -> str | None:
    if kind == _STR:
        return None if value.__class__ is str else f"expected a string, got {_kind(value)}"
    if kind == _ENUM:
        return _int_problem(value, -(2**31), 2**31 - 1, "an i32 enum number")
    if kind == _U64:
        return _int_problem(value, 0, 2**64 - 1, "a u64 integer")
    if kind == _BYTES:
        return _bytes_problem(value)
    if value.__class__ is not dict:
        return f"expected an object of byte arrays (map), got {_kind(value)}"
    for key, item in value.items():
        problem = _bytes_problem(item)
        if problem:
            return f"key {key!r}: {problem}"
    return None


def _fields_problem(obj: dict[str, Any], schema: str, path: str) -> str | None:
    for name, kind in _SCHEMA[schema]:
        if name in obj:
            problem = _value_problem(obj[name], kind)
            if problem:
                return f"{path}.{name}: {problem}"
    return None


def _explain(obj: Any) -> str | None:
    """Describe the first wrong value in a parsed JSON frame, or ``None`` if none is found."""
    if not isinstance(obj, dict):
        return f"a JSON frame must be an object, got {_kind(obj)}"
    command = obj.get("command")
    if command is not None:
        if not isinstance(command, dict):
            return f"Frame.command: expected an object or null, got {_kind(command)}"
        variant = command.get("type")
        if variant is not None:
            if not isinstance(variant, dict):
                return f"Frame.command.type: expected an object or null, got {_kind(variant)}"
            if len(variant) != 1:
                return (
                    "Frame.command.type: expected exactly one variant "
                    f"(system, message, notification, custom), got {sorted(variant)}"
                )
            ((name, body),) = variant.items()
            if name not in _FILLERS:
                return f"Frame.command.type: unknown variant {name!r}"
            path = f"Frame.command.type.{name}"
            if not isinstance(body, dict):
                return f"{path}: expected an object, got {_kind(body)}"
            problem = _fields_problem(body, name, path)
            if problem:
                return problem
    return _fields_problem(obj, "Frame", "Frame")
