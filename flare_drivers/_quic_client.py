"""The QUIC client: :func:`connect_quic` (DESIGN §2, §5; reference §4.2).

The client binds a connected UDP socket (so the kernel filters other senders and, on
backends that surface it, an ICMP "port unreachable" fails fast), completes the handshake
and hands back a :class:`~flare_drivers._quic.QuicTransport` with no task of its own: the
tasks that wait on it run its pump.
"""

from __future__ import annotations

import os
import socket
import ssl
import urllib.parse
from collections.abc import Sequence

import anyio
import anyio.abc
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection

from ._clock import now
from ._quic import Datagram, DatagramSocket, QuicTransport, format_address

DEFAULT_PORT = 8081
"""Port of a ``quic://`` URL without one: flare's QUIC port (reference §4.5, DESIGN §7)."""


def parse_quic_url(url: str) -> tuple[str, int]:
    """``quic://host[:port]`` → ``(host, port)``; IPv6 literals in brackets."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "quic" or not parts.hostname:
        raise ValueError(f"not a quic://host:port URL: {url!r}")
    return parts.hostname, parts.port or DEFAULT_PORT


def client_configuration(
    host: str,
    *,
    verify: bool | str = True,
    alpn: Sequence[str] | None = None,
    idle_timeout: float = 120.0,
    server_name: str | None = None,
) -> QuicConfiguration:
    """The aioquic client configuration :func:`connect_quic` uses."""
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=list(alpn) if alpn else None,  # none by default (reference §4.2)
        idle_timeout=idle_timeout,
        # aioquic sends no SNI for an IP address and checks it against the IP SANs.
        server_name=server_name or host,
    )
    if verify is False:
        config.verify_mode = ssl.CERT_NONE
    elif isinstance(verify, str):
        if "-----BEGIN" in verify:
            config.load_verify_locations(cadata=verify.encode())
        elif os.path.exists(verify):
            config.load_verify_locations(cafile=verify)
        else:
            raise FileNotFoundError(f"CA file not found: {verify!r}")
    else:
        # aioquic would use certifi only; prefer the system store like every other client.
        paths = ssl.get_default_verify_paths()
        if paths.cafile or paths.capath:
            config.load_verify_locations(cafile=paths.cafile, capath=paths.capath)
    return config


async def connect_quic(
    url: str,
    *,
    verify: bool | str = True,
    alpn: Sequence[str] | None = None,
    idle_timeout: float = 120.0,
    connect_timeout: float = 10.0,
    server_name: str | None = None,
) -> QuicTransport:
    """Open a QUIC connection to ``quic://host:port`` and complete its handshake.

    ``verify``: ``True`` trusts the system store, a string is a CA file path or PEM text
    to trust, ``False`` checks nothing. ``alpn``: protocols to offer (none by default,
    like the original). ``idle_timeout`` must stay above the heartbeat timeout (B25).
    Stream 0 is opened by the first :meth:`~QuicTransport.send`. Raises
    :class:`TimeoutError` after ``connect_timeout`` (UDP gives no refusal unless the
    backend reports an ICMP error: then :class:`ConnectionRefusedError`) and
    :class:`ConnectionError` when the handshake fails (certificate, ALPN...).
    """
    host, port = parse_quic_url(url)
    config = client_configuration(
        host, verify=verify, alpn=alpn, idle_timeout=idle_timeout, server_name=server_name
    )
    sock: DatagramSocket | None = None
    transport: QuicTransport | None = None
    try:
        with anyio.move_on_after(connect_timeout) as scope:
            try:
                sock, remote = await _connected_socket(host, port)
            except OSError as exc:
                raise ConnectionError(f"cannot reach {url}: {exc}") from exc
            transport = _client_transport(sock, remote, config)
            transport.connection.connect(remote, now())
            await transport.transmit()
            await transport.wait_until(lambda: transport is not None and transport.handshake_done)
        if scope.cancelled_caught:
            raise TimeoutError(f"QUIC handshake with {url} timed out after {connect_timeout:g} s")
        assert transport is not None
        if transport.terminated or not transport.handshake_done:
            error, end = transport.error, transport.end
            detail = end.reason if end is not None else "connection closed"
            if isinstance(error, ConnectionRefusedError):
                raise ConnectionRefusedError(f"QUIC connection to {url} refused") from error
            raise ConnectionError(f"QUIC handshake with {url} failed: {detail}") from error
        return transport
    except BaseException:
        with anyio.CancelScope(shield=True):
            if transport is not None:
                await transport.close_now(None, "connect failed")
            elif sock is not None:
                sock.close()
        raise


async def _connected_socket(host: str, port: int) -> tuple[DatagramSocket, NetworkAddress]:
    """A UDP socket connected to the first address ``host`` resolves to (as anyio's
    ``create_connected_udp_socket`` picks it), so the kernel filters other senders and
    an ICMP "port unreachable" fails fast; and that address."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, proto, _, address = infos[0]
    raw = socket.socket(family, socket.SOCK_DGRAM, proto)
    try:
        raw.setblocking(False)
        raw.connect(address)  # UDP: no packet, only the kernel's filter
        remote = raw.getpeername()
    except BaseException:
        raw.close()
        raise
    if len(remote) == 4 and remote[2] == remote[3] == 0:
        remote = remote[:2]  # an IPv6 address without flow info or scope, as anyio gives it
    return DatagramSocket(raw), remote


def _client_transport(
    sock: DatagramSocket, remote: NetworkAddress, config: QuicConfiguration
) -> QuicTransport:
    async def receive() -> list[Datagram]:
        # The connected socket only yields the peer's datagrams; aioquic drops packets
        # from any other address, so hand it the very address given to connect().
        return [(data, remote) for data, _ in await sock.receive()]

    def send(data: bytes, addr: NetworkAddress) -> None:
        sock.send(data)

    async def closed() -> None:
        sock.close()

    return QuicTransport(
        QuicConnection(configuration=config),
        remote=format_address(remote),
        receive_datagrams=receive,
        send_datagram=send,
        # Nothing left to do in aioquic's closing period once the CONNECTION_CLOSE is out.
        on_closed=closed,
    )
