"""Core regressions found in review, and tests named for the original's bugs that were
not named elsewhere (B6, B13, B14, B23, B34)."""

from __future__ import annotations

import pytest

from flare_proto import (
    ClientConfig,
    ClientState,
    CloseCode,
    CodecOptions,
    Compression,
    ConnectionClosed,
    DeviceInfo,
    DeviceRegistry,
    Format,
    FrameReceived,
    Framing,
    HandshakeCompleted,
    LocalProtocolError,
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
