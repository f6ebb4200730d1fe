"""PING/PONG, RTT, client liveness, background interval, server idle deadline
(DESIGN §4; bugs B7, B9, B11)."""

from __future__ import annotations

from flare_proto import (
    ClientConfig,
    CloseCode,
    Compression,
    ConnectionClosed,
    Format,
    Framing,
    PongReceived,
    ServerConfig,
    SystemCommand,
    decode_frame,
)
from flare_proto.testing.loopback import Loopback


def last_close(events: list[object]) -> ConnectionClosed:
    assert isinstance(events[-1], ConnectionClosed)
    return events[-1]


def test_ping_every_interval_and_pong_rtt(framing: Framing) -> None:
    pair = Loopback(framing=framing)
    pair.connect()
    assert pair.client.next_deadline() == 30.0
    pair.advance(30.0)
    pongs = [e for e in pair.client_events if isinstance(e, PongReceived)]
    assert len(pongs) == 1
    assert pair.client.rtt == 0.0
    pair.advance(60.0)
    assert sum(isinstance(e, PongReceived) for e in pair.client_events) == 3
    assert not pair.client.closed and not pair.server.closed


def test_rtt_measures_the_delay() -> None:
    pair = Loopback()
    pair.connect()
    pair.advance(30.0)
    pair.client.data_to_send()  # nothing pending; now hold the next PING back
    pair.now = 60.0
    pair.client.handle_timer(pair.now)
    ping = pair.client.data_to_send()
    pair.now = 60.25
    for chunk in ping:
        pair.server.receive_message(chunk, pair.now)
    for chunk in pair.server.data_to_send():
        pair.client.receive_message(chunk, pair.now)
    assert pair.client.rtt == 0.25


def test_b9_pong_uses_negotiated_encoding() -> None:
    pair = Loopback(ClientConfig(format=Format.JSON, force=True))
    pair.connect()
    pair.advance(30.0)
    pong = pair.server_sent[-1]
    frame, fmt, _ = decode_frame(pong)
    assert frame.command.system.type == SystemCommand.PONG  # type: ignore[attr-defined]
    assert fmt is Format.JSON


def test_b7_client_liveness_fires_when_server_goes_silent(framing: Framing) -> None:
    pair = Loopback(framing=framing)
    pair.connect()
    pair.server.data_to_send()
    # Cut the wire: the client keeps pinging into the void.
    pair._client.transport_closed = True
    pair.client.handle_timer(30.0)
    pair.client.handle_timer(60.0)
    assert not pair.client.closed
    pair.client.handle_timer(90.0)
    event = last_close(pair.client.events_received())
    assert event.code is CloseCode.HEARTBEAT_TIMEOUT
    assert event.may_reconnect and not event.by_peer


def test_any_inbound_frame_counts_as_liveness() -> None:
    pair = Loopback(
        ClientConfig(heartbeat_interval=1000.0, heartbeat_timeout=90.0),
        ServerConfig(idle_timeout=10_000.0),
    )
    pair.connect()
    for _ in range(5):
        pair.advance(60.0)
        pair.server.send_message(b"push", pair.now)
        pair.pump()
    assert not pair.client.closed


def test_background_interval_switch() -> None:
    pair = Loopback()
    pair.connect()
    pair.client.set_background(True, pair.now)
    assert pair.client.next_deadline() == 120.0
    assert pair.client.liveness_timeout == 360.0
    pair.advance(100.0)
    pair.client.set_background(False, pair.now)
    # Overdue in the foreground: ping now; the switch restarts the liveness window.
    assert pair.client.next_deadline() == 100.0
    pair.advance(0.0)
    assert sum(isinstance(e, PongReceived) for e in pair.client_events) == 1
    assert pair.client.next_deadline() == 130.0


def test_b11_server_idle_deadline_is_exact(framing: Framing) -> None:
    server = ServerConfig(idle_timeout=300.0)
    pair = Loopback(
        ClientConfig(heartbeat_interval=1000.0, heartbeat_timeout=2000.0), server, framing=framing
    )
    pair.connect()
    assert pair.server.next_deadline() == 300.0
    pair.advance(299.0)
    assert not pair.server.closed
    pair.client.send_data(b"x", pair.now)  # any frame resets the deadline
    pair.pump()
    assert pair.server.next_deadline() == 599.0
    pair.advance(300.0)
    event = last_close(pair.server_events)
    assert event.code is CloseCode.HEARTBEAT_TIMEOUT and not event.by_peer
    client_event = last_close(pair.client_events)
    assert client_event.code is CloseCode.HEARTBEAT_TIMEOUT and client_event.by_peer


def test_compressed_heartbeat_frames_stay_plain_below_threshold() -> None:
    pair = Loopback(ClientConfig(compression=Compression.GZIP))
    pair.connect()
    pair.advance(30.0)
    _, _, compression = decode_frame(pair.client_sent[-1])
    assert compression is Compression.NONE
