"""The QUIC listener: one UDP socket, connections told apart by connection id.

Theory of operation: :func:`serve_quic` reads every datagram of its socket and routes it
by destination connection id to the connection's inbox; an unknown id opens a new
connection only for a full-size INITIAL packet (RFC 9000 §14.1), anything else is
dropped. Each connection is known under every id it answers to: the client's original
destination id, aioquic's first host id, then ids issued and retired along the way
(``ConnectionIdIssued``/``ConnectionIdRetired``); all are forgotten when it ends. Each
connection runs in its own task: its pump, then the application's handler once the client
has opened stream 0 (like quinn's ``accept_bi``, reference §4.2), then the close.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
import anyio.abc
from aioquic._buffer import Buffer  # aioquic.buffer re-exports it untyped
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from cryptography import x509

from ._clock import now
from ._quic import Datagram, DatagramSocket, QuicTransport, format_address
from ._tls import PrivateKey, self_signed

log = logging.getLogger("flare.quic")

QuicHandler = Callable[[QuicTransport], Awaitable[None]]

_INBOX = 256
"""Datagrams queued per connection before the demultiplexer drops (UDP may drop)."""
_CLOSING_LIMIT = 5.0
"""Seconds a closed connection may stay in the routing table for its closing period."""


def server_configuration(
    *,
    certificate: x509.Certificate | None = None,
    private_key: PrivateKey | None = None,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    alpn: Sequence[str] | None = None,
    idle_timeout: float = 120.0,
) -> QuicConfiguration:
    """The aioquic server configuration :func:`serve_quic` uses: the certificate given
    (objects, or PEM files), else a self-signed one made in memory (DESIGN §7)."""
    config = QuicConfiguration(
        is_client=False,
        # None accepts a ClientHello without ALPN, as the original's quinn does (§4.2).
        alpn_protocols=list(alpn) if alpn else None,
        idle_timeout=idle_timeout,
    )
    if (certificate is None) != (private_key is None):
        raise ValueError("certificate and private_key go together")
    if certificate is not None:
        config.certificate, config.private_key = certificate, private_key
    elif certfile is not None:
        config.load_cert_chain(certfile, keyfile)
    elif keyfile is not None:
        raise ValueError("keyfile needs certfile")
    else:
        generated = self_signed()
        config.certificate, config.private_key = generated.certificate, generated.private_key
    return config


@dataclass(eq=False)
class _Route:
    transport: QuicTransport
    inbox: MemoryObjectSendStream[Datagram]
    cids: set[bytes] = field(default_factory=set)


async def serve_quic(
    handler: QuicHandler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    certificate: x509.Certificate | None = None,
    private_key: PrivateKey | None = None,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    alpn: Sequence[str] | None = None,
    idle_timeout: float = 120.0,
    handshake_timeout: float = 10.0,
    max_connections: int | None = None,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve QUIC on ``host:port`` until cancelled, calling ``await handler(transport)``
    in its own task for each connection once the client opened stream 0.

    The certificate is ``certificate``/``private_key``, else ``certfile``/``keyfile``
    (PEM), else self-signed in memory. No ALPN unless ``alpn`` is given. The idle timeout
    is explicit and above the heartbeat timeout (B25). A connection that has not opened
    its stream within ``handshake_timeout`` is closed (``"stream timeout"``). Above
    ``max_connections`` new ones are refused (CONNECTION_REFUSED). When the handler
    returns the connection is closed (the handler's ``aclose`` code, else 0). Reports the
    bound ``host:port`` through ``task_status``; on cancellation closes every connection.
    """
    config = server_configuration(
        certificate=certificate,
        private_key=private_key,
        certfile=certfile,
        keyfile=keyfile,
        alpn=alpn,
        idle_timeout=idle_timeout,
    )
    sock = await _bound_socket(host, port)
    _grow_receive_buffer(sock.raw)
    try:
        # The socket outlives the task group: closing connections on cancellation still
        # sends.
        async with anyio.create_task_group() as tg:
            listener = _Listener(sock, tg, config, handler, handshake_timeout, max_connections)
            task_status.started(format_address(sock.raw.getsockname()))
            while True:
                try:
                    datagrams = await sock.receive(256)
                except ConnectionError:
                    continue  # one peer's ICMP error surfaced on the shared socket
                for data, addr in datagrams:
                    listener.datagram_received(data, addr)
    finally:
        sock.close()


