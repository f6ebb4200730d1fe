"""ERROR/CLOSE codes, undecodable frames, size limits, peer closes (DESIGN §4)."""

from __future__ import annotations

import gzip

import pytest

from flare_proto import (
    ClientConfig,
    CloseCode,
    ConnectionClosed,
    Format,
    FrameReceived,
    FrameRejected,
    Framing,
    Limits,
    ServerConfig,
    decode_frame,
    encode_frame,
    system_frame,
)
from flare_proto.testing.loopback import Loopback


def last_close(events: list[object]) -> ConnectionClosed:
    assert isinstance(events[-1], ConnectionClosed)
    return events[-1]


def test_close_code_table() -> None:
    assert [(c.code, c.number, c.reconnect) for c in CloseCode] == [
        ("auth_failed", 4001, False),
        ("auth_timeout", 4002, True),
        ("protocol_error", 4003, False),
        ("frame_too_large", 4004, False),
        ("unsupported_format", 4005, False),
        ("unsupported_compression", 4006, False),
        ("heartbeat_timeout", 4007, True),
        ("slow_consumer", 4008, True),
        ("server_full", 4009, True),
        ("server_shutdown", 4010, True),
        ("kicked", 4011, False),
    ]
    assert CloseCode.from_number(4011) is CloseCode.KICKED
    assert CloseCode.from_code("nope") is None


def test_error_frame_carries_code_metadata() -> None:
    pair = Loopback(auto_accept=False)
    pair.connect()
    pair.server.reject(pair.now, "bad token")
    pair.pump()
    frame, _, _ = decode_frame(pair.server_sent[-1])
    system = frame.command.system
    assert system.type == 6
    assert system.message == "bad token"
    assert system.metadata["code"] == b"auth_failed"


def test_seven_garbage_frames_are_dropped_eight_close(framing: Framing) -> None:
    pair = Loopback(framing=framing)
    pair.connect()
    garbage = b"\xff\xfe\xfd not a frame"
    wire = len(garbage).to_bytes(4, "big") + garbage if framing is Framing.STREAM else garbage
    for _ in range(7):
        pair.inject(wire)
    assert not pair.server.closed
    assert sum(isinstance(e, FrameRejected) for e in pair.server_events) == 7
    pair.client.send_data(b"still fine", pair.now)  # a good frame resets the run
    pair.pump()
    for _ in range(7):
        pair.inject(wire)
    assert not pair.server.closed
    pair.inject(wire)
    assert last_close(pair.server_events).code is CloseCode.PROTOCOL_ERROR
    assert last_close(pair.client_events).code is CloseCode.PROTOCOL_ERROR
    # Nothing the client sent was lost: the one good frame reached the application.
    assert [
        e.frame.command.message.payload for e in pair.server_events if isinstance(e, FrameReceived)
    ] == [b"still fine"]


def test_message_above_max_frame() -> None:
    pair = Loopback(server_config=ServerConfig(limits=Limits(max_frame=1024)))
    pair.connect()
    pair.inject(b"\x0a" * 1025)
    assert last_close(pair.server_events).code is CloseCode.FRAME_TOO_LARGE


def test_length_prefix_above_max_frame() -> None:
    pair = Loopback(
        server_config=ServerConfig(limits=Limits(max_frame=1024)), framing=Framing.STREAM
    )
    pair.connect()
    pair.inject((1025).to_bytes(4, "big"))
    assert last_close(pair.server_events).code is CloseCode.FRAME_TOO_LARGE
    assert last_close(pair.client_events).code is CloseCode.FRAME_TOO_LARGE


def test_decompression_bomb_is_frame_too_large() -> None:
    limits = Limits(max_decompressed=1 << 20)
    pair = Loopback(server_config=ServerConfig(limits=limits))
    pair.connect()
    bomb = gzip.compress(b"\0" * (8 << 20))
    pair.inject(bomb)
    assert last_close(pair.server_events).code is CloseCode.FRAME_TOO_LARGE


def test_zero_length_prefix_ends_the_stream() -> None:
    pair = Loopback(framing=Framing.STREAM)
    pair.connect()
    pair.inject(b"\0\0\0\0")
    event = last_close(pair.server_events)
    assert event.code is None and event.by_peer


def test_peer_close_frame_with_code() -> None:
    pair = Loopback()
    pair.connect()
    pair.server.close(pair.now)
    pair.pump()
    event = last_close(pair.client_events)
    assert event.code is CloseCode.SERVER_SHUTDOWN and event.by_peer and event.may_reconnect
    assert last_close(pair.server_events).code is CloseCode.SERVER_SHUTDOWN


def test_client_normal_close() -> None:
    pair = Loopback()
    pair.connect()
    pair.client.close(pair.now)
    pair.pump()
    assert last_close(pair.server_events).by_peer
    assert last_close(pair.server_events).code is None


@pytest.mark.parametrize("number", [4008, 4009, 4010, 1000, 1006])
def test_transport_close_numbers_map_to_codes(number: int) -> None:
    pair = Loopback()
    pair.connect()
    pair.client.receive_close(number, "", pair.now)
    event = last_close(pair.client.events_received())
    assert event.code is CloseCode.from_number(number)


def test_exactly_one_close_event_and_input_after_close_ignored() -> None:
    pair = Loopback()
    pair.connect()
    pair.server.close(pair.now)
    pair.server.receive_message(b"late", pair.now)
    pair.server.handle_timer(pair.now + 1000)
    pair.server.receive_eof(pair.now)
    pair.pump()
    assert sum(isinstance(e, ConnectionClosed) for e in pair.server_events) == 1
    assert pair.server.next_deadline() is None


def test_server_receives_error_from_client() -> None:
    pair = Loopback()
    pair.connect()
    err = system_frame(
        6, message_id="e", timestamp=1, message="bye", metadata={"code": "protocol_error"}
    )
    pair.inject(encode_frame(err, Format.JSON))
    event = last_close(pair.server_events)
    assert event.code is CloseCode.PROTOCOL_ERROR and event.by_peer


def test_garbage_before_connect_counts_too() -> None:
    pair = Loopback(ClientConfig())
    for _ in range(8):
        pair.inject(b"\x07garbage")
    assert last_close(pair.server_events).code is CloseCode.PROTOCOL_ERROR
