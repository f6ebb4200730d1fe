"""Writes made at once, without the writer task (``flare_drivers._tcp``, ``send_nowait``).

* :class:`~flare_drivers._tcp.TcpStream`: a byte stream over our own non-blocking socket —
  partial writes when the kernel buffer is full, end of stream, closing wakes a reader,
  connecting to a closed port fails with ``OSError``.
* :meth:`WebSocketTransport.send_nowait`: what the kernel does not take is kept as a
  backlog and goes out first with the next send, so messages stay whole and in order.
* The driver writes another task's output at once when its writer is idle (a broadcast,
  a send from the application), falls back to the writer otherwise (TLS), and keeps the
  order of everything, backlog included.
"""

from __future__ import annotations

import socket

import anyio
import anyio.lowlevel
import pytest

from flare_drivers import Hub, connect_websocket
from flare_drivers._clock import now
from flare_drivers._loop import ConnectionDriver
from flare_drivers._tcp import connect_tcp
from flare_drivers._transport import TransportClosed
from flare_drivers._websocket import WebSocketTransport, serve_websocket
from flare_proto import ClientConfig, ClientConnection, Format, HandshakeCompleted, ServerConfig

from .hubtools import running, stream_pair, url

pytestmark = pytest.mark.anyio



async def test_tcp_stream_round_trip_and_end_of_stream() -> None:
    client, server = await stream_pair()
    with anyio.fail_after(5):
        await client.send(b"hello")
        assert await server.receive() == b"hello"
        await client.send_eof()
        with pytest.raises(anyio.EndOfStream):
            await server.receive()
        await server.send(b"still open this way")
        assert await client.receive() == b"still open this way"
    await client.aclose()
    await server.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        await client.receive()
    with pytest.raises(anyio.ClosedResourceError):
        client.send_nowait(b"x")


async def test_tcp_stream_partial_write_then_send_completes() -> None:
    client, server = await stream_pair()
    client._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = bytes(range(256)) * 16384  # 4 MiB: more than the socket buffers hold
    sent = client.send_nowait(big)
    assert 0 < sent < len(big)
    got = bytearray()

    async def read_all() -> None:
        while len(got) < len(big):
            got.extend(await server.receive())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_all)
            await client.send(big[sent:])
    assert bytes(got) == big
    await client.aclose()
    await server.aclose()


async def test_tcp_stream_close_wakes_a_waiting_reader() -> None:
    client, server = await stream_pair()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def read() -> None:
                with pytest.raises(anyio.ClosedResourceError):
                    await server.receive()

            tg.start_soon(read)
            await anyio.sleep(0.05)
            await server.aclose()
    await client.aclose()


async def test_connect_tcp_to_a_closed_port_fails() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now
    with anyio.fail_after(5), pytest.raises(OSError):
        await connect_tcp("127.0.0.1", port)


async def test_websocket_send_nowait_backlog_keeps_messages_whole_and_ordered() -> None:
    """A peer that does not read: send_nowait takes a big message, keeps what the kernel
    refused as a backlog, and later messages (send) follow it whole and in order."""
    got: list[bytes] = []
    done = anyio.Event()
    reading = anyio.Event()

    async def handler(transport: WebSocketTransport) -> None:
        await reading.wait()  # let the client's writes pile up first
        while len(got) < 3:
            item = await transport.receive()
            if isinstance(item, TransportClosed):
                break
            got.append(item)
        done.set()

    big = bytes(range(256)) * 32768  # 8 MiB
    async with anyio.create_task_group() as tg:
        address = await tg.start(serve_websocket, handler)
        with anyio.fail_after(15):
            client = await connect_websocket(f"ws://{address}", max_message=64 << 20)
            assert client.send_nowait([b"first"])
            assert client.backlog == 0
            assert client.send_nowait([big])
            assert client.backlog > 0  # the kernel buffers could not hold 8 MiB
            assert not client.send_nowait([b"not now"])  # a backlog: use send()
            reading.set()
            await client.send([b"last"])  # writes the backlog first
            assert client.backlog == 0
            await done.wait()
            await client.aclose(None, "")
        tg.cancel_scope.cancel()
    assert got == [b"first", big, b"last"]