async def _bound_socket(host: str, port: int) -> DatagramSocket:
    """A UDP socket bound to the first address ``host:port`` resolves to."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, _, proto, _, address = infos[0]
    raw = socket.socket(family, socket.SOCK_DGRAM, proto)
    try:
        raw.bind(address)
    except BaseException:
        raw.close()
        raise
    return DatagramSocket(raw)


class _Listener:
    """The routing table of one :func:`serve_quic` socket and its connection tasks."""

    def __init__(
        self,
        sock: DatagramSocket,
        tg: anyio.abc.TaskGroup,
        config: QuicConfiguration,
        handler: QuicHandler,
        handshake_timeout: float,
        max_connections: int | None,
    ) -> None:
        self._sock = sock
        self._tg = tg
        self._config = config
        self._handler = handler
        self._handshake_timeout = handshake_timeout
        self._max_connections = max_connections
        self._routes: dict[bytes, _Route] = {}
        self._live: set[_Route] = set()

    def send(self, data: bytes, addr: NetworkAddress) -> None:
        """Send one datagram now, straight to the non-blocking socket (anyio's send yields
        to the event loop per datagram); errors, a full buffer included, are loss (one
        unreachable peer must not stop the others)."""
        try:
            self._sock.send(data, addr)
        except OSError as exc:
            log.debug("QUIC send to %s failed: %r", addr, exc)

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        """Route one datagram to its connection, opening one for a valid INITIAL."""
        config = self._config
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=config.connection_id_length
            )
        except ValueError:
            return
        route = self._routes.get(header.destination_cid)
        if route is None:
            if (
                header.version is not None
                and header.version not in config.supported_versions
                # Never answer a VN packet with one: no reflection loop.
                and header.packet_type is not QuicPacketType.VERSION_NEGOTIATION
            ):
                vn = encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=config.supported_versions,
                )
                self.send(vn, addr)
                return
            if (
                header.packet_type is not QuicPacketType.INITIAL
                or len(data) < SMALLEST_MAX_DATAGRAM_SIZE
            ):
                return
            if self._max_connections is not None and len(self._live) >= self._max_connections:
                _refuse(config, header.destination_cid, data, addr, self.send)
                return
            route = self._open(header.destination_cid, addr)
        # A connection that cannot keep up loses datagrams, as on a wire.
        with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError):
            route.inbox.send_nowait((data, addr))

    def _open(self, original_cid: bytes, addr: NetworkAddress) -> _Route:
        conn = QuicConnection(
            configuration=self._config, original_destination_connection_id=original_cid
        )
        inbox, outbox = anyio.create_memory_object_stream[Datagram](_INBOX)
        transport = QuicTransport(
            conn,
            remote=format_address(addr),
            receive_datagrams=lambda: _receive_batch(outbox),
            send_datagram=self.send,
        )
        route = _Route(transport, inbox)
        routes = self._routes

        def issued(cid: bytes) -> None:
            route.cids.add(cid)
            routes[cid] = route

        def retired(cid: bytes) -> None:
            route.cids.discard(cid)
            if routes.get(cid) is route:
                del routes[cid]

        transport.on_cid_issued, transport.on_cid_retired = issued, retired
        issued(original_cid)  # the client keeps using it until it hears from us
        issued(conn.host_cid)
        self._live.add(route)
        self._tg.start_soon(self._serve, route, outbox)
        return route

    async def _serve(self, route: _Route, outbox: MemoryObjectReceiveStream[Datagram]) -> None:
        try:
            await _run_connection(route.transport, self._handler, self._handshake_timeout)
        except Exception:  # one bad peer never crashes the server
            log.exception("QUIC connection %s failed", route.transport.remote)
        finally:
            self._live.discard(route)
            for cid in route.cids:
                if self._routes.get(cid) is route:
                    del self._routes[cid]
            route.inbox.close()
            outbox.close()


async def _receive_batch(outbox: MemoryObjectReceiveStream[Datagram]) -> list[Datagram]:
    # Take everything queued so one transmit answers (and acknowledges) it all.
    batch = [await outbox.receive()]
    while len(batch) < 64:
        try:
            batch.append(outbox.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    return batch


async def _run_connection(
    transport: QuicTransport, handler: QuicHandler, handshake_timeout: float
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(transport.pump_forever)
        try:
            with anyio.move_on_after(handshake_timeout):
                await transport.wait_until(lambda: transport.stream_opened)
            if transport.stream_opened:
                try:
                    await handler(transport)
                except Exception:
                    log.exception("QUIC handler failed for %s", transport.remote)
                await transport.aclose(None, "")
            else:
                # The original (HEAD) closes with code 0 and this reason (reference §4.2).
                await transport.close_now(0, "stream timeout")
        finally:
            # Cancelled (server shutdown) or done: the close goes out now either way.
            with anyio.CancelScope(shield=True):
                await transport.close_now(None, "server closed")
        # The pump lives out aioquic's closing period (3 PTO) so late packets still find
        # the connection; never longer than _CLOSING_LIMIT.
        with anyio.move_on_after(_CLOSING_LIMIT):
            await transport.wait_until(lambda: False)
        tg.cancel_scope.cancel()


def _refuse(
    config: QuicConfiguration,
    dcid: bytes,
    data: bytes,
    addr: NetworkAddress,
    send: Callable[[bytes, NetworkAddress], None],
) -> None:
    # Over max_connections: answer the INITIAL with CONNECTION_REFUSED and keep no state
    # (a resent INITIAL is refused again). The hub's own server_full (4009) needs an
    # accepted connection; this is the transport's last line of defence.
    conn = QuicConnection(configuration=config, original_destination_connection_id=dcid)
    t = now()
    conn.receive_datagram(data, addr, t)
    conn.close(
        error_code=QuicErrorCode.CONNECTION_REFUSED,
        frame_type=QuicFrameType.PADDING,
        reason_phrase="limit exceeded",
    )
    for datagram, to in conn.datagrams_to_send(t):
        send(datagram, to)


RECEIVE_BUFFER = 4 * 1024 * 1024


def _grow_receive_buffer(raw: socket.socket) -> None:
    """Every QUIC connection shares this one socket: with the default ~208 KiB buffer the
    kernel drops datagrams whenever the server stalls briefly (a GC pause, a broadcast
    burst), and QUIC's loss recovery then adds seconds of tail latency (benchmarks/soak.py).
    Best effort: the kernel caps it at ``net.core.rmem_max``."""
    try:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    except OSError as exc:
        log.debug("could not grow the QUIC receive buffer: %r", exc)
