"""CONNECT / CONNECT_ACK: building, negotiation under both ``prefer`` rules, forcing,
authentication verdicts and timeouts, held frames (DESIGN §3; bugs B2-B5, B8, B10, B15,
B20, B21)."""

from __future__ import annotations

import pytest

from flare_proto import (
    ClientConfig,
    ClientState,
    CloseCode,
    Compression,
    ConnectionClosed,
    ConnectRequested,
    DeviceInfo,
    Format,
    FrameReceived,
    Framing,
    HandshakeCompleted,
    LocalProtocolError,
    Platform,
    ServerConfig,
    ServerState,
    SystemCommand,
    decode_frame,
    encode_frame,
    message_frame,
    system_frame,
)
from flare_proto.testing.loopback import Loopback


def closed(events: list[object]) -> ConnectionClosed:
    last = events[-1]
    assert isinstance(last, ConnectionClosed)
    return last


def decoded(chunks: list[bytes], framing: Framing) -> list[tuple[object, Format, Compression]]:
    """Decode what a side wrote (skipping stream length prefixes)."""
    if framing is Framing.STREAM:
        chunks = chunks[1::2]
    return [decode_frame(c) for c in chunks]


def test_connect_frame_carries_everything(framing: Framing) -> None:
    device = DeviceInfo(device_id="dev-1", platform=Platform.parse("iPhone"), model="iPhone15")
    config = ClientConfig(
        format=Format.PROTOBUF,
        compression=Compression.ZSTD,
        force=True,
        device=device,
        user_id="alice",
        token="t0k",
        metadata={"tenant": "acme"},
    )
    pair = Loopback(config, framing=framing, auto_accept=False)
    pair.connect()
    request = next(e for e in pair.server_events if isinstance(e, ConnectRequested)).request
    assert request.format is Format.PROTOBUF
    assert request.compression is Compression.ZSTD
    assert request.forced
    assert request.user_id == "alice"
    assert request.token == "t0k"
    assert request.device is not None
    assert request.device.device_id == "dev-1"
    assert request.device.platform == Platform.parse("ios")
    assert request.device.model == "iPhone15"
    assert request.metadata == {"tenant": "acme"}


def test_b4_token_never_in_device_metadata_or_repr() -> None:
    device = DeviceInfo(device_id="d", platform=Platform.parse("pc"))
    pair = Loopback(ClientConfig(device=device, token="sekret-token"), auto_accept=False)
    pair.connect()
    event = next(e for e in pair.server_events if isinstance(e, ConnectRequested))
    assert event.request.device is not None
    assert "token" not in event.request.device.extra
    assert "token" not in event.request.metadata
    assert "sekret-token" not in repr(event)
    assert "sekret-token" not in repr(pair.client.config)


@pytest.mark.parametrize("prefer", ["client", "server"])
@pytest.mark.parametrize("fmt", list(Format))
@pytest.mark.parametrize("compression", list(Compression))
@pytest.mark.parametrize("force", [False, True])
def test_negotiation_matrix(
    prefer: str, fmt: Format, compression: Compression, force: bool, framing: Framing
) -> None:
    server = ServerConfig(prefer=prefer)  # type: ignore[arg-type]
    pair = Loopback(
        ClientConfig(format=fmt, compression=compression, force=force), server, framing=framing
    )
    pair.connect()
    done = next(e for e in pair.client_events if isinstance(e, HandshakeCompleted))
    if force or prefer == "client":
        expected = (fmt, compression)
    else:
        expected = (Format.PROTOBUF, Compression.NONE)  # the server defaults
    assert (done.format, done.compression) == expected
    assert (pair.server.format, pair.server.compression) == expected
    assert pair.client.state is ClientState.OPEN
    assert pair.server.state is ServerState.OPEN


