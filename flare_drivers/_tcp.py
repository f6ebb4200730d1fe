"""TCP sockets of our own, for plain WebSocket (TLS wraps them like any byte stream).

Why not anyio's socket streams: on asyncio every ``send`` and every ``receive`` that finds
data waiting costs a pass of the event loop (a checkpoint), and a write can only be made
from a task. A gateway writes from wherever the data is ready — the reply to the frame
just read, a broadcast to a thousand connections — so :class:`TcpStream` offers
:meth:`~TcpStream.send_nowait`: a plain ``socket.send`` that takes what the kernel accepts
without waiting (benchmarks P5, P6: no writer wake-up per connection). Waiting, when a read
finds nothing or the kernel buffer is full, goes through ``anyio.wait_readable`` /
``anyio.wait_writable``, so this works on asyncio and trio alike.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute

__all__ = ["TcpStream", "accept_ready", "connect_tcp"]

_FAIR = 16
"""Reads that find data at once before :meth:`TcpStream.receive` yields anyway, so that a
peer that never pauses cannot keep other tasks from running."""


def _tune(sock: socket.socket) -> None:
    sock.setblocking(False)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        # Frames are written whole and at once; Nagle would hold the small ones back.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class TcpStream(anyio.abc.ByteStream):
    """A connected, non-blocking TCP socket as an anyio byte stream, plus
    :meth:`send_nowait`. One task may receive while another sends."""

    def __init__(self, sock: socket.socket) -> None:
        _tune(sock)
        self._sock = sock
        self._closed = False
        self._eager = 0  # reads in a row that did not wait

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        sock = self._sock
        return {
            SocketAttribute.family: lambda: sock.family,
            SocketAttribute.local_address: sock.getsockname,
            SocketAttribute.raw_socket: lambda: sock,
            SocketAttribute.remote_address: sock.getpeername,
        }

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """What the socket holds, up to ``max_bytes``, waiting for it if need be. Raises
        ``anyio.EndOfStream`` at the peer's end of stream, ``anyio.BrokenResourceError``
        on a socket error and ``anyio.ClosedResourceError`` once closed here."""
        sock = self._sock
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            data: bytes | None
            try:
                data = sock.recv(max_bytes)
            except BlockingIOError:
                data = None  # wait below, not in the except block: waiting there would
                # keep the exception and its traceback alive, per idle connection
            except OSError as exc:
                if self._closed:
                    raise anyio.ClosedResourceError from None
                raise anyio.BrokenResourceError(f"receive failed: {exc!r}") from exc
            if data is None:
                self._eager = 0
                await anyio.wait_readable(sock)
                continue
            if not data:
                raise anyio.EndOfStream
            self._eager += 1
            if self._eager >= _FAIR:
                self._eager = 0
                await anyio.lowlevel.checkpoint()
            return data

    def send_nowait(self, data: bytes | memoryview) -> int:
        """Write what the kernel takes now; returns how many bytes (0 if the buffer is
        full). Raises ``anyio.BrokenResourceError`` on a socket error."""
        if self._closed:
            raise anyio.ClosedResourceError
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise anyio.BrokenResourceError(f"send failed: {exc!r}") from exc

    async def send(self, item: bytes) -> None:
        """Write all of ``item``, waiting while the kernel buffer is full."""
        view = memoryview(item)
        while view:
            sent = self.send_nowait(view)
            view = view[sent:]
            if view:
                await anyio.wait_writable(self._sock)
        await anyio.lowlevel.checkpoint_if_cancelled()

    async def send_eof(self) -> None:
        """Half-close: the peer reads end of stream; we may still receive."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise anyio.BrokenResourceError(f"shutdown failed: {exc!r}") from exc

    async def aclose(self) -> None:
        """Close the socket (tasks waiting on it get ``ClosedResourceError``)."""
        if not self._closed:
            self._closed = True
            anyio.notify_closing(self._sock)
            self._sock.close()
        await anyio.lowlevel.checkpoint()


async def connect_tcp(host: str, port: int) -> TcpStream:
    """Connect to ``host:port``, trying each resolved address in turn (an IP literal is
    not resolved). Raises ``OSError`` (the last address's) when none connects."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        targets = [(family, addr) for family, _, _, _, addr in infos]
    else:
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        targets = [(family, (literal.compressed, port))]
    error: OSError | None = None
    for family, addr in targets:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            _tune(sock)
            try:
                sock.connect(addr)
            except BlockingIOError:
                await anyio.wait_writable(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, f"connect to {addr!r} failed") from None
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:  # cancelled (a timeout): nobody will close it otherwise
            sock.close()
            raise
        return TcpStream(sock)
    raise error or OSError(f"no address for {host!r}")


async def accept_ready(listening: socket.socket) -> list[socket.socket]:
    """Wait until ``listening`` has connections, then accept every one queued (bounded)."""
    listening.setblocking(False)
    while True:
        accepted: list[socket.socket] = []
        while len(accepted) < 64:
            try:
                sock, _ = listening.accept()
            except BlockingIOError:
                break
            except OSError:
                if accepted:  # hand these out; the error comes back on the next call
                    break
                raise
            accepted.append(sock)
        if accepted:
            return accepted
        await anyio.wait_readable(listening)
