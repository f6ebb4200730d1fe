"""Core regressions found in review, and tests named for the original's bugs that were
not named elsewhere (B6, B12-B16, B22, B23, B29, B33-B37)."""

from __future__ import annotations

import pytest

from flare_proto import (
    ClientConfig,
    ClientState,
    CloseCode,
    CodecOptions,
    Compression,
    ConnectionClosed,
    DecodeError,
    DeviceInfo,
    DeviceRegistry,
    Format,
    FrameReceived,
    Framing,
    HandshakeCompleted,
    Kicked,
    LocalProtocolError,
    MessageAcked,
    Platform,
    PlatformExclusive,
    SequentialIds,
    ServerConfig,
    ServerState,
    admit,
    decode_frame,
    encode_frame,
    message_frame,
    system_frame,
)
from flare_proto._pb.commands_pb2 import SystemCommand
from flare_proto.testing.loopback import Loopback


def test_conflict_list_bomb_in_connect_ack_never_raises() -> None:
    pair = Loopback(auto_accept=False)
    pair.connect()
    ack = system_frame(
        2,
        message_id="a",
        timestamp=1,
        metadata={"compression": "none", "conflict_connections": "[" * 100_000},
    )
    pair.client.receive_message(encode_frame(ack, Format.PROTOBUF), pair.now)
    events = pair.client.events_received()
    assert isinstance(events[0], HandshakeCompleted)
    assert events[0].conflict_connections == ()
    assert pair.client.state is ClientState.OPEN


def test_admit_refuses_a_closed_connection_before_touching_anyone() -> None:
    registry = DeviceRegistry(PlatformExclusive())
    device = DeviceInfo(device_id="d", platform=Platform.parse("ios"))
    ids = SequentialIds()
    old = Loopback(ClientConfig(device=device, user_id="u"), auto_accept=False, ids=ids)
    old.connect()
    admit(old.server, registry, {old.server.connection_id: old.server}, 0.0, user_id="u")
    late = Loopback(ClientConfig(device=device, user_id="u"), auto_accept=False, ids=ids)
    late.connect()
    late.advance(31.0)  # auth_timeout fired: the connection is closed
    assert late.server.closed
    with pytest.raises(LocalProtocolError):
        admit(late.server, registry, {old.server.connection_id: old.server}, late.now, user_id="u")
    assert not old.server.closed
    assert late.server.connection_id not in registry


def test_stream_ending_inside_a_frame_is_a_protocol_error() -> None:
    pair = Loopback(framing=Framing.STREAM)
    pair.connect()
    frame = encode_frame(
        message_frame(2, message_id="m", timestamp=1, payload=b"x" * 50), Format.PROTOBUF
    )
    pair.server.receive_data(len(frame).to_bytes(4, "big") + frame[:10], pair.now)
    pair.server.receive_eof(pair.now)
    closed = pair.server.events_received()[-1]
    assert isinstance(closed, ConnectionClosed)
    assert closed.code is CloseCode.PROTOCOL_ERROR and not closed.by_peer


def test_send_encoded_needs_an_open_connection() -> None:
    pair = Loopback(auto_accept=False)
    pair.connect()
    with pytest.raises(LocalProtocolError):
        pair.server.send_encoded(b"\x0a\x00")
    with pytest.raises(LocalProtocolError):
        Loopback().client.send_encoded(b"\x0a\x00")
    assert pair.server.state is ServerState.AWAITING_VERDICT


def test_abandoned_send_is_neither_tracked_nor_resent() -> None:
    pair = Loopback()
    pair.connect()
    keep = pair.client.send_message(b"keep", pair.now)
    drop = pair.client.send_message(b"drop", pair.now)
    assert pair.client.abandon(drop)
    assert not pair.client.abandon(drop)
    assert [f.message_id for f in pair.client.pending_sends()] == [keep]


def test_b6_kicked_connection_is_closed_on_both_sides() -> None:
    pair = Loopback()
    pair.connect()
    pair.server.kick(pair.now, message="bye", metadata={"reason": "device_conflict"})
    pair.pump()
    assert pair.server.closed and pair.server.close_code is CloseCode.KICKED
    assert pair.client.closed and pair.client.close_code is CloseCode.KICKED