def test_unforced_request_for_disabled_encoding_gets_server_default() -> None:
    server = ServerConfig(
        formats=frozenset({Format.PROTOBUF}), compressions=frozenset({Compression.NONE})
    )
    pair = Loopback(ClientConfig(format=Format.JSON, compression=Compression.GZIP), server)
    pair.connect()
    assert (pair.client.format, pair.client.compression) == (Format.PROTOBUF, Compression.NONE)


@pytest.mark.parametrize(
    ("client", "code"),
    [
        (ClientConfig(format=Format.JSON, force=True), CloseCode.UNSUPPORTED_FORMAT),
        (
            ClientConfig(format=Format.PROTOBUF, compression=Compression.GZIP, force=True),
            CloseCode.UNSUPPORTED_COMPRESSION,
        ),
    ],
)
def test_forced_but_disabled_is_refused(
    client: ClientConfig, code: CloseCode, framing: Framing
) -> None:
    server = ServerConfig(
        formats=frozenset({Format.PROTOBUF}), compressions=frozenset({Compression.NONE})
    )
    pair = Loopback(client, server, framing=framing)
    pair.connect()
    assert closed(pair.server_events).code is code
    seen = closed(pair.client_events)
    assert seen.code is code and seen.by_peer
    assert not seen.may_reconnect
    assert not any(isinstance(e, ConnectRequested) for e in pair.server_events)


def test_unknown_forced_names_are_refused() -> None:
    pair = Loopback(ClientConfig(force=True, metadata={"compression": "brotli"}))
    pair.connect()
    assert closed(pair.server_events).code is CloseCode.UNSUPPORTED_COMPRESSION
    pair = Loopback(ClientConfig(force=True, metadata={"format": "xml"}))
    pair.connect()
    assert closed(pair.server_events).code is CloseCode.UNSUPPORTED_FORMAT


def test_b8_format_from_metadata_else_field() -> None:
    """Metadata ``format`` wins; without it the SystemCommand ``format`` field is used."""
    server = ServerConfig()
    for meta, field, expected in [
        ({"format": "json"}, 0, Format.JSON),
        ({"format": "protobuf"}, 1, Format.PROTOBUF),
        ({}, 1, Format.JSON),
        ({}, 0, Format.PROTOBUF),
    ]:
        pair = Loopback(server_config=server, auto_accept=False)
        connect = system_frame(
            1, message_id="c", timestamp=1, format=field, metadata={**meta, "compression": "none"}
        )
        pair.inject(encode_frame(connect, Format.PROTOBUF))
        event = next(e for e in pair.server_events if isinstance(e, ConnectRequested))
        assert event.format is expected


def test_b10_connect_ack_never_compressed(framing: Framing) -> None:
    """Even with gzip negotiated and a threshold of 0, CONNECT_ACK goes out plain."""
    from flare_proto import CodecOptions

    server = ServerConfig(codec=CodecOptions(compress_min_bytes=0))
    pair = Loopback(ClientConfig(compression=Compression.GZIP), server, framing=framing)
    pair.connect()
    (ack, _fmt, compression), *_ = decoded(pair.server_sent, framing)
    assert compression is Compression.NONE
    assert ack.command.system.type == SystemCommand.CONNECT_ACK  # type: ignore[attr-defined]
    # ...and the next server frame uses the negotiated gzip.
    pair.server.send_ack(pair.client.send_message(b"x", pair.now), pair.now)
    pair.pump()
    assert decoded(pair.server_sent, framing)[1][2] is Compression.GZIP


def test_b15_forced_gzip_connect_is_readable() -> None:
    from flare_proto import CodecOptions

    codec = CodecOptions(compress_min_bytes=0)
    pair = Loopback(ClientConfig(compression=Compression.GZIP, force=True, codec=codec))
    pair.connect()
    assert decoded(pair.client_sent, Framing.MESSAGE)[0][2] is Compression.GZIP
    assert pair.client.state is ClientState.OPEN


def test_connect_request_reported_once_b20() -> None:
    pair = Loopback()
    pair.connect()
    assert sum(isinstance(e, ConnectRequested) for e in pair.server_events) == 1


