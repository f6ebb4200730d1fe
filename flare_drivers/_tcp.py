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

import asyncio
import ipaddress
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute

from ._race import first_ready

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
        self._short = False  # the last read emptied the socket: wait before the next
        self._readiness: _Readiness | None = None  # asyncio: see _Readiness
        self._backend: str | None = None

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        sock = self._sock
        attributes: dict[Any, Callable[[], Any]] = {
            SocketAttribute.family: lambda: sock.family,
            SocketAttribute.local_address: sock.getsockname,
            SocketAttribute.raw_socket: lambda: sock,
            SocketAttribute.remote_address: sock.getpeername,
        }
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            attributes[SocketAttribute.local_port] = lambda: sock.getsockname()[1]
            attributes[SocketAttribute.remote_port] = lambda: sock.getpeername()[1]
        return attributes

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """What the socket holds, up to ``max_bytes``, waiting for it if need be. Raises
        ``anyio.EndOfStream`` at the peer's end of stream, ``anyio.BrokenResourceError``
        on a socket error and ``anyio.ClosedResourceError`` once closed here."""
        sock = self._sock
        if self._eager >= _FAIR:
            # Before the read, never after it: a cancellation delivered here loses nothing
            # (one taken from the socket and then cancelled would cut the stream).
            self._eager = 0
            await anyio.lowlevel.checkpoint()
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._short:
                # A read that found nothing would cost a system call and an exception.
                self._short = False
                self._eager = 0
                await self._wait_readable()
                continue
            data: bytes | None
            try:
                data = sock.recv(max_bytes)
            except BlockingIOError:
                data = None  # wait above, not in the except block: waiting there would
                # keep the exception and its traceback alive, per idle connection
            except OSError as exc:
                if self._closed:
                    raise anyio.ClosedResourceError from None
                raise anyio.BrokenResourceError(f"receive failed: {exc!r}") from exc
            if data is None:
                self._short = True
                continue
            if not data:
                raise anyio.EndOfStream
            self._short = len(data) < max_bytes
            self._eager += 1
            return data

    async def _wait_readable(self) -> None:
        backend = self._backend
        if backend is None:
            backend = self._backend = _backend()
        if backend != "asyncio":
            await anyio.wait_readable(self._sock)
            return
        readiness = self._readiness
        if readiness is None:
            readiness = self._readiness = _Readiness(self._sock.fileno())
        await readiness.wait()

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
        await anyio.lowlevel.checkpoint_if_cancelled()  # cancelled: nothing written
        view = memoryview(item)
        while view:
            sent = self.send_nowait(view)
            view = view[sent:]
            if view:
                await anyio.wait_writable(self._sock)

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
            if self._readiness is not None:
                self._readiness.close()
            anyio.notify_closing(self._sock)
            self._sock.close()
        await anyio.lowlevel.checkpoint()


def _backend() -> str:
    """``asyncio`` when running on an asyncio event loop, else ``other`` (trio)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return "other"
    return "asyncio"


class _Readiness:
    """Readability of one socket on asyncio, with the socket left registered with the
    event loop between waits. ``anyio.wait_readable`` registers and unregisters on every
    wait (two ``epoll_ctl`` calls and their bookkeeping per message: a sixth of the CPU
    an idle connection spends per heartbeat, benchmarks P8). Registration is
    level-triggered, so when nobody waits and the socket stays readable (the reader is
    busy) the callback would run on every loop pass: the second such call in a row
    unregisters, and the next wait registers again. (The first may be stale: queued
    before the reader took the data.)"""

    __slots__ = ("fd", "idle_calls", "loop", "registered", "waiter")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.loop = asyncio.get_running_loop()
        self.waiter: asyncio.Future[bool] | None = None
        self.registered = False
        self.idle_calls = 0

    async def wait(self) -> None:
        """Until the socket is readable; ``ClosedResourceError`` if closed meanwhile."""
        fut = self.waiter = self.loop.create_future()
        self.idle_calls = 0
        if not self.registered:
            self.loop.add_reader(self.fd, self._ready)
            self.registered = True
        try:
            ready = await fut
        finally:
            self.waiter = None
        if not ready:
            raise anyio.ClosedResourceError

    def _ready(self) -> None:
        fut = self.waiter
        if fut is not None:
            if not fut.done():
                fut.set_result(True)
            return
        self.idle_calls += 1
        if self.idle_calls >= 2:
            self._unregister()

    def _unregister(self) -> None:
        if self.registered:
            self.registered = False
            self.loop.remove_reader(self.fd)

    def close(self) -> None:
        """Unregister (before the socket closes) and wake a waiter with the news."""
        self._unregister()
        fut = self.waiter
        if fut is not None and not fut.done():
            fut.set_result(False)


async def connect_tcp(host: str, port: int, *, stagger: float = 0.25) -> TcpStream:
    """Connect to ``host:port`` (an IP literal is not resolved). The resolved addresses are
    tried in order, the next one started ``stagger`` seconds after the previous or as soon
    as it failed (Happy Eyeballs, RFC 8305); the first to connect wins and the others are
    closed. Raises ``OSError`` (the last address's) when none connects."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        targets = [(family, addr) for family, _, _, _, addr in infos]
    else:
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        targets = [(family, (literal.compressed, port))]
    if not targets:
        raise OSError(f"no address for {host!r}")
    errors: list[Exception] = []

    async def discard(sock: socket.socket, _: bool) -> None:
        sock.close()

    won = await first_ready(
        targets,
        lambda target: _connect_one(*target),
        stagger=stagger,
        discard=discard,
        on_failure=lambda _, exc: errors.append(exc),
    )
    if won is None:
        raise errors[-1]  # the last address's error
    return TcpStream(won[0])


async def _connect_one(family: int, addr: Any) -> socket.socket:
    """One non-blocking connect; the socket is closed on failure or cancellation."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        _tune(sock)
        try:
            sock.connect(addr)
        except BlockingIOError:
            await anyio.wait_writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, f"connect to {addr!r} failed: {os.strerror(code)}") from None
    except BaseException:
        sock.close()
        raise
    return sock


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
