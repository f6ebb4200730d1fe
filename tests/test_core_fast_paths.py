"""The core's fast paths: the inlined protobuf decode in
``_receive_payload``, the inlined protobuf encode in ``_send`` and the server's reused
ACK frame must behave exactly like ``decode_frame``/``encode_frame`` and fresh frames,
on both framings, whatever the negotiated encoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flare_proto import (
    ClientConfig,
    CloseCode,
    Compression,
    ConnectionClosed,
    DecodeError,
    Format,
    FrameReceived,
    FrameRejected,
    FrameTooLarge,
    Framing,
    Limits,
    ServerConfig,
    decode_frame,
    encode_frame,
    message_frame,
)
from flare_proto._codec import DEFAULT_CODEC
from flare_proto._compression import GZIP_MAGIC, ZSTD_MAGIC, compress
from flare_proto._frames import ACK, DATA, SEND
from flare_proto.testing.loopback import Loopback

CODEC = DEFAULT_CODEC
LIMITS = Limits(max_frame=4096, max_decompressed=8192)


def opened(framing: Framing, **client: object) -> Loopback:
    pair = Loopback(
        ClientConfig(**client),  # type: ignore[arg-type]
        ServerConfig(limits=LIMITS),
        framing=framing,
    )
    pair.connect()
    assert pair.client.state.name == "OPEN"
    return pair


def deliver(pair: Loopback, payload: bytes) -> None:
    if pair.framing is Framing.STREAM:
        pair.server.receive_data(len(payload).to_bytes(4, "big") + payload, pair.now)
    else:
        pair.server.receive_message(payload, pair.now)


def data_frame(payload: bytes) -> bytes:
    frame = message_frame(DATA, message_id="m", timestamp=1, payload=payload)
    return encode_frame(frame, Format.PROTOBUF)


# Payloads: protobuf frames, JSON frames, each compressed or not, truncated, with a
# prefix byte, or random bytes; first bytes around the magic values included.
_frames = st.binary(max_size=300).map(data_frame)
_encoded = st.one_of(
    _frames,
    _frames.map(lambda d: decode_frame(d)[0]).map(lambda f: encode_frame(f, Format.JSON)),
    _frames.map(lambda d: compress(d, Compression.GZIP, DEFAULT_CODEC)),
    _frames.map(lambda d: compress(d, Compression.ZSTD, DEFAULT_CODEC)),
)
_payloads = st.one_of(
    _encoded,
    _encoded.flatmap(lambda d: st.integers(0, len(d)).map(lambda n: d[:n])),
    st.tuples(st.sampled_from([0x7B, 0x1F, 0x28, 0x0A, 0x00, 0xFF]), _encoded).map(
        lambda t: bytes([t[0]]) + t[1]
    ),
    st.binary(max_size=64),
    st.just(b"x" * 5000),  # above max_frame
)


@settings(max_examples=150, deadline=None)
@given(payload=_payloads, framing=st.sampled_from(list(Framing)))
def test_received_payload_is_handled_as_decode_frame_decides(
    payload: bytes, framing: Framing
) -> None:
    pair = opened(framing, format=Format.PROTOBUF)
    pair.server.events_received()
    try:
        expected = decode_frame(payload, LIMITS)[0]
        outcome = "frame"
    except FrameTooLarge:
        outcome = "too_large"
    except DecodeError:
        outcome = "rejected"
    if framing is Framing.STREAM and not payload:
        return  # a zero length prefix is the end-of-stream marker, not a frame
    deliver(pair, payload)
    events = pair.server.events_received()
    if outcome == "frame":
        # Routed as before (a frame without a command, or a PING, makes no event).
        assert not any(isinstance(e, FrameRejected) for e in events)
        got = [e.frame for e in events if isinstance(e, FrameReceived)]
        assert got in ([], [expected])
        assert got or expected.command.WhichOneof("type") != "message"
        assert pair.server._undecodable == 0
    elif outcome == "rejected":
        assert [type(e) for e in events] == [FrameRejected]
        assert not pair.server.closed
    else:
        assert pair.server.close_code is CloseCode.FRAME_TOO_LARGE


@pytest.mark.parametrize("negotiated", [Compression.NONE, Compression.GZIP, Compression.ZSTD])
def test_every_received_frame_is_sniffed_after_negotiation(
    framing: Framing, negotiated: Compression
) -> None:
    """Whatever was negotiated, each frame is detected on its own (DESIGN §2)."""
    pair = opened(framing, format=Format.PROTOBUF, compression=negotiated)
    pair.server.events_received()
    plain = data_frame(b"p" * 300)
    for payload in (
        plain,
        compress(plain, Compression.GZIP, DEFAULT_CODEC),
        compress(plain, Compression.ZSTD, DEFAULT_CODEC),
        encode_frame(decode_frame(plain)[0], Format.JSON),
        compress(
            encode_frame(decode_frame(plain)[0], Format.JSON), Compression.GZIP, DEFAULT_CODEC
        ),
    ):
        deliver(pair, payload)
    events = pair.server.events_received()
    assert [type(e) for e in events] == [FrameReceived] * 5
    assert all(e.frame.command.message.payload == b"p" * 300 for e in events)  # type: ignore[union-attr]


def test_undecodable_run_is_reset_by_fast_path_frames(framing: Framing) -> None:
    pair = opened(framing, format=Format.PROTOBUF)
    bad = b"\x0a\xff\xff\xff\xff\x0f"
    for _ in range(3):
        for _ in range(7):
            deliver(pair, bad)
        deliver(pair, data_frame(b"ok"))  # the fast path must reset the run
    assert not pair.server.closed
    deliver(pair, bad)
    assert not pair.server.closed
    for _ in range(7):
        deliver(pair, bad)
    assert pair.server.close_code is CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    ("fmt", "compression"),
    [
        (Format.PROTOBUF, Compression.NONE),
        (Format.PROTOBUF, Compression.GZIP),
        (Format.JSON, Compression.ZSTD),
        (Format.JSON, Compression.NONE),
    ],
)
def test_acks_and_sends_interleaved_are_fresh_frames(
    framing: Framing, fmt: Format, compression: Compression
) -> None:
    """The reused ACK frame, with other sends between ACKs: every frame on the wire is
    the encoding of a fresh frame; large SENDs are still compressed."""
    pair = opened(framing, format=fmt, compression=compression)
    ids = pair.ids
    server = pair.server
    codec = server._codec
    expected: list[bytes] = []
    for i, acked in enumerate(["a1", "", "a3" * 40]):
        counter = ids._messages
        server.send_ack(acked, pair.now)
        fresh = message_frame(
            ACK,
            message_id=f"{ids.timestamp_ms(pair.now)}-{counter:016x}",
            command_id=acked,
            timestamp=ids.timestamp_ms(pair.now),
        )
        expected.append(encode_frame(fresh, fmt, compression, codec))
        ident = server.send_message(b"s" * (100 * i + 300), pair.now)
        frame = message_frame(
            SEND,
            message_id=ident,
            timestamp=ids.timestamp_ms(pair.now),
            payload=b"s" * (100 * i + 300),
        )
        expected.append(encode_frame(frame, fmt, compression, codec))
    out = server.data_to_send()
    if framing is Framing.STREAM:
        out = out[1::2]
    assert out == expected
    if compression is not Compression.NONE:
        magic = GZIP_MAGIC if compression is Compression.GZIP else ZSTD_MAGIC
        assert all(o.startswith(magic) for o in out[1::2])
    assert not any(isinstance(e, ConnectionClosed) for e in pair.server_events)


@pytest.mark.parametrize("fmt", [Format.PROTOBUF, Format.JSON])
@pytest.mark.parametrize(("payload", "metadata"), [(b"", None), (b"p", None), (b"p", {"k": "v"})])
def test_client_send_is_the_fresh_send_frame(
    framing: Framing, fmt: Format, payload: bytes, metadata: dict[str, str] | None
) -> None:
    """The client's inlined SEND building gives message_frame()'s bytes, and the frame
    kept for resending is that same frame."""
    pair = opened(framing, format=fmt)
    ids = pair.ids
    counter = ids._messages
    ident = pair.client.send_message(payload, pair.now, metadata=metadata)
    assert ident == f"{ids.timestamp_ms(pair.now)}-{counter:016x}"
    fresh = message_frame(
        SEND,
        message_id=ident,
        timestamp=ids.timestamp_ms(pair.now),
        payload=payload,
        metadata=metadata,
    )
    out = pair.client.data_to_send()
    if framing is Framing.STREAM:
        out = out[1::2]
    assert out == [encode_frame(fresh, fmt)]
    assert pair.client.pending_sends() == [fresh]