def test_b13_zstd_really_compresses() -> None:
    frame = message_frame(0, message_id="m", timestamp=1, payload=b"flare " * 200)
    plain = encode_frame(frame, Format.PROTOBUF)
    packed = encode_frame(frame, Format.PROTOBUF, Compression.ZSTD)
    assert packed[:4] == b"\x28\xb5\x2f\xfd" and len(packed) < len(plain) // 4
    assert decode_frame(packed) == (frame, Format.PROTOBUF, Compression.ZSTD)


def test_b14_unsupported_compression_falls_back_on_both_sides() -> None:
    """An unforced request for a compression the server does not enable gets the server
    default, and the ACK says so: both sides then agree (the original's ACK said "none"
    while the server kept the requested algorithm)."""
    server = ServerConfig(compressions=frozenset({Compression.NONE, Compression.GZIP}))
    codec = CodecOptions(compress_min_bytes=0)
    pair = Loopback(ClientConfig(compression=Compression.ZSTD, codec=codec), server)
    pair.connect()
    assert pair.client.compression is pair.server.compression is Compression.NONE
    pair.client.send_data(b"x" * 600, pair.now)
    pair.pump()
    assert any(isinstance(e, FrameReceived) for e in pair.server_events)


def test_b23_the_core_never_acks_by_itself() -> None:
    """ACKs are the application's (the hub ACKs SENDs only): DATA, custom, notifications
    and ACKs get nothing back from the core."""
    pair = Loopback()
    pair.connect()
    before = len(pair.server_sent)
    pair.client.send_data(b"d", pair.now)
    pair.client.send_custom("c", b"", pair.now)
    pair.client.send_message(b"s", pair.now)
    pair.pump()
    assert len(pair.server_sent) == before


def test_b34_map_entries_in_any_order_decode_alike() -> None:
    a = system_frame(1, message_id="c", timestamp=1, metadata={"format": "json", "token": "t"})
    b = system_frame(1, message_id="c", timestamp=1, metadata={"token": "t", "format": "json"})
    assert (
        decode_frame(encode_frame(a, Format.JSON))[0]
        == decode_frame(encode_frame(b, Format.JSON))[0]
    )
    assert a.command.system.type == SystemCommand.CONNECT  # type: ignore[attr-defined]


def test_b12_kicked_type_10_is_handled_by_the_client() -> None:
    """The original's v0.1.2 message utility rejected system type 10; the client core
    turns KICKED into :class:`Kicked` and a terminal ``kicked`` close."""
    pair = Loopback()
    pair.connect()
    kicked = system_frame(
        10, message_id="k", timestamp=1, message="bye", metadata={"reason": "device_conflict"}
    )
    pair.inject(encode_frame(kicked, pair.client.format), to_server=False)
    event = next(e for e in pair.client_events if isinstance(e, Kicked))
    assert event.reason == "device_conflict" and event.message == "bye"
    assert pair.client.closed and pair.client.close_code is CloseCode.KICKED


def test_b16_kicked_goes_out_in_the_old_connections_own_encoding() -> None:
    """HEAD encoded KICKED without the connection's negotiated layer; here the frame uses
    the kicked connection's format and compression like every other frame."""
    codec = CodecOptions(compress_min_bytes=0)
    config = ClientConfig(format=Format.JSON, compression=Compression.GZIP, codec=codec)
    pair = Loopback(config, ServerConfig(codec=codec))
    pair.connect()
    pair.server.kick(pair.now, message="bye", metadata={"reason": "device_conflict"})
    pair.pump()
    raw = pair.server_sent[-1]
    assert raw[:2] == b"\x1f\x8b"
    frame, fmt, compression = decode_frame(raw)
    assert (fmt, compression) == (Format.JSON, Compression.GZIP)
    assert frame.command.system.type == 10
    assert any(isinstance(e, Kicked) for e in pair.client_events)


def test_b22_connect_ack_is_written_as_soon_as_the_verdict_is_given() -> None:
    """No sleep in CONNECT handling: ``accept`` queues CONNECT_ACK at once, at the same
    ``now``."""
    pair = Loopback(auto_accept=False)
    pair.client.connect(pair.now)
    for chunk in pair.client.data_to_send():
        pair.server.receive_message(chunk, pair.now)
    pair.server.events_received()
    pair.server.accept(pair.now, user_id="u")
    (ack,) = pair.server.data_to_send()
    assert decode_frame(ack)[0].command.system.type == 2


