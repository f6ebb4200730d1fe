"""Harness 1: :func:`~flare_proto.decode_frame` on arbitrary bytes, every encoding and
compression.

Invariant: ``decode_frame`` returns a frame or raises :class:`~flare_proto.DecodeError`
(:class:`~flare_proto.FrameTooLarge` included), nothing else, whatever the bytes
(DESIGN §1, §2). When it returns, encoding the frame again in the format and compression it
arrived in and decoding that gives an equal frame, format and compression.

Input layout (byte 0 is the control byte, the rest is the payload):

====== =================================================================================
bits   meaning
====== =================================================================================
0-1    wrap the payload: 0 no, 1 in gzip, 2 in zstd, 3 in both (two layers; bit 4 picks
       the order); the core removes one layer only
2      limits: 0 ``max_frame`` and ``max_decompressed`` 64 KiB, 1 tiny (256 / 512)
3      zstd: 1 = no content size in the frame header (a foreign encoder's frame)
4      two layers: 0 gzip inside zstd, 1 zstd inside gzip
5      wrap only the first ``k`` payload bytes (``k`` = next byte), the rest follows raw
       (bytes after the end of the compressed data)
6-7    compression level (gzip 1/6/9/0, zstd 1/3/6/12)
====== =================================================================================

Memory is bounded by the limits: at most ``max_decompressed`` plus one 1 MiB slice of
output is produced before a bomb is refused (``flare_proto._compression``).
"""

from __future__ import annotations

import zlib

import zstandard

from flare_proto import (
    Compression,
    DecodeError,
    Format,
    Frame,
    Limits,
    decode_frame,
    encode_frame,
    serialize,
)

from ._input import Reader
from ._invariants import Finding, check
from ._seeds import (
    ALWAYS_COMPRESS,
    handshake_frames,
    vector_compressed,
    vector_frames,
    vector_stream,
)

__all__ = ["LIMITS", "MEMORY_LIMIT", "TINY_LIMITS", "one_input", "seeds"]

LIMITS = Limits(max_frame=64 * 1024, max_decompressed=64 * 1024)
"""Limits for control bit 2 = 0 (a 4 KiB gzip input can inflate to 4 MiB: above them)."""
TINY_LIMITS = Limits(max_frame=256, max_decompressed=512)
"""Limits for control bit 2 = 1: bombs and oversize frames are a few bytes away."""
MEMORY_LIMIT = 16 * 1024 * 1024
"""Peak Python allocation allowed for one input (checked by the smoke test, tracemalloc):
one 1 MiB slice of decompressed output, plus the round trip of a 64 KiB JSON frame (orjson
reserves ~270 bytes per list element it writes; the pages are mostly never touched)."""

# Re-decoding our own re-encoding: JSON spells every byte as up to 4 characters, so the
# re-encoded frame may be larger than the limits the input was held to.
_ROOMY = Limits(max_frame=64 * 1024 * 1024, max_decompressed=64 * 1024 * 1024)
_GZIP_LEVELS = (1, 6, 9, 0)
_ZSTD_LEVELS = (1, 3, 6, 12)
_ZSTD: dict[tuple[int, bool], zstandard.ZstdCompressor] = {}


def _gzip(data: bytes, level: int) -> bytes:
    return zlib.compress(data, _GZIP_LEVELS[level], 31)


def _zstd(data: bytes, level: int, content_size: bool) -> bytes:
    key = (level, content_size)
    cctx = _ZSTD.get(key)
    if cctx is None:
        cctx = zstandard.ZstdCompressor(level=_ZSTD_LEVELS[level], write_content_size=content_size)
        _ZSTD[key] = cctx
    return cctx.compress(data)