def test_auth_reject_sends_auth_failed(framing: Framing) -> None:
    pair = Loopback(ClientConfig(token="bad"), framing=framing, auto_accept=False)
    pair.connect()
    pair.server.reject(pair.now, "token expired")
    pair.pump()
    server_close = closed(pair.server_events)
    assert server_close.code is CloseCode.AUTH_FAILED and not server_close.by_peer
    client_close = closed(pair.client_events)
    assert client_close.code is CloseCode.AUTH_FAILED
    assert client_close.reason == "token expired"
    assert not client_close.may_reconnect


def test_b5_auth_timeout_without_verdict(framing: Framing) -> None:
    pair = Loopback(framing=framing, auto_accept=False)
    pair.connect()
    pair.advance(29.9)
    assert not pair.server.closed
    pair.advance(0.2)
    assert closed(pair.server_events).code is CloseCode.AUTH_TIMEOUT
    client_close = closed(pair.client_events)
    assert client_close.code is CloseCode.AUTH_TIMEOUT and client_close.may_reconnect


def test_b5_slowloris_never_sends_connect() -> None:
    """No CONNECT within auth_timeout closes, with auth enabled or not (DESIGN §3.3)."""
    pair = Loopback(server_config=ServerConfig(auth_timeout=5.0))
    assert pair.server.next_deadline() == 5.0
    pair.advance(5.0)
    assert closed(pair.server_events).code is CloseCode.AUTH_TIMEOUT


def test_auth_timeout_counts_from_transport_open() -> None:
    pair = Loopback(auto_accept=False)
    pair.advance(20.0)
    pair.connect()
    pair.advance(10.0)
    assert closed(pair.server_events).code is CloseCode.AUTH_TIMEOUT


def test_b3_frames_before_connect_are_a_protocol_error(framing: Framing) -> None:
    pair = Loopback(framing=framing)
    send = message_frame(0, message_id="m", timestamp=1, payload=b"sneaky")
    data = encode_frame(send, Format.PROTOBUF)
    pair.inject(len(data).to_bytes(4, "big") + data if framing is Framing.STREAM else data)
    assert closed(pair.server_events).code is CloseCode.PROTOCOL_ERROR
    assert not any(isinstance(e, FrameReceived) for e in pair.server_events)


def test_ping_before_connect_is_answered_in_its_format() -> None:
    pair = Loopback(auto_accept=False)
    ping = system_frame(4, message_id="p", timestamp=1)
    pair.inject(encode_frame(ping, Format.JSON))
    ((pong, fmt, _),) = decoded(pair.server_sent, Framing.MESSAGE)
    assert fmt is Format.JSON
    assert pong.command.system.type == SystemCommand.PONG  # type: ignore[attr-defined]
    assert not pair.server.closed


def test_frames_held_until_acceptance_then_released_in_order(framing: Framing) -> None:
    pair = Loopback(framing=framing, auto_accept=False)
    pair.connect()
    for i in range(5):
        frame = message_frame(2, message_id=f"m{i}", timestamp=1, payload=bytes([i]))
        data = encode_frame(frame, Format.JSON)
        pair.inject(len(data).to_bytes(4, "big") + data if framing is Framing.STREAM else data)
    assert not any(isinstance(e, FrameReceived) for e in pair.server_events)
    pair.server.accept(pair.now, user_id=None)
    pair.pump()
    got = [e.frame.message_id for e in pair.server_events if isinstance(e, FrameReceived)]
    assert got == [f"m{i}" for i in range(5)]


def test_held_frames_dropped_on_rejection() -> None:
    pair = Loopback(auto_accept=False)
    pair.connect()
    pair.inject(encode_frame(message_frame(2, message_id="m", timestamp=1), Format.JSON))
    pair.server.reject(pair.now)
    pair.pump()
    assert not any(isinstance(e, FrameReceived) for e in pair.server_events)