async def test_driver_writes_other_tasks_output_at_once_in_order() -> None:
    """While the reader waits for input, frames sent from another task go out through
    send_nowait (no writer wake-up), and a burst of them arrives whole and in order."""
    server_config = ServerConfig(default_format=Format.PROTOBUF)
    hub = Hub(server_config)
    async with running(hub, ("ws",)) as bound:
        transport = await connect_websocket(url(bound, "ws"))
        core = ClientConnection(ClientConfig(format=Format.PROTOBUF))
        core.connect(now())
        await transport.send(core.data_to_send())
        with anyio.fail_after(5):
            while True:
                item = await transport.receive()
                assert not isinstance(item, TransportClosed)
                core.receive_message(item, now())
                if any(isinstance(e, HandshakeCompleted) for e in core.events_received()):
                    break
            (conn,) = list(hub.accepted())
            direct = 0
            original = conn.driver._write_now

            def counting(chunks: list[bytes]) -> bool:
                nonlocal direct
                direct += 1
                return original(chunks)

            conn.driver._write_now = counting  # type: ignore[method-assign]
            await anyio.sleep(0.05)  # the server's reader is waiting for input now
            payloads = [i.to_bytes(4, "big") * 100 for i in range(200)]
            for payload in payloads:
                conn.send_message(payload)
            received: list[bytes] = []
            while len(received) < len(payloads):
                item = await transport.receive()
                assert not isinstance(item, TransportClosed)
                core.receive_message(item, now())
                for event in core.events_received():
                    frame = getattr(event, "frame", None)
                    if frame is not None:
                        received.append(frame.command.message.payload)
        assert received == payloads
        assert direct >= len(payloads)  # each send went out at once
        await transport.aclose(None, "")


async def test_driver_falls_back_to_the_writer_when_the_transport_cannot() -> None:
    """send_nowait saying no (TLS, a write in progress) must not lose the frames."""

    class Refusing:
        framing = None

        def __init__(self) -> None:
            self.sent: list[list[bytes]] = []

        def send_nowait(self, chunks: list[bytes]) -> bool:
            return False

        async def send(self, chunks: list[bytes]) -> None:
            self.sent.append(list(chunks))

        async def receive(self) -> bytes | TransportClosed:
            await anyio.sleep_forever()
            raise AssertionError

        async def aclose(self, number: int | None = None, reason: str = "") -> None:
            pass

    from flare_proto import Framing, ServerConnection

    refusing = Refusing()
    refusing.framing = Framing.MESSAGE  # type: ignore[assignment]
    core = ServerConnection(ServerConfig(), now=now())
    driver = ConnectionDriver(core, refusing, lambda e: anyio.sleep(0))  # type: ignore[arg-type]
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(driver.run)
            await anyio.sleep(0.05)  # reader waiting, writer idle
            core.close(now())
            driver.flush()
    assert refusing.sent, "the CLOSE frame must reach the transport through the writer"


async def test_readiness_stays_registered_while_waited_for_and_lets_go_when_not(
    anyio_backend: str,
) -> None:
    """asyncio: the socket stays registered between waits (no epoll_ctl per message); data
    nobody waits for unregisters it after two loop passes (it would fire on every pass),
    and the next wait registers it again and gets the data."""
    if anyio_backend != "asyncio":
        pytest.skip("the persistent registration is asyncio's")
    client, server = await stream_pair()
    with anyio.fail_after(5):
        await client.send(b"one")
        assert await server.receive() == b"one"
        await client.send(b"two")
        assert await server.receive() == b"two"  # waited: registered now
        readiness = server._readiness
        assert readiness is not None and readiness.registered
        await client.send(b"three")
        for _ in range(5):  # nobody waits while it is readable
            await anyio.lowlevel.checkpoint()
        assert not readiness.registered
        assert await server.receive() == b"three"
    await client.aclose()
    await server.aclose()


async def test_a_handler_that_waits_does_not_hold_back_earlier_acks() -> None:
    """Two SENDs in one read: while the handler of the second waits, the ACK of the first
    (queued by the reading task) goes out anyway."""
    from flare_proto import CommandKind, MessageAcked

    release = anyio.Event()
    hub = Hub(ServerConfig(default_format=Format.PROTOBUF))

    @hub.router.on(CommandKind.SEND)
    async def handler(conn: object, frame: object) -> None:
        payload = frame.command.message.payload  # type: ignore[attr-defined]
        if payload == b"slow":
            await release.wait()

    async with running(hub, ("ws",)) as bound:
        transport = await connect_websocket(url(bound, "ws"))
        core = ClientConnection(ClientConfig(format=Format.PROTOBUF))
        core.connect(now())
        await transport.send(core.data_to_send())
        with anyio.fail_after(5):
            while not any(isinstance(e, HandshakeCompleted) for e in core.events_received()):
                item = await transport.receive()
                assert not isinstance(item, TransportClosed)
                core.receive_message(item, now())
            fast = core.send_message(b"fast", now())
            core.send_message(b"slow", now())
            await transport.send(core.data_to_send())  # one write: one read on the server
            acked: list[str] = []
            while not acked:
                item = await transport.receive()
                assert not isinstance(item, TransportClosed)
                core.receive_message(item, now())
                acked += [
                    e.message_id for e in core.events_received() if isinstance(e, MessageAcked)
                ]
            assert acked == [fast]  # while the second handler still waits
            assert not release.is_set()
            release.set()
        await transport.aclose(None, "")