def build(data: bytes) -> tuple[bytes, Limits]:
    """The bytes to decode and the limits to decode them with, from a harness input."""
    reader = Reader(data)
    control = reader.byte()
    wrap = control & 3
    limits = TINY_LIMITS if control & 4 else LIMITS
    content_size = not control & 8
    level = control >> 6
    if control & 32:
        split = reader.byte()
        payload = reader.rest()
        head, tail = payload[:split], payload[split:]
    else:
        head, tail = reader.rest(), b""
    if wrap == 1:
        head = _gzip(head, level)
    elif wrap == 2:
        head = _zstd(head, level, content_size)
    elif wrap == 3:
        if control & 16:
            head = _gzip(_zstd(head, level, content_size), level)
        else:
            head = _zstd(_gzip(head, level), level, content_size)
    return head + tail, limits


def one_input(data: bytes) -> None:
    """Decode the bytes ``data`` describes; raise :class:`Finding` if an invariant breaks
    (any other exception escaping is an uncaught exception from the core)."""
    payload, limits = build(data)
    try:
        result = decode_frame(payload, limits)
    except DecodeError:
        return  # FrameTooLarge is a DecodeError: both are documented outcomes
    frame, fmt, compression = result
    check(isinstance(frame, Frame), f"decode_frame returned {type(frame)!r}, not a Frame")
    check(isinstance(fmt, Format), f"decode_frame returned format {fmt!r}")
    check(isinstance(compression, Compression), f"decode_frame returned {compression!r}")
    check(len(payload) <= limits.max_frame, "a frame above max_frame was accepted")
    if not serialize(frame, fmt):
        # An all-default Frame is zero protobuf bytes, which decode_frame refuses by design
        # ("empty frame"; on a stream a zero length is the end-of-stream marker).
        return
    again = encode_frame(frame, fmt, compression, ALWAYS_COMPRESS)
    try:
        frame2, fmt2, compression2 = decode_frame(again, _ROOMY)
    except DecodeError as exc:
        raise Finding(
            f"re-encoded {fmt.name}/{compression.value} frame does not decode: {exc}"
        ) from None
    if fmt is Format.PROTOBUF and _has_unknown_fields(frame):
        # Unknown fields survive a protobuf round trip except where the encoder drops
        # them (K1: they would otherwise come first and look like a magic); compare the
        # known fields then.
        frame = _known_only(frame)
        frame2 = _known_only(frame2)
    check(
        (fmt2, compression2) == (fmt, compression),
        f"re-encoded as {fmt!r}/{compression!r}, detected as {fmt2!r}/{compression2!r}",
    )
    check(frame2 == frame, f"round trip changed the frame: {frame!r} -> {frame2!r}")


def _known_only(frame: Frame) -> Frame:
    bare = Frame()
    bare.CopyFrom(frame)
    bare.DiscardUnknownFields()
    return bare


def _has_unknown_fields(frame: Frame) -> bool:
    return bool(_known_only(frame).ByteSize() != frame.ByteSize())


def seeds() -> list[bytes]:
    """Every golden frame and compressed sample, the stream's payloads and the handshake
    frames, raw; the plain frames also wrapped (gzip, zstd with and without a declared size,
    two layers, a partial wrap) and with tiny limits."""
    plain = [*vector_frames(), *handshake_frames()]
    stream = vector_stream()
    chunks = [stream[4 : 4 + int.from_bytes(stream[:4], "big")]] if stream else []
    out = [b"\x00" + item for item in (*plain, *vector_compressed(), *chunks)]
    for index, item in enumerate(plain):
        level = (index % 4) << 6
        out.append(bytes([0x01 | level]) + item)  # gzip
        out.append(bytes([0x02 | level]) + item)  # zstd, declared size
        out.append(bytes([0x0A]) + item)  # zstd, no declared size
        if index % 4 == 0:
            out.append(bytes([0x03]) + item)  # gzip inside zstd
            out.append(bytes([0x13]) + item)  # zstd inside gzip
            out.append(bytes([0x21, len(item) // 2]) + item)  # half gzip, half raw
            out.append(bytes([0x04]) + item)  # tiny limits
            out.append(bytes([0x05]) + item)  # gzip, tiny limits
    out.append(b"\x01" + bytes(4096))  # a small bomb (inflates to 4 KiB; above tiny limits)
    out.append(b"\x06" + bytes(4096))
    return list(dict.fromkeys(out))