def test_too_many_held_frames_is_a_protocol_error() -> None:
    from flare_proto import Limits

    pair = Loopback(server_config=ServerConfig(limits=Limits(max_held_frames=3)), auto_accept=False)
    pair.connect()
    for i in range(4):
        pair.inject(encode_frame(message_frame(2, message_id=f"m{i}", timestamp=1), Format.JSON))
    assert closed(pair.server_events).code is CloseCode.PROTOCOL_ERROR


def test_too_much_held_data_is_a_protocol_error() -> None:
    """Held frames are bounded in bytes too: 64 frames of up to ``max_decompressed`` each
    would otherwise be 1 GiB held for an unauthenticated connection. Frames up to the
    bound are released in order on accept; one byte more refuses the connection."""
    from flare_proto import Limits

    def held(size: int) -> bytes:
        frame = message_frame(2, message_id="m", timestamp=1, payload=b"x" * size)
        return encode_frame(frame, Format.PROTOBUF)

    size = message_frame(2, message_id="m", timestamp=1, payload=b"x" * 1000).ByteSize()
    limits = Limits(max_held_bytes=3 * size)
    fits = Loopback(server_config=ServerConfig(limits=limits), auto_accept=False)
    fits.connect()
    for _ in range(3):
        fits.inject(held(1000))
    assert not fits.server.closed
    fits.server.accept(fits.now, user_id=None)
    fits.pump()
    assert len([e for e in fits.server_events if isinstance(e, FrameReceived)]) == 3

    over = Loopback(server_config=ServerConfig(limits=limits), auto_accept=False)
    over.connect()
    over.inject(held(1000))
    overhead = size - 1000
    over.inject(held(2000 + overhead + 1))  # the two together: 3 * size + 1 bytes
    event = closed(over.server_events)
    assert event.code is CloseCode.PROTOCOL_ERROR and "too much data" in event.reason
    assert not any(isinstance(e, FrameReceived) for e in over.server_events)


def test_held_bytes_default_follows_max_decompressed() -> None:
    """By default one largest frame fits before the verdict, whatever the limits: raising
    ``max_decompressed`` raises the bound with it; an explicit bound is kept."""
    from flare_proto import Limits

    assert Limits().held_bytes == Limits().max_decompressed == 16 * 1024 * 1024
    assert Limits(max_decompressed=64 * 1024 * 1024).held_bytes == 64 * 1024 * 1024
    assert Limits(max_held_bytes=1000).held_bytes == 1000
    with pytest.raises(LocalProtocolError):
        Limits(max_held_bytes=0)


@pytest.mark.parametrize("when", ["before_verdict", "after_accept"])
def test_b21_repeated_connect_is_a_protocol_error(when: str) -> None:
    pair = Loopback(auto_accept=when == "after_accept")
    pair.connect()
    again = system_frame(1, message_id="again", timestamp=1, metadata={"format": "json"})
    pair.inject(encode_frame(again, Format.JSON))
    assert closed(pair.server_events).code is CloseCode.PROTOCOL_ERROR


def test_local_misuse_raises_and_changes_nothing() -> None:
    pair = Loopback(auto_accept=False)
    with pytest.raises(LocalProtocolError):
        pair.client.send_message(b"early", pair.now)
    with pytest.raises(LocalProtocolError):
        pair.server.accept(pair.now, user_id=None)
    with pytest.raises(LocalProtocolError):
        pair.server.send_ack("x", pair.now)
    assert pair.client.state is ClientState.IDLE
    assert pair.server.state is ServerState.AWAITING_CONNECT
    pair.connect()
    with pytest.raises(LocalProtocolError):
        pair.client.connect(pair.now)
    assert pair.client.data_to_send() == []


def test_client_handshake_timeout() -> None:
    pair = Loopback(
        ClientConfig(handshake_timeout=40.0), ServerConfig(auth_timeout=100.0), auto_accept=False
    )
    pair.connect()
    pair.advance(40.0)
    event = closed(pair.client_events)
    assert event.code is CloseCode.AUTH_TIMEOUT and not event.by_peer and event.may_reconnect
