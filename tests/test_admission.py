"""Device conflicts across connections: kick on the authenticated user id, KICKED then
close, CONNECT_ACK listing the kicked ids (DESIGN §3.5-3.6; bugs B1, B2, B6, B11, B12)."""

from __future__ import annotations

from flare_proto import (
    ClientConfig,
    CloseCode,
    ConnectionClosed,
    ConnectRequested,
    DeviceInfo,
    DeviceRegistry,
    Format,
    HandshakeCompleted,
    Kicked,
    Platform,
    PlatformExclusive,
    SequentialIds,
    ServerConnection,
    admit,
    decode_frame,
)
from flare_proto.testing.loopback import Loopback


class Hub:
    """A minimal in-memory server: several loopback pairs sharing one registry."""

    def __init__(self) -> None:
        self.registry = DeviceRegistry(PlatformExclusive())
        self.connections: dict[str, ServerConnection] = {}
        self.pairs: list[Loopback] = []
        self.ids = SequentialIds(wall_offset=1_730_000_000.0)

    def join(
        self,
        platform: str,
        device_id: str,
        *,
        claimed: str,
        authenticated: str | None,
        fmt: Format = Format.PROTOBUF,
    ) -> Loopback:
        device = DeviceInfo(device_id=device_id, platform=Platform.parse(platform))
        pair = Loopback(
            ClientConfig(device=device, user_id=claimed, format=fmt, force=True),
            auto_accept=False,
            ids=self.ids,
        )
        self.pairs.append(pair)
        self.connections[pair.server.connection_id] = pair.server
        pair.connect()
        assert any(isinstance(e, ConnectRequested) for e in pair.server_events)
        if authenticated is None:
            pair.server.reject(pair.now)
        else:
            for old in admit(
                pair.server, self.registry, self.connections, pair.now, user_id=authenticated
            ):
                owner = next(p for p in self.pairs if p.server is old)
                owner.pump()
        pair.pump()
        return pair


def test_ios_kicks_ios_pc_untouched() -> None:
    hub = Hub()
    ios_old = hub.join("ios", "dev-1", claimed="alice", authenticated="alice", fmt=Format.JSON)
    pc = hub.join("pc", "dev-pc", claimed="alice", authenticated="alice")
    ios_new = hub.join("iphone", "dev-2", claimed="alice", authenticated="alice")

    kicked = next(e for e in ios_old.client_events if isinstance(e, Kicked))
    assert kicked.reason == "device_conflict"
    assert kicked.platform == "IOS"
    assert kicked.new_device_id == "dev-2"
    assert kicked.message == "device conflict: user alice already online on ios"
    # KICKED went out in the old connection's own encoding (JSON), then the server closed it.
    frame, fmt, _ = decode_frame(ios_old.server_sent[-1])
    assert fmt is Format.JSON and frame.command.system.type == 10
    assert ios_old.server.closed and ios_old.server.close_code is CloseCode.KICKED
    closing = ios_old.client_events[-1]
    assert isinstance(closing, ConnectionClosed) and closing.code is CloseCode.KICKED
    assert not closing.may_reconnect
    assert not pc.server.closed and not pc.client.closed
    done = next(e for e in ios_new.client_events if isinstance(e, HandshakeCompleted))
    assert done.conflict_connections == (ios_old.server.connection_id,)


def test_b1_claimed_id_cannot_kick_another_user() -> None:
    hub = Hub()
    victim = hub.join("ios", "dev-1", claimed="alice", authenticated="alice")
    # Mallory claims to be alice but authenticates as mallory.
    hub.join("ios", "dev-9", claimed="alice", authenticated="mallory")
    assert not victim.server.closed
    assert not any(isinstance(e, Kicked) for e in victim.client_events)


def test_b2_failed_auth_kicks_nobody() -> None:
    hub = Hub()
    victim = hub.join("ios", "dev-1", claimed="alice", authenticated="alice")
    failed = hub.join("ios", "dev-2", claimed="alice", authenticated=None)
    assert failed.server.close_code is CloseCode.AUTH_FAILED
    assert not victim.server.closed
    assert len(hub.registry) == 1


def test_no_conflicts_no_metadata_key() -> None:
    hub = Hub()
    pair = hub.join("web", "w", claimed="bob", authenticated="bob")
    ack, _, _ = decode_frame(pair.server_sent[0])
    assert "conflict_connections" not in ack.command.system.metadata
    assert ack.command.system.metadata["compression"] == b"none"
