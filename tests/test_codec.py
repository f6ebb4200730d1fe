"""The codec refuses every kind of bad input with a clear DecodeError or FrameTooLarge.

Covers DESIGN.md §2 (detection, bounded decompression, compress threshold) and the JSON
input rules of reference §2.2 (missing keys tolerated, wrong types rejected).
"""

from __future__ import annotations

import gzip
import json
import re
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zstandard

from flare_proto import (
    CloseCode,
    CodecOptions,
    Compression,
    DecodeError,
    Format,
    Frame,
    FrameTooLarge,
    Limits,
    LocalProtocolError,
    Reliability,
    decode_frame,
    encode_frame,
    serialize,
)
from flare_proto._compression import compress, decompress
from flare_proto._json import frame_from_json, frame_to_json

MiB = 1024 * 1024

PING = (
    '{"command":{"type":{"system":{"type":4,"format":0,"message":"","metadata":{},"data":[]}}},'
    '"message_id":"1730000000000-0000000000000001","reliability":1,"timestamp":1730000000000,'
    '"metadata":{}}'
)


def send_json(**message: Any) -> bytes:
    body = {"type": 0, "message_id": "m-1", "payload": [104, 105], "metadata": {}, "seq": 0}
    body.update(message)
    return json.dumps({"command": {"type": {"message": body}}, "message_id": "x"}).encode()


