"""The frame codec: serialize + compress on the way out, detect + decompress + parse on the way in.

Every received frame is classified by its first bytes, whatever was negotiated (DESIGN.md
§2, reference §2.3): ``1f 8b`` gzip, ``28 b5 2f fd`` zstd, then (after removing that one
layer) ``{`` JSON, anything else protobuf. The magic tests cannot mistake a frame from a
conforming encoder: a protobuf ``Frame`` never starts with ``1f`` (wire type 7 is invalid),
``28`` (field 5, a map, is never a varint) or ``7b`` (field 15, wire type 3).

The protobuf path is kept as thin as possible over the generated (upb) classes: a length
check, one byte test and ``FromString`` (see ``benchmarks/codec.py``).
"""

from __future__ import annotations

from ._compression import compress, decompress
from ._config import CodecOptions, Limits
from ._errors import DecodeError, FrameTooLarge, LocalProtocolError
from ._json import frame_from_json, frame_to_json
from ._pb.frame_pb2 import Frame
from ._types import Compression, Format

__all__ = ["DEFAULT_CODEC", "DEFAULT_LIMITS", "decode_frame", "encode_frame", "serialize"]

DEFAULT_LIMITS = Limits()
"""The default :class:`Limits` (DESIGN.md §6: 10 MiB frames, 16 MiB decompressed)."""
DEFAULT_CODEC = CodecOptions()
"""The default :class:`CodecOptions` (compress frames of 256 bytes and more)."""

_parse_protobuf = Frame.FromString
_PROTOBUF = Format.PROTOBUF
_JSON = Format.JSON
_NONE = Compression.NONE
# First bytes that are not protobuf: "{" (JSON), and the first bytes of the gzip (1f 8b)
# and zstd (28 b5 2f fd) magics, checked in full by decompress().
_NOT_PROTOBUF = frozenset({0x7B, 0x1F, 0x28})


def _without_unknown_fields(frame: Frame) -> bytes:
    """Only unknown fields (kept by upb from a received frame) can come first in the
    serialization and look like a JSON or compression magic, which no receiver could then
    decode. Drop them, as the original's prost does, on this rare path only: discarding
    on every decode would cost half of ``FromString``."""
    clean = Frame()
    clean.CopyFrom(frame)
    clean.DiscardUnknownFields()
    data: bytes = clean.SerializeToString()
    return data


def serialize(frame: Frame, fmt: Format) -> bytes:
    """``frame`` as protobuf bytes or serde-shape JSON bytes, uncompressed."""
    return encode_frame(frame, fmt)


def encode_frame(
    frame: Frame,
    fmt: Format,
    compression: Compression = _NONE,
    options: CodecOptions = DEFAULT_CODEC,
) -> bytes:
    """Serialize ``frame`` in ``fmt``, then compress it with ``compression`` if it is big enough.

    Frames shorter than ``options.compress_min_bytes`` once serialized are sent plain even
    when a compression is negotiated; receivers detect compression by magic (DESIGN.md §2).
    """
    data: bytes
    if fmt is _PROTOBUF:
        data = frame.SerializeToString()
        if data and data[0] in _NOT_PROTOBUF:
            data = _without_unknown_fields(frame)
    elif fmt is _JSON:
        data = frame_to_json(frame)
    else:
        raise LocalProtocolError(f"unknown format {fmt!r}")
    if compression is _NONE or len(data) < options.compress_min_bytes:
        return data
    return compress(data, compression, options)


def decode_frame(data: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[Frame, Format, Compression]:
    """Decode one frame; return it with the format and compression it arrived in.

    Raises:
        FrameTooLarge: ``data`` is above ``limits.max_frame``, or decompresses to more than
            ``limits.max_decompressed``.
        DecodeError: anything else that is not a frame (empty, corrupt, wrong JSON types).
            No other exception escapes, whatever the bytes.
    """
    size = len(data)
    if size > limits.max_frame:
        raise FrameTooLarge(f"frame of {size} bytes is above max_frame {limits.max_frame}")
    if not size:
        raise DecodeError("empty frame")
    first = data[0]
    if first in _NOT_PROTOBUF:  # one test on the protobuf path, which is the hot one
        if first == 0x7B:  # "{"
            return frame_from_json(data), _JSON, _NONE
        return _decode_compressed(data, limits)
    try:
        return _parse_protobuf(data), _PROTOBUF, _NONE
    except Exception as exc:  # google.protobuf.message.DecodeError, or anything upb raises
        raise DecodeError(f"invalid protobuf frame: {exc}") from None


def _decode_compressed(data: bytes, limits: Limits) -> tuple[Frame, Format, Compression]:
    plain, compression = decompress(data, limits.max_decompressed)
    if not plain:
        raise DecodeError(f"empty frame inside {compression.value} data")
    # One layer only: compressed bytes inside compressed bytes are not inflated again; they
    # fall through to the protobuf parser, which rejects them.
    if plain[0] == 0x7B:
        return frame_from_json(plain), _JSON, compression
    try:
        return _parse_protobuf(plain), _PROTOBUF, compression
    except Exception as exc:
        raise DecodeError(f"invalid protobuf frame: {exc}") from None
