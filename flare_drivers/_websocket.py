"""WebSocket transport (wsproto over any anyio byte stream, TLS or not): client and server.

Theory of operation: :class:`WebSocketTransport` turns wsproto events into whole messages
for :class:`~flare_drivers._loop.ConnectionDriver` (``Framing.MESSAGE``, DESIGN §2). It
reads the socket only when no finished message is waiting, and an anyio stream receive is
cancel-safe, so a timer cutting a read short loses nothing. Control frames are answered at
the WebSocket level only: a Ping gets a Pong and no flare PONG frame (B28); a Close gets the
closing handshake's reply. All writes go through one lock, and each ``send`` writes its whole
batch of messages with one stream write. A message longer than ``max_message`` is cut to
``max_message + 1`` bytes and handed over at once (the rest of it is dropped): the core's
``receive_message`` then closes with ``frame_too_large`` and an ERROR frame, so the limit
is enforced in one place while memory stays bounded here (pass ``Limits.max_frame``).

Data frames take a fast path around wsproto (its pure-Python parser costs more than the
rest of a frame's handling): while wsproto sits idle at a frame boundary, a complete,
unfragmented Binary or Text frame (FIN set, no RSV bits, masked exactly when the peer is a
client, within ``max_message``, Text valid UTF-8) is parsed, unmasked and written here, and
wsproto never sees it; a control frame is handed to wsproto whole, so it still answers
Pings and runs the closing handshake. Anything else (a fragment, RSV bits, a bad mask bit,
an oversize message, invalid UTF-8, a Close) switches the connection to wsproto for good,
from that frame on, so every protocol error is still wsproto's, with its close code.

:func:`serve_websocket` also answers plain HTTP on the same port (``GET /healthz`` → 200,
else 404) with h11, and closes every socket it gives up on (B24).
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine
from http import HTTPStatus
from typing import Any

import anyio
import anyio.abc
import h11
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSStream
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from flare_proto import Framing

from ._tcp import TcpStream, accept_ready, connect_tcp
from ._transport import TransportClosed

log = logging.getLogger("flare.websocket")

MAX_MESSAGE = 10 * 1024 * 1024
_READ_SIZE = 65536
# wsproto's codes for "the peer gave no code" and "no Close frame at all".
_NO_CODE = (1005, 1006)
_OPEN = ConnectionState.OPEN
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
_LOCAL_CLOSING = ConnectionState.LOCAL_CLOSING
_BINARY = 0x82  # FIN + opcode 2: a whole Binary message
_TEXT = 0x81  # FIN + opcode 1: a whole Text message
_PING, _PONG = 0x89, 0x8A  # FIN + control opcodes wsproto answers for us
# Frame headers of unmasked (server) and masked (client) Binary messages up to 125 bytes.
_SHORT = [bytes((_BINARY, n)) for n in range(126)]
_SHORT_MASKED = [bytes((_BINARY, 0x80 | n)) for n in range(126)]
_ZEROS = [bytes(n) for n in range(160)]  # mask stream over headers (and short gaps)

Handler = Callable[["WebSocketTransport"], Awaitable[None]]


class WebSocketHandshakeError(ConnectionError):
    """The opening handshake failed; ``status`` is the HTTP status when the server refused."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WebSocketTransport:
    """One established WebSocket connection, as a :class:`~flare_drivers._transport.Transport`.

    Built by :func:`connect_websocket` and :func:`serve_websocket` from a byte stream and a
    wsproto connection whose opening handshake is complete. ``close_timeout`` bounds each
    wait on the peer: writing a control frame, and the closing handshake in :meth:`aclose`.
    """

    def __init__(
        self,
        stream: ByteStream,
        ws: WSConnection,
        *,
        remote: str,
        max_message: int = MAX_MESSAGE,
        close_timeout: float = 1.0,
        initial: bytes = b"",
    ) -> None:
        self.framing = Framing.MESSAGE
        self.remote = remote
        self._stream = stream
        self._ws: WSConnection | Connection = ws
        self._max = max_message
        self._close_timeout = close_timeout
        self._messages: collections.deque[bytes] = collections.deque()
        self._partial = bytearray()
        self._skipping = False  # dropping the tail of an oversize message
        self._pongs: list[bytes] = []
        self._close_reply: CloseConnection | None = None
        self._closed: TransportClosed | None = None
        self._send_lock = anyio.Lock()
        # Plain TCP (not TLS): writes may be made at once, from any task (send_nowait).
        self._direct = stream.send_nowait if isinstance(stream, TcpStream) else None
        self._encode = _mask_frames if ws.client else _frames  # clients mask (RFC 6455 §5.3)
        self._tail: bytes | memoryview = b""
        self._reading = False
        self._broken = False  # a write was cut short: half a frame may be on the wire
        self._aclosed = False
        self._client = ws.client
        self._rx = bytearray()  # fast path: the start of a frame not complete yet
        self._need = 0  # ... and the bytes that frame needs in all
        self._absorb()  # frames that arrived together with the handshake
        self._fast = _wsproto_idle(ws)
        if ws.connection is not None:
            # The handshake is over and its events were taken: keep only the frame-level
            # connection, not the h11 handshake state (~2.5 KiB per idle connection).
            self._ws = ws.connection
        if initial:  # bytes after the upgrade request, not given to wsproto
            if self._fast:
                self._receive(initial)
            else:
                self._ws.receive_data(initial)
                self._absorb()

    async def receive(self) -> bytes | TransportClosed:
        """The next whole message (Text as UTF-8 bytes), or :class:`TransportClosed`.
        Cancel-safe."""
        while True:
            if self._pongs or self._close_reply is not None:
                await self._answer()
            if self._messages:
                return self._messages.popleft()
            if self._closed is not None:
                return self._closed
            self._reading = True
            try:
                data: bytes | None = await self._stream.receive(_READ_SIZE)
            except anyio.EndOfStream:
                data = None  # wsproto reports it as close code 1006
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                self._lost(f"connection lost: {exc!r}")
                continue
            finally:
                self._reading = False
            if data is not None and self._fast:
                self._receive(data)
            else:
                if data is None:
                    # End of stream: wsproto closes (1006), and owns the connection from
                    # now on; a partial frame we held is moot.
                    self._fast = False
                    self._rx.clear()
                self._ws.receive_data(data)
                self._absorb()

    def receive_nowait(self) -> bytes | None:
        """The next message already received, if any and if nothing else is due first
        (a Pong or Close reply to write, which :meth:`receive` does); else ``None``.
        Lets the driver take a whole read's messages without a wait per message."""
        if self._messages and not self._pongs and self._close_reply is None:
            return self._messages.popleft()
        return None

    async def send(self, chunks: list[bytes]) -> None:
        """Send each chunk as one Binary message, all in one stream write."""
        lock = self._send_lock
        try:
            lock.acquire_nowait()  # no scheduling round trip when nobody else writes
        except anyio.WouldBlock:
            await lock.acquire()
        try:
            if self._broken or self._ws.state is not _OPEN:
                raise anyio.BrokenResourceError("the WebSocket is closing or closed")
            await self._write(self._encode(chunks))
        finally:
            lock.release()

    def send_nowait(self, chunks: list[bytes]) -> bool:
        """Write ``chunks`` (as :meth:`send` would) without waiting, if possible: on a plain
        TCP stream, with no other write in progress and nothing held back. Returns whether
        the chunks were taken: written, or what the kernel did not accept kept in
        :attr:`backlog` to go out first with the next :meth:`send` (which the caller then
        owes). ``False``: nothing was done, use :meth:`send`. Raises
        ``anyio.BrokenResourceError`` when the connection is gone."""
        direct = self._direct
        if (
            direct is None
            or self._tail
            or self._send_lock.locked()
            or self._broken
            or self._ws.state is not _OPEN
        ):
            return False
        data = self._encode(chunks)
        try:
            sent = direct(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self._broken = True
            raise anyio.BrokenResourceError(f"write failed: {exc!r}") from exc
        if sent < len(data):
            self._tail = memoryview(data)[sent:]
        return True

    @property
    def backlog(self) -> int:
        """Bytes :meth:`send_nowait` accepted that are not written yet."""
        return len(self._tail)

    async def aclose(self, number: int | None = None, reason: str = "") -> None:
        """Send Close (``number``, else 1000; ``reason`` cut to 123 bytes), wait up to
        ``close_timeout`` for the peer's Close, then close the stream. Idempotent, never
        raises, and shielded from cancellation (but bounded)."""
        if self._aclosed:
            return
        self._aclosed = True
        if self._fast:
            # The closing handshake is wsproto's: give it the partial frame we hold.
            self._fast = False
            held, self._rx = bytes(self._rx), bytearray()
            if held and self._ws.state in (_OPEN, _LOCAL_CLOSING):
                self._ws.receive_data(held)
        if self._ws.state is _OPEN:
            code = number if number is not None and 1000 <= number <= 4999 else 1000
            text = reason.encode("utf-8")[:123].decode("utf-8", "ignore")
            self._close_reply = CloseConnection(code=code, reason=text)
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self._close_timeout):
                try:
                    await self._answer()  # our Close, or the reply to the peer's
                    # Wait for the peer's Close unless another task is reading (it will).
                    while self._ws.state is _LOCAL_CLOSING and not (self._reading or self._broken):
                        self._ws.receive_data(await self._stream.receive(_READ_SIZE))
                        self._absorb()
                except anyio.EndOfStream:
                    pass  # the peer closed the connection: as good as its Close
                except Exception as exc:  # the stream is closed below whatever happened
                    log.debug("closing handshake with %s failed: %r", self.remote, exc)
            await anyio.aclose_forcefully(self._stream)
        if self._closed is None:
            self._closed = TransportClosed(None, "closed locally")

    # -- internals ----------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        """Fast path (module docstring): whole data frames become messages here, control
        frames go to wsproto one at a time, anything else hands the rest to wsproto."""
        rx = self._rx
        if rx:
            rx += data
            if len(rx) < self._need:
                return  # a long frame still arriving: no copy per read
            data = bytes(rx)
            rx.clear()
        # Pass 1: the whole frames at the start of ``data`` that the fast path takes, as
        # (first byte, start, payload start, end).
        frames: list[tuple[int, int, int, int]] = []
        masked = 0 if self._client else 0x80  # clients mask, servers do not (RFC 6455 §5.1)
        limit = self._max
        end = len(data)
        pos = need = 0
        handover = False
        while True:
            if end - pos < 2:
                need = 2
                break
            first, second = data[pos], data[pos + 1]
            size = second & 0x7F
            if (second & 0x80) != masked or not (
                first in (_BINARY, _TEXT) or (first in (_PING, _PONG) and size <= 125)
            ):
                # A Close, a fragment, RSV bits, a bad mask bit, a long control frame...:
                # decided by the first two bytes, so wsproto sees it (and closes) at once,
                # not after an extended length that may never come.
                handover = True
                break
            head = pos + 2
            if size >= 126:
                short = size == 126
                head += 2 if short else 8
                if head > end:
                    need = head - pos
                    break
                size = int.from_bytes(data[pos + 2 : head], "big")
                if size < (126 if short else 65536):
                    handover = True  # not the minimal length form: wsproto says 1002
                    break
            if masked:
                head += 4
            stop = head + size
            if size > limit:  # wsproto streams it within the limit (module docstring)
                handover = True
                break
            if stop > end:
                need = stop - pos
                break
            frames.append((first, pos, head, stop))
            pos = stop
        # Pass 2: unmask every payload with one XOR; control frames go to wsproto raw.
        plain = _unmask_frames(data, frames) if masked and frames else data
        append = self._messages.append
        for first, start, head, stop in frames:
            if first == _BINARY:
                append(plain[head:stop])
            elif first == _TEXT:
                payload = plain[head:stop]
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError:
                    pos, handover = start, True  # wsproto closes with 1007
                    break
                append(payload)
            else:
                # A whole control frame keeps wsproto at a frame boundary.
                self._ws.receive_data(data[start:stop])
                self._absorb()
                if self._close_reply is not None or self._closed is not None:
                    # wsproto refused it (or it closed): nothing after it is delivered.
                    self._fast = False
                    return
        if handover:
            # From this frame on wsproto parses everything (module docstring).
            self._fast = False
            self._ws.receive_data(data[pos:])
            self._absorb()
        else:
            self._keep(data, pos, need)

    def _keep(self, data: bytes, pos: int, need: int) -> None:
        """Buffer the incomplete frame at ``pos``, which needs ``need`` bytes in all."""
        if pos < len(data):
            self._rx += memoryview(data)[pos:]
        self._need = need

    def _absorb(self) -> None:
        """Turn pending wsproto events into messages, replies to send, or the close."""
        for event in self._ws.events():
            if isinstance(event, BytesMessage):
                self._add(bytes(event.data), event.message_finished)
            elif isinstance(event, TextMessage):
                self._add(event.data.encode("utf-8"), event.message_finished)
            elif isinstance(event, Ping):
                self._pongs.append(bytes(event.payload))
            elif isinstance(event, CloseConnection):
                # OPEN here means wsproto found a protocol error (code 1002/1007/...):
                # we send that Close; REMOTE_CLOSING means the peer's Close wants a reply.
                if self._ws.state in (_OPEN, _REMOTE_CLOSING):
                    self._close_reply = event.response()
                number = None if event.code in _NO_CODE else int(event.code)
                if self._closed is None:
                    self._closed = TransportClosed(number, event.reason or "")
            # Pong: we never send Pings, so an unsolicited Pong is ignored (RFC 6455 §5.5.3).

    def _add(self, data: bytes, finished: bool) -> None:
        if not self._skipping:
            self._partial += data[: self._max + 1 - len(self._partial)]
            if len(self._partial) > self._max:
                # Hand the core max+1 bytes now so it rejects the frame (module docstring).
                self._messages.append(bytes(self._partial))
                self._partial = bytearray()
                self._skipping = True
        if finished:
            if not self._skipping:
                self._messages.append(bytes(self._partial))
                self._partial = bytearray()
            self._skipping = False

    async def _answer(self) -> None:
        """Send queued Pongs and the Close reply. Shielded so a cancelled receive() never
        cuts a frame in half; bounded so a peer that stopped reading cannot hold us."""
        pongs, self._pongs = self._pongs, []
        reply, self._close_reply = self._close_reply, None
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._close_timeout):
            try:
                async with self._send_lock:
                    out = b"".join(
                        [self._ws.send(Pong(payload=p)) for p in pongs if self._ws.state is _OPEN]
                    )
                    if reply is not None and self._ws.state in (_OPEN, _REMOTE_CLOSING):
                        out += self._ws.send(reply)
                    if out and not self._broken:
                        await self._write(out)
            except anyio.BrokenResourceError as exc:
                self._lost(f"connection lost: {exc!r}")
        if self._broken:
            self._lost("a write failed or timed out")

    async def _write(self, data: bytes) -> None:
        if self._tail:  # what send_nowait() could not write goes first
            data, self._tail = bytes(self._tail) + data, b""
        try:
            await self._stream.send(data)
        except BaseException as exc:
            self._broken = True
            if isinstance(exc, (OSError, anyio.ClosedResourceError)):
                raise anyio.BrokenResourceError(f"write failed: {exc!r}") from exc
            raise

    def _lost(self, reason: str) -> None:
        self._broken = True
        if self._closed is None:
            self._closed = TransportClosed(None, reason)


def _frames(chunks: list[bytes]) -> bytes:
    """``chunks`` as unmasked Binary messages (the server's frames), one byte string."""
    parts: list[bytes] = []
    append = parts.append
    for chunk in chunks:
        size = len(chunk)
        if size < 126:
            append(_SHORT[size])
        elif size < 65536:
            append(b"\x82\x7e" + size.to_bytes(2, "big"))
        else:
            append(b"\x82\x7f" + size.to_bytes(8, "big"))
        append(chunk)
    return b"".join(parts)


def _mask_frames(chunks: list[bytes]) -> bytes:
    """``chunks`` as masked Binary messages (the client's frames, RFC 6455 §5.3: a fresh
    random key per frame), one byte string. All payloads are masked with one big-integer
    XOR against a mask stream (zeros over headers and keys), the fastest way in pure
    Python: a XOR per frame costs about twice as much."""
    keys = os.urandom(4 * len(chunks))
    parts: list[bytes] = []
    masks: list[bytes] = []
    for i, chunk in enumerate(chunks):
        size = len(chunk)
        if size < 126:
            header = _SHORT_MASKED[size]
        elif size < 65536:
            header = b"\x82\xfe" + size.to_bytes(2, "big")
        else:
            header = b"\x82\xff" + size.to_bytes(8, "big")
        key = keys[4 * i : 4 * i + 4]
        parts += (header, key, chunk)
        masks += (_ZEROS[len(header) + 4], (key * (size // 4 + 1))[:size])
    frames = b"".join(parts)
    mask = int.from_bytes(b"".join(masks), "little")
    return (int.from_bytes(frames, "little") ^ mask).to_bytes(len(frames), "little")


def _unmask_frames(data: bytes, frames: list[tuple[int, int, int, int]]) -> bytes:
    """``data`` up to the end of the last of ``frames`` (first byte, start, payload start,
    end) with every data payload unmasked (its key is the 4 bytes before it), in one XOR
    as in :func:`_mask_frames`; headers and control frames come out unchanged."""
    masks: list[bytes] = []
    last = 0
    for first, _, head, stop in frames:
        gap = head - last
        masks.append(_ZEROS[gap] if gap < len(_ZEROS) else bytes(gap))
        size = stop - head
        if first in (_PING, _PONG):
            masks.append(bytes(size))  # handed to wsproto raw: it unmasks them itself
        else:
            masks.append((data[head - 4 : head] * (size // 4 + 1))[:size])
        last = stop
    mask = int.from_bytes(b"".join(masks), "little")
    with memoryview(data) as view:
        value = int.from_bytes(view[:last], "little")
    return (value ^ mask).to_bytes(last, "little")


def _wsproto_idle(ws: WSConnection) -> bool:
    """True when wsproto holds no partial frame or message and uses no extension, so the
    fast path may parse the next frames itself. Reads wsproto's private state; if that
    ever changes shape the answer is False and wsproto simply does all the parsing."""
    try:
        connection = ws.connection
        if connection is None or connection.state is not _OPEN:
            return False
        proto = connection._proto
        decoder = proto._frame_decoder
        return (
            not proto.extensions
            and decoder.header is None
            and not len(decoder.buffer)
            and proto._message_decoder.opcode is None
        )
    except AttributeError:
        return False


def _address(sockaddr: Any) -> str:
    """``host:port`` (``[v6]:port``) from a socket address."""
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        host, port = str(sockaddr[0]), sockaddr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(sockaddr)


# -- client --------------------------------------------------------------------------------


async def connect_websocket(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    max_message: int = MAX_MESSAGE,
    connect_timeout: float = 10.0,
) -> WebSocketTransport:
    """Open ``ws://host:port/path`` or ``wss://…`` (host may be ``[v6]``) and complete
    the opening handshake. ``wss`` uses ``ssl_context`` or the system trust store.

    Raises ``ValueError`` for a bad URL, ``OSError`` when the connection fails (an
    ``ssl.SSLError`` for TLS, ``TimeoutError`` after ``connect_timeout`` seconds), and
    :class:`WebSocketHandshakeError` when the server refuses the upgrade.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    secure = parts.scheme == "wss"
    host = parts.hostname
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if secure and ssl_context is None:
        ssl_context = ssl.create_default_context()
    try:
        with anyio.fail_after(connect_timeout):
            stream: ByteStream = await connect_tcp(host, port)
            try:
                remote = _address(stream.extra(SocketAttribute.remote_address))
                if secure:
                    stream = await TLSStream.wrap(
                        stream, hostname=host, ssl_context=ssl_context, standard_compatible=False
                    )
                ws = await _client_handshake(stream, parts.netloc.rpartition("@")[2], target)
            except BaseException:
                await anyio.aclose_forcefully(stream)
                raise
    except TimeoutError:
        raise TimeoutError(f"{url}: not connected within {connect_timeout:g} s") from None
    return WebSocketTransport(stream, ws, remote=remote, max_message=max_message)


async def _client_handshake(stream: ByteStream, host: str, target: str) -> WSConnection:
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send(ws.send(Request(host=host, target=target)))
    while True:
        # Stop at the verdict: frames after the 101 stay queued for the transport.
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                return ws
            if isinstance(event, RejectConnection):
                raise WebSocketHandshakeError(
                    f"server refused the WebSocket upgrade: HTTP {event.status_code}",
                    event.status_code,
                )
        try:
            ws.receive_data(await stream.receive(_READ_SIZE))
        except anyio.EndOfStream:
            raise WebSocketHandshakeError("connection closed during the handshake") from None
        except RemoteProtocolError as exc:
            raise WebSocketHandshakeError(f"bad handshake response: {exc}") from None


# -- server --------------------------------------------------------------------------------


async def serve_websocket(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    max_message: int = MAX_MESSAGE,
    handshake_timeout: float = 10.0,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve WebSocket (``wss`` with ``ssl_context``) on ``host:port`` until cancelled.

    Reports the bound ``host:port`` through ``task_status``. Each upgrade (any path, any
    Host, no subprotocol, no extensions) runs ``await handler(transport)`` in its own
    task; the transport is closed when the handler ends. ``GET /healthz`` answers 200,
    other plain HTTP 404. TLS plus the HTTP request must complete within
    ``handshake_timeout`` or the socket is closed. A failing connection never stops the
    server: I/O errors are logged at debug level, handler exceptions as errors.
    """

    async def serve_one(sock: socket.socket) -> None:
        remote = "?"
        try:
            raw = TcpStream(sock)
        except OSError as exc:  # e.g. a socket reset before we could set it up
            sock.close()
            log.debug("accepted socket unusable: %r", exc)
            return
        stream: ByteStream = raw
        try:
            remote = _address(raw.extra(SocketAttribute.remote_address))
            transport = None
            with anyio.move_on_after(handshake_timeout):
                if ssl_context is not None:
                    stream = await TLSStream.wrap(
                        raw, server_side=True, ssl_context=ssl_context, standard_compatible=False
                    )
                transport = await _server_handshake(stream, remote, max_message)
            if transport is None:
                return
            try:
                await handler(transport)
            except Exception:
                log.exception("WebSocket handler failed for %s", remote)
            finally:
                await transport.aclose(None, "")
        except Exception as exc:
            log.debug("WebSocket connection from %s failed: %r", remote, exc)
        finally:
            await anyio.aclose_forcefully(stream)

    # anyio binds (addresses, families, the shared port of port 0); the connections are
    # accepted from its sockets by us, as our own TcpStreams (flare_drivers._tcp).
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener, anyio.create_task_group() as tg:
        for one in listener.listeners:
            raw = one.extra(SocketAttribute.raw_socket)
            tg.start_soon(_accept_loop, raw, tg, serve_one)
        task_status.started(_address(listener.extra(SocketAttribute.local_address)))


async def _accept_loop(
    listening: socket.socket,
    tg: anyio.abc.TaskGroup,
    serve: Callable[[socket.socket], Coroutine[Any, Any, None]],
) -> None:
    while True:
        try:
            accepted = await accept_ready(listening)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return
        except OSError as exc:
            # Out of file descriptors and the like: back off rather than spin (and
            # rather than end the server).
            log.warning("accept failed: %r", exc)
            await anyio.sleep(0.1)
            continue
        for sock in accepted:
            tg.start_soon(serve, sock)


async def _server_handshake(
    stream: ByteStream, remote: str, max_message: int
) -> WebSocketTransport | None:
    """Read one HTTP request: upgrade it (returns the transport) or answer it (None)."""
    http = h11.Connection(h11.SERVER)
    try:
        request = await _read_request(stream, http)
    except h11.RemoteProtocolError:
        await _respond(stream, http, 400, b"bad request\n")
        return None
    if request is None:
        return None
    if any(n == b"upgrade" and b"websocket" in v.lower() for n, v in request.headers):
        ws = WSConnection(ConnectionType.SERVER)
        try:
            # wsproto validates the upgrade headers (key, version, method).
            ws.initiate_upgrade_connection(list(request.headers), request.target)
            ok = any(isinstance(event, Request) for event in ws.events())
        except RemoteProtocolError:
            ok = False
        if not ok:
            await _respond(stream, http, 400, b"bad WebSocket upgrade\n")
            return None
        await stream.send(ws.send(AcceptConnection()))
        return WebSocketTransport(
            stream, ws, remote=remote, max_message=max_message, initial=_trailing(http)
        )
    if request.target.split(b"?")[0] == b"/healthz" and request.method in (b"GET", b"HEAD"):
        await _respond(stream, http, 200, b"ok\n", body=request.method == b"GET")
    else:
        await _respond(stream, http, 404, b"not found\n")
    return None


async def _read_request(stream: ByteStream, http: h11.Connection) -> h11.Request | None:
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            try:
                http.receive_data(await stream.receive(_READ_SIZE))
            except anyio.EndOfStream:
                http.receive_data(b"")
            continue
        return event if isinstance(event, h11.Request) else None


def _trailing(http: h11.Connection) -> bytes:
    """Bytes a client sent after its upgrade request (h11 holds them once it pauses)."""
    try:
        while (event := http.next_event()) is not h11.PAUSED:
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return b""
    except h11.RemoteProtocolError:
        return b""
    return http.trailing_data[0]


async def _respond(
    stream: ByteStream, http: h11.Connection, status: int, text: bytes, *, body: bool = True
) -> None:
    """A small text/plain response, then the caller closes the connection."""
    headers = [
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", str(len(text))),
        ("connection", "close"),
    ]
    try:
        response = h11.Response(
            status_code=status, headers=headers, reason=HTTPStatus(status).phrase
        )
        data = http.send(response) or b""
        if body:
            data += http.send(h11.Data(data=text)) or b""
        data += http.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError:
        return  # h11 cannot answer in this state (e.g. nothing parsable arrived)
    await stream.send(data)
