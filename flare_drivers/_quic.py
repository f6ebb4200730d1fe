"""QUIC over aioquic (DESIGN §2, reference §4.2): the transport both sides share.

Theory of operation: a flare QUIC connection carries exactly one bidirectional stream,
opened by the client (id 0). The core writes and parses the 4-byte length prefixes itself
(``Framing.STREAM``), so :class:`QuicTransport` only moves raw stream bytes.

aioquic's ``QuicConnection`` is sans-IO: something must feed it datagrams, fire its timer
at ``get_timer()`` and send ``datagrams_to_send()`` after every call. That *pump* is run
by whichever task is waiting on the transport (``receive``, a ``send`` held back by
flow control, ``aclose`` draining), one at a time; the others wait for its news. So a
client needs no background task (:func:`connect_quic` returns a plain object and
structured concurrency holds), while the server runs one pump task per connection.
:func:`connect_quic` is in :mod:`flare_drivers._quic_client`, :func:`serve_quic` in
:mod:`flare_drivers._quic_server`; both are re-exported here. Stream bytes land in a
deque, so ``receive`` is cancel-safe. aioquic's clock is :func:`flare_drivers._clock.now`,
the core's.
"""

from __future__ import annotations

import collections
import logging
import math
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from aioquic.quic import events as qe
from aioquic.quic.connection import NetworkAddress, QuicConnection

from flare_proto import Framing

from ._clock import now
from ._transport import TransportClosed

log = logging.getLogger("flare.quic")

STREAM_ID = 0
"""The one bidirectional stream: the client's first (reference §4.2)."""

Datagram = tuple[bytes, NetworkAddress]
DatagramSource = Callable[[], Awaitable[list[Datagram]]]
DatagramSink = Callable[[bytes, NetworkAddress], None]
"""Writes one datagram now, never blocking (a full socket buffer is loss, as on a wire)."""


_MAX_DATAGRAM = 65536


