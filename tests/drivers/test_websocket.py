"""WebSocket transport on loopback, both anyio backends: framing, close codes, HTTP on the
same port, wss, control frames, and a full client/server core pair over the driver loop."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import anyio.abc
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from flare_drivers._clock import now, process_ids
from flare_drivers._loop import ConnectionDriver
from flare_drivers._tls import LocalCA, client_context, self_signed, server_context
from flare_drivers._transport import TransportClosed
from flare_drivers._websocket import (
    WebSocketHandshakeError,
    WebSocketTransport,
    connect_websocket,
    serve_websocket,
)
from flare_proto import (
    ClientConfig,
    ClientConnection,
    CloseCode,
    CommandKind,
    ConnectionClosed,
    ConnectRequested,
    FrameReceived,
    HandshakeCompleted,
    Limits,
    MessageAcked,
    ServerConfig,
    ServerConnection,
)
from flare_proto import Event as CoreEvent

pytestmark = pytest.mark.anyio

Handler = Callable[[WebSocketTransport], Awaitable[None]]
MiB = 1024 * 1024


@asynccontextmanager
async def serving(handler: Handler, **options: Any) -> AsyncIterator[str]:
    """Run serve_websocket in a task group; yields its ``host:port``; cancels it after."""
    async with anyio.create_task_group() as tg:
        address: str = await tg.start(partial(serve_websocket, handler, **options))
        yield address
        tg.cancel_scope.cancel()


async def echo(transport: WebSocketTransport) -> None:
    while not isinstance(message := await transport.receive(), TransportClosed):
        await transport.send([message])


async def receive_bytes(transport: WebSocketTransport) -> bytes:
    message = await transport.receive()
    assert isinstance(message, bytes), message
    return message


async def raw_client(address: str) -> tuple[anyio.abc.SocketStream, WSConnection]:
    """A bare wsproto client, to send what WebSocketTransport never would."""
    host, port = address.rsplit(":", 1)
    stream = await anyio.connect_tcp(host, int(port))
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send(ws.send(Request(host=address, target="/")))
    await raw_until(stream, ws, AcceptConnection)
    return stream, ws


async def raw_until(
    stream: anyio.abc.ByteStream, ws: WSConnection, kind: type[Event]
) -> list[Event]:
    """wsproto events up to and including the first ``kind``."""
    seen: list[Event] = []
    while True:
        for event in ws.events():
            seen.append(event)
            if isinstance(event, kind):
                return seen
        ws.receive_data(await stream.receive())


async def read_to_eof(stream: anyio.abc.ByteStream) -> bytes:
    data = b""
    try:
        while True:
            data += await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return data


async def http(address: str, request: bytes) -> bytes:
    host, port = address.rsplit(":", 1)
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(request)
        return await read_to_eof(stream)


# -- framing ----------------------------------------------------------------------------


async def test_echo_round_trip_in_order() -> None:
    messages = [b"first", b"", b"\x00" * MiB, bytes(range(256)), b"last"]
    with anyio.fail_after(10):
        async with serving(echo) as address:
            client = await connect_websocket(f"ws://{address}/any/path?x=1")
            assert client.remote == address
            await client.send(messages[:2])  # one write, two messages
            for message in messages[2:]:
                await client.send([message])
            assert [await receive_bytes(client) for _ in messages] == messages
            await client.aclose(None, "")


async def test_text_and_fragmented_messages_arrive_as_bytes() -> None:
    with anyio.fail_after(10):
        async with serving(echo) as address:
            stream, ws = await raw_client(address)
            out = ws.send(TextMessage(data="héllo"))
            out += ws.send(BytesMessage(data=b"abc", message_finished=False))
            out += ws.send(BytesMessage(data=b"", message_finished=False))
            out += ws.send(BytesMessage(data=b"def", message_finished=True))
            out += ws.send(TextMessage(data="é", message_finished=False))
            out += ws.send(TextMessage(data="ß", message_finished=True))
            await stream.send(out)
            got = []
            for _ in range(3):
                events = await raw_until(stream, ws, Message)
                message = events[-1]
                assert isinstance(message, BytesMessage)  # always Binary back
                got.append(bytes(message.data))
            assert got == ["héllo".encode(), b"abcdef", "éß".encode()]
            await stream.aclose()


async def test_oversize_message_reaches_handler_as_max_plus_one() -> None:
    received: list[bytes] = []

    async def record(transport: WebSocketTransport) -> None:
        while not isinstance(message := await transport.receive(), TransportClosed):
            received.append(message)

    with anyio.fail_after(10):
        async with serving(record, max_message=1000) as address:
            stream, ws = await raw_client(address)
            out = ws.send(BytesMessage(data=b"a" * 1000))  # exactly the limit: whole
            out += ws.send(BytesMessage(data=b"b" * 5000))
            for _ in range(4):  # fragmented, over the limit in its third fragment
                out += ws.send(BytesMessage(data=b"c" * 400, message_finished=False))
            out += ws.send(BytesMessage(data=b"c", message_finished=True))
            out += ws.send(BytesMessage(data=b"next"))
            await stream.send(out + ws.send(CloseConnection(code=1000)))
            await raw_until(stream, ws, CloseConnection)
            await stream.aclose()
    assert received == [b"a" * 1000, b"b" * 1001, b"c" * 1001, b"next"]


async def test_receive_is_cancel_safe() -> None:
    messages = [str(i).encode() * 100 for i in range(300)]
    received: list[bytes] = []
    done = anyio.Event()

    async def impatient(transport: WebSocketTransport) -> None:
        while len(received) < len(messages):
            with anyio.move_on_after(0.0005):  # cut reads short all the time
                message = await transport.receive()
                assert isinstance(message, bytes)
                received.append(message)
        done.set()

    with anyio.fail_after(10):
        async with serving(impatient) as address:
            client = await connect_websocket(f"ws://{address}/")
            for i in range(0, len(messages), 7):
                await client.send(messages[i : i + 7])
                await anyio.sleep(0)
            await done.wait()
            await client.aclose(None, "")
    assert received == messages


# -- closing --------------------------------------------------------------------------------


async def test_server_close_code_reaches_client() -> None:
    async def kick(transport: WebSocketTransport) -> None:
        await transport.aclose(CloseCode.KICKED.number, CloseCode.KICKED.code)

    with anyio.fail_after(10):
        async with serving(kick) as address:
            client = await connect_websocket(f"ws://{address}/")
            assert await client.receive() == TransportClosed(4011, "kicked")
            assert await client.receive() == TransportClosed(4011, "kicked")  # sticky
            with pytest.raises(anyio.BrokenResourceError):
                await client.send([b"late"])
            await client.aclose(None, "")
            await client.aclose(None, "")  # idempotent


async def test_client_close_code_reaches_server() -> None:
    seen: list[bytes | TransportClosed] = []
    done = anyio.Event()

    async def record(transport: WebSocketTransport) -> None:
        seen.append(await transport.receive())
        seen.append(await transport.receive())
        done.set()

    with anyio.fail_after(10):
        async with serving(record) as address:
            client = await connect_websocket(f"ws://{address}/")
            await client.send([b"bye"])
            await client.aclose(4008, "slow_consumer")
            await done.wait()
    assert seen == [b"bye", TransportClosed(4008, "slow_consumer")]


async def test_abrupt_disconnect_is_a_close_without_code() -> None:
    seen: list[bytes | TransportClosed] = []
    done = anyio.Event()

    async def record(transport: WebSocketTransport) -> None:
        seen.append(await transport.receive())
        done.set()

    with anyio.fail_after(10):
        async with serving(record) as address:
            stream, _ = await raw_client(address)
            await stream.aclose()  # TCP close, no WebSocket Close
            await done.wait()
    assert isinstance(seen[0], TransportClosed)
    assert seen[0].number is None


async def test_handler_end_closes_and_errors_do_not_stop_the_server() -> None:
    async def once(transport: WebSocketTransport) -> None:
        message = await receive_bytes(transport)
        if message == b"fail":
            raise RuntimeError("application bug")

    with anyio.fail_after(10):
        async with serving(once) as address:
            for word in (b"fail", b"ok"):
                client = await connect_websocket(f"ws://{address}/")
                await client.send([word])
                assert await client.receive() == TransportClosed(1000, "")
                await client.aclose(None, "")


async def test_server_cancellation_closes_connections() -> None:
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def server(*, task_status: anyio.abc.TaskStatus[str]) -> None:
                with scope:
                    await serve_websocket(echo, task_status=task_status)

            address: str = await tg.start(server)
            client = await connect_websocket(f"ws://{address}/")
            await client.send([b"hi"])
            assert await receive_bytes(client) == b"hi"
            scope.cancel()
            assert await client.receive() == TransportClosed(1000, "")
            await client.aclose(None, "")


async def test_aclose_is_bounded_when_peer_stops_reading() -> None:
    finished = anyio.Event()

    async def flood(transport: WebSocketTransport) -> None:
        with anyio.move_on_after(0.5):
            while True:  # blocks once the socket buffers are full
                await transport.send([b"x" * 65536])
        await transport.aclose(CloseCode.SLOW_CONSUMER.number, "slow_consumer")
        finished.set()

    with anyio.fail_after(10):
        async with serving(flood) as address:
            stream, _ = await raw_client(address)  # and never reads again
            await finished.wait()
            await stream.aclose()


# -- plain HTTP on the same port ------------------------------------------------------------


async def test_healthz_404_and_garbage() -> None:
    with anyio.fail_after(10):
        async with serving(echo, handshake_timeout=0.5) as address:
            ok = await http(address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
            assert ok.endswith(b"\r\n\r\nok\n")
            head = await http(address, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
            missing = await http(address, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            assert missing.startswith(b"HTTP/1.1 404 Not Found\r\n")
            garbage = await http(address, b"\x16\x03\x01 not http at all\r\n\r\n")
            assert garbage.startswith(b"HTTP/1.1 400 Bad Request\r\n")
            bad_upgrade = await http(
                address, b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"
            )
            assert bad_upgrade.startswith(b"HTTP/1.1 400 ")
            # Slowloris: half a request, then silence -> closed after handshake_timeout.
            assert await http(address, b"GET /healthz HTTP/1.1\r\n") == b""
            # The server survived all of that.
            client = await connect_websocket(f"ws://{address}/")
            await client.send([b"still here"])
            assert await receive_bytes(client) == b"still here"
            await client.aclose(None, "")


async def test_refused_upgrade_and_connection_errors() -> None:
    with anyio.fail_after(10):
        async with serving(echo) as address:
            with pytest.raises(ValueError):
                await connect_websocket(f"http://{address}/")
        # The server is gone: connecting fails with an OSError.
        with pytest.raises(OSError):
            await connect_websocket(f"ws://{address}/")

        async def not_websocket(stream: anyio.abc.SocketStream) -> None:
            async with stream:
                await stream.receive()
                await stream.send(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, not_websocket)
            with pytest.raises(WebSocketHandshakeError) as info:
                await connect_websocket(f"ws://127.0.0.1:{port}/")
            assert info.value.status == 403
            tg.cancel_scope.cancel()


# -- TLS --------------------------------------------------------------------------------------


async def test_wss_with_test_ca() -> None:
    ca = LocalCA.create()
    server = server_context(ca.issue())
    with anyio.fail_after(10):
        async with serving(echo, ssl_context=server) as address:
            port = address.rsplit(":", 1)[1]
            with pytest.raises(ssl.SSLError):  # untrusted: the system store lacks our CA
                await connect_websocket(f"wss://127.0.0.1:{port}/")
            with pytest.raises(ssl.SSLError):  # trusted, but not for this name
                await connect_websocket(
                    f"wss://127.0.0.1:{port}/",
                    ssl_context=client_context(cadata=self_signed().cert_pem),
                )
            trusted = ssl.create_default_context(cadata=ca.cert_pem.decode())
            for host in ("127.0.0.1", "localhost"):
                client = await connect_websocket(f"wss://{host}:{port}/", ssl_context=trusted)
                await client.send([b"secret", b"x" * MiB])
                assert await receive_bytes(client) == b"secret"
                assert await receive_bytes(client) == b"x" * MiB
                await client.aclose(4010, "server_shutdown")
            ok = await http(address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert ok == b""  # plain HTTP on a TLS port: closed, server unharmed


async def test_wss_self_signed_ipv6() -> None:
    cert = self_signed()
    try:
        listener = await anyio.create_tcp_listener(local_host="::1")
        await listener.aclose()
    except OSError:
        pytest.skip("no IPv6 loopback")
    with anyio.fail_after(10):
        async with serving(echo, host="::1", ssl_context=server_context(cert)) as address:
            assert address.startswith("[::1]:")
            client = await connect_websocket(
                f"wss://{address}/", ssl_context=client_context(cadata=cert.cert_pem)
            )
            await client.send([b"v6"])
            assert await receive_bytes(client) == b"v6"
            await client.aclose(None, "")


# -- control frames ----------------------------------------------------------------------------


async def test_ping_gets_only_a_pong() -> None:
    with anyio.fail_after(10):
        async with serving(echo) as address:
            stream, ws = await raw_client(address)
            await stream.send(ws.send(Ping(payload=b"are you there")))
            await stream.send(ws.send(BytesMessage(data=b"marker")))
            events = await raw_until(stream, ws, Message)
            assert events == [
                Pong(payload=b"are you there"),
                BytesMessage(data=b"marker", frame_finished=True, message_finished=True),
            ]
            await stream.send(ws.send(CloseConnection(code=1000)))
            closing = await raw_until(stream, ws, CloseConnection)
            assert isinstance(closing[-1], CloseConnection)
            await stream.aclose()


# -- a full core pair over the transport ----------------------------------------------------------


async def serve_core(
    transport: WebSocketTransport,
    seen: list[CoreEvent],
    config: ServerConfig = ServerConfig(),  # noqa: B008 - frozen
) -> None:
    core = ServerConnection(config, now=now(), ids=process_ids())

    async def on_event(event: CoreEvent) -> None:
        seen.append(event)
        if isinstance(event, ConnectRequested):
            core.accept(now(), user_id=event.request.user_id)
            driver.flush()
        elif isinstance(event, FrameReceived) and event.kind is CommandKind.SEND:
            frame = event.frame
            core.send_ack(frame.command.message.message_id or frame.message_id, now())
            driver.flush()

    driver = ConnectionDriver(core, transport, on_event)
    await driver.run()


async def run_client(
    address: str,
    on_open: Callable[[ClientConnection], object],
    config: ClientConfig = ClientConfig(user_id="alice"),  # noqa: B008 - frozen
) -> list[CoreEvent]:
    core = ClientConnection(config, ids=process_ids())
    seen: list[CoreEvent] = []

    async def on_event(event: CoreEvent) -> None:
        seen.append(event)
        if isinstance(event, HandshakeCompleted):
            on_open(core)
        elif isinstance(event, MessageAcked):
            core.close(now())
        driver.flush()

    driver = ConnectionDriver(core, await connect_websocket(f"ws://{address}/"), on_event)
    core.connect(now())
    driver.flush()
    await driver.run()
    return seen


async def test_core_pair_send_is_acked() -> None:
    server_seen: list[CoreEvent] = []
    sent: list[str] = []
    with anyio.fail_after(10):
        async with serving(partial(serve_core, seen=server_seen)) as address:
            client_seen = await run_client(
                address, lambda core: sent.append(core.send_message(b"hello", now()))
            )
    assert [type(e) for e in client_seen] == [HandshakeCompleted, MessageAcked, ConnectionClosed]
    assert client_seen[1] == MessageAcked(message_id=sent[0])
    received = [e for e in server_seen if isinstance(e, FrameReceived)]
    assert [e.frame.command.message.payload for e in received] == [b"hello"]
    closed = server_seen[-1]
    assert isinstance(closed, ConnectionClosed) and closed.by_peer


async def test_core_pair_oversize_frame_closes_with_frame_too_large() -> None:
    server_seen: list[CoreEvent] = []
    config = ServerConfig(limits=Limits(max_frame=4096))
    handler = partial(serve_core, seen=server_seen, config=config)
    with anyio.fail_after(10):
        async with serving(handler, max_message=4096) as address:
            client_seen = await run_client(
                address, lambda core: core.send_data(b"z" * 100_000, now())
            )
    closed = client_seen[-1]
    assert isinstance(closed, ConnectionClosed)
    assert closed.code is CloseCode.FRAME_TOO_LARGE
    assert server_seen[-1] == ConnectionClosed(
        code=CloseCode.FRAME_TOO_LARGE,
        reason=server_seen[-1].reason,  # type: ignore[union-attr]
        by_peer=False,
    )
