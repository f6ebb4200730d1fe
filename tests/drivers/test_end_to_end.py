"""The hub, the client and both transports together on loopback, on asyncio and trio
(issue 3 §7): handshakes in every encoding, auth, kicks across transports, racing,
reconnect with resend, slow consumers, graceful shutdown, wss with a test CA."""

from __future__ import annotations

import ssl
from pathlib import Path

import anyio
import pytest

from flare_drivers._client import Client, ConnectionState, StateChanged
from flare_drivers._hub import Accept, Connection, Hub, Reject, install_chat_room
from flare_drivers._tls import LocalCA
from flare_proto import (
    ClientConfig,
    CloseCode,
    CommandKind,
    Compression,
    ConnectRequest,
    DeviceInfo,
    Format,
    Frame,
    FrameReceived,
    Kicked,
    Platform,
    PlatformExclusive,
    ServerConfig,
    message_frame,
)

from .hubtools import running, url, wait_for

pytestmark = pytest.mark.anyio

FAST = {"race_stagger": 0.25, "backoff_base": 0.05, "backoff_cap": 0.2, "quic_verify": False}


async def first(client: Client, kind: type, timeout: float = 5.0) -> object:
    """The next event of ``kind`` from the client's iterator (bounded)."""
    with anyio.fail_after(timeout):
        async for event in client:
            if isinstance(event, kind):
                return event
    raise AssertionError(f"client ended without a {kind.__name__}")


@pytest.mark.parametrize("transport", ["ws", "quic"])
@pytest.mark.parametrize("prefer", ["client", "server"])
async def test_handshake_every_encoding(transport: str, prefer: str) -> None:
    hub = Hub(ServerConfig(prefer=prefer))  # type: ignore[arg-type]
    install_chat_room(hub)
    with anyio.fail_after(30):
        async with running(hub, [transport]) as bound:  # type: ignore[list-item]
            for fmt in Format:
                for compression in Compression:
                    for force in (False, True):
                        config = ClientConfig(format=fmt, compression=compression, force=force)
                        async with Client([url(bound, transport)], config, **FAST) as client:
                            await client.wait_connected()
                            expected = (
                                (fmt, compression)
                                if force or prefer == "client"
                                else (Format.PROTOBUF, Compression.NONE)
                            )
                            assert client.encoding == expected
                            (conn,) = hub.accepted()
                            assert (conn.core.format, conn.core.compression) == expected
                            # A 1 KiB SEND crosses the compression threshold.
                            await client.send(b"x" * 1024)
                            await client.send_custom("echo", b"ping")
                            frame = await first(client, FrameReceived)
                            assert isinstance(frame, FrameReceived)
                            assert frame.frame.command.custom.data == b"ping"
                        await wait_for(lambda: not hub.connections)


async def auth_by_token(request: ConnectRequest) -> Accept | Reject:
    users = {"good": "alice", "bob-token": "bob"}
    if request.token in users:
        return Accept(user_id=users[request.token])
    return Reject(reason="unknown token")


@pytest.mark.parametrize("transport", ["ws", "quic"])
async def test_auth_accept_and_reject(transport: str) -> None:
    hub = Hub(authenticator=auth_by_token)
    with anyio.fail_after(15):
        async with running(hub, [transport]) as bound:  # type: ignore[list-item]
            async with Client([url(bound, transport)], ClientConfig(token="good"), **FAST) as ok:
                await ok.wait_connected()
                (conn,) = hub.accepted()
                assert conn.user_id == "alice"
            bad = Client([url(bound, transport)], ClientConfig(token="nope"), **FAST)
            async with bad:
                event = await first(bad, StateChanged)
                while not (
                    isinstance(event, StateChanged) and event.state is ConnectionState.CLOSED
                ):
                    event = await first(bad, StateChanged)
            assert bad.close_code is CloseCode.AUTH_FAILED


async def test_auth_timeout_closes_and_allows_reconnect() -> None:
    async def never(request: ConnectRequest) -> Accept | Reject:
        await anyio.sleep_forever()
        raise AssertionError

    hub = Hub(ServerConfig(auth_timeout=0.3), authenticator=never)
    with anyio.fail_after(10):
        async with running(hub, ["ws"]) as bound:
            client = Client([url(bound, "ws")], reconnect=False, **FAST)
            async with client:
                with pytest.raises(Exception, match="auth_timeout"):
                    await client.wait_connected()
            assert client.close_code is CloseCode.AUTH_TIMEOUT
            assert client.close_code.reconnect


