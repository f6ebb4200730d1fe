"""Golden vectors (``vectors/frames.json``): protobuf bytes, serde JSON, compression, stream.

The shared file lives in ``../shared/vectors`` next to the repository; a copy is committed
in ``tests/vectors`` so the suite runs without it, and a test keeps the two equal.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flare_proto import Compression, Format, LengthPrefixFramer, decode_frame, serialize
from flare_proto._json import frame_to_json

SHARED = Path(__file__).parent.parent.parent / "shared" / "vectors" / "frames.json"
COPY = Path(__file__).parent / "vectors" / "frames.json"
VECTORS: dict[str, Any] = json.loads((SHARED if SHARED.exists() else COPY).read_text("utf-8"))
FRAMES: list[dict[str, Any]] = VECTORS["frames"]
COMPRESSED: list[dict[str, Any]] = VECTORS["compressed"]
STREAM = bytes.fromhex(VECTORS["length_prefixed_stream"]["hex"])
STREAM_LENGTHS: list[int] = VECTORS["length_prefixed_stream"]["frame_lengths"]


def by_name(vectors: list[dict[str, Any]]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("vector", vectors, ids=[v["name"] for v in vectors])


@pytest.mark.skipif(not SHARED.exists(), reason="../shared is not checked out")
def test_committed_copy_equals_shared_file() -> None:
    assert COPY.read_bytes() == SHARED.read_bytes()


@by_name(FRAMES)
def test_json_decodes_to_the_protobuf_frame(vector: dict[str, Any]) -> None:
    from_json, fmt_json, comp_json = decode_frame(vector["json"].encode())
    from_pb, fmt_pb, comp_pb = decode_frame(bytes.fromhex(vector["protobuf_hex"]))
    assert from_json == from_pb
    assert (fmt_json, comp_json) == (Format.JSON, Compression.NONE)
    assert (fmt_pb, comp_pb) == (Format.PROTOBUF, Compression.NONE)


@by_name(FRAMES)
def test_protobuf_serialization(vector: dict[str, Any]) -> None:
    frame, _, _ = decode_frame(vector["json"].encode())
    expected = bytes.fromhex(vector["protobuf_hex"])
    data = serialize(frame, Format.PROTOBUF)
    if vector["json_byte_exact"]:
        assert data == expected
    else:  # multi-entry maps: entry order is free (reference §2.1)
        assert len(data) == len(expected)
        assert decode_frame(data)[0] == decode_frame(expected)[0]


@by_name(FRAMES)
def test_json_serialization(vector: dict[str, Any]) -> None:
    frame, _, _ = decode_frame(bytes.fromhex(vector["protobuf_hex"]))
    data = serialize(frame, Format.JSON)
    assert data == frame_to_json(frame)
    if vector["json_byte_exact"]:
        assert data == vector["json"].encode()
    else:  # map key order is free (reference §2.2)
        assert len(data) == len(vector["json"].encode())
        assert decode_frame(data)[0] == frame
        assert json.loads(data) == json.loads(vector["json"])


@by_name(COMPRESSED)
def test_compressed_samples(vector: dict[str, Any]) -> None:
    frame, fmt, compression = decode_frame(bytes.fromhex(vector["compressed_hex"]))
    assert compression == Compression(vector["algorithm"])
    if "plain_json" in vector:
        plain = vector["plain_json"].encode()
        assert fmt == Format.JSON
    else:
        plain = bytes.fromhex(vector["plain_protobuf_hex"])
        assert fmt == Format.PROTOBUF
    assert frame == decode_frame(plain)[0]


def expected_stream_payloads() -> list[bytes]:
    payloads, pos = [], 0
    for length in STREAM_LENGTHS:
        assert int.from_bytes(STREAM[pos : pos + 4], "big") == length
        payloads.append(STREAM[pos + 4 : pos + 4 + length])
        pos += 4 + length
    assert pos == len(STREAM)
    return payloads


def test_stream_vector_frames_are_the_ping_and_the_big_send() -> None:
    ping, big = expected_stream_payloads()
    assert ping == bytes.fromhex(FRAMES[0]["protobuf_hex"])
    assert big == bytes.fromhex(COMPRESSED[0]["plain_protobuf_hex"])
    for payload in (ping, big):
        assert decode_frame(payload)[1] == Format.PROTOBUF


def test_stream_whole() -> None:
    framer = LengthPrefixFramer(max_frame=10 * 1024 * 1024)
    assert framer.receive(STREAM) == expected_stream_payloads()
    assert framer.buffered == 0


def test_stream_byte_by_byte() -> None:
    framer = LengthPrefixFramer(max_frame=10 * 1024 * 1024)
    received = []
    for index in range(len(STREAM)):
        received += framer.receive(STREAM[index : index + 1])
    assert received == expected_stream_payloads()
    assert framer.buffered == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_stream_any_chunking(cuts: list[int]) -> None:
    framer = LengthPrefixFramer(max_frame=10 * 1024 * 1024)
    bounds = [0, *sorted(cuts), len(STREAM)]
    received = []
    for start, stop in itertools.pairwise(bounds):
        received += framer.receive(STREAM[start:stop])
    assert received == expected_stream_payloads()


def test_stream_random_chunkings_seeded() -> None:
    rng = random.Random(1730000000)
    for _ in range(50):
        framer = LengthPrefixFramer(max_frame=10 * 1024 * 1024)
        received, pos = [], 0
        while pos < len(STREAM):
            step = rng.randint(1, 64)
            received += framer.receive(STREAM[pos : pos + step])
            pos += step
        assert received == expected_stream_payloads()


@pytest.mark.parametrize("extra", [1, 2, 3, 4, 5, 40])
def test_stream_with_trailing_partial_frame(extra: int) -> None:
    # The stream followed by the first `extra` bytes of a third frame (the ping again): a
    # partial prefix or partial payload stays buffered and no frame comes out of it.
    tail = STREAM[:extra]
    framer = LengthPrefixFramer(max_frame=10 * 1024 * 1024)
    assert framer.receive(STREAM + tail) == expected_stream_payloads()
    assert framer.buffered == extra
    assert framer.receive(b"") == []
    assert framer.buffered == extra
    # The rest of the third frame completes it.
    assert framer.receive(STREAM[extra : 4 + STREAM_LENGTHS[0]]) == [expected_stream_payloads()[0]]
    assert framer.buffered == 0
    assert not framer.ended
