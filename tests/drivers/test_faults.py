"""Faults (issue 5 §3), on asyncio and trio where in-process: peers that vanish, a server
process killed and restarted under unacknowledged SENDs, QUIC over a lossy reordering
network (``netshim.UdpShim``), and a QUIC peer that stops reading."""

from __future__ import annotations

import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

from flare_drivers._client import Client, ConnectionState, StateChanged
from flare_drivers._clock import now
from flare_drivers._hub import Connection, Hub, install_chat_room
from flare_drivers._quic import QuicTransport, connect_quic
from flare_drivers._transport import TransportClosed
from flare_proto import (
    ClientConfig,
    ClientConnection,
    CloseCode,
    Format,
    FrameReceived,
    Framing,
    ServerConfig,
    decode_frame,
)
from flare_proto._frames import CLOSE, CONNECT_ACK

from .helpers import ServeProcess, free_udp_port
from .hubtools import running, url, wait_for
from .netshim import UdpShim
from .test_hostile import (
    FAST,
    HUGE,
    LIMITS,
    Kind,
    RawPeer,
    arena,
    connect_bytes,
    system_type,
)

pytestmark = pytest.mark.anyio

KINDS: list[Kind] = ["ws", "quic"]
IDLE = 1.0
MiB = 1024 * 1024
STREAM = Framing.STREAM
PROTOBUF = ClientConfig(format=Format.PROTOBUF)


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


# -- a client that vanishes -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_silent_client_gets_heartbeat_timeout(kind: Kind) -> None:
    """A peer that completes the handshake and then sends nothing (socket open) is closed
    by the server's exact idle deadline: CLOSE heartbeat_timeout / 4007, not before
    ``idle_timeout``; the good clients (which PING) are unaffected."""
    with anyio.fail_after(20):
        async with arena(ServerConfig(limits=LIMITS, idle_timeout=IDLE)) as a:
            peer = await RawPeer.open(a.bound, kind)
            await peer.handshake()
            accepted = anyio.current_time()
            frames = await peer.until_closed(timeout=IDLE + 5)
            elapsed = anyio.current_time() - accepted
            assert [system_type(f) for f in frames] == [CLOSE]
            assert frames[0].command.system.metadata["code"] == b"heartbeat_timeout"
            assert peer.closed is not None
            assert peer.closed.number == CloseCode.HEARTBEAT_TIMEOUT.number
            assert IDLE * 0.9 <= elapsed < IDLE + 4.0, elapsed
            await a.check_good()


async def _raw_ws_connected(address: str) -> tuple[anyio.abc.SocketStream, WSConnection]:
    """A bare wsproto client that completed the flare handshake (CONNECT_ACK read)."""
    host, port = host_port(address)
    stream = await anyio.connect_tcp(host, port)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send(ws.send(Request(host=address, target="/")))
    acked = upgraded = False
    while not acked:
        ws.receive_data(await stream.receive())
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                upgraded = True
                await stream.send(ws.send(BytesMessage(data=connect_bytes())))
            elif isinstance(event, BytesMessage):
                assert upgraded
                frame = decode_frame(bytes(event.data), HUGE)[0]
                acked = system_type(frame) == CONNECT_ACK
    return stream, ws


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_abrupt_tcp_drop_leaves_the_hub(how: str) -> None:
    """A WebSocket peer whose TCP connection goes away without a Close frame (FIN, or a
    reset) is noticed at once (long before the idle deadline) and leaves the hub; its
    on_disconnect hook runs with no close code."""
    gone: list[tuple[str, CloseCode | None]] = []
    with anyio.fail_after(20):
        async with arena(ServerConfig(limits=LIMITS, idle_timeout=60.0)) as a:

            @a.hub.on_disconnect
            async def left(conn: Connection) -> None:
                gone.append((conn.id, conn.core.close_code))

            stream, _ = await _raw_ws_connected(a.bound["ws"])
            await wait_for(lambda: len(a.connects) == 3)
            victim = a.connects[-1]
            assert victim in a.hub.connections
            if how == "rst":
                raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
            dropped = anyio.current_time()
            await anyio.aclose_forcefully(stream)
            await wait_for(lambda: victim not in a.hub.connections, timeout=3)
            assert anyio.current_time() - dropped < 3
            await wait_for(lambda: bool(gone))
            assert gone == [(victim, None)]
            await a.check_good()


@asynccontextmanager
async def shimmed(target: str, **options: object) -> AsyncIterator[tuple[UdpShim, str]]:
    """A :class:`UdpShim` in front of ``target`` (``host:port``); yields it and its address."""
    shim = UdpShim(host_port(target), **options)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        address = await tg.start(shim.run)
        try:
            yield shim, address
        finally:
            tg.cancel_scope.cancel()