class DatagramSocket:
    """A non-blocking UDP socket used directly, not through anyio's UDP sockets: those
    cost a scheduling round trip per datagram each way, more than aioquic's own work on
    it. :meth:`receive` waits until the socket is readable, then takes every datagram
    already queued (up to ``batch``), so one pump step handles them all and answers them
    with one transmit; :meth:`send` writes at once and never blocks (a full socket buffer
    is loss, which QUIC recovers from, as it would on a wire)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.raw = sock
        self.closed = False

    async def receive(self, batch: int = 64) -> list[Datagram]:
        """At least one datagram (with its sender's address), at most ``batch``.
        Cancel-safe: nothing is taken from the socket before the wait is over. Raises
        ``anyio.ClosedResourceError`` once closed and ``OSError`` for a socket error
        (an ICMP refusal on a connected socket)."""
        raw = self.raw
        while True:
            if self.closed:
                raise anyio.ClosedResourceError
            await anyio.wait_readable(raw)
            datagrams: list[Datagram] = []
            try:
                while len(datagrams) < batch:
                    datagrams.append(raw.recvfrom(_MAX_DATAGRAM))
            except BlockingIOError:
                pass
            if datagrams:
                return datagrams

    def send(self, data: bytes, addr: NetworkAddress | None = None) -> None:
        """Write one datagram now (to ``addr``, or to the connected peer)."""
        try:
            if addr is None:
                self.raw.send(data)
            else:
                self.raw.sendto(data, addr)
        except BlockingIOError:
            pass  # the socket buffer is full: loss (class docstring)

    def close(self) -> None:
        """Close the socket, waking a task waiting in :meth:`receive`. Idempotent."""
        if not self.closed:
            self.closed = True
            anyio.notify_closing(self.raw)
            self.raw.close()


class QuicTransport:
    """One QUIC connection seen as a :class:`~flare_drivers._transport.Transport` with
    ``Framing.STREAM``: the raw bytes of stream 0.

    Made by :func:`connect_quic` and :func:`serve_quic`;
    ``receive_datagrams`` waits for the next datagram(s) for this connection,
    ``send_datagram`` writes one; ``on_closed`` runs once our CONNECTION_CLOSE is out,
    after which the connection counts as over (the client closes its socket there, not
    waiting out aioquic's closing period). ``max_buffered`` bounds received bytes not yet taken by
    :meth:`receive` (beyond it incoming datagrams are dropped and the peer's loss
    recovery resends them later); :meth:`send` waits while more than ``send_buffer``
    bytes are unacknowledged; :meth:`aclose` waits up to ``close_timeout`` for what was
    sent to be acknowledged before closing.
    """

    framing: Framing = Framing.STREAM

    def __init__(
        self,
        connection: QuicConnection,
        *,
        remote: str,
        receive_datagrams: DatagramSource,
        send_datagram: DatagramSink,
        on_closed: Callable[[], Awaitable[None]] | None = None,
        max_buffered: int = 4 * 1024 * 1024,
        send_buffer: int = 1024 * 1024,
        close_timeout: float = 2.0,
    ) -> None:
        self.remote = remote
        """The peer's address as ``host:port``."""
        self.alpn: str | None = None
        """The negotiated ALPN protocol (``None``: none, flare's default)."""
        self.on_cid_issued: Callable[[bytes], None] | None = None
        """Server demultiplexer hook: aioquic issued a new host connection id."""
        self.on_cid_retired: Callable[[bytes], None] | None = None
        """Server demultiplexer hook: the peer retired one of our connection ids."""
        self._conn = connection
        self._source = receive_datagrams
        self._sink = send_datagram
        self._max_buffered = max_buffered
        self._send_buffer = send_buffer
        self._close_timeout = close_timeout
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        # What receive() returns once the chunks are drained (FIN, reset, close); first wins.
        self._end: TransportClosed | None = None
        self._error: BaseException | None = None
        self._terminated = False  # the QUIC connection is over: no more pumping
        self._handshake_complete = False
        self._stream_opened = False  # the peer sent on stream 0 (server: accept_bi)
        self._send_stopped = False
        self._closing = False  # aclose() called
        self._close_sent = False
        self._pumping = False
        self._pump_scope: anyio.CancelScope | None = None
        self._changed = anyio.Event()
        self._on_closed = on_closed

    # -- Transport -------------------------------------------------------------------------

    async def receive(self) -> bytes | TransportClosed:
        """Stream bytes received since the last call (joined), or :class:`TransportClosed`:
        ``(number, reason)`` from the peer's application close (0 → ``None``),
        ``(None, "end of stream")`` on FIN. Cancel-safe."""
        await self._wait(lambda: bool(self._chunks) or self._end is not None)
        if self._chunks:
            data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
            self._chunks.clear()
            self._buffered = 0
            return data
        assert self._end is not None  # _wait's condition
        return self._end

    async def send(self, chunks: list[bytes]) -> None:
        """Write ``chunks`` to stream 0 (the client opens it with its first write, like
        quinn) and transmit; then wait while more than ``send_buffer`` bytes are
        unacknowledged (backpressure: a peer that does not read blocks its writer, so the
        driver's queue fills and the core closes with ``slow_consumer``)."""
        if self._closing:
            raise anyio.ClosedResourceError
        if self._terminated or self._send_stopped:
            raise anyio.BrokenResourceError
        data = b"".join(chunks)
        if data:
            try:
                self._conn.send_stream_data(STREAM_ID, data)
            except (ValueError, RuntimeError) as exc:  # stream finished or reset
                raise anyio.BrokenResourceError from exc
            self._transmit()
            self._rearm()
        await self._wait(
            lambda: self._terminated or self._closing or self._unacked() <= self._send_buffer
        )
        if self._terminated and self._unacked():
            raise anyio.BrokenResourceError

    async def aclose(self, number: int | None, reason: str) -> None:
        """Close the QUIC connection with application error code ``number`` (0 when
        ``None``) once everything written has been put on the wire, waiting at most
        ``close_timeout`` (aioquic's close drops stream data not yet sent, and the last
        flare frames matter). It does not wait for the peer's acknowledgements: that costs
        two delayed-ACK periods per close, and the close number carries the flare code
        anyway. Idempotent, never raises."""
        if self._closing:
            return
        self._closing = True
        try:
            if not self._terminated:
                with anyio.move_on_after(self._close_timeout):
                    await self._wait(lambda: self._terminated or self._all_sent())
        except Exception:
            log.exception("draining QUIC connection %s failed", self.remote)
        finally:
            with anyio.CancelScope(shield=True):
                await self.close_now(number, reason)

    # -- used by the client and the server --------------------------------------------------

    async def close_now(self, number: int | None, reason: str) -> None:
        """Send CONNECTION_CLOSE now, without draining (shutdown, refusals). Idempotent."""
        self._closing = True
        self._set_end(TransportClosed(number, reason))
        if self._close_sent:
            return
        self._close_sent = True
        try:
            if not self._terminated:
                self._conn.close(error_code=number or 0, reason_phrase=reason)
                self._transmit()
                self._rearm()
            if self._on_closed is not None:
                self._terminated = True
                await self._on_closed()
        except Exception:
            log.exception("closing QUIC connection %s failed", self.remote)
        self._notify()

    @property
    def connection(self) -> QuicConnection:
        """The aioquic connection (call :meth:`transmit` after using it)."""
        return self._conn

    @property
    def end(self) -> TransportClosed | None:
        """What :meth:`receive` returns once the buffered bytes are taken, when known."""
        return self._end

    @property
    def error(self) -> BaseException | None:
        """The socket error that ended the connection, if one did."""
        return self._error

    @property
    def terminated(self) -> bool:
        """True once the QUIC connection is over (nothing more will be received)."""
        return self._terminated

    @property
    def handshake_done(self) -> bool:
        """True once the TLS handshake completed."""
        return self._handshake_complete

    @property
    def stream_opened(self) -> bool:
        """True once the peer has sent on stream 0 (data, FIN or reset)."""
        return self._stream_opened

    async def pump_forever(self) -> None:
        """Run the pump until the connection is over (the server's per-connection task)."""
        await self._wait(lambda: self._terminated)

    async def wait_until(self, ready: Callable[[], bool]) -> None:
        """Wait (pumping when nobody else does) until ``ready()`` or the connection is
        over."""
        await self._wait(lambda: self._terminated or ready())

    async def transmit(self) -> None:
        """Send whatever aioquic has to send now."""
        self._transmit()
        self._rearm()

    # -- the pump ---------------------------------------------------------------------------

    async def _wait(self, ready: Callable[[], bool]) -> None:
        # ``ready`` must turn true once the connection is terminated, or this never returns.
        # One pump at a time: a second one would sleep on a timer the first has moved.
        while not ready():
            if self._pumping:
                await self._changed.wait()
            else:
                await self._pump_step()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _pump_step(self) -> None:
        """Wait for datagrams or aioquic's timer, feed them in, transmit, tell waiters."""
        conn = self._conn
        self._pumping = True
        try:
            timer = conn.get_timer()
            delay = math.inf if timer is None else max(0.0, timer - now())
            datagrams: list[Datagram] | None = None
            with anyio.CancelScope(deadline=anyio.current_time() + delay) as scope:
                self._pump_scope = scope
                datagrams = await self._source()
            self._pump_scope = None
            t = now()
            if datagrams is None:
                timer = conn.get_timer()
                # 1 ms of slack: the anyio clock and time.monotonic round differently.
                if timer is not None and t >= timer - 0.001:
                    conn.handle_timer(max(t, timer))
            else:
                for data, addr in datagrams:
                    if self._buffered > self._max_buffered:
                        break  # the reader is behind: let the peer resend later
                    conn.receive_datagram(data, addr, t)
            self._process_events()
            self._transmit()
        except (
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
            OSError,  # the socket's own error (an ICMP refusal)
        ) as exc:
            self._fail(exc.__cause__ or exc)
        except Exception as exc:  # an aioquic bug must not take the server down
            log.exception("QUIC connection %s failed", self.remote)
            self._fail(exc)
        finally:
            self._pumping = False
            self._pump_scope = None
            self._notify()

    def _transmit(self) -> None:
        # Synchronous: the sink writes each datagram straight to the socket, so sending
        # costs no scheduling round trip per datagram and cannot be cut by a cancellation.
        sink = self._sink
        try:
            for data, addr in self._conn.datagrams_to_send(now()):
                sink(data, addr)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            self._fail(exc.__cause__ or exc)

    def _rearm(self) -> None:
        # A send or close may have moved aioquic's timer earlier than the pump's deadline.
        scope = self._pump_scope
        timer = self._conn.get_timer()
        if scope is not None and timer is not None:
            deadline = anyio.current_time() + max(0.0, timer - now())
            if deadline < scope.deadline:
                scope.deadline = deadline

    def _all_sent(self) -> bool:
        # ``buffer_is_empty``: aioquic's sender has no data left that was never transmitted.
        stream = self._conn._streams.get(STREAM_ID)
        return stream is None or bool(getattr(stream.sender, "buffer_is_empty", True))

    def _unacked(self) -> int:
        # aioquic has no public view of a stream's send buffer; its sender keeps every
        # byte not yet acknowledged in ``_buffer``. Without it: no backpressure, no drain.
        try:
            stream = self._conn._streams.get(STREAM_ID)
            return 0 if stream is None else len(stream.sender._buffer)
        except AttributeError:
            return 0

    def _process_events(self) -> None:
        conn = self._conn
        while (event := conn.next_event()) is not None:
            if isinstance(event, qe.StreamDataReceived):
                if event.stream_id != STREAM_ID:
                    continue  # flare uses one stream; the original never accepts another
                self._stream_opened = True
                if event.data:
                    self._chunks.append(event.data)
                    self._buffered += len(event.data)
                if event.end_stream:
                    self._set_end(TransportClosed(None, "end of stream", half=True))
            elif isinstance(event, qe.StreamReset):
                if event.stream_id == STREAM_ID:
                    self._stream_opened = True
                    self._set_end(TransportClosed(event.error_code or None, "stream reset"))
            elif isinstance(event, qe.StopSendingReceived):
                if event.stream_id == STREAM_ID:
                    self._send_stopped = True
            elif isinstance(event, qe.HandshakeCompleted):
                self._handshake_complete = True
                self.alpn = event.alpn_protocol
            elif isinstance(event, qe.ConnectionIdIssued):
                if self.on_cid_issued is not None:
                    self.on_cid_issued(event.connection_id)
            elif isinstance(event, qe.ConnectionIdRetired):
                if self.on_cid_retired is not None:
                    self.on_cid_retired(event.connection_id)
            elif isinstance(event, qe.ConnectionTerminated):
                self._terminated = True
                self._set_end(_closed_by(event))

    def _set_end(self, end: TransportClosed) -> None:
        if self._end is None:
            self._end = end

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._terminated = True
        self._set_end(TransportClosed(None, f"QUIC connection lost: {exc!r}"))
        self._notify()


def _closed_by(event: qe.ConnectionTerminated) -> TransportClosed:
    if event.frame_type is None:
        # APPLICATION_CLOSE: its error code is the flare close number (DESIGN §4).
        return TransportClosed(
            event.error_code or None, event.reason_phrase or "connection closed by peer"
        )
    detail = f": {event.reason_phrase}" if event.reason_phrase else ""
    return TransportClosed(None, f"QUIC connection closed (error 0x{event.error_code:x}{detail})")


def format_address(addr: NetworkAddress) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    host, port = str(addr[0]), int(addr[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


if TYPE_CHECKING:
    from ._quic_client import connect_quic
    from ._quic_server import serve_quic


def __getattr__(name: str) -> Any:
    # connect_quic and serve_quic live in modules that import this one; re-export them
    # lazily so ``from ._quic import serve_quic`` works without an import cycle.
    if name == "connect_quic":
        from ._quic_client import connect_quic

        return connect_quic
    if name == "serve_quic":
        from ._quic_server import serve_quic

        return serve_quic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DatagramSocket", "QuicTransport", "connect_quic", "serve_quic"]
