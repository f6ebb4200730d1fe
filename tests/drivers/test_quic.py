"""QUIC transport on loopback, both anyio backends: stream bytes, close codes, ALPN, trust,
demultiplexing, limits, and a full client/server core pair over the driver loop."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from flare_drivers._clock import now, process_ids
from flare_drivers._loop import ConnectionDriver
from flare_drivers._quic import QuicTransport, connect_quic, serve_quic
from flare_drivers._quic_client import parse_quic_url
from flare_drivers._tls import CertifiedKey, LocalCA, self_signed
from flare_drivers._transport import TransportClosed
from flare_proto import (
    ClientConfig,
    ClientConnection,
    CommandKind,
    ConnectionClosed,
    ConnectRequested,
    FrameReceived,
    Framing,
    HandshakeCompleted,
    MessageAcked,
    ServerConfig,
    ServerConnection,
)
from flare_proto import Event as CoreEvent

pytestmark = pytest.mark.anyio

Handler = Callable[[QuicTransport], Awaitable[None]]
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def cert() -> CertifiedKey:
    """One self-signed loopback certificate for the whole module (key generation is slow)."""
    return self_signed()


@asynccontextmanager
async def serving(
    handler: Handler, cert: CertifiedKey | None = None, **options: Any
) -> AsyncIterator[str]:
    """Run serve_quic in a task group; yields its ``host:port``; cancels it after."""
    if cert is not None:
        options.update(certificate=cert.certificate, private_key=cert.private_key)
    async with anyio.create_task_group() as tg:
        address: str = await tg.start(partial(serve_quic, handler, **options))
        yield address
        tg.cancel_scope.cancel()


async def echo(transport: QuicTransport) -> None:
    while not isinstance(data := await transport.receive(), TransportClosed):
        await transport.send([data])


async def receive_exactly(transport: QuicTransport, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await transport.receive()
        assert isinstance(chunk, bytes), chunk
        data += chunk
    return data


async def receive_end(transport: QuicTransport) -> TransportClosed:
    """Skip stream bytes until the transport reports its end."""
    while not isinstance(item := await transport.receive(), TransportClosed):
        pass
    return item


async def round_trip(transport: QuicTransport, chunks: list[bytes]) -> None:
    await transport.send(chunks)
    expected = b"".join(chunks)
    assert await receive_exactly(transport, len(expected)) == expected


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- stream bytes ---------------------------------------------------------------------------


async def test_echo_trusting_the_server_certificate(cert: CertifiedKey) -> None:
    chunks = [b"a", b"\x00\x00\x00\x05hello", b"x" * MiB, b"", b"tail"]
    with anyio.fail_after(20):
        async with serving(echo, cert) as address:
            transport = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            assert transport.framing is Framing.STREAM
            assert transport.remote == address
            # Each send separately, then all at once: order is kept across chunks.
            for chunk in chunks:
                await transport.send([chunk])
            expected = b"".join(chunks)
            assert await receive_exactly(transport, len(expected)) == expected
            await round_trip(transport, chunks[:2] + chunks[3:])
            await transport.aclose(None, "done")


async def test_echo_without_verification_against_generated_certificate() -> None:
    with anyio.fail_after(10):
        async with serving(echo) as address:
            transport = await connect_quic(f"quic://{address}", verify=False)
            await round_trip(transport, [b"ping"])
            await transport.aclose(None, "done")


async def test_echo_with_ca_file_and_localhost_name(tmp_path: Path) -> None:
    ca = LocalCA.create()
    cafile = tmp_path / "ca.pem"
    cafile.write_bytes(ca.cert_pem)
    with anyio.fail_after(10):
        async with serving(echo, ca.issue()) as address:
            port = address.rsplit(":", 1)[1]
            # A host name: SNI "localhost", checked against the DNS SAN.
            transport = await connect_quic(f"quic://localhost:{port}", verify=str(cafile))
            await round_trip(transport, [b"via a CA"])
            await transport.aclose(None, "done")


async def test_certificate_from_pem_files(cert: CertifiedKey, tmp_path: Path) -> None:
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(cert.cert_pem)
    keyfile.write_bytes(cert.key_pem)
    with anyio.fail_after(10):
        async with serving(echo, certfile=str(certfile), keyfile=str(keyfile)) as address:
            transport = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            await round_trip(transport, [b"from files"])
            await transport.aclose(None, "done")


async def test_untrusted_certificate_fails_cleanly(cert: CertifiedKey) -> None:
    other = LocalCA.create()
    with anyio.fail_after(10):
        async with serving(echo, cert) as address:
            with pytest.raises(ConnectionError, match="handshake"):
                await connect_quic(f"quic://{address}", verify=other.cert_pem.decode())
            # The server is unharmed.
            transport = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            await round_trip(transport, [b"still serving"])
            await transport.aclose(None, "done")


async def test_two_clients_are_demultiplexed(cert: CertifiedKey) -> None:
    with anyio.fail_after(20):
        async with serving(echo, cert) as address:
            a = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            b = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            async with anyio.create_task_group() as tg:
                for transport, byte in ((a, b"a"), (b, b"b")):
                    chunks = [byte * size for size in (1, 1000, 300_000, 7)]
                    tg.start_soon(round_trip, transport, chunks)
            await a.aclose(None, "done")
            await b.aclose(None, "done")


# -- closing --------------------------------------------------------------------------------


async def test_server_close_code_reaches_client(cert: CertifiedKey) -> None:
    async def kick(transport: QuicTransport) -> None:
        assert await transport.receive() == b"hi"
        await transport.send([b"bye"])
        await transport.aclose(4011, "kicked")

    with anyio.fail_after(10):
        async with serving(kick, cert) as address:
            transport = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            await transport.send([b"hi"])
            # The last bytes before the close arrive (aclose drains first), then the code.
            assert await receive_exactly(transport, 3) == b"bye"
            assert await transport.receive() == TransportClosed(4011, "kicked")
            assert await transport.receive() == TransportClosed(4011, "kicked")
            with pytest.raises(anyio.BrokenResourceError):
                await transport.send([b"late"])
            await transport.aclose(None, "done")


async def test_client_close_code_reaches_server(cert: CertifiedKey) -> None:
    seen: list[bytes | TransportClosed] = []
    done = anyio.Event()

    async def record(transport: QuicTransport) -> None:
        while not isinstance(item := await transport.receive(), TransportClosed):
            seen.append(item)
        seen.append(item)
        done.set()

    with anyio.fail_after(10):
        async with serving(record, cert) as address:
            transport = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            await transport.send([b"last words"])
            await transport.aclose(4011, "kicked")
            await transport.aclose(4011, "kicked")  # idempotent
            assert await transport.receive() == TransportClosed(4011, "kicked")
            await done.wait()
    assert b"".join(x for x in seen if isinstance(x, bytes)) == b"last words"
    assert seen[-1] == TransportClosed(4011, "kicked")


async def test_fin_is_end_of_stream(cert: CertifiedKey) -> None:
    seen: list[bytes | TransportClosed] = []
    done = anyio.Event()

    async def record(transport: QuicTransport) -> None:
        while not isinstance(item := await transport.receive(), TransportClosed):
            seen.append(item)
        seen.append(item)
        done.set()

    with anyio.fail_after(10):
        async with serving(record, cert) as address:
            transport = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            # What quinn's finish() does (reference §4.2).
            transport.connection.send_stream_data(0, b"bye", end_stream=True)
            await transport.transmit()
            await done.wait()
            await transport.aclose(None, "done")
    assert seen == [b"bye", TransportClosed(None, "end of stream", half=True)]


async def test_send_waits_while_much_is_unacknowledged(cert: CertifiedKey) -> None:
    async def never_read(transport: QuicTransport) -> None:
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with serving(never_read, cert) as address:
            transport = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            with anyio.move_on_after(0.5) as scope:
                for _ in range(16):
                    await transport.send([b"x" * MiB])
            # Backpressure: each send waits until at most send_buffer is unacknowledged,
            # so a peer that does not keep up holds the writer back (slow_consumer).
            assert scope.cancelled_caught
            await transport.aclose(4008, "slow_consumer")
            assert await transport.receive() == TransportClosed(4008, "slow_consumer")


async def test_normal_close_has_no_code(cert: CertifiedKey) -> None:
    async def close_at_once(transport: QuicTransport) -> None:
        await transport.aclose(None, "bye")

    with anyio.fail_after(10):
        async with serving(close_at_once, cert) as address:
            transport = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            await transport.send([b"hello"])
            assert await receive_end(transport) == TransportClosed(None, "bye")
            await transport.aclose(None, "done")


async def test_handler_return_closes_the_connection(cert: CertifiedKey) -> None:
    async def one_shot(transport: QuicTransport) -> None:
        await transport.send([b"only"])

    with anyio.fail_after(10):
        async with serving(one_shot, cert) as address:
            transport = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            await transport.send([b"go"])
            assert await receive_exactly(transport, 4) == b"only"
            assert (await receive_end(transport)).number is None
            await transport.aclose(None, "done")


async def test_handler_error_does_not_stop_the_server(cert: CertifiedKey) -> None:
    calls = 0

    async def flaky(transport: QuicTransport) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        await echo(transport)

    with anyio.fail_after(10):
        async with serving(flaky, cert) as address:
            first = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            await first.send([b"x"])
            assert isinstance(await receive_end(first), TransportClosed)
            second = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            await round_trip(second, [b"fine"])
            await first.aclose(None, "done")
            await second.aclose(None, "done")


async def test_stream_never_opened_is_dropped(cert: CertifiedKey) -> None:
    called = False

    async def handler(transport: QuicTransport) -> None:
        nonlocal called
        called = True

    with anyio.fail_after(10):
        async with serving(handler, cert, handshake_timeout=0.3) as address:
            transport = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            # The client never writes, so stream 0 never opens.
            assert await transport.receive() == TransportClosed(None, "stream timeout")
            await transport.aclose(None, "done")
    assert not called


async def test_garbage_datagrams_do_not_hurt_the_server(cert: CertifiedKey) -> None:
    initial_header = b"\xc0\x00\x00\x00\x01\x08" + b"\x11" * 8 + b"\x00\x00\x44\xb0"
    junk = [
        b"",
        b"\x40" + b"\x00" * 40,  # short header, unknown connection id
        initial_header + b"\x00" * 1200,  # INITIAL that does not decrypt
        initial_header + b"\x00" * 100,  # INITIAL below the minimum size
        b"\xc0\x00\x00\x00\x00" + b"\x00" * 40,  # a version negotiation packet
    ]
    unsupported = b"\xc0\x0a\x0a\x0a\x0a\x08" + b"\x22" * 8 + b"\x08" + b"\x33" * 8
    with anyio.fail_after(10):
        async with serving(echo, cert, handshake_timeout=0.5) as address:
            host, port = address.rsplit(":", 1)
            async with await anyio.create_connected_udp_socket(host, int(port)) as udp:
                for datagram in junk:
                    await udp.send(datagram)
                await udp.send(unsupported + b"\x00" * 1200)
                # An unknown version gets a version negotiation packet back (RFC 9000 §6).
                reply = await udp.receive()
                assert reply[1:5] == b"\x00\x00\x00\x00"
            transport = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            await round_trip(transport, [b"unharmed"])
            await transport.aclose(None, "done")


async def test_max_connections_refuses_extra_clients(cert: CertifiedKey) -> None:
    with anyio.fail_after(10):
        async with serving(echo, cert, max_connections=1) as address:
            first = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            await round_trip(first, [b"in"])
            with pytest.raises(ConnectionError, match="limit exceeded"):
                await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            await first.aclose(None, "done")


async def test_server_cancellation_closes_connections(cert: CertifiedKey) -> None:
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            address = await tg.start(
                partial(
                    serve_quic, echo, certificate=cert.certificate, private_key=cert.private_key
                )
            )
            transport = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            await round_trip(transport, [b"up"])
            tg.cancel_scope.cancel()
        end = await receive_end(transport)
        assert end.number is None
        await transport.aclose(None, "done")


# -- ALPN -----------------------------------------------------------------------------------


async def test_no_alpn_by_default(cert: CertifiedKey) -> None:
    with anyio.fail_after(10):
        async with serving(echo, cert) as address:
            transport = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            assert transport.alpn is None
            await round_trip(transport, [b"plain"])
            await transport.aclose(None, "done")


async def test_matching_alpn(cert: CertifiedKey) -> None:
    seen: list[str | None] = []

    async def record_alpn(transport: QuicTransport) -> None:
        seen.append(transport.alpn)
        await echo(transport)

    with anyio.fail_after(10):
        async with serving(record_alpn, cert, alpn=["flare"]) as address:
            transport = await connect_quic(
                f"quic://{address}", verify=cert.cert_pem.decode(), alpn=["flare"]
            )
            assert transport.alpn == "flare"
            await round_trip(transport, [b"negotiated"])
            await transport.aclose(None, "done")
    assert seen == ["flare"]


@pytest.mark.parametrize(
    ("server_alpn", "client_alpn"),
    [(["flare"], None), (None, ["flare"]), (["flare"], ["other"])],
    ids=["server-only", "client-only", "disjoint"],
)
async def test_alpn_mismatch_fails_cleanly(
    cert: CertifiedKey, server_alpn: list[str] | None, client_alpn: list[str] | None
) -> None:
    with anyio.fail_after(10):
        async with serving(echo, cert, alpn=server_alpn) as address:
            with pytest.raises(ConnectionError, match="ALPN"):
                await connect_quic(
                    f"quic://{address}", verify=cert.cert_pem.decode(), alpn=client_alpn
                )
            transport = await connect_quic(
                f"quic://{address}", verify=cert.cert_pem.decode(), alpn=server_alpn
            )
            await round_trip(transport, [b"still serving"])
            await transport.aclose(None, "done")


# -- connecting -----------------------------------------------------------------------------


async def test_nothing_listening_fails_within_connect_timeout() -> None:
    url = f"quic://127.0.0.1:{free_udp_port()}"
    with anyio.fail_after(5):
        # UDP has no refusal: a timeout, or ICMP "port unreachable" where the backend
        # reports it (trio does on a connected socket).
        with pytest.raises((TimeoutError, ConnectionRefusedError)):
            await connect_quic(url, verify=False, connect_timeout=1.0)


def test_url_parsing() -> None:
    assert parse_quic_url("quic://example.com:9000") == ("example.com", 9000)
    assert parse_quic_url("quic://[::1]:9000") == ("::1", 9000)
    assert parse_quic_url("QUIC://127.0.0.1") == ("127.0.0.1", 8081)
    for bad in ("ws://host:1", "quic://", "host:1"):
        with pytest.raises(ValueError):
            parse_quic_url(bad)


async def test_ipv6_literal(cert: CertifiedKey) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with anyio.fail_after(10):
        async with serving(echo, cert, host="::1") as address:
            assert address.startswith("[::1]:")
            transport = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            await round_trip(transport, [b"six"])
            await transport.aclose(None, "done")


# -- a full core pair over the transport ----------------------------------------------------


async def serve_core(transport: QuicTransport, seen: list[CoreEvent], done: anyio.Event) -> None:
    core = ServerConnection(ServerConfig(), now=now(), ids=process_ids(), framing=Framing.STREAM)

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
    try:
        await driver.run()
    finally:
        done.set()


async def test_core_pair_send_is_acked(cert: CertifiedKey) -> None:
    server_seen: list[CoreEvent] = []
    client_seen: list[CoreEvent] = []
    sent: list[str] = []
    server_done = anyio.Event()
    handler = partial(serve_core, seen=server_seen, done=server_done)
    with anyio.fail_after(15):
        async with serving(handler, cert) as address:
            core = ClientConnection(
                ClientConfig(user_id="alice"), ids=process_ids(), framing=Framing.STREAM
            )

            async def on_event(event: CoreEvent) -> None:
                client_seen.append(event)
                if isinstance(event, HandshakeCompleted):
                    sent.append(core.send_message(b"hello", now()))
                elif isinstance(event, MessageAcked):
                    core.close(now())
                driver.flush()

            transport = await connect_quic(f"quic://{address}", verify=cert.cert_pem.decode())
            driver = ConnectionDriver(core, transport, on_event)
            core.connect(now())
            driver.flush()
            await driver.run()
            await server_done.wait()
    assert [type(e) for e in client_seen] == [HandshakeCompleted, MessageAcked, ConnectionClosed]
    assert client_seen[1] == MessageAcked(message_id=sent[0])
    received = [e for e in server_seen if isinstance(e, FrameReceived)]
    assert [e.frame.command.message.payload for e in received] == [b"hello"]
    closed = server_seen[-1]
    assert isinstance(closed, ConnectionClosed) and closed.by_peer