async def test_quic_client_vanishes_from_the_network() -> None:
    """A QUIC peer whose network disappears (every datagram dropped, no CONNECTION_CLOSE)
    is closed by the idle deadline with heartbeat_timeout and leaves the hub."""
    gone: list[tuple[str, CloseCode | None]] = []
    with anyio.fail_after(20):
        async with arena(ServerConfig(limits=LIMITS, idle_timeout=IDLE)) as a:

            @a.hub.on_disconnect
            async def left(conn: Connection) -> None:
                gone.append((conn.id, conn.core.close_code))

            async with shimmed(a.bound["quic"]) as (shim, address):
                peer = RawPeer(await connect_quic(f"quic://{address}", verify=False), "quic")
                await peer.handshake()
                await wait_for(lambda: len(a.connects) == 3)
                victim = a.connects[-1]
                shim.blackhole = True
                vanished = anyio.current_time()
                await wait_for(lambda: victim not in a.hub.connections, timeout=IDLE + 8)
                elapsed = anyio.current_time() - vanished
                assert IDLE * 0.9 <= elapsed < IDLE + 6, elapsed
                assert gone == [(victim, CloseCode.HEARTBEAT_TIMEOUT)]
                assert shim.stats["up_blackholed"] + shim.stats["down_blackholed"] > 0
                with anyio.move_on_after(0.5):  # nothing reaches it any more
                    await peer.aclose()
            await a.check_good()


# -- the server process killed and restarted --------------------------------------------------


async def test_server_killed_and_restarted_resends_pending_send_once() -> None:
    """``flare serve`` is frozen (SIGSTOP) while a SEND is on its way, then killed
    (SIGKILL) and restarted on the same ports. Both clients reconnect by themselves; the
    pending SEND is resent with its original id, ACKed, and delivered to the room exactly
    once. (The sender reaches the QUIC port through a shim we keep dark until the room
    is back, so the relay has someone to deliver to.)"""
    ws_port, quic_port = free_tcp_port(), free_udp_port()
    args = ("--ws", f"127.0.0.1:{ws_port}", "--quic", f"127.0.0.1:{quic_port}")
    lively = {"heartbeat_interval": 0.25, "heartbeat_timeout": 1.0, "ack_timeout": 30.0}
    payloads: list[bytes] = []
    room_states: list[ConnectionState] = []
    sender_states: list[ConnectionState] = []
    servers = [ServeProcess(*args)]
    try:
        with anyio.fail_after(40):
            async with (
                shimmed(f"127.0.0.1:{quic_port}") as (shim, shim_address),
                Client(
                    [f"quic://{shim_address}"],
                    ClientConfig(user_id="sender", **lively),  # type: ignore[arg-type]
                    connect_timeout=1.0,
                    **FAST,
                ) as sender,
                Client(
                    [f"ws://127.0.0.1:{ws_port}"],
                    ClientConfig(user_id="room", **lively),  # type: ignore[arg-type]
                    **FAST,
                ) as room,
                anyio.create_task_group() as tg,
            ):

                async def collect() -> None:
                    async for event in room:
                        if isinstance(event, FrameReceived):
                            payloads.append(event.frame.command.message.payload)
                        elif isinstance(event, StateChanged):
                            room_states.append(event.state)

                async def watch_sender() -> None:
                    async for event in sender:
                        if isinstance(event, StateChanged):
                            sender_states.append(event.state)

                tg.start_soon(collect)
                tg.start_soon(watch_sender)
                await sender.wait_connected()
                await room.wait_connected()
                await sender.send(b"warm-up")
                await wait_for(lambda: payloads == [b"warm-up"])

                servers[0].proc.send_signal(signal.SIGSTOP)
                acked: list[str] = []

                async def pending() -> None:
                    acked.append(await sender.send(b"exactly once", message_id="pending-1"))

                tg.start_soon(pending)
                await anyio.sleep(0.3)  # on the wire, not acknowledged
                assert not acked
                shim.blackhole = True
                servers[0].proc.kill()
                await anyio.to_thread.run_sync(servers[0].proc.wait)
                reconnects = room_states.count(ConnectionState.CONNECTED)
                servers.append(await anyio.to_thread.run_sync(lambda: ServeProcess(*args)))
                await wait_for(
                    lambda: room_states.count(ConnectionState.CONNECTED) > reconnects, timeout=10
                )
                shim.blackhole = False
                await wait_for(lambda: acked == ["pending-1"], timeout=15)
                await wait_for(lambda: len(payloads) == 2)
                await anyio.sleep(0.5)  # a duplicate would arrive by now
                assert payloads == [b"warm-up", b"exactly once"]
                assert sender.state is ConnectionState.CONNECTED
                # Both really went through a new connection to the new process.
                for states in (sender_states, room_states):
                    assert ConnectionState.RECONNECTING in states, states
                    assert states.count(ConnectionState.CONNECTED) >= 2, states
                tg.cancel_scope.cancel()
    finally:
        for server in servers:
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGCONT)
            server.close()