def big_frame(size: int = 4096) -> Frame:
    frame = Frame(message_id="big", reliability=Reliability.AT_LEAST_ONCE, timestamp=1730000000000)
    frame.command.message.payload = b"flare " * (size // 6)
    return frame


# -- JSON: wrong types are rejected, with the field named ------------------------------------

WRONG_TYPES: list[tuple[str, bytes, str]] = [
    # (case, document, text expected in the error message)
    ("bool for enum", b'{"reliability":true}', "Frame.reliability: expected an i32"),
    ("bool for u64", b'{"timestamp":false}', "Frame.timestamp: expected a u64"),
    ("bool for message type", send_json(type=True), "message.type: expected an i32"),
    ("bool for seq", send_json(seq=True), "message.seq"),
    ("float for enum", b'{"reliability":1.0}', "the number 1.0"),
    ("float for u64", b'{"timestamp":1e3}', "the number 1000.0"),
    ("float for seq", send_json(seq=1.5), "message.seq"),
    ("enum above i32", b'{"reliability":2147483648}', "out of range"),
    ("enum below i32", b'{"reliability":-2147483649}', "out of range"),
    ("negative u64", b'{"timestamp":-1}', "out of range"),
    ("u64 overflow", b'{"timestamp":18446744073709551616}', "Frame.timestamp"),
    ("seq overflow", send_json(seq=2**64), "message.seq"),
    ("enum label string", b'{"reliability":"AT_LEAST_ONCE"}', "got a string"),
    ("string for message type", send_json(type="SEND"), "message.type"),
    ("int for string", b'{"message_id":5}', "Frame.message_id: expected a string"),
    ("null for string", b'{"message_id":null}', "Frame.message_id: expected a string, got null"),
    ("array for string", send_json(message_id=["m"]), "message.message_id"),
    ("base64 string for bytes", send_json(payload="aGk="), "message.payload: expected an array"),
    ("object for bytes", send_json(payload={}), "message.payload"),
    ("null for bytes", send_json(payload=None), "message.payload"),
    ("string in byte array", send_json(payload=[104, "i"]), "item 1"),
    ("256 in byte array", send_json(payload=[104, 256]), "item 1"),
    ("negative in byte array", send_json(payload=[-1]), "item 0"),
    ("float in byte array", send_json(payload=[104.0]), "item 0"),
    ("null in byte array", send_json(payload=[None]), "item 0"),
    ("nested array in byte array", send_json(payload=[[1]]), "item 0"),
    ("true in byte array", send_json(payload=[104, True]), "item 1: expected an integer"),
    ("false in byte array", send_json(payload=[False, 5]), "item 0"),
    (
        "bool in system data",
        b'{"command":{"type":{"system":{"type":4,"format":0,"data":[0,true]}}}}',
        "system.data: item 1",
    ),
    ("bool in map value", b'{"metadata":{"k":[1,true]}}', "Frame.metadata: key 'k': item 1"),
    ("string map value", b'{"metadata":{"k":"v"}}', "key 'k'"),
    ("array for map", b'{"metadata":[]}', "Frame.metadata: expected an object"),
    ("null for map", b'{"metadata":null}', "Frame.metadata"),
    ("string for command map", send_json(metadata="x"), "message.metadata"),
    ("array frame", b"[]", "must be an object"),
    ("string frame", b'{"a":1}'[:0] + b'"frame"', "must be an object"),
    ("number frame", b"1", "must be an object"),
    ("null frame", b"null", "must be an object"),
    ("array command", b'{"command":[]}', "Frame.command: expected an object"),
    ("string command", b'{"command":"ping"}', "Frame.command"),
    ("array oneof", b'{"command":{"type":[]}}', "Frame.command.type: expected an object"),
    ("empty oneof", b'{"command":{"type":{}}}', "exactly one variant"),
    (
        "two variants",
        b'{"command":{"type":{"system":{},"custom":{}}}}',
        "exactly one variant",
    ),
    ("unknown variant (HEAD)", b'{"command":{"type":{"payload":{}}}}', "unknown variant 'payload'"),
    ("null variant body", b'{"command":{"type":{"system":null}}}', "system: expected an object"),
    ("array variant body", b'{"command":{"type":{"custom":[]}}}', "custom: expected an object"),
    (
        "bool notification type",
        b'{"command":{"type":{"notification":{"type":false}}}}',
        "notification.type",
    ),
    ("int custom name", b'{"command":{"type":{"custom":{"name":1}}}}', "custom.name"),
]


@pytest.mark.parametrize(
    ("document", "message"), [c[1:] for c in WRONG_TYPES], ids=[c[0] for c in WRONG_TYPES]
)
def test_json_wrong_types_are_rejected(document: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        frame_from_json(document)
    assert message in str(info.value)
    assert info.value.code is CloseCode.PROTOCOL_ERROR
    with pytest.raises(DecodeError, match=re.escape(message)):  # the same document as text
        frame_from_json(document.decode())
    # Through the codec (documents not starting with "{" are taken for protobuf).
    with pytest.raises(DecodeError):
        decode_frame(document)


@pytest.mark.parametrize(
    "document",
    [b'{"command":', b"{", b'{"a":1,}', b"{'a':1}", b'{"a":NaN}', b'{"a":"\\ud800"}', b"{\xff}"],
)
def test_json_syntax_errors(document: bytes) -> None:
    with pytest.raises(DecodeError, match="invalid JSON"):
        decode_frame(document)


def test_json_missing_keys_take_defaults() -> None:
    assert decode_frame(b"{}") == (Frame(), Format.JSON, Compression.NONE)
    frame, _, _ = decode_frame(b'{"command":{"type":{"message":{"payload":[104,105]}}}}')
    assert frame.command.WhichOneof("type") == "message"
    assert frame.command.message.payload == b"hi"
    assert frame.command.message.message_id == ""
    assert frame.message_id == ""
    assert frame.timestamp == 0


def test_json_empty_variant_is_present() -> None:
    for variant in ("system", "message", "notification", "custom"):
        frame = frame_from_json(f'{{"command":{{"type":{{"{variant}":{{}}}}}}}}')
        assert frame.command.WhichOneof("type") == variant
        assert decode_frame(serialize(frame, Format.PROTOBUF))[0] == frame


def test_json_null_command_and_null_variant() -> None:
    no_command = frame_from_json(b'{"command":null}')
    assert not no_command.HasField("command")
    assert frame_to_json(no_command).startswith(b'{"command":null,')
    empty_command = frame_from_json(b'{"command":{"type":null}}')
    assert empty_command.HasField("command")
    assert empty_command.command.WhichOneof("type") is None
    assert frame_to_json(empty_command).startswith(b'{"command":{"type":null},')
    assert serialize(empty_command, Format.PROTOBUF) == b"\x0a\x00"
    assert frame_from_json(b'{"command":{}}') == empty_command


def test_json_unknown_keys_are_ignored() -> None:
    document = json.loads(PING)
    document["extra"] = {"nested": [1, 2.5, None]}
    document["command"]["type"]["system"]["compression"] = "none"  # a HEAD field
    document["command"]["future"] = True
    assert frame_from_json(json.dumps(document)) == frame_from_json(PING)


def test_json_unknown_enum_numbers_are_kept() -> None:
    frame = frame_from_json(
        b'{"command":{"type":{"message":{"type":7}}},"reliability":-5}',
    )
    assert frame.command.message.type == 7
    assert frame.reliability == -5
    again = decode_frame(serialize(frame, Format.PROTOBUF))[0]
    assert again.command.message.type == 7
    assert b'"type":7' in frame_to_json(again)


def test_json_integer_limits_are_accepted() -> None:
    frame = frame_from_json(
        b'{"command":{"type":{"message":{"seq":18446744073709551615,"type":-2147483648}}},'
        b'"timestamp":18446744073709551615,"reliability":2147483647}'
    )
    assert frame.command.message.seq == 2**64 - 1
    assert frame.timestamp == 2**64 - 1
    assert frame.reliability == 2**31 - 1
    assert b'"timestamp":18446744073709551615' in frame_to_json(frame)


def test_json_duplicate_keys_keep_the_last_value() -> None:
    # serde would reject a duplicated struct key; orjson keeps the last (documented).
    frame = frame_from_json(b'{"message_id":"a","message_id":"b","metadata":{"k":[1],"k":[2]}}')
    assert frame.message_id == "b"
    assert frame.metadata["k"] == b"\x02"


def test_json_bytes_zero_and_one_without_bools() -> None:
    # A message_id containing "true" forces the boolean scan; real integers still pass.
    frame = frame_from_json(send_json(message_id="true false", payload=[0, 1, 0, 1]))
    assert frame.command.message.payload == b"\x00\x01\x00\x01"


def test_json_text_input() -> None:
    assert frame_from_json(PING) == frame_from_json(PING.encode())
    assert frame_from_json(bytearray(PING.encode())) == frame_from_json(PING)  # type: ignore[arg-type]


def test_json_output_is_serde_shaped() -> None:
    frame = frame_from_json(
        '{"command":{"type":{"custom":{"name":"é\\"\\\\/\\u0001\\u007f\\n","data":[255]}}}}'
    )
    data = frame_to_json(frame)
    assert (
        data
        == (
            '{"command":{"type":{"custom":{"name":"é\\"\\\\/\\u0001\x7f\\n","data":[255],'
            '"metadata":{}}}},"message_id":"","reliability":0,"timestamp":0,"metadata":{}}'
        ).encode()
    )


# -- protobuf and detection ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x05\x0a\x03",  # length runs past the end
        b"\x0a",  # truncated
        b"\x12\x02\xff\xfe",  # message_id with invalid UTF-8
        b"\x07",  # wire type 7
        b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80",  # overlong varint
        b"\x1f",  # first byte of the gzip magic only
        b"\x1f\x00",
        b"\xff" * 16,
    ],
)
def test_bad_protobuf(data: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode_frame(data)
    assert not isinstance(info.value, FrameTooLarge)


def test_empty_input() -> None:
    with pytest.raises(DecodeError, match="empty frame"):
        decode_frame(b"")


@pytest.mark.parametrize("algorithm", [Compression.GZIP, Compression.ZSTD])
def test_empty_frame_inside_compression(algorithm: Compression) -> None:
    with pytest.raises(DecodeError, match="empty frame inside"):
        decode_frame(compress(b"", algorithm, CodecOptions()))


def test_detection_results() -> None:
    frame = big_frame()
    options = CodecOptions()
    for fmt in Format:
        for algorithm in Compression:
            data = encode_frame(frame, fmt, algorithm, options)
            assert decode_frame(data) == (frame, fmt, algorithm)


def test_oversize_frame() -> None:
    data = encode_frame(big_frame(), Format.PROTOBUF)
    assert decode_frame(data, Limits(max_frame=len(data)))[0] == big_frame()
    with pytest.raises(FrameTooLarge) as info:
        decode_frame(data, Limits(max_frame=len(data) - 1))
    assert info.value.code is CloseCode.FRAME_TOO_LARGE
    with pytest.raises(FrameTooLarge):
        decode_frame(b"{" + b" " * 100, Limits(max_frame=50))


def test_unknown_format_or_algorithm_is_local_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(Frame(), 7)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        serialize(Frame(), 7)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        compress(b"x", "brotli", CodecOptions())  # type: ignore[arg-type]


# -- compression threshold ------------------------------------------------------------------


def test_compress_min_bytes_threshold() -> None:
    frame = big_frame(600)
    plain = serialize(frame, Format.PROTOBUF)
    at = CodecOptions(compress_min_bytes=len(plain))
    above = CodecOptions(compress_min_bytes=len(plain) + 1)
    assert encode_frame(frame, Format.PROTOBUF, Compression.GZIP, at)[:2] == b"\x1f\x8b"
    assert encode_frame(frame, Format.PROTOBUF, Compression.ZSTD, at)[:4] == b"\x28\xb5\x2f\xfd"
    assert encode_frame(frame, Format.PROTOBUF, Compression.GZIP, above) == plain
    assert encode_frame(frame, Format.PROTOBUF, Compression.ZSTD, above) == plain
    assert encode_frame(frame, Format.PROTOBUF, Compression.NONE, at) == plain


def test_default_threshold_keeps_small_frames_plain() -> None:
    ping = frame_from_json(PING)
    assert len(serialize(ping, Format.PROTOBUF)) < 256
    assert encode_frame(ping, Format.PROTOBUF, Compression.GZIP) == serialize(ping, Format.PROTOBUF)
    assert (
        encode_frame(
            Frame(), Format.PROTOBUF, Compression.ZSTD, CodecOptions(compress_min_bytes=0)
        )[:4]
        == b"\x28\xb5\x2f\xfd"
    )


def test_compression_output_formats() -> None:
    data = serialize(big_frame(), Format.JSON)
    gz = compress(data, Compression.GZIP, CodecOptions(gzip_level=9))
    assert gz[:4] == b"\x1f\x8b\x08\x00"  # gzip, deflate, no optional header fields
    assert gzip.decompress(gz) == data
    zs = compress(data, Compression.ZSTD, CodecOptions(zstd_level=19))
    assert zstandard.frame_content_size(zs) == len(data)  # declared, checked before inflating
    assert compress(data, Compression.NONE, CodecOptions()) is data


# -- bounded decompression ------------------------------------------------------------------


def zeros_gzip(size: int) -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(MiB)
    parts = [deflater.compress(chunk) for _ in range(size // MiB)]
    return b"".join([*parts, deflater.flush()])


def zeros_zstd(size: int, *, declare_size: bool) -> bytes:
    cctx = zstandard.ZstdCompressor(level=1, write_content_size=declare_size)
    if declare_size:
        return cctx.compress(bytes(size))
    chunker = cctx.compressobj()
    chunk = bytes(MiB)
    parts = [chunker.compress(chunk) for _ in range(size // MiB)]
    return b"".join([*parts, chunker.flush()])


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    return zeros_gzip(100 * MiB)


def peak_allocation(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
    except DecodeError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_gzip_bomb_is_refused_without_inflating(gzip_bomb: bytes) -> None:
    assert len(gzip_bomb) < 200_000
    with pytest.raises(FrameTooLarge, match="gzip"):
        decode_frame(gzip_bomb)
    # Its ISIZE announces 100 MiB: it is only measured, chunk by chunk, never kept.
    assert peak_allocation(lambda: decode_frame(gzip_bomb)) < 4 * MiB


def test_gzip_bomb_with_lying_size_is_capped(gzip_bomb: bytes) -> None:
    liar = gzip_bomb[:-4] + (100).to_bytes(4, "little")
    with pytest.raises(FrameTooLarge):
        decode_frame(liar)
    # Output is kept up to the cap, then the frame is refused: about 16 MiB at the peak.
    assert peak_allocation(lambda: decode_frame(liar)) < 20 * MiB


def test_zstd_bomb_with_declared_size_is_refused_before_inflating() -> None:
    bomb = zeros_zstd(100 * MiB, declare_size=True)
    with pytest.raises(FrameTooLarge, match="declares"):
        decode_frame(bomb)
    assert peak_allocation(lambda: decode_frame(bomb)) < MiB


def test_zstd_bomb_without_declared_size_is_capped() -> None:
    bomb = zeros_zstd(100 * MiB, declare_size=False)
    assert zstandard.frame_content_size(bomb) == -1
    with pytest.raises(FrameTooLarge, match="zstd"):
        decode_frame(bomb)
    # One bounded decode into a 16 MiB buffer, then a measuring pass in 1 MiB slices.
    assert peak_allocation(lambda: decode_frame(bomb)) < 18 * MiB


def test_zstd_window_above_limit_is_refused() -> None:
    # Frame header only: no single segment, window descriptor exponent 17 -> 128 MiB window.
    header = b"\x28\xb5\x2f\xfd\x00\x88"
    with pytest.raises(FrameTooLarge, match="window"):
        decompress(header + b"\x01\x00\x00", 16 * MiB)


def exact_cases() -> Iterator[tuple[str, bytes]]:
    plain = bytes(range(256)) * 40
    yield "gzip", zlib.compress(plain, 6, 31)
    yield "zstd-declared", zstandard.ZstdCompressor().compress(plain)
    yield "zstd-streamed", zeros_free_stream(plain)


def zeros_free_stream(plain: bytes) -> bytes:
    chunker = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    return chunker.compress(plain) + chunker.flush()


@pytest.mark.parametrize(("name", "data"), list(exact_cases()), ids=[c[0] for c in exact_cases()])
def test_exactly_max_size_is_allowed(name: str, data: bytes) -> None:
    size = 256 * 40
    out, _ = decompress(data, size)
    assert len(out) == size
    with pytest.raises(FrameTooLarge):
        decompress(data, size - 1)


@pytest.mark.parametrize(("name", "data"), list(exact_cases()), ids=[c[0] for c in exact_cases()])
def test_truncated_and_trailing_compressed_data(name: str, data: bytes) -> None:
    for cut in (1, 4, len(data) // 2, len(data) - 6):
        with pytest.raises(DecodeError) as info:
            decompress(data[:-cut], 1 * MiB)
        assert not isinstance(info.value, FrameTooLarge), cut
    for junk in (b"\x00", b"junk", data):
        with pytest.raises(DecodeError, match=r"after the end|corrupt") as info:
            decompress(data + junk, 1 * MiB)
        assert not isinstance(info.value, FrameTooLarge)


def test_corrupt_compressed_data() -> None:
    gz = bytearray(zlib.compress(b"flare" * 100, 6, 31))
    gz[12] ^= 0xFF
    with pytest.raises(DecodeError, match="corrupt gzip"):
        decode_frame(bytes(gz))
    zs = bytearray(zstandard.ZstdCompressor().compress(bytes(range(256)) * 4))
    zs[-3] ^= 0xFF
    with pytest.raises(DecodeError):
        decode_frame(bytes(zs))
    # The cached decompressor still works after an error.
    good = encode_frame(big_frame(), Format.PROTOBUF, Compression.ZSTD)
    assert decode_frame(good)[0] == big_frame()


def test_zstd_declared_size_cannot_lie() -> None:
    data = bytearray(zstandard.ZstdCompressor().compress(bytes(1000)))
    assert data[4] == 0x60  # single segment, 2-byte content size (value - 256)
    data[5:7] = (992 - 256).to_bytes(2, "little")
    with pytest.raises(DecodeError):
        decompress(bytes(data), MiB)


def test_only_one_layer_is_removed() -> None:
    plain = serialize(big_frame(), Format.PROTOBUF)
    twice = zlib.compress(zlib.compress(plain, 6, 31), 6, 31)
    inner, algorithm = decompress(twice, MiB)
    assert algorithm is Compression.GZIP
    assert inner[:2] == b"\x1f\x8b"
    with pytest.raises(DecodeError, match="invalid protobuf"):
        decode_frame(twice)


def test_uncompressed_data_passes_through() -> None:
    assert decompress(b"\x0a\x00", 1) == (b"\x0a\x00", Compression.NONE)
    assert decompress(b"", 1) == (b"", Compression.NONE)