async def test_kick_across_transports() -> None:
    tokens = {"a1": "alice", "a2": "alice", "a3": "alice"}

    async def auth(request: ConnectRequest) -> Accept | Reject:
        return Accept(user_id=tokens[request.token or ""])

    def config(token: str, platform: str, device: str) -> ClientConfig:
        dev = DeviceInfo(device_id=device, platform=Platform.parse(platform))
        return ClientConfig(token=token, device=dev, user_id="alice")

    hub = Hub(authenticator=auth, strategy=PlatformExclusive())
    with anyio.fail_after(15):
        async with running(hub) as bound:
            ios_ws = Client([url(bound, "ws")], config("a1", "ios", "phone-1"), **FAST)
            pc_ws = Client([url(bound, "ws")], config("a2", "pc", "desk"), **FAST)
            ios_quic = Client([url(bound, "quic")], config("a3", "ios", "phone-2"), **FAST)
            async with ios_ws, pc_ws:
                await ios_ws.wait_connected()
                await pc_ws.wait_connected()
                async with ios_quic:
                    await ios_quic.wait_connected()
                    kicked = await first(ios_ws, Kicked)
                    assert isinstance(kicked, Kicked)
                    assert kicked.new_device_id == "phone-2" and kicked.platform == "IOS"
                    await wait_for(lambda: ios_ws.state is ConnectionState.CLOSED)
                    assert ios_ws.close_code is CloseCode.KICKED  # terminal: no reconnect
                    assert pc_ws.state is ConnectionState.CONNECTED
                    await pc_ws.send(b"still here")
                    assert sorted(c.device.device_id for c in hub.accepted() if c.device) == [
                        "desk",
                        "phone-2",
                    ]


async def test_race_quic_unreachable_ws_wins() -> None:
    hub = Hub()
    with anyio.fail_after(10):
        async with running(hub, ["ws"]) as bound:
            dead = "quic://127.0.0.1:9"  # discard port: nothing answers QUIC there
            client = Client([dead, url(bound, "ws")], connect_timeout=2.0, **FAST)
            async with client:
                await client.wait_connected()
                assert client.url == url(bound, "ws")


async def test_race_both_up_one_connect() -> None:
    hub = Hub()
    connects: list[str] = []

    @hub.on_connect
    async def seen(conn: Connection) -> None:
        connects.append(conn.transport.remote)

    with anyio.fail_after(10):
        async with running(hub) as bound:
            client = Client([url(bound, "quic"), url(bound, "ws")], **{**FAST, "race_stagger": 0})
            async with client:
                await client.wait_connected()
                await client.send(b"one")
                await anyio.sleep(0.3)
                assert len(connects) == 1
                assert len(hub.connections) == 1