# -- QUIC over a lossy, reordering network ----------------------------------------------------


async def test_quic_loss_and_reordering_delivers_everything_in_order() -> None:
    """Sender and room both reach the hub through a shim dropping ~10 % of datagrams and
    delaying another ~10 % (so later ones overtake them), seeded: 200 SENDs are all
    ACKed and reach the room complete and in order."""
    count = 200
    hub = Hub()
    install_chat_room(hub)
    received: list[bytes] = []
    with anyio.fail_after(60):
        async with (
            running(hub, ["quic"]) as bound,
            shimmed(bound["quic"], loss=0.1, reorder=0.1, seed=20240805) as (shim, address),
        ):
            room = Client([f"quic://{address}"], ClientConfig(user_id="room"), **FAST)
            sender = Client([f"quic://{address}"], ClientConfig(user_id="sender"), **FAST)
            async with room, sender, anyio.create_task_group() as tg:

                async def collect() -> None:
                    async for event in room:
                        if isinstance(event, FrameReceived):
                            received.append(event.frame.command.message.payload)

                tg.start_soon(collect)
                await room.wait_connected()
                await sender.wait_connected()
                await wait_for(lambda: len(list(hub.accepted())) == 2)
                for i in range(count):
                    await sender.send(b"message %03d" % i)
                await wait_for(lambda: len(received) >= count, timeout=20)
                assert received == [b"message %03d" % i for i in range(count)]
                # Both connections survived the whole run: no reconnect hid the losses.
                assert sender.state is room.state is ConnectionState.CONNECTED
                assert len(hub.connections) == 2
                tg.cancel_scope.cancel()
    stats = shim.stats
    for direction in ("up", "down"):
        assert stats[f"{direction}_dropped"] >= 10, stats
        assert stats[f"{direction}_delayed"] >= 10, stats


# -- a QUIC peer that stops reading -----------------------------------------------------------


async def test_slow_quic_reader_is_closed_others_unaffected() -> None:
    """A QUIC peer that completes the handshake and then never reads: its flow of SENDs
    backs up (1 MiB unacknowledged, then the 4-batch queue) and the server closes it with
    slow_consumer, while the same flow to a reading QUIC peer goes on; the other clients
    do not wait for it. When the slow peer finally reads it gets what was delivered, then
    the close code 4008 (QUIC application error code). That last step takes seconds: the
    peer's RTT estimate, fed a long sample by its own silence, sets aioquic's draining
    period (3 PTO) before the termination is reported."""
    hub = Hub(max_queue=4)
    with anyio.fail_after(30):
        async with running(hub, ["quic", "ws"]) as bound:
            raw: QuicTransport = await connect_quic(url(bound, "quic"), verify=False)
            core = ClientConnection(PROTOBUF, framing=STREAM)
            core.connect(now())
            await raw.send(core.data_to_send())  # then nobody pumps: nothing is read
            await wait_for(lambda: len(list(hub.accepted())) == 1)
            (slow,) = hub.accepted()
            async with (
                Client([url(bound, "quic")], PROTOBUF, **FAST) as healthy_quic,
                Client([url(bound, "ws")], **FAST) as healthy_ws,
            ):
                await healthy_quic.wait_connected()
                await healthy_ws.wait_connected()
                (fast,) = [
                    c for c in hub.accepted() if c is not slow and c.transport.framing is STREAM
                ]
                payload = b"z" * 65536
                sent = 0
                while not slow.core.closed and not fast.core.closed and sent < 100:
                    # Paced, so the writer keeps up with us: only the peer can fall behind.
                    slow.send_message(payload)
                    fast.send_message(payload)  # the same flow to a peer that reads
                    sent += 1
                    await anyio.sleep(0.02)
                assert slow.core.close_code is CloseCode.SLOW_CONSUMER
                # Overflow came once 1 MiB was unacknowledged (QUIC backpressure), not before.
                assert sent * len(payload) > MiB, sent
                assert not fast.core.closed, fast.core.close_code
                with anyio.fail_after(2):
                    await healthy_quic.send(b"fine")
                    await healthy_ws.send(b"fine")
                # The slow peer reads at last: what was delivered, then the close code.
                with anyio.fail_after(15):
                    while not isinstance(item := await raw.receive(), TransportClosed):
                        pass
                assert item.number == CloseCode.SLOW_CONSUMER.number, item
                await wait_for(lambda: slow.id not in hub.connections, timeout=10)
            await raw.aclose(None, "")