def test_b29_sending_before_the_handshake_fails_locally_and_changes_nothing() -> None:
    """HEAD's client reconnected (new socket after 5 s) when asked to send before the ACK;
    here the call raises and the connection is untouched."""
    pair = Loopback(auto_accept=False)
    pair.connect()
    with pytest.raises(LocalProtocolError):
        pair.client.send_message(b"early", pair.now)
    with pytest.raises(LocalProtocolError):
        pair.client.send_data(b"early", pair.now)
    assert pair.client.state is ClientState.AWAITING_ACK
    assert pair.client.pending_sends() == [] and pair.client.data_to_send() == []


def test_b33_a_second_connect_ack_is_ignored() -> None:
    """HEAD could lose its "negotiated" mark when connection events raced the ACK; the
    client core completes the handshake once: a later CONNECT_ACK changes neither the
    encoding nor the state and raises no second :class:`HandshakeCompleted`."""
    pair = Loopback(ClientConfig(format=Format.PROTOBUF))
    pair.connect()
    assert pair.client.format is Format.PROTOBUF
    again = system_frame(
        2, message_id="a2", timestamp=1, format=1, metadata={"compression": "gzip"}
    )
    pair.inject(encode_frame(again, Format.PROTOBUF), to_server=False)
    completed = [e for e in pair.client_events if isinstance(e, HandshakeCompleted)]
    assert len(completed) == 1
    assert (pair.client.format, pair.client.compression) == (Format.PROTOBUF, Compression.NONE)
    assert pair.client.state is ClientState.OPEN
    ident = pair.client.send_message(b"still fine", pair.now)
    pair.pump()
    assert decode_frame(pair.client_sent[-1])[1] is Format.PROTOBUF
    pair.server.send_ack(ident, pair.now)
    pair.pump()
    assert MessageAcked(message_id=ident) in pair.client_events


def test_b35_v0_1_2_json_is_read_and_head_variants_are_refused() -> None:
    """A v0.1.2 JSON SystemCommand (no ``compression``/``encryption`` keys, which HEAD
    requires) decodes; HEAD's ``payload`` variant is a clear protocol error, not a guess."""
    v012 = (
        b'{"command":{"type":{"system":{"type":3,"message":"","metadata":{},"format":0}}},'
        b'"message_id":"p","timestamp":1}'
    )
    frame, fmt, _ = decode_frame(v012)
    assert fmt is Format.JSON and frame.command.system.type == 3
    with pytest.raises(DecodeError, match="unknown variant 'payload'") as info:
        decode_frame(b'{"command":{"type":{"payload":{}}},"message_id":"p","timestamp":1}')
    assert info.value.code is CloseCode.PROTOCOL_ERROR


def test_b36_compression_applies_from_the_size_threshold() -> None:
    """The original compressed every frame once negotiated, whatever its documentation
    said; here frames below ``compress_min_bytes`` (default 256) go out plain on a gzip
    connection and larger ones compressed, and both decode."""
    pair = Loopback(ClientConfig(compression=Compression.GZIP))
    pair.connect()
    assert pair.client.compression is Compression.GZIP
    pair.client.send_data(b"s", pair.now)
    pair.client.send_data(b"flare " * 100, pair.now)
    pair.pump()
    small, large = pair.client_sent[-2:]
    assert decode_frame(small)[2] is Compression.NONE
    assert large[:2] == b"\x1f\x8b" and decode_frame(large)[2] is Compression.GZIP
    payloads = [
        e.frame.command.message.payload for e in pair.server_events if isinstance(e, FrameReceived)
    ]
    assert payloads == [b"s", b"flare " * 100]


def test_b37_sends_are_really_acknowledged_and_resent() -> None:
    """The schema promised ACKed SENDs and nothing implemented it: a SEND stays pending
    until its ACK, and one unacknowledged at a disconnect is resent with its original id
    on the next connection."""
    pair = Loopback()
    pair.connect()
    acked = pair.client.send_message(b"one", pair.now)
    lost = pair.client.send_message(b"two", pair.now)
    pair.pump()
    assert {f.message_id for f in pair.client.pending_sends()} == {acked, lost}
    pair.server.send_ack(acked, pair.now)
    pair.pump()
    assert [f.message_id for f in pair.client.pending_sends()] == [lost]
    carried = pair.client.pending_sends()
    again = Loopback(ids=pair.ids, resend=carried)
    again.connect()
    resent = [e.frame for e in again.server_events if isinstance(e, FrameReceived)]
    assert [f.command.message.message_id for f in resent] == [lost]