async def test_race_hanging_first_transport_next_starts_after_stagger() -> None:
    """DESIGN §5: the first URL accepts TCP but never answers the upgrade; the second is
    dialled once the 0.25 s stagger has passed (at least 0.2 s after the first: it waited
    for the stagger) and long before the first's 60 s connect timeout (under 2 s), and
    wins. The bounds are wide on purpose: they separate "after the stagger" from "at
    once" and from "after the timeout", they do not measure speed."""
    import time

    from flare_drivers._transport import Transport

    class DialLog(Client):
        """Records each dial's URL and start time (``Client._dial`` is what race() runs)."""

        dials: list[tuple[str, float]]

        async def _dial(self, u: str) -> Transport:
            self.dials.append((u, time.monotonic()))
            return await super()._dial(u)

    hub = Hub()
    hang_sockets: list[object] = []

    async def hang(stream: anyio.abc.SocketStream) -> None:
        hang_sockets.append(stream)
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with (
            running(hub, ["ws"]) as bound,
            await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(listener.serve, hang)
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            hanging, live = f"ws://127.0.0.1:{port}", url(bound, "ws")
            client = DialLog([hanging, live], connect_timeout=60.0, **FAST)
            client.dials = []
            assert client.race_stagger == 0.25
            async with client:
                await client.wait_connected()
                assert client.url == live
                assert client.connect_error is None  # the race was won: the loser is no error
                assert hang_sockets  # the first attempt really started and hung
                (first_url, t_first), (second_url, t_second) = client.dials
                assert (first_url, second_url) == (hanging, live)
                assert 0.2 <= t_second - t_first < 2.0, t_second - t_first
            tg.cancel_scope.cancel()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_reconnect_after_server_restart_resends_exactly_once() -> None:
    stall = anyio.Event()
    first_hub = Hub()

    @first_hub.router.on(CommandKind.SEND)
    async def crash_midway(conn: Connection, frame: Frame) -> None:
        stall.set()
        await anyio.sleep_forever()  # the server dies before it ACKs

    second = Hub()
    received: list[bytes] = []

    @second.router.on(CommandKind.SEND)
    async def relay_when_room_present(conn: Connection, frame: Frame) -> None:
        await wait_for(lambda: len(list(second.accepted())) >= 2)
        second.broadcast(frame, exclude=conn.id)

    port = free_port()
    address = f"ws://127.0.0.1:{port}"
    acked = anyio.Event()
    with anyio.fail_after(20):
        async with Client([address], **FAST) as sender, anyio.create_task_group() as tg:

            async def send_it() -> None:
                await sender.send(b"exactly once", message_id="msg-1")
                acked.set()

            async with running(first_hub, ["ws"], port=port):
                await sender.wait_connected()
                tg.start_soon(send_it)
                await stall.wait()
            # The first server is gone with the SEND unacknowledged; a new one takes over.
            async with running(second, ["ws"], port=port), Client([address], **FAST) as room:
                await room.wait_connected()
                event = await first(room, FrameReceived, timeout=10)
                assert isinstance(event, FrameReceived)
                received.append(event.frame.command.message.payload)
                await acked.wait()
                assert event.frame.command.message.message_id == "msg-1"
                with anyio.move_on_after(0.3):  # nothing else arrives
                    extra = await first(room, FrameReceived)
                    received.append(b"duplicate: %r" % (extra,))
    assert received == [b"exactly once"]


async def test_slow_consumer_is_closed_others_unaffected() -> None:
    from flare_drivers._websocket import connect_websocket
    from flare_proto import ClientConnection, Framing

    hub = Hub(max_queue=4)
    with anyio.fail_after(20):
        async with running(hub, ["ws"]) as bound:
            # A client that completes the handshake and then never reads again.
            raw = await connect_websocket(url(bound, "ws"))
            core = ClientConnection(ClientConfig(), framing=Framing.MESSAGE)
            core.connect(0.0)
            await raw.send(core.data_to_send())
            await wait_for(lambda: len(list(hub.accepted())) == 1)
            (slow,) = hub.accepted()
            async with Client([url(bound, "ws")], **FAST) as healthy:
                await healthy.wait_connected()
                payload = b"z" * 65536
                for _ in range(2000):
                    if slow.core.closed:
                        break
                    slow.send_message(payload)
                    await anyio.sleep(0)
                assert slow.core.close_code is CloseCode.SLOW_CONSUMER
                await healthy.send(b"fine")
                await wait_for(lambda: slow.id not in hub.connections)
            await raw.aclose(None, "")


async def test_graceful_shutdown() -> None:
    hub = Hub()
    with anyio.fail_after(10):
        async with running(hub) as bound:
            a = Client([url(bound, "ws")], reconnect=False, **FAST)
            b = Client([url(bound, "quic")], reconnect=False, **FAST)
            async with a, b:
                await a.wait_connected()
                await b.wait_connected()
                await hub.shutdown(grace=5)
                assert not hub.connections
                await wait_for(lambda: a.state is b.state is ConnectionState.CLOSED)
                assert a.close_code is b.close_code is CloseCode.SERVER_SHUTDOWN


async def test_wss_with_test_ca(tmp_path: Path) -> None:
    ca = LocalCA.create()
    leaf = ca.issue()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(leaf.cert_pem)
    key.write_bytes(leaf.key_pem)
    hub = Hub()
    with anyio.fail_after(10):
        async with running(hub, ["wss"], certfile=str(cert), keyfile=str(key)) as bound:
            trusting = ssl.create_default_context(cadata=ca.cert_pem.decode())
            async with Client([url(bound, "wss")], ssl_context=trusting, **FAST) as client:
                await client.wait_connected()
                await client.send(b"secure")
            distrusting = Client([url(bound, "wss")], reconnect=False, **FAST)
            async with distrusting:
                with pytest.raises(Exception, match="closed"):
                    await distrusting.wait_connected()


async def test_server_full_send_to_user_kick_and_hooks() -> None:
    hub = Hub(max_connections=2)
    events: list[str] = []

    @hub.on_connect
    async def joined(conn: Connection) -> None:
        events.append(f"connect {conn.user_id}")

    @hub.on_disconnect
    async def left(conn: Connection) -> None:
        events.append(f"disconnect {conn.user_id} {conn.core.close_code}")

    with anyio.fail_after(15):
        async with running(hub, ["ws"]) as bound:
            a = Client([url(bound, "ws")], ClientConfig(user_id="ann"), **FAST)
            b = Client([url(bound, "ws")], ClientConfig(user_id="ben"), **FAST)
            extra = Client([url(bound, "ws")], reconnect=False, **FAST)
            async with a, b:
                await a.wait_connected()
                await b.wait_connected()
                async with extra:
                    with pytest.raises(Exception, match="server_full"):
                        await extra.wait_connected()
                assert extra.close_code is CloseCode.SERVER_FULL and extra.close_code.reconnect
                frame = message_frame(2, message_id="to-ben", timestamp=1, payload=b"hi ben")
                assert hub.send_to_user("ben", frame) == 1
                got = await first(b, FrameReceived)
                assert isinstance(got, FrameReceived)
                assert got.frame.command.message.payload == b"hi ben"
                (ann,) = [c for c in hub.accepted() if c.user_id == "ann"]
                assert hub.kick(ann.id, "bye")
                kicked = await first(a, Kicked)
                assert isinstance(kicked, Kicked) and kicked.message == "bye"
                await wait_for(lambda: a.state is ConnectionState.CLOSED)
                assert a.close_code is CloseCode.KICKED
                assert not hub.kick(ann.id)
            await wait_for(lambda: len(events) == 4)
    assert sorted(events[:2]) == ["connect ann", "connect ben"]
    assert "disconnect ann CloseCode.KICKED" in events
