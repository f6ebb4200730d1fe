"""LengthPrefixFramer: 4-byte big-endian length prefixes on stream transports (DESIGN.md §2)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flare_proto import CloseCode, FrameTooLarge, LengthPrefixFramer, LocalProtocolError

frame = LengthPrefixFramer.frame


def test_frame_prefixes_the_length() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert LengthPrefixFramer.END_OF_STREAM == b"\x00\x00\x00\x00"


def test_frame_refuses_an_empty_payload() -> None:
    # A zero length is the end-of-stream marker, never a frame.
    with pytest.raises(LocalProtocolError):
        frame(b"")


def test_max_frame_must_be_positive() -> None:
    with pytest.raises(LocalProtocolError):
        LengthPrefixFramer(0)


def test_several_frames_in_one_chunk() -> None:
    framer = LengthPrefixFramer(100)
    assert framer.receive(frame(b"a") + frame(b"bc") + frame(b"def")) == [b"a", b"bc", b"def"]
    assert framer.buffered == 0
    assert framer.receive(b"") == []


def test_partial_prefix_and_payload_stay_buffered() -> None:
    framer = LengthPrefixFramer(100)
    assert framer.receive(b"\x00\x00") == []
    assert framer.buffered == 2
    assert framer.receive(b"\x00\x05ab") == []
    assert framer.buffered == 6
    assert framer.receive(b"cde" + frame(b"x")[:3]) == [b"abcde"]
    assert framer.buffered == 3
    assert framer.receive(frame(b"x")[3:]) == [b"x"]
    assert framer.buffered == 0


def test_exactly_max_frame_is_allowed() -> None:
    framer = LengthPrefixFramer(5)
    assert framer.receive(frame(b"12345")) == [b"12345"]


def test_oversize_prefix_raises_at_once_and_forever() -> None:
    framer = LengthPrefixFramer(5)
    assert framer.receive(frame(b"ok")) == [b"ok"]
    # Raised as soon as the prefix is complete, before any payload arrives.
    assert framer.receive(b"\x00\x00") == []
    with pytest.raises(FrameTooLarge) as info:
        framer.receive(b"\x00\x06")
    assert info.value.code is CloseCode.FRAME_TOO_LARGE
    assert framer.buffered == 0
    for later in (b"", frame(b"ok")):  # the stream cannot be resynchronised
        with pytest.raises(FrameTooLarge):
            framer.receive(later)


def test_oversize_prefix_in_the_unbuffered_path() -> None:
    framer = LengthPrefixFramer(5)
    with pytest.raises(FrameTooLarge, match="above max_frame 5"):
        framer.receive(frame(b"ok") + b"\xff\xff\xff\xff")


def test_zero_length_ends_the_stream() -> None:
    framer = LengthPrefixFramer(100)
    data = frame(b"a") + frame(b"b") + LengthPrefixFramer.END_OF_STREAM + frame(b"ignored")
    assert framer.receive(data) == [b"a", b"b"]
    assert framer.ended
    assert framer.buffered == 0
    assert framer.receive(frame(b"later")) == []  # everything after the marker is ignored
    assert framer.buffered == 0


def test_zero_length_split_across_calls() -> None:
    framer = LengthPrefixFramer(100)
    assert framer.receive(frame(b"a") + b"\x00\x00") == [b"a"]
    assert not framer.ended
    assert framer.receive(b"\x00\x00trailing") == []
    assert framer.ended
    assert framer.buffered == 0


def test_large_frame_trickling_in_is_linear() -> None:
    # 1 MiB in 100-byte pieces: quadratic buffering would copy ~5 GB here.
    payload = bytes(range(256)) * 4096
    data = frame(payload) + frame(b"next")
    framer = LengthPrefixFramer(len(payload))
    received = []
    for start in range(0, len(data), 100):
        received += framer.receive(data[start : start + 100])
    assert received == [payload, b"next"]


def test_accepts_bytearray_and_memoryview() -> None:
    framer = LengthPrefixFramer(100)
    assert framer.receive(bytearray(frame(b"ab"))) == [b"ab"]
    assert framer.receive(memoryview(frame(b"cd"))[:3]) == []
    assert framer.receive(memoryview(frame(b"cd"))[3:]) == [b"cd"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=300), max_size=8),
    st.lists(st.integers(0, 3000), max_size=20),
    st.integers(0, 7),
)
def test_any_chunking_gives_the_same_frames(
    payloads: list[bytes], cuts: list[int], tail_size: int
) -> None:
    # The frames, then a trailing partial frame: part of a prefix announcing 300 bytes, or
    # the whole prefix and part of the payload. It stays buffered.
    partial = (frame(b"p" * 300))[:tail_size]
    data = b"".join(map(frame, payloads)) + partial
    framer = LengthPrefixFramer(300)
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    received: list[bytes] = []
    for start, stop in itertools.pairwise(bounds):
        received += framer.receive(data[start:stop])
    assert received == payloads
    assert framer.buffered == len(partial)
    assert not framer.ended
